"""Saving and loading adapters: ``<dir>/params.pt`` (plain tensors) + ``<dir>/metadata.json``.

Every write goes to a temporary file in the same directory and is renamed into place, so a run
killed mid-write leaves the previous checkpoint intact. ``params.pt`` is read with
``weights_only=True``. The metadata never holds a secret: only the fields listed in
:func:`build_metadata` are written.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from saelora_core.adapter.sae_lora import SaeLora
from saelora_core.io.atomic import atomic_torch_save, atomic_write_json

VERSION = "0.1.0"
logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupted, or does not fit the SAE it is loaded onto."""


@dataclass
class LoadedLora:
    lora: SaeLora
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def missing_behaviour(self) -> list[str]:
        """The behaviour fields (dataset, guideline, detector) its metadata lacks."""
        return missing_behaviour(self.metadata)


BEHAVIOUR_KEYS = ("dataset", "guideline", "detector")
"""What an adapter was trained to do: its dataset directory, the dataset's guideline (e.g.
"respond in French") and the behaviour detector that scores it (``analysis.DETECTORS``). The
notebooks take texts and eval prompts from the dataset; the card and the playground measure
the rate with the detector."""


def missing_behaviour(meta: dict[str, Any]) -> list[str]:
    """The :data:`BEHAVIOUR_KEYS` that ``meta`` lacks (none for an SAE-repair adapter, which is
    trained on general text and has no behaviour)."""
    if meta.get("repair"):
        return []
    return [k for k in BEHAVIOUR_KEYS if not meta.get(k)]


def behaviour_of(lora_dir: str | Path) -> dict[str, Any]:
    """The :data:`BEHAVIOUR_KEYS` recorded in ``lora_dir``'s metadata (those it has)."""
    try:
        meta = json.loads((Path(lora_dir) / "metadata.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {k: meta[k] for k in BEHAVIOUR_KEYS if meta.get(k)}


def build_metadata(
    lora: SaeLora,
    *,
    config: dict,
    preset: str,
    sae_identity: dict,
    layer: int,
    mode: str,
    history: list | None = None,
    extra: dict | None = None,
    created: str | None = None,
) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return {
        "library": "saelora_core",
        "version": VERSION,
        "created": created or now,
        "updated": now,
        "preset": preset,
        "sae": sae_identity,
        "d_sae": lora.d_sae,
        "rank": lora.rank,
        "layer": layer,
        "hook_name": f"blocks.{layer}.hook_resid_post",
        "mode": mode,
        "config": config,
        "history": history or [],
        "l0": dict(zip(("read", "write"), lora.l0(), strict=True)),
        **(extra or {}),
    }


def save_lora(lora: SaeLora, out_dir: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``params.pt`` then ``metadata.json`` (each atomically)."""
    out = Path(out_dir)
    params = {k: v.detach().cpu().clone() for k, v in lora.state_dict().items()}
    atomic_torch_save(params, out / "params.pt")
    atomic_write_json(out / "metadata.json", metadata)
    return out


def load_lora(lora_dir: str | Path, *, sae_identity: dict | None = None) -> LoadedLora:
    """Load an adapter; with ``sae_identity``, refuse one trained on a different SAE (one the
    loaded SAE was finetuned from, its ``derived_from`` hash, is accepted: same latents)."""
    d = Path(lora_dir)
    if not (d / "params.pt").exists():
        raise CheckpointError(f"{d} has no params.pt; is this an adapter directory (loras/<name>)?")
    try:
        meta = json.loads((d / "metadata.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{d / 'metadata.json'} is missing or not valid JSON: {e}") from e
    try:
        params = torch.load(d / "params.pt", map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{d / 'params.pt'} is corrupted or not a saelora params file ({e}); "
            "re-train or restore it from a backup."
        ) from e
    if not isinstance(params, dict) or not {"a", "b", "s"} <= set(params):
        raise CheckpointError(f"{d / 'params.pt'} does not hold the tensors a, b, s")
    d_sae, rank = params["a"].shape
    if sae_identity is not None:
        want_d, want_h = sae_identity.get("d_sae"), sae_identity.get("hash")
        got_h = meta.get("sae", {}).get("hash")
        if want_d is not None and want_d != d_sae:
            raise CheckpointError(
                f"adapter {d} has d_sae={d_sae} but the loaded SAE has "
                f"d_sae={want_d}: it was trained on a different SAE "
                f"({meta.get('sae')})."
            )
        if want_h and got_h and want_h != got_h and got_h != sae_identity.get("derived_from"):
            raise CheckpointError(
                f"adapter {d} was trained on SAE hash {got_h} "
                f"({meta.get('sae', {}).get('path') or meta.get('sae', {}).get('release')}), "
                f"but the loaded SAE has hash {want_h}; load the matching SAE."
            )
    lora = SaeLora(d_sae, rank)
    lora.load_state_dict(params)
    loaded = LoadedLora(lora, meta)
    if loaded.missing_behaviour:
        logger.warning(
            "adapter %s records no %s in its metadata.json: analyses cannot tell which texts "
            "and detector belong to it; add them (see adapter.saving.BEHAVIOUR_KEYS)",
            d,
            ", ".join(loaded.missing_behaviour),
        )
    return loaded
