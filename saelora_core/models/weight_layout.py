"""Frozen TransformerLens weights stored in the memory layout its forward pass asks for.

TransformerLens 3.x computes its linear layers as ``F.linear(x, W.T.contiguous())`` (unembed and
gated MLP) or through an ``einops.rearrange`` whose result is not a view (attention Q/K/V/O),
to match Hugging Face's weight layout. With weights stored the usual way that is a full copy of
the matrix on *every* forward: on Gemma-3-270M, a 671 MB copy of ``W_U`` per decoding step, and
``aten::copy_`` took 72-78 % of generation time (``bench/generate_throughput.py`` profiles it).

The weights here are frozen, so :func:`relayout_` stores each of them once with the strides
that make those ``.contiguous()`` and ``rearrange`` calls views: same shapes, same values, same
storage size, and exactly the same numbers out (the matmul kernels see the same layout as
before, only without the copy). Nothing is patched in TransformerLens; a tensor's strides are
preserved by ``.to(device)`` and ``.to(dtype)``.
"""

from __future__ import annotations

import torch
from torch import nn

_AS_TRANSPOSED = {"Unembed": ("W_U",), "GatedMLP": ("W_gate", "W_in", "W_out")}
"""Module class name -> 2-D weights used as ``W.T.contiguous()``."""
_QKV = ("W_Q", "W_K", "W_V", "_W_K", "_W_V")
"""(head, d_model, d_head) weights rearranged to ``(head d_head) d_model``."""


def _store(p: nn.Parameter, data: torch.Tensor) -> None:
    p.data = data


@torch.no_grad()
def relayout_(model: nn.Module) -> int:
    """Give ``model``'s frozen linear weights the layout of the views TransformerLens takes of
    them (see the module doc); returns how many tensors were re-laid. Idempotent."""
    n = 0
    for mod in model.modules():
        kind = type(mod).__name__
        for name in _AS_TRANSPOSED.get(kind, ()):
            p = getattr(mod, name, None)
            if isinstance(p, nn.Parameter) and p.dim() == 2 and not p.T.is_contiguous():
                _store(p, p.data.T.contiguous().T)
                n += 1
        if "Attention" not in kind:
            continue
        for name in _QKV:
            p = mod._parameters.get(name)
            if p is not None and p.dim() == 3 and not p.transpose(1, 2).is_contiguous():
                _store(p, p.data.transpose(1, 2).contiguous().transpose(1, 2))
                n += 1
        p = mod._parameters.get("W_O")
        if p is not None and p.dim() == 3 and not p.permute(2, 0, 1).is_contiguous():
            _store(p, p.data.permute(2, 0, 1).contiguous().permute(1, 2, 0))
            n += 1
    return n


@torch.no_grad()
def standard_layout_(model: nn.Module) -> None:
    """Undo :func:`relayout_`: every parameter contiguous again (TransformerLens's own layout,
    which copies on each forward). For benchmarks and tests that compare the two."""
    for p in model.parameters():
        if not p.is_contiguous():
            _store(p, p.data.contiguous())
