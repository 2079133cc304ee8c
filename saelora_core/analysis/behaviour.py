"""Does the adapter produce the behaviour, and only on in-topic prompts?

Greedy answers with and without the adapter are scored by a detector (e.g. "is this French?");
the rates on in-topic and off-topic eval prompts give the effect and how conditional it is:

    effect          = rate(adapter, in_topic) − rate(base, in_topic)
    conditional_gap = rate(adapter, in_topic) − rate(adapter, off_topic)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from saelora_core.adapter.generate import GENERATE_BATCH, generate
from saelora_core.adapter.sae_lora import SaeLora
from saelora_core.analysis.activations import dataset_rows
from saelora_core.models.presets import ModelAndSae


def detect_french(text: str) -> bool:
    """True when py3langid classifies ``text`` as French (empty text: False)."""
    if not text or not text.strip():
        return False
    import py3langid

    return py3langid.classify(text)[0] == "fr"


def detect_uppercase(text: str) -> bool:
    """True when more than half of the letters are upper case (no letters: False)."""
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(c.isupper() for c in letters) / len(letters) > 0.5


DETECTORS: dict[str, Callable[[str], bool]] = {
    "french": detect_french,
    "uppercase": detect_uppercase,
}


def detector_for(guideline: str) -> str | None:
    """The detector whose name the guideline mentions ("respond in French" → "french")."""
    found = [d for d in DETECTORS if d in (guideline or "").lower()]
    return found[0] if found else None


def behaviour_metadata(dataset_dir: str | Path) -> dict[str, Any]:
    """What an adapter trained on ``dataset_dir`` records (``adapter.saving.BEHAVIOUR_KEYS``):
    the dataset directory, its manifest's guideline, and the detector that guideline names
    (left out when it names none)."""
    from saelora_core.data.store import MANIFEST, load_manifest

    out: dict[str, Any] = {"dataset": str(dataset_dir)}
    if (Path(dataset_dir) / MANIFEST).exists():
        guideline = load_manifest(dataset_dir).get("guideline") or ""
        if guideline:
            out["guideline"] = guideline
        if det := detector_for(guideline):
            out["detector"] = det
    return out


@dataclass
class BehaviourResult:
    rates: pd.DataFrame
    """condition ("base"/"adapter"), split ("in_topic"/"off_topic"), rate, n, and the rate's
    95 % Wilson interval (low, high)."""
    samples: pd.DataFrame
    """prompt, in_topic, base, adapter, base_hit, adapter_hit."""
    detector: str = "french"

    def rate(self, condition: str, split: str) -> float:
        r = self.rates[(self.rates["condition"] == condition) & (self.rates["split"] == split)]
        return float(r["rate"].iloc[0]) if len(r) else math.nan

    @classmethod
    def from_samples(cls, samples: pd.DataFrame, detector: str = "french") -> BehaviourResult:
        """The result whose answers are ``samples`` (e.g. read back from a CSV): the rates and
        their intervals are recomputed from the hit columns."""
        rates = []
        for cond in ("base", "adapter"):
            for split, want in (("in_topic", True), ("off_topic", False)):
                hits = samples.loc[samples["in_topic"].astype(bool) == want, f"{cond}_hit"]
                low, high = wilson_interval(int(hits.sum()), len(hits))
                rates.append(
                    {
                        "condition": cond,
                        "split": split,
                        "rate": float(hits.mean()) if len(hits) else math.nan,
                        "n": int(len(hits)),
                        "low": low,
                        "high": high,
                    }
                )
        return cls(pd.DataFrame(rates), samples, detector)

    @property
    def effect(self) -> float:
        """Adapter in-topic rate − base in-topic rate."""
        return self.rate("adapter", "in_topic") - self.rate("base", "in_topic")

    @property
    def conditional_gap(self) -> float:
        """Adapter in-topic rate − adapter off-topic rate."""
        return self.rate("adapter", "in_topic") - self.rate("adapter", "off_topic")


def detector_fn(detector: str | Callable[[str], bool]) -> tuple[str, Callable[[str], bool]]:
    """The name and function of a detector given by name (``DETECTORS``) or as a callable."""
    if callable(detector):
        return getattr(detector, "__name__", "custom"), detector
    if detector not in DETECTORS:
        raise ValueError(
            f"unknown detector {detector!r}; use one of {sorted(DETECTORS)} or a "
            "callable str -> bool"
        )
    return detector, DETECTORS[detector]


def evaluate_behaviour(
    mas: ModelAndSae,
    lora: SaeLora | None,
    eval_rows: Any,
    *,
    detector: str | Callable[[str], bool] = "french",
    mode: str = "resid_add",
    max_new_tokens: int = 48,
    max_prompts: int | None = None,
    batch_size: int = GENERATE_BATCH,
    base: BehaviourResult | None = None,
    progress: bool = False,
    backend: str = "tl",
) -> BehaviourResult:
    """Generate greedily for each eval prompt without the adapter (base: ``lora=None``, the plain
    model) and with it (in ``mode``), and score both answers with ``detector``.

    ``eval_rows``: a list of dicts, a Dataset or a DatasetDict (its "eval" split, else "train")
    with ``prompt`` and ``in_topic``. ``max_prompts`` keeps the first rows. ``base``: an earlier
    result on the same rows whose base answers are reused (e.g. across a pruning sweep), so
    only the adapter's answers are generated. ``backend``: the generation backend
    (``adapter.generate.BACKENDS``).
    """
    name, fn = detector_fn(detector)
    rows = [
        r
        for r in dataset_rows(eval_rows)
        if isinstance(r.get("prompt"), str) and r["prompt"].strip()
    ]
    if max_prompts is not None:
        rows = rows[:max_prompts]
    prompts = [r["prompt"] for r in rows]
    if base is not None and base.samples["prompt"].tolist() != prompts:
        raise ValueError("base= holds answers to different prompts; pass the same eval rows")
    gen = {
        "base": base.samples["base"].tolist()
        if base is not None
        else generate(
            mas,
            prompts,
            None,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            progress=progress and "generate (base)",
            backend=backend,
        ),
    }
    # lora=None: the "adapter" answers are the base model's own, not generated a second time.
    gen["adapter"] = (
        gen["base"]
        if lora is None
        else generate(
            mas,
            prompts,
            lora,
            mode=mode,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            progress=progress and "generate (adapter)",
            backend=backend,
        )
    )
    samples = pd.DataFrame(
        {
            "prompt": prompts,
            "in_topic": [bool(r.get("in_topic")) for r in rows],
            "base": gen["base"],
            "adapter": gen["adapter"],
            "base_hit": [bool(fn(t)) for t in gen["base"]],
            "adapter_hit": [bool(fn(t)) for t in gen["adapter"]],
        }
    )
    return BehaviourResult.from_samples(samples, name)


def wilson_interval(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a rate ``hits / n`` (95 % by default; nan when n = 0)."""
    if n == 0:
        return math.nan, math.nan
    p = hits / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, mid - half), min(1.0, mid + half)


def effect_retained(
    samples: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """The effect in ``samples`` over the effect in ``reference`` (two
    :attr:`BehaviourResult.samples` on the same prompts, e.g. a sparse student and its teacher),
    with a paired bootstrap interval over the in-topic prompts: (ratio, low, high).

    Resamples whose reference effect is 0 are dropped; the interval is nan if all are.
    """
    s, r = samples[samples["in_topic"]], reference[reference["in_topic"]]
    if s["prompt"].tolist() != r["prompt"].tolist():
        raise ValueError("samples and reference answer different in-topic prompts")
    num = (s["adapter_hit"].astype(float) - s["base_hit"].astype(float)).to_numpy()
    den = (r["adapter_hit"].astype(float) - r["base_hit"].astype(float)).to_numpy()
    ratio = num.mean() / den.mean() if den.mean() else math.nan
    idx = np.random.default_rng(seed).integers(0, len(num), (n_boot, len(num)))
    d = den[idx].mean(1)
    boots = num[idx].mean(1)[d != 0] / d[d != 0]
    if not len(boots):
        return ratio, math.nan, math.nan
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return ratio, float(lo), float(hi)


@dataclass
class ResponseCe:
    """Held-out CE (nats/token) on the target responses, without and with the adapter."""

    table: pd.DataFrame
    """split ("in_topic"/"off_topic"), base_ce, adapter_ce, n_rows."""

    def gain(self, split: str = "in_topic") -> float:
        """base_ce − adapter_ce on ``split``: how much likelier the adapter makes the target."""
        r = self.table.set_index("split").loc[split]
        return float(r["base_ce"] - r["adapter_ce"])


def response_ce(
    mas: ModelAndSae,
    lora: SaeLora,
    eval_rows: Any,
    *,
    mode: str = "resid_add",
    max_len: int = 256,
    logits_dtype: str = "float32",
    base: ResponseCe | None = None,
    response_tokens: int | None = None,
) -> ResponseCe:
    """A continuous behaviour measure, no generation needed: the token-weighted CE of each eval
    row's *target* response (for in-topic rows, the rewritten one) under the base model and with
    the adapter. ``gain("in_topic")`` > 0 means the adapter moved the model toward the
    behaviour; ``gain("off_topic")`` well below 0 means it damages unrelated answers.

    It is ~10x cheaper than :func:`evaluate_behaviour` and never saturates at a rate of 0, so it
    measures progress (and what pruning keeps) before greedy answers flip. ``base``: an earlier
    result on the same rows whose base CE is reused. ``response_tokens``: score only the first
    that many tokens of each target (e.g. as many as the greedy evaluation generates).
    """
    from saelora_core.adapter.batch import tokenize_rows
    from saelora_core.adapter.forward import evaluate_ce

    rows = dataset_rows(eval_rows)
    out = []
    for split, want in (("in_topic", True), ("off_topic", False)):
        exs, _ = tokenize_rows(
            mas, [r for r in rows if bool(r.get("in_topic")) == want], max_len, response_tokens
        )
        if not exs:
            continue
        out.append(
            {
                "split": split,
                "base_ce": float(base.table.set_index("split").loc[split, "base_ce"])
                if base is not None
                else evaluate_ce(mas, None, exs, mode, True, logits_dtype),
                "adapter_ce": evaluate_ce(mas, lora, exs, mode, True, logits_dtype),
                "n_rows": len(exs),
            }
        )
    return ResponseCe(pd.DataFrame(out))
