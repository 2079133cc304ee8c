"""The repair objective: KL from the clean model's next-token distribution, plus MSE where the
method has it.

``KL(p_clean ‖ p) = Σ_v p_clean,v · (log p_clean,v − log p_v)``, averaged over positions.

Written as ``Σ_v p_clean,v·log p_clean,v − Σ_v p_clean,v·ℓ_v + logsumexp(ℓ)`` (ℓ the spliced
logits): the first term is a constant computed without autograd, so the backward pass touches
only ``softmax(ℓ) − p_clean``, with no 262k-wide log-softmax kept for the graph.

KL+MSE (Karvonen, arXiv 2503.17272): ``loss = 0.5 · (α·KL + MSE)`` with ``α = (MSE / KL).detach()``
recomputed every step, so the two terms weigh the same at every step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor
from torch.nn import functional as F


class RepairLoss(NamedTuple):
    loss: Tensor
    kl: Tensor
    mse: Tensor | None
    alpha: Tensor | None


@torch.no_grad()
def clean_targets(
    clean_logits: Float[Tensor, "batch pos d_vocab"],
) -> tuple[Float[Tensor, "batch pos d_vocab"], Float[Tensor, "batch pos"]]:
    """``p_clean`` and the negative entropy ``Σ p log p`` per position (fp32)."""
    logp = clean_logits.float().log_softmax(-1)
    p = logp.exp()
    return p, (p * logp).sum(-1)


def kl_from_clean(
    p_clean: Float[Tensor, "batch pos d_vocab"],
    neg_entropy: Float[Tensor, "batch pos"],
    logits: Float[Tensor, "batch pos d_vocab"],
) -> Float[Tensor, ""]:
    """Mean over positions of KL(p_clean ‖ softmax(logits))."""
    lf = logits.float()
    cross = torch.einsum("...v,...v->...", p_clean, lf)
    return (neg_entropy - cross + torch.logsumexp(lf, -1)).mean()


def repair_loss(kl: Tensor, mse: Tensor | None, use_mse: bool) -> RepairLoss:
    """KL alone, or ``0.5·(α·KL + MSE)`` with ``α = (MSE/KL).detach()``."""
    if not use_mse:
        return RepairLoss(kl, kl, mse, None)
    if mse is None:
        raise ValueError("the MSE term needs the splice's reconstruction (Splice.last_mse)")
    alpha = (mse / kl.clamp_min(1e-8)).detach()
    return RepairLoss(0.5 * (alpha * kl + mse), kl, mse, alpha)


def token_ce(
    logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos_minus_1"]:
    """Next-token cross-entropy at every position but the last (fp32)."""
    lf = logits[:, :-1].float()
    return F.cross_entropy(lf.flatten(0, 1), tokens[:, 1:].flatten(), reduction="none").view(
        tokens.shape[0], -1
    )
