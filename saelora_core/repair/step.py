"""One repair step's objective on a batch of windows, whole (:func:`step_loss`) or this rank's
share of it under data parallelism (:func:`shared_step_loss`), and the curve's held-out CE.

Data parallel (``training/distributed.py``): each rank takes windows ``rank, rank + world, ...``
of the batch; its loss is scaled by its share of the batch, so the ranks' gradients sum to the
whole batch's. With KL+MSE the weight ``α = MSE / KL`` is computed from the whole batch's KL and
MSE (summed over the ranks), as one process would.
"""

from __future__ import annotations

import torch
from torch import Tensor

from saelora_core.repair.config import RepairConfig
from saelora_core.repair.methods import RepairSetup
from saelora_core.repair.objective import RepairLoss, fused_kl, repair_loss, token_ce
from saelora_core.training.distributed import all_reduce_sum, rank, world_size


def autocast(cfg: RepairConfig, device: str):
    return torch.autocast(device, dtype=torch.bfloat16, enabled=cfg.autocast_bf16)


def step_loss(setup: RepairSetup, batch: Tensor, cfg: RepairConfig) -> RepairLoss:
    """The objective on one batch of windows (``objective.RepairLoss``)."""
    spliced = setup.spliced
    with autocast(cfg, batch.device.type):
        with torch.no_grad():
            clean = spliced.logits(batch, "clean")
        logits = spliced.logits(batch, "spliced")
    kl = fused_kl(clean, logits)
    return repair_loss(kl, spliced.splice.last_mse, cfg.effective_mse)


def shared_step_loss(setup: RepairSetup, batch: Tensor, cfg: RepairConfig) -> RepairLoss:
    """:func:`step_loss` on this rank's share of ``batch``, scaled so that the ranks' losses
    (and gradients) sum to the whole batch's; with KL+MSE, ``α`` is the whole batch's. The
    returned ``kl`` and ``mse`` are this rank's parts of the whole batch's means."""
    world = world_size()
    if world == 1:
        return step_loss(setup, batch, cfg)
    mine = batch[rank() :: world]
    res = step_loss(setup, mine, cfg)
    w = len(mine) / len(batch)
    if res.alpha is None:
        return RepairLoss(res.loss * w, res.kl * w, None, None)
    assert res.mse is not None
    kl, mse = all_reduce_sum(torch.stack([res.kl.detach(), res.mse.detach()]) * w)
    alpha = mse / kl.clamp_min(1e-8)
    return RepairLoss(0.5 * (alpha * res.kl + res.mse) * w, res.kl * w, res.mse * w, alpha)


@torch.no_grad()
def curve_ce(setup: RepairSetup, windows: Tensor, batch_size: int = 4) -> float:
    """Mean next-token CE of the repaired splice on ``windows`` (fp32)."""
    total = 0.0
    for i in range(0, len(windows), batch_size):
        b = windows[i : i + batch_size]
        total += token_ce(setup.spliced.logits(b, "spliced"), b).sum().item()
    return total / (windows.shape[0] * (windows.shape[1] - 1))
