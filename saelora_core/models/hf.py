"""A preset as a Hugging Face ``transformers`` causal LM (the model peft wraps) and its tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch

from saelora_core.models.gguf import gemma3_270m_cached_dir
from saelora_core.models.hub import PresetUnavailableError, freeze, require_hub
from saelora_core.models.presets import PRESETS


def hf_source(preset: str) -> str | Path:
    """Where ``transformers`` loads the preset from: the local dequantized cache for the default,
    else the hub name (``google/`` prefixed when the preset names no organisation)."""
    base = PRESETS.get(preset)
    if base is not None and base.loader == "gguf":
        return gemma3_270m_cached_dir()
    name = base.model_name if base else preset
    return name if "/" in name else f"google/{name}"


def load_hf_causal_lm(
    preset: str = "gemma-3-270m", *, device: str = "cpu", dtype: torch.dtype = torch.float32
):
    """The preset's model as a frozen Hugging Face ``transformers`` causal LM, plus its tokenizer.

    The default preset reads the same cached dequantized weights as :func:`load_gemma3_270m_offline`,
    so the HF and the TransformerLens model compute the same function (``tests/repair/test_repair.py``
    checks the spliced CE). This is the model peft wraps: TransformerLens has no ``nn.Linear``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = hf_source(preset)
    try:
        tok = AutoTokenizer.from_pretrained(src)
        hf = AutoModelForCausalLM.from_pretrained(src, dtype=dtype)
        hf = hf.to(device)  # type: ignore[arg-type]
    except OSError as e:
        require_hub(preset, f"the model weights {src!r}")
        raise PresetUnavailableError(f"Could not load model {src!r}: {e}") from e
    freeze(hf)
    return hf, tok


def preset_tokenizer(preset: str = "gemma-3-270m"):
    """The preset's tokenizer alone (no weights loaded beyond a first-use dequantization)."""
    from transformers import AutoTokenizer

    src = hf_source(preset)
    try:
        return AutoTokenizer.from_pretrained(src)
    except OSError as e:
        require_hub(preset, f"the tokenizer of {str(src)!r}")
        raise PresetUnavailableError(f"Could not load the tokenizer of {str(src)!r}: {e}") from e
