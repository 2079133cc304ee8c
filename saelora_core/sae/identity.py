"""An SAE's identity: its shape, architecture, source and a hash of its weights, stored with every
adapter so that an adapter is never loaded onto a different SAE of the same shape."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from sae_lens import SAE

from saelora_core.io.paths import repo_relative


def sae_content_hash(sae: SAE) -> str:
    """SHA-256 (first 16 hex digits) over the SAE's weights, in a stable order.

    Used to refuse an adapter trained on a different SAE with the same shapes.
    """
    h = hashlib.sha256()
    for name, tensor in sorted(sae.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to(torch.float32).cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def sae_identity(
    sae: SAE, *, release: str | None = None, sae_id: str | None = None, path: str | None = None
) -> dict[str, Any]:
    ident: dict[str, Any] = {
        "d_in": sae.cfg.d_in,
        "d_sae": sae.cfg.d_sae,
        "architecture": sae.cfg.architecture(),
        "hash": sae_content_hash(sae),
    }
    if release:
        ident.update(release=release, sae_id=sae_id)
    if path:
        ident["path"] = repo_relative(path)
    return ident
