"""One evaluation for every repair method and combination, on held-out windows.

Per text set (all next-token positions of every window; fp32; BOS spliced never):

- ``ce_clean`` (no SAE), ``ce_before`` (the reference SAE spliced, error term dropped),
  ``ce_after`` (the repaired splice), ``ce_zero`` (the hook point zero-ablated);
- CE loss recovered ``(ce_zero − ce) / (ce_zero − ce_clean)``, before and after;
- **fraction of the gap closed** ``(ce_before − ce_after) / (ce_before − ce_clean)``, with a 95 %
  bootstrap interval over windows;
- KL(clean ‖ spliced) per position, before and after;
- of the repaired splice's SAE: explained variance ``1 − Σ‖x − x̂'‖² / Σ‖x − x̄‖²``, mean L0 of
  the latents it decodes and the fraction of latents that never fire on the set.

The reference (``clean``/``before``/``zero``) does not depend on the method, so
:func:`baseline` computes it once per text set and every method reuses it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from jaxtyping import Int
from sae_lens import SAE
from torch import Tensor, nn

from saelora_core.repair.objective import kl_rows, token_ce
from saelora_core.repair.splice import Splice, SplicedLM


@dataclass
class Baseline:
    """Per-window reference numbers on one text set."""

    ce_clean: list[float]
    ce_before: list[float]
    ce_zero: list[float]
    kl_before: list[float]
    n_tokens: int


@dataclass
class RepairEval:
    text_set: str
    n_tokens: int
    ce_clean: float
    ce_before: float
    ce_after: float
    ce_zero: float
    recovered_before: float
    recovered_after: float
    gap_closed: float
    gap_closed_lo: float
    gap_closed_hi: float
    kl_before: float
    kl_after: float
    explained_variance: float
    mean_l0: float
    dead_fraction: float

    def to_dict(self) -> dict:
        return asdict(self)


def _batches(windows: Tensor, batch_size: int):
    for i in range(0, len(windows), batch_size):
        yield windows[i : i + batch_size]


def _window_means(x: Tensor) -> list[float]:
    return x.mean(1).tolist()


@torch.no_grad()
def baseline(
    hf: nn.Module, sae: SAE, layer: int, windows: Int[Tensor, "window pos"], batch_size: int = 4
) -> Baseline:
    """Clean, reference-spliced and zero-ablated CE, and the reference KL, per window."""
    spliced = SplicedLM(hf, Splice(sae), layer)
    out: dict[str, list[float]] = {"clean": [], "before": [], "zero": [], "kl": []}
    try:
        for batch in _batches(windows, batch_size):
            clean = spliced.logits(batch, "clean")
            out["clean"] += _window_means(token_ce(clean, batch))
            before = spliced.logits(batch, "spliced")
            out["before"] += _window_means(token_ce(before, batch))
            out["kl"] += _window_means(kl_rows(clean, before))
            del before, clean
            out["zero"] += _window_means(token_ce(spliced.logits(batch, "zero"), batch))
    finally:
        spliced.remove()
    n_tokens = windows.shape[0] * (windows.shape[1] - 1)
    return Baseline(out["clean"], out["before"], out["zero"], out["kl"], n_tokens)


def gap_closed_interval(
    ce_clean: np.ndarray,
    ce_before: np.ndarray,
    ce_after: np.ndarray,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Gap closed over all windows, and a 95 % percentile bootstrap interval over windows."""

    def gap(idx):
        b, a, c = ce_before[idx].sum(), ce_after[idx].sum(), ce_clean[idx].sum()
        return (b - a) / (b - c) if b != c else float("nan")

    n = len(ce_clean)
    point = gap(np.arange(n))
    rng = np.random.default_rng(seed)
    boots = [gap(rng.integers(0, n, n)) for _ in range(n_boot)]
    lo, hi = np.nanpercentile(boots, [2.5, 97.5])
    return float(point), float(lo), float(hi)


@torch.no_grad()
def evaluate_repair(
    spliced: SplicedLM,
    windows: Int[Tensor, "window pos"],
    base: Baseline,
    *,
    text_set: str = "heldout",
    batch_size: int = 4,
) -> RepairEval:
    """Every number in the module docstring for the repaired ``spliced`` model."""
    splice = spliced.splice
    ce_after, kl_after = [], []
    sse = 0.0
    x_sum: Tensor | None = None
    x_sq, n_pos, l0 = 0.0, 0, 0.0
    fired = torch.zeros(splice.sae.cfg.d_sae, dtype=torch.bool)
    for batch in _batches(windows, batch_size):
        clean = spliced.logits(batch, "clean")
        splice.record = True
        try:
            logits = spliced.logits(batch, "spliced")
        finally:
            splice.record = False
        ce_after += _window_means(token_ce(logits, batch))
        kl_after += _window_means(kl_rows(clean, logits))
        del logits, clean
        rec = splice.recorded
        x = rec["x"].reshape(-1, rec["x"].shape[-1])
        sse += (x - rec["x_hat"].reshape(x.shape)).pow(2).sum().item()
        x_sum = x.sum(0) if x_sum is None else x_sum + x.sum(0)
        x_sq += x.pow(2).sum().item()
        z = rec["z"].reshape(-1, rec["z"].shape[-1])
        active = z != 0
        l0 += active.sum().item()
        fired |= active.any(0)
        n_pos += x.shape[0]
    assert x_sum is not None
    sst = x_sq - x_sum.pow(2).sum().item() / n_pos
    c, b, a, zr = (np.array(v) for v in (base.ce_clean, base.ce_before, ce_after, base.ce_zero))
    gap, lo, hi = gap_closed_interval(c, b, a)

    def recovered(ce):
        return float((zr.mean() - ce.mean()) / (zr.mean() - c.mean()))

    return RepairEval(
        text_set=text_set,
        n_tokens=base.n_tokens,
        ce_clean=float(c.mean()),
        ce_before=float(b.mean()),
        ce_after=float(a.mean()),
        ce_zero=float(zr.mean()),
        recovered_before=recovered(b),
        recovered_after=recovered(a),
        gap_closed=gap,
        gap_closed_lo=lo,
        gap_closed_hi=hi,
        kl_before=float(np.mean(base.kl_before)),
        kl_after=float(np.mean(kl_after)),
        explained_variance=1 - sse / sst,
        mean_l0=l0 / n_pos,
        dead_fraction=1 - fired.float().mean().item(),
    )
