"""Is an adapter's description faithful? Interventions on the latents a card lists.

A card lists read latents R and write latents W. Each check edits an adapter with
:func:`lora.restrict_latents` (exact: the kept part of Δz is the original's, nothing
renormalized) and measures the behaviour effect (in-topic rate − base rate, greedy answers) on
the same prompts:

- **sufficiency**: keep only R and W. Of the described adapter; and, when the card describes a
  compression of a dense ``reference`` adapter (e.g. a sparse student of the dense demo
  adapter), of the reference too: does the dense finetune's effect go through these latents?
- **necessity** (with a reference): drop R and W from the reference; the share of its effect
  lost.
- **random same-count control**: the adapter's own weights moved onto as many random latents
  (:func:`random_latents_control`). If it keeps the effect, the particular latents did not
  matter.
- **per latent**: drop each listed latent alone from the adapter; the change in effect. This
  is one generation pass per latent, so it runs on ``per_latent_prompts`` in-topic prompts and
  ``per_latent_tokens`` new tokens, next to the full adapter measured the same way.

``retained`` is the effect over the effect it is compared with (the adapter's, or the
reference's), with a 95 % paired bootstrap interval over the in-topic prompts
(:func:`behaviour.effect_retained`). The description **carries the effect** when the listed
latents alone keep at least ``CARRIES_AT`` of the described effect (the reference's when there
is one) and the random control keeps less than half of what they keep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from saelora_core.adapter.sae_lora import SaeLora
from saelora_core.adapter.sparsity import restrict_latents
from saelora_core.analysis.behaviour import BehaviourResult, effect_retained, evaluate_behaviour
from saelora_core.models.presets import ModelAndSae

CARRIES_AT = 0.75


@torch.no_grad()
def random_latents_control(lora: SaeLora, generator: torch.Generator | None = None) -> SaeLora:
    """``lora`` with its read latents and its write latents each moved to as many distinct
    random latents (a random injection per side), every weight and ``s`` kept."""
    src = lora.folded()
    out = SaeLora(lora.d_sae, lora.rank, init="zeros").to(src.s.device)
    out.s.copy_(src.s)
    read, write = src.distinct_latents()
    for idx, take, put in (
        (read, lambda i: src.a[i], lambda i, v: out.a.__setitem__(i, v)),
        (write, lambda i: src.b[:, i], lambda i, v: out.b.__setitem__((slice(None), i), v)),
    ):
        new = torch.randperm(lora.d_sae, generator=generator)[: len(idx)].tolist()
        for old_i, new_i in zip(idx, new, strict=True):
            put(new_i, take(old_i))
    return out


@dataclass
class Faithfulness:
    table: pd.DataFrame
    """check, adapter, read, write (latent counts), in_topic, off_topic (only for the described
    adapter and the reference; nan for the ablations, which run on the in-topic prompts only),
    effect, compared_to, retained, ci_low, ci_high."""
    per_latent: pd.DataFrame
    """side, latent, in_topic_without, effect_change (its removal's change in effect, − =
    the effect drops) with its 95 % paired bootstrap interval (ci_low, ci_high; absent from
    results saved before they were measured), share (of the full adapter's effect on the same
    prompts)."""
    settings: dict[str, Any]

    def _verdict(self) -> tuple[bool, str]:
        sides = self.per_latent["side"].tolist()
        has_ref = "reference" in set(self.table["check"])
        return verdict(self.table, has_ref, sides.count("read"), sides.count("write"))

    @property
    def carries(self) -> bool:
        """Whether the listed latents carry the effect (see the module doc)."""
        return self._verdict()[0]

    @property
    def headline(self) -> str:
        """The card's first line: the verdict with its interval."""
        return self._verdict()[1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table.to_dict(orient="records"),
            "per_latent": self.per_latent.to_dict(orient="records"),
            "carries": self.carries,  # for readers of the JSON; recomputed when loaded
            "headline": self.headline,
            "settings": self.settings,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Faithfulness:
        return cls(pd.DataFrame(d["table"]), pd.DataFrame(d["per_latent"]), d["settings"])


def check_faithfulness(
    mas: ModelAndSae,
    adapter: SaeLora,
    rows: list[dict],
    *,
    read: list[int],
    write: list[int],
    detector: str | Callable[[str], bool] = "french",
    reference: SaeLora | None = None,
    mode: str = "resid_add",
    max_new_tokens: int = 32,
    per_latent_prompts: int = 40,
    per_latent_tokens: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> Faithfulness:
    """The checks in the module doc on ``rows`` (``prompt``, ``in_topic``; fresh prompts).

    ``read``/``write``: the latents the card lists. ``reference``: the dense adapter the
    described one compresses (None: the adapter is the finetune itself).
    """
    gen: dict[str, Any] = {"detector": detector, "mode": mode, "max_new_tokens": max_new_tokens}
    in_rows = [r for r in rows if r.get("in_topic")]
    if not in_rows:
        raise ValueError("faithfulness needs in-topic prompts (rows with in_topic=True)")
    bar = _Steps(progress, 5 + (reference is not None) * 3 + len(read) + len(write))
    base = bar(evaluate_behaviour(mas, None, rows, **gen))

    in_samples = pd.DataFrame(base.samples[base.samples["in_topic"]]).reset_index(drop=True)
    base_in = BehaviourResult.from_samples(in_samples, base.detector)

    def run(lora: SaeLora, both: bool = False) -> BehaviourResult:
        """Off-topic prompts only where ``both``: the effect is in-topic, and the off-topic
        rate matters for the adapters themselves, not for their ablations."""
        if both:
            return bar(evaluate_behaviour(mas, lora, rows, base=base, **gen))
        return bar(evaluate_behaviour(mas, lora, in_rows, base=base_in, **gen))

    full = run(adapter, both=True)
    results = [("adapter", "described adapter", adapter, full)]
    if (read, write) != tuple(adapter.distinct_latents()):
        kept = restrict_latents(adapter, read, write)
        results.append(("sufficiency", "listed latents only", kept, run(kept)))
    gen_rng = torch.Generator().manual_seed(seed)
    ctrl = random_latents_control(restrict_latents(adapter, read, write), gen_rng)
    results.append(("random control", "same count, random latents", ctrl, run(ctrl)))
    compared = full
    if reference is not None:
        ref = run(reference, both=True)
        compared = ref
        suff = restrict_latents(reference, read, write)
        nec = restrict_latents(reference, read, write, drop=True)
        results += [
            ("reference", "dense reference", reference, ref),
            ("sufficiency (reference)", "reference, listed latents only", suff, run(suff)),
            ("necessity (reference)", "reference without listed latents", nec, run(nec)),
        ]
    table = []
    for check, what, lora, r in results:
        ratio, lo, hi = effect_retained(r.samples, compared.samples)
        nr, nw = (len(x) for x in lora.distinct_latents())
        table.append(
            {
                "check": check,
                "adapter": what,
                "read": nr,
                "write": nw,
                "in_topic": r.rate("adapter", "in_topic"),
                "off_topic": r.rate("adapter", "off_topic"),
                "effect": r.effect,
                "compared_to": "reference" if reference is not None else "adapter",
                "retained": ratio,
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    table = pd.DataFrame(table)

    # Per latent, on fewer prompts and tokens (one generation pass each).
    few = in_rows[:per_latent_prompts]
    pl_gen: dict[str, Any] = gen | {"max_new_tokens": per_latent_tokens}
    pl_base = bar(evaluate_behaviour(mas, None, few, **pl_gen))
    pl_full = evaluate_behaviour(mas, adapter, few, base=pl_base, **pl_gen)
    per = []
    for side, latents in (("read", read), ("write", write)):
        for lat in latents:
            cut = (
                restrict_latents(adapter, [lat], None, drop=True)
                if side == "read"
                else restrict_latents(adapter, None, [lat], drop=True)
            )
            r = bar(evaluate_behaviour(mas, cut, few, base=pl_base, **pl_gen))
            change = r.effect - pl_full.effect
            low, high = paired_change_interval(r.samples, pl_full.samples, seed=seed)
            per.append(
                {
                    "side": side,
                    "latent": lat,
                    "in_topic_without": r.rate("adapter", "in_topic"),
                    "effect_change": change,
                    "ci_low": low,
                    "ci_high": high,
                    "share": -change / pl_full.effect if pl_full.effect else float("nan"),
                }
            )
    bar.close()
    per_latent = pd.DataFrame(
        per,
        columns=[
            "side",
            "latent",
            "in_topic_without",
            "effect_change",
            "ci_low",
            "ci_high",
            "share",
        ],
    )
    settings = {
        "prompts_in_topic": len(in_rows),
        "prompts_off_topic": len(rows) - len(in_rows),
        "max_new_tokens": max_new_tokens,
        "per_latent_prompts": len(few),
        "per_latent_tokens": per_latent_tokens,
        "per_latent_full_effect": pl_full.effect,
        "mode": mode,
        "seed": seed,
    }
    return Faithfulness(table, per_latent, settings)


MIN_PER_LATENT_PROMPTS = 20
"""Fewer in-topic prompts than this cannot resolve one latent's part of the effect (one
answer is 5 % of the rate or more): the card then leaves the per-latent effects out."""


def paired_change_interval(
    without: pd.DataFrame, full: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95 % paired bootstrap interval of the change in the in-topic adapter rate between two
    :attr:`BehaviourResult.samples` on the same prompts (``without`` − ``full``)."""
    import numpy as np

    a = without.loc[without["in_topic"], "adapter_hit"].astype(float).to_numpy()
    b = full.loc[full["in_topic"], "adapter_hit"].astype(float).to_numpy()
    if len(a) == 0 or len(a) != len(b):
        return float("nan"), float("nan")
    d = a - b
    idx = np.random.default_rng(seed).integers(0, len(d), (n_boot, len(d)))
    lo, hi = np.quantile(d[idx].mean(1), [0.025, 0.975])
    return float(lo), float(hi)


def verdict(table: pd.DataFrame, has_ref: bool, n_read: int, n_write: int) -> tuple[bool, str]:
    """(carries, the card's first line) from a :attr:`Faithfulness.table`."""
    t = table.set_index("check")
    own = "sufficiency" if "sufficiency" in t.index else "adapter"
    keep, lo, hi = (float(t.loc[own, c]) for c in ("retained", "ci_low", "ci_high"))
    ctrl = float(t.loc["random control", "retained"])
    what = "the dense reference's" if has_ref else "the adapter's"
    carries = keep >= CARRIES_AT and not ctrl >= 0.5 * keep
    n = f"{n_read} read + {n_write} write latents listed"
    ci = f"{keep:.0%} [95 % CI {lo:.0%}, {hi:.0%}]"
    if carries:
        return True, (
            f"Faithful: the {n} carry {ci} of {what} effect "
            f"(random latents of the same count: {ctrl:.0%})."
        )
    why = (
        f"they keep only {ci} of {what} effect"
        if keep < CARRIES_AT
        else f"random latents of the same count keep {ctrl:.0%} (the listed ones {ci})"
    )
    return False, f"NOT FAITHFUL: the {n} do not carry this behaviour: {why}."


class _Steps:
    """A tqdm bar over the generation passes (disabled without ``progress``)."""

    def __init__(self, progress: bool, total: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="faithfulness", disable=not progress)

    def __call__(self, r: BehaviourResult) -> BehaviourResult:
        self.bar.update(1)
        return r

    def close(self) -> None:
        self.bar.close()
