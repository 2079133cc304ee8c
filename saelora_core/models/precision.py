"""Which dtype the frozen model runs in: the one decision, and the hardware probe behind it.

bf16 by default wherever the hardware multiplies it natively: on CUDA, and on a CPU with AMX or
AVX512-BF16 (:func:`cpu_has_native_bf16`). On a CPU without either, PyTorch emulates bf16 GEMMs,
many times slower than float32, so the frozen model stays float32 there.

The CPU default follows issue 25's rule, measured by ``bench/bf16_agreement.py`` on an AMD EPYC
(Zen 4, AVX512-BF16, 2 threads) with both demo adapters on the 80 + 80 fresh prompts
(``docs/performance.md``): every behaviour rate's 95 % interval overlaps its float32 twin
(French 0.537 → 0.525, uppercase 0.738 → 0.738 in-topic), the clean model's CE on general text
moves by 0.001 nats/token (2.9092 → 2.9103), and generation takes 2.3× less time. Greedy answers
are identical for 66 % of base answers and 55 % of adapter answers: bf16 changes which answer
is produced, not how often the behaviour shows. ``SAELORA_FROZEN_DTYPE=float32`` restores
float32.

Only the frozen model (TransformerLens and its ``transformers`` twin) takes this dtype, so every
path that runs it follows: training (the blocks below and above the hook), generation,
evaluation and activation caching. The SAE is loaded in float32; the adapter, its optimizer
state and every loss stay float32 (the hooks cast the adapter's edit to the residual's dtype;
``adapter.forward.token_ce`` computes the loss on float32 logits).

``SAELORA_FROZEN_DTYPE`` (``auto``, ``bfloat16`` or ``float32``) overrides the choice, and a
``dtype=`` given to ``load_model_and_sae`` overrides both. Measured on the tiny model
(``tests/models/test_precision.py``): bf16 logits within 0.15 of float32 (logits of std ~1), a
training step's loss within 2 % and the adapter gradient's cosine above 0.99.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

CHOICES = ("auto", "bfloat16", "float32")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX). Without either,
    PyTorch emulates bf16 GEMMs: on a 2-core AVX2-only CPU a (32 × 640) @ (640 × 32k) bf16
    matmul took 0.18 s forward and 2.4 s backward against 0.08 s and 0.05 s in float32, so
    ``adapter.forward.unembed`` computes in float32 there whatever ``logits_dtype`` asks."""
    checks = [
        getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    try:
        if any(f is not None for f in checks):
            return any(bool(f()) for f in checks if f is not None)
    except Exception:  # a private probe that moved: fall back to the CPU's flags
        pass
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False  # assume emulation: float32 is always safe
    return "avx512_bf16" in flags or "amx_bf16" in flags


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` multiplies bf16 natively (CUDA always; a CPU with AMX/AVX512-BF16)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return True
    return kind == "cpu" and cpu_has_native_bf16()


def frozen_dtype(device: str | torch.device, choice: str | None = None) -> torch.dtype:
    """The frozen model's dtype on ``device``: ``choice`` (default ``$SAELORA_FROZEN_DTYPE``,
    else ``auto``); ``auto`` is bf16 where ``device`` multiplies it natively (CUDA, a CPU with
    AMX or AVX512-BF16) and float32 elsewhere."""
    choice = choice or os.environ.get("SAELORA_FROZEN_DTYPE", "auto")
    if choice not in CHOICES:
        raise ValueError(
            f"SAELORA_FROZEN_DTYPE={choice!r} is not one of {CHOICES}; unset it for the "
            "default (bf16 where the hardware has it natively, float32 elsewhere)"
        )
    if choice == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    if choice == "bfloat16" and not native_bf16(device):
        logger.warning(
            "SAELORA_FROZEN_DTYPE=bfloat16 on %s, which has no native bf16: PyTorch emulates "
            "it, many times slower than float32",
            device,
        )
    return getattr(torch, choice)
