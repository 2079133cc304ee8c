"""Hook functions for the two adapter modes, and a context manager that always removes them.

``resid_add`` (default)::

    z = SAE.encode(resid)                 # from the clean residual
    resid' = resid + Δz @ W_dec            # the SAE's error term is untouched

Nothing recomputes ``resid - decode(z)`` after the edit, which would cancel it. With ``s = 0``
the logits equal the base model's exactly.

``sae_replace``::

    resid' = SAE.decode(z + Δz)            # the SAE's reconstruction error is dropped

Positions: the adapter acts on every position except a leading BOS. The BOS residual in Gemma
has a norm far outside what the SAE was trained on (SAE training excludes special tokens), so
its latents are meaningless; leaving it alone also keeps ``sae_replace`` from corrupting the
attention sink every later token reads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial

import torch
from jaxtyping import Float
from sae_lens import SAE
from torch import Tensor

from saelora_core.adapter.sae_lora import SaeLora


def write_matrix(sae: SAE) -> Float[Tensor, "d_sae d_model"]:
    """The linear map from latent space to the residual used by ``SAE.decode``.

    ``decode(z) = z @ W + b_dec`` with W = W_dec, or W_dec with unit rows when the SAE was
    trained with ``rescale_acts_by_decoder_norm``.
    """
    if getattr(sae.cfg, "normalize_activations", "none") not in ("none", None):
        raise ValueError(
            f"SAE normalize_activations={sae.cfg.normalize_activations!r} is not linear in z; "
            "fold the normalization into the weights first (sae_lens does at save time)."
        )
    w = sae.W_dec
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        w = w / w.norm(dim=-1, keepdim=True)
    return w


def _skip_bos(new: Tensor, old: Tensor, skip_bos: bool) -> Tensor:
    if skip_bos and new.shape[-2] > 0:
        new = torch.cat([old[..., :1, :], new[..., 1:, :]], dim=-2)
    return new


def lora_resid_add_hook(
    resid: Float[Tensor, "batch pos d_model"],
    *,
    hook,
    sae: SAE,
    lora: SaeLora,
    skip_bos: bool = True,
) -> Float[Tensor, "batch pos d_model"]:
    """``resid + Δz @ W_dec`` with ``z = SAE.encode(resid)`` (clean residual)."""
    z = sae.encode(resid)
    new = resid + lora.delta_mapped(z, write_matrix(sae).to(z.dtype)).to(resid.dtype)
    return _skip_bos(new, resid, skip_bos)


def sae_replace_hook(
    resid: Float[Tensor, "batch pos d_model"],
    *,
    hook,
    sae: SAE,
    lora: SaeLora | None = None,
    skip_bos: bool = True,
) -> Float[Tensor, "batch pos d_model"]:
    """``SAE.decode(z + Δz)``; with no adapter, the plain SAE splice."""
    z = sae.encode(resid)
    new = sae.decode(z if lora is None else z + lora.delta(z)).to(resid.dtype)
    return _skip_bos(new, resid, skip_bos)


def resid_steer_hook(resid: Tensor, *, hook, steer, skip_bos: bool = True) -> Tensor:
    """``resid + steer.delta_resid(resid)``: a residual-space adapter (``steer.ResidSteer``,
    the dense baseline), the same at every position in either mode; it never touches the SAE."""
    return _skip_bos(resid + steer.delta_resid(resid), resid, skip_bos)


HOOKS = {"resid_add": lora_resid_add_hook, "sae_replace": sae_replace_hook}


def hook_fn(mode: str, sae: SAE, lora: SaeLora | None, skip_bos: bool = True):
    if hasattr(lora, "delta_resid"):  # duck-typed: training/steer.py imports this module
        return partial(resid_steer_hook, steer=lora, skip_bos=skip_bos)
    if mode not in HOOKS:
        raise ValueError(f"unknown hook mode {mode!r}; use one of {sorted(HOOKS)}")
    if lora is None and mode == "resid_add":
        return lambda resid, *, hook: resid
    return partial(HOOKS[mode], sae=sae, lora=lora, skip_bos=skip_bos)


@contextlib.contextmanager
def attach_lora(
    mas, lora: SaeLora | None, mode: str = "resid_add", *, skip_bos: bool = True
) -> Iterator[None]:
    """Within the block, ``mas.model(...)`` runs with the adapter at ``mas.hook_name``.

    ``lora=None`` with ``sae_replace`` splices the bare SAE (the reference for that mode). The
    hooks are removed in ``finally``, even when the body raises.
    """
    fn = hook_fn(mode, mas.sae, lora, skip_bos)
    with mas.model.hooks(fwd_hooks=[(mas.hook_name, fn)]):
        yield
