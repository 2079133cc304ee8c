"""The repair objective: KL from the clean model's next-token distribution, plus MSE where the
method has it.

``KL(p_clean ‖ p) = Σ_v p_clean,v · (log p_clean,v − log p_v)``, averaged over positions.

Written as ``Σ_v p_clean,v·log p_clean,v − Σ_v p_clean,v·ℓ_v + logsumexp(ℓ)`` (ℓ the spliced
logits): the first term does not depend on ℓ, and the gradient is ``softmax(ℓ) − p_clean``.
:func:`kl_from_clean` is that formula in plain torch (the reference the tests hold the fused
path to).

:func:`fused_kl` computes the same KL a block of 32 positions at a time with kernels that
``torch.compile`` fuses (one pass over each 262k-wide row instead of about ten), and its own
backward ``softmax(ℓ) − p_clean``: on the default model that is 0.4 s instead of 4 s per
512-token step (``bench/repair_throughput.py``). Small vocabularies (the tests) run the same
kernels uncompiled.

KL+MSE (Karvonen, arXiv 2503.17272): ``loss = 0.5 · (α·KL + MSE)`` with ``α = (MSE / KL).detach()``
recomputed every step, so the two terms weigh the same at every step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor
from torch.nn import functional as F

CHUNK = 32
"""Positions per fused-kernel call (fixed, so the compiled kernels are built once)."""
COMPILE_MIN_VOCAB = 32_768


def _kl_rows_kernel(clean: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
    c, lf = clean.float(), logits.float()
    logp = c - torch.logsumexp(c, -1, keepdim=True)
    lse = torch.logsumexp(lf, -1)
    return (logp.exp() * (logp - lf)).sum(-1) + lse, lse


def _kl_grad_kernel(clean: Tensor, logits: Tensor, lse: Tensor) -> Tensor:
    c = clean.float()
    p = (c - torch.logsumexp(c, -1, keepdim=True)).exp()
    return ((logits.float() - lse[:, None]).exp() - p).to(logits.dtype)


_COMPILED: dict[str, object] = {}


def _kernels(vocab: int):
    if vocab < COMPILE_MIN_VOCAB:
        return _kl_rows_kernel, _kl_grad_kernel
    if not _COMPILED:
        _COMPILED["rows"] = torch.compile(_kl_rows_kernel, dynamic=False)
        _COMPILED["grad"] = torch.compile(_kl_grad_kernel, dynamic=False)
    return _COMPILED["rows"], _COMPILED["grad"]


def _chunks(n: int):
    for i in range(0, n, CHUNK):
        yield i, min(i + CHUNK, n)


def kl_rows(
    clean_logits: Float[Tensor, "batch pos d_vocab"], logits: Float[Tensor, "batch pos d_vocab"]
) -> Float[Tensor, "batch pos"]:
    """KL(softmax(clean) ‖ softmax(logits)) per position, shape ``clean_logits.shape[:-1]``."""
    shape, v = clean_logits.shape[:-1], clean_logits.shape[-1]
    c, lf = clean_logits.reshape(-1, v), logits.reshape(-1, v)
    rows, _ = _kernels(v)
    out = torch.empty(c.shape[0], device=c.device)
    with torch.no_grad():
        for i, j in _chunks(c.shape[0]):
            k = rows if j - i == CHUNK else _kl_rows_kernel
            out[i:j] = k(c[i:j], lf[i:j])[0]  # type: ignore[operator]
    return out.view(shape)


class _FusedKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, clean: Tensor, logits: Tensor) -> Tensor:  # type: ignore[override]
        v = clean.shape[-1]
        c, lf = clean.reshape(-1, v), logits.reshape(-1, v)
        rows, _ = _kernels(v)
        total = torch.zeros((), dtype=torch.float32, device=c.device)
        lse = torch.empty(c.shape[0], device=c.device)
        for i, j in _chunks(c.shape[0]):
            k = rows if j - i == CHUNK else _kl_rows_kernel
            kl, lse[i:j] = k(c[i:j], lf[i:j])  # type: ignore[operator,misc]
            total += kl.sum()
        ctx.save_for_backward(clean, logits, lse)
        return total / c.shape[0]

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        clean, logits, lse = ctx.saved_tensors
        v = clean.shape[-1]
        c, lf = clean.reshape(-1, v), logits.reshape(-1, v)
        _, grad_k = _kernels(v)
        grad = torch.empty_like(lf)
        scale = grad_out / c.shape[0]
        for i, j in _chunks(c.shape[0]):
            k = grad_k if j - i == CHUNK else _kl_grad_kernel
            grad[i:j] = k(c[i:j], lf[i:j], lse[i:j]) * scale  # type: ignore[operator]
        return None, grad.view(logits.shape)


def fused_kl(
    clean_logits: Float[Tensor, "batch pos d_vocab"], logits: Float[Tensor, "batch pos d_vocab"]
) -> Float[Tensor, ""]:
    """Mean over positions of KL(softmax(clean) ‖ softmax(logits)); differentiable in
    ``logits`` only (the clean model is the fixed target)."""
    return _FusedKL.apply(clean_logits.detach(), logits)  # type: ignore[return-value]


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
