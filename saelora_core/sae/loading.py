"""Loading an SAE (from a sae_lens directory or a hub release) and checking that it fits a model."""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE, HookedSAETransformer

from saelora_core.models.hub import (
    PresetUnavailableError,
    cache_only_unless_reachable,
    require_hub,
)
from saelora_core.sae.identity import sae_identity


class SaeMismatchError(ValueError):
    """The SAE does not fit the model (d_in vs d_model) or an adapter does not fit the SAE."""


# Matched from the start of the message, which begins with a newline ('.*' would not cross it).
_KWARGS_HINT = r"\s*This SAE has non-empty model_from_pretrained_kwargs"


@contextlib.contextmanager
def quiet_sae_kwargs_hint():
    """Silence, inside the block, only sae_lens's "This SAE has non-empty
    model_from_pretrained_kwargs ... For optimal performance, load the model like so" warning.

    It fires when an SAE object is built, before any model is loaded, so it cannot know how the
    model will be loaded. `load_model_and_sae` does load it the way the hint asks: with
    `from_pretrained_no_processing` and the SAE's kwargs (`sae_model_kwargs`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_KWARGS_HINT, category=UserWarning)
        yield


def sae_model_kwargs(sae: SAE) -> dict[str, Any]:
    """The SAE's `model_from_pretrained_kwargs` (how its training run loaded the model), to pass
    to `HookedSAETransformer.from_pretrained_no_processing`; device and dtype are left out (the
    caller chooses them)."""
    metadata = getattr(sae.cfg, "metadata", None)
    kwargs = dict(getattr(metadata, "model_from_pretrained_kwargs", None) or {})
    return {k: v for k, v in kwargs.items() if k not in {"device", "dtype", "n_devices"}}


def load_sae(
    *,
    path: str | Path | None = None,
    release: str | None = None,
    sae_id: str | None = None,
    device: str = "cpu",
    preset: str = "custom",
) -> tuple[SAE, dict[str, Any]]:
    """Load an SAE from a sae_lens disk directory or a (release, sae_id) pair."""
    if path is not None:
        p = Path(path)
        if not (p / "cfg.json").exists():
            raise FileNotFoundError(
                f"No SAE at {p} (expected cfg.json + sae_weights.safetensors). For the default "
                "preset, run `saelora sae train` or `make sae` to build it."
            )
        with quiet_sae_kwargs_hint():
            sae = SAE.load_from_disk(p, device=device)
        sae = sae.to(torch.float32)
        ident = sae_identity(sae, path=str(p))
        record = p / "repair.json"
        if record.exists():
            # A repaired SAE (saelora repair sae_finetune) keeps its latents' meaning: adapters
            # trained on the SAE it was finetuned from may run on it.
            with contextlib.suppress(ValueError, KeyError, TypeError):
                ident["derived_from"] = json.loads(record.read_text())["reference_sae"]["hash"]
        return sae, ident
    if release is None or sae_id is None:
        raise ValueError("Give either an SAE path or both release and sae_id.")
    try:
        with quiet_sae_kwargs_hint(), cache_only_unless_reachable():
            sae = SAE.from_pretrained(release, sae_id, device=device)
    except Exception as e:  # sae_lens raises various errors when offline
        require_hub(preset, f"the SAE {release}/{sae_id}")
        raise PresetUnavailableError(f"Could not load SAE {release}/{sae_id}: {e}") from e
    return sae, sae_identity(sae, release=release, sae_id=sae_id)


def check_fit(sae: SAE, model: HookedSAETransformer, preset: str) -> None:
    if sae.cfg.d_in != model.cfg.d_model:
        raise SaeMismatchError(
            f"SAE d_in={sae.cfg.d_in} does not match the model's d_model={model.cfg.d_model} "
            f"({preset}); pick an SAE trained on this model."
        )
