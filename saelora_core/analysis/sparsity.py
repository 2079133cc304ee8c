"""Sparsity statistics of the adapter's unit vectors, next to a random-unit-vector baseline.

For a vector ``v`` of length ``n``:

- ``l0``: exact nonzeros; ``l0@thr``: entries with ``|v| / max|v| > thr``;
- ``hoyer = (√n − ‖v‖₁/‖v‖₂) / (√n − 1)``: 0 for a flat vector, 1 for a one-hot one;
- ``gini`` of ``|v|`` (sorted ascending, ``x₁ ≤ … ≤ xₙ``): ``Σᵢ (2i − n − 1) xᵢ / (n Σᵢ xᵢ)``;
- ``top{k}_mass``: share of ``Σ v²`` held by the ``k`` largest entries.

The baseline is a Gaussian vector normalized to unit length, which is what an untrained read or
write vector looks like (see DESIGN.md: latents the data never activate keep their random init).
Its closed forms are in :func:`noise_baseline_closed_form`.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import Tensor

from saelora_core.adapter.sae_lora import SaeLora

TOPK = (1, 4, 16, 64)


def thr_name(thr: float) -> str:
    return f"l0@{thr:.0e}"


def vector_sparsity(v: Tensor, thresholds: tuple[float, ...] = (1e-3, 1e-2)) -> dict[str, float]:
    """The statistics in the module doc for one vector (any shape; flattened)."""
    x = v.detach().flatten().double().abs().cpu()
    n = x.numel()
    out: dict[str, float] = {"n": n, "l0": int((x != 0).sum())}
    xmax = float(x.max()) if n else 0.0
    for thr in thresholds:
        out[thr_name(thr)] = int((x > thr * xmax).sum()) if xmax > 0 else 0
    l1, l2 = float(x.sum()), float(x.norm())
    out["hoyer"] = ((math.sqrt(n) - l1 / l2) / (math.sqrt(n) - 1)) if l2 > 0 and n > 1 else math.nan
    if l1 > 0:
        xs = x.sort().values
        i = torch.arange(1, n + 1, dtype=torch.float64)
        out["gini"] = float(((2 * i - n - 1) * xs).sum() / (n * l1))
    else:
        out["gini"] = math.nan
    sq = (x**2).sort(descending=True).values
    tot = float(sq.sum())
    for k in TOPK:
        out[f"top{k}_mass"] = float(sq[:k].sum()) / tot if tot > 0 else math.nan
    return out


def noise_baseline_closed_form(d: int) -> dict[str, float]:
    """Expected statistics of a Gaussian vector normalized to unit length, dimension ``d``.

    - ``l0 = d`` (no entry is exactly zero);
    - ``l1 = E‖v‖₁ ≈ √(2d/π)`` (each |gᵢ| has mean √(2/π) and ‖g‖₂ ≈ √d);
    - ``hoyer ≈ (√d − √(2d/π)) / (√d − 1)``;
    - ``gini = √2 − 1 ≈ 0.4142``, the Gini coefficient of the half-normal distribution
      (normalization does not change a Gini coefficient).
    """
    l1 = math.sqrt(2 * d / math.pi)
    return {
        "n": d,
        "l0": d,
        "l1": l1,
        "hoyer": (math.sqrt(d) - l1) / (math.sqrt(d) - 1),
        "gini": math.sqrt(2) - 1,
    }


def random_unit_vectors(n: int, d: int, seed: int = 0) -> Tensor:
    """``n`` Gaussian vectors of length ``d``, each normalized to unit L2 norm (seeded)."""
    g = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return g / g.norm(dim=1, keepdim=True)


def _unit_vectors(lora: SaeLora) -> list[tuple[int, str, Tensor]]:
    a, b = lora.read_dirs().detach(), lora.write_dirs().detach()
    return [
        (j, side, v) for j in range(lora.rank) for side, v in (("read", a[:, j]), ("write", b[j]))
    ]


def adapter_sparsity(
    lora: SaeLora,
    *,
    thresholds: tuple[float, ...] = (1e-3, 1e-2),
    noise_baseline: bool = True,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (component, side) of the adapter's unit vectors, plus (with
    ``noise_baseline``) one matching row per vector computed on a random unit vector of the same
    length: ``side = "noise"``, ``baseline_for`` = the side it matches.

    Columns: component, side, kind ("adapter"/"noise"), baseline_for, n, l0, l0@..., hoyer,
    gini, top{1,4,16,64}_mass.
    """
    vecs = _unit_vectors(lora)
    rows = [
        {
            "component": j,
            "side": side,
            "kind": "adapter",
            "baseline_for": "",
            **vector_sparsity(v, thresholds),
        }
        for j, side, v in vecs
    ]
    if noise_baseline:
        noise = random_unit_vectors(len(vecs), lora.d_sae, seed)
        rows += [
            {
                "component": j,
                "side": "noise",
                "kind": "noise",
                "baseline_for": side,
                **vector_sparsity(noise[i], thresholds),
            }
            for i, (j, side, _) in enumerate(vecs)
        ]
    return pd.DataFrame(rows)


def sorted_weight_curves(lora: SaeLora, *, noise: bool = True, seed: int = 0) -> pd.DataFrame:
    """|weights| of each unit vector sorted in decreasing order, long format: component, side
    ("read"/"write"/"noise"), rank, abs_weight. One noise curve per component (a random unit
    vector of length d_sae), the reference an unsparse vector would follow."""
    frames = []
    curves = [(j, side, v) for j, side, v in _unit_vectors(lora)]
    if noise:
        nz = random_unit_vectors(lora.rank, lora.d_sae, seed)
        curves += [(j, "noise", nz[j]) for j in range(lora.rank)]
    for j, side, v in curves:
        w = v.detach().abs().double().sort(descending=True).values.cpu().numpy()
        frames.append(
            pd.DataFrame({"component": j, "side": side, "rank": range(len(w)), "abs_weight": w})
        )
    return pd.concat(frames, ignore_index=True)
