"""The pruning sweep: how much of an adapter's behaviour its top-k latents keep, against a
same-L0 control on random latents.

:func:`prune_variants` builds, for each k, the top-k adapter (``prune_topk``) and its
random-support control (``random_support_control``); :func:`score_variants` evaluates every
variant on the same prompts, generating the base model's answers once and sharing them. Notebook
05 and ``studies/sparsity_sweep.py`` both run it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from saelora_core.adapter.sae_lora import SaeLora
from saelora_core.adapter.sparsity import prune_topk, random_support_control
from saelora_core.analysis.behaviour import BehaviourResult, evaluate_behaviour
from saelora_core.models.presets import ModelAndSae

FULL, TOP_K, RANDOM = "full adapter", "top-k", "random control"


@dataclass(frozen=True)
class Variant:
    """One adapter of the sweep: its kind (full, top-k or control), k and weights."""

    kind: str
    k: int
    lora: SaeLora


def prune_variants(
    lora: SaeLora,
    ks: Iterable[int],
    control_generator: Callable[[int], torch.Generator],
    *,
    include_full: bool = True,
    kinds: tuple[str, str] = (TOP_K, RANDOM),
) -> list[Variant]:
    """The full adapter (k = d_sae; when ``include_full``), then for each k in increasing order
    its top-k pruning and a random control of the same L0 drawn with ``control_generator(k)``
    (return one shared generator to draw every control from a single stream)."""
    out = [Variant(FULL, lora.d_sae, lora)] if include_full else []
    for k in sorted(ks):
        out.append(Variant(kinds[0], k, prune_topk(lora, k).lora))
        out.append(Variant(kinds[1], k, random_support_control(lora, k, control_generator(k))))
    return out


def score_variants(
    mas: ModelAndSae,
    variants: Sequence[Variant],
    rows: Any,
    *,
    base: BehaviourResult | None = None,
    progress: Callable[[Sequence[Variant]], Iterable[Variant]] = iter,
    extra: Callable[[Variant, BehaviourResult], dict[str, Any]] | None = None,
    **behaviour_kw: Any,
) -> pd.DataFrame:
    """One row per variant (``kind``, ``k``, ``effect``, ``conditional_gap``, plus ``extra``'s
    columns): :func:`evaluate_behaviour` on ``rows`` with ``behaviour_kw``, the base answers
    generated once (or taken from ``base``) and shared by every variant. ``progress`` wraps the
    loop (e.g. a progress bar)."""
    table = []
    for v in progress(variants):
        res = evaluate_behaviour(mas, v.lora, rows, base=base, **behaviour_kw)
        base = base or res
        row = {"kind": v.kind, "k": v.k, "effect": res.effect}
        row["conditional_gap"] = res.conditional_gap
        table.append({**row, **(extra(v, res) if extra else {})})
    return pd.DataFrame(table)
