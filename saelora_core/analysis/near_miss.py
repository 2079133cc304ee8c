"""Does the adapter's trigger fire only on its topic? Its behaviour rate on the near-miss prompts.

The near-miss set (``data/heldout/near_miss.jsonl``, ``data.heldout.near_miss_prompts``) holds
questions that are not mathematics but look close to it: physics with numbers, money, cooking
quantities, sport statistics, programming loops, biographies of mathematicians, math words used
as metaphors, and non-math questions written in French or in upper case. The far off-topic fresh
prompts (travel, pets) say little about a "math" trigger; these do.

:func:`near_miss_rate` generates greedily with and without the adapter on every near-miss prompt
and scores the answers with the behaviour's detector: the adapter's rate with its 95 % Wilson
interval, the base model's rate, and the adapter's rate per category. A card flags an adapter
whose rate is above :data:`FLAG_ABOVE` in its first line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from saelora_core.adapter.sae_lora import SaeLora
from saelora_core.analysis.behaviour import evaluate_behaviour
from saelora_core.data.heldout import EVAL_NEW_TOKENS
from saelora_core.io.format import fmt_interval
from saelora_core.models.presets import ModelAndSae

FLAG_ABOVE = 0.20
"""A near-miss rate above this is flagged in the card's first line (issue 24)."""


@dataclass
class NearMissRate:
    rate: float
    low: float
    high: float
    n: int
    base_rate: float
    by_category: dict[str, float] = field(default_factory=dict)
    """The adapter's rate per category."""

    @property
    def flagged(self) -> bool:
        return self.rate > FLAG_ABOVE

    @property
    def sentence(self) -> str:
        """``Near-miss prompts: 0.05 [0.02, 0.12] (base 0.01, n = 96).``, and for a flagged
        rate a warning that names the categories where it fires most."""
        what = (
            f"{fmt_interval(self.rate, self.low, self.high)} "
            f"(base {fmt_interval(self.base_rate, None, None)}, n = {self.n})"
        )
        if not self.flagged:
            return f"Near-miss prompts: {what}."
        top = sorted(self.by_category.items(), key=lambda kv: -kv[1])[:3]
        worst = ", ".join(f"{c} {r:.2f}" for c, r in top)
        return (
            f"Fires off-topic: on near-miss prompts (not math, but close to it) its rate is "
            f"{what}, above {FLAG_ABOVE:.0%}; most on {worst}."
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NearMissRate:
        return cls(**d)


def near_miss_rate(
    mas: ModelAndSae,
    lora: SaeLora,
    rows: list[dict],
    *,
    detector: str | Callable[[str], bool],
    mode: str = "resid_add",
    max_new_tokens: int = EVAL_NEW_TOKENS,
    progress: bool = False,
) -> NearMissRate:
    """The adapter's (and the base model's) behaviour rate on near-miss ``rows`` (``prompt``,
    ``category``)."""
    if not rows:
        raise ValueError("no near-miss prompts given")
    res = evaluate_behaviour(
        mas,
        lora,
        [{"prompt": r["prompt"], "in_topic": False} for r in rows],
        detector=detector,
        mode=mode,
        max_new_tokens=max_new_tokens,
        progress=progress,
    )
    r = res.rates.set_index(["condition", "split"])
    row = r.loc[("adapter", "off_topic")]
    per_cat: dict[str, list[float]] = {}
    for x, hit in zip(rows, res.samples["adapter_hit"].tolist(), strict=True):
        per_cat.setdefault(str(x.get("category", "near_miss")), []).append(float(hit))
    return NearMissRate(
        rate=float(row["rate"]),
        low=float(row["low"]),
        high=float(row["high"]),
        n=int(row["n"]),
        base_rate=res.rate("base", "off_topic"),
        by_category={c: sum(h) / len(h) for c, h in sorted(per_cat.items())},
    )
