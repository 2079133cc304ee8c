"""A peft LoRA applied to the TransformerLens model, so every measurement shares one code path.

The baseline trains on the Hugging Face model (peft needs ``nn.Linear`` layers), while
generation, the behaviour detectors and the general-text CE/KL run on the TransformerLens model.
LoRA's update is a weight delta, ``ΔW = (α / r)·B·A`` per target projection, so it can be added
to the TransformerLens copy of the same weight: :func:`peft_deltas` maps each delta onto the
TransformerLens parameter it belongs to, with the same rearrangement TransformerLens uses to
convert Gemma's weights (``transformer_lens.pretrained.weight_conversions.gemma``)::

    q_proj (n·h, m)  → blocks.l.attn.W_Q  (n, m, h)      k_proj / v_proj → attn._W_K / _W_V
    o_proj (m, n·h)  → blocks.l.attn.W_O  (n, h, m)
    gate_proj, up_proj, down_proj (out, in) → mlp.W_gate, mlp.W_in, mlp.W_out  (in, out)

:func:`patched_weights` adds them inside a ``with`` block and restores the original tensors
(copies, not a subtraction, so a bf16 model comes back bit-exact) in ``finally``. With the
patch on, the TransformerLens logits equal the peft model's (``tests/compare``).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from pathlib import Path

import einops
import torch
from torch import Tensor, nn

_NAME = re.compile(r"layers\.(\d+)\.(self_attn|mlp)\.(\w+_proj)$")


def tl_param_name(layer: int, proj: str) -> str:
    names = {
        "q_proj": "attn.W_Q",
        "k_proj": "attn._W_K",
        "v_proj": "attn._W_V",
        "o_proj": "attn.W_O",
        "gate_proj": "mlp.W_gate",
        "up_proj": "mlp.W_in",
        "down_proj": "mlp.W_out",
    }
    if proj not in names:
        raise ValueError(f"no TransformerLens weight for the projection {proj!r}")
    return f"blocks.{layer}.{names[proj]}"


def to_tl_layout(proj: str, delta: Tensor, n_heads: int, n_kv_heads: int) -> Tensor:
    """A Hugging Face ``(out, in)`` weight delta in TransformerLens's layout for ``proj``."""
    if proj == "q_proj":
        return einops.rearrange(delta, "(n h) m -> n m h", n=n_heads)
    if proj in ("k_proj", "v_proj"):
        return einops.rearrange(delta, "(n h) m -> n m h", n=n_kv_heads)
    if proj == "o_proj":
        return einops.rearrange(delta, "m (n h) -> n h m", n=n_heads)
    return delta.T


@torch.no_grad()
def peft_deltas(peft_model: nn.Module, model_cfg) -> dict[str, Tensor]:
    """Every LoRA layer's ``ΔW`` (peft's ``get_delta_weight``, scale included), keyed by the
    TransformerLens parameter it adds to, in that parameter's layout (float32, CPU)."""
    from peft.tuners.lora import LoraLayer

    n_kv = getattr(model_cfg, "n_key_value_heads", None) or model_cfg.n_heads
    out: dict[str, Tensor] = {}
    for name, mod in peft_model.named_modules():
        if not isinstance(mod, LoraLayer):
            continue
        m = _NAME.search(name)
        if m is None:
            raise ValueError(f"cannot place the LoRA layer {name!r} in the TransformerLens model")
        layer, proj = int(m.group(1)), m.group(3)
        delta = sum(mod.get_delta_weight(a) for a in mod.active_adapters)
        key = tl_param_name(layer, proj)
        out[key] = to_tl_layout(proj, delta.float().cpu(), model_cfg.n_heads, n_kv)  # type: ignore[arg-type]
    if not out:
        raise ValueError("the model holds no LoRA layer")
    return out


@contextlib.contextmanager
def patched_weights(model: nn.Module, deltas: dict[str, Tensor] | None) -> Iterator[None]:
    """Within the block, ``model``'s parameters named in ``deltas`` carry ``+ delta``; the
    originals are restored in ``finally``, even when the body raises."""
    if not deltas:
        yield
        return
    params = dict(model.named_parameters())
    missing = sorted(set(deltas) - set(params))
    if missing:
        raise ValueError(f"the model has no parameters {missing[:3]}: another architecture?")
    saved = {k: params[k].detach().clone() for k in deltas}
    try:
        with torch.no_grad():
            for k, d in deltas.items():
                p = params[k]
                if p.shape != d.shape:
                    raise ValueError(f"{k}: delta of shape {tuple(d.shape)} for {tuple(p.shape)}")
                p.add_(d.to(device=p.device, dtype=p.dtype))
        yield
    finally:
        with torch.no_grad():
            for k, v in saved.items():
                params[k].copy_(v)


def peft_deltas_from_dir(adapter_dir: str | Path, model_cfg) -> dict[str, Tensor]:
    """:func:`peft_deltas` read straight from a saved peft adapter (``adapter_config.json`` +
    ``adapter_model.safetensors``), without loading the Hugging Face model: ``ΔW = s·B·A`` with
    ``s = α / r`` (``α / √r`` with rsLoRA). DoRA and per-module rank or α patterns are refused."""
    import json

    from safetensors.torch import load_file

    d = Path(adapter_dir)
    cfg_path, w_path = d / "adapter_config.json", d / "adapter_model.safetensors"
    if not cfg_path.exists() or not w_path.exists():
        raise FileNotFoundError(f"{d} holds no peft adapter (adapter_config.json + safetensors)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("use_dora") or cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise ValueError(f"{d}: DoRA and rank/alpha patterns are not supported here")
    r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    weights = load_file(str(w_path))
    n_kv = getattr(model_cfg, "n_key_value_heads", None) or model_cfg.n_heads
    out: dict[str, Tensor] = {}
    for key, a in weights.items():
        if ".lora_A." not in key:
            continue
        b = weights[key.replace(".lora_A.", ".lora_B.")]
        m = _NAME.search(key.split(".lora_A.")[0])
        if m is None:
            raise ValueError(f"cannot place the LoRA tensor {key!r} in the TransformerLens model")
        layer, proj = int(m.group(1)), m.group(3)
        delta = (b.float() @ a.float()) * scale
        if cfg.get("fan_in_fan_out"):
            delta = delta.T
        out[tl_param_name(layer, proj)] = to_tl_layout(proj, delta, model_cfg.n_heads, n_kv)
    if not out:
        raise ValueError(f"{w_path} holds no LoRA tensors")
    return out
