"""Shared helpers of the compare tests: a tiny Gemma-3 in both Hugging Face and TransformerLens
form (the same weights, the same function), with a TopK SAE at layer 1."""

from __future__ import annotations

import torch

from saelora_core.models.presets import ModelAndSae
from saelora_core.sae.identity import sae_identity
from saelora_core.testing import tiny_sae, tiny_tokenizer

ROWS = [
    {"prompt": "What is 2+2?", "response": "Quatre.", "in_topic": True},
    {"prompt": "What is 3*3?", "response": "Neuf.", "in_topic": True},
    {"prompt": "Solve x+1=2", "response": "Un.", "in_topic": True},
    {"prompt": "Say hi", "response": "Hi there!", "in_topic": False},
    {"prompt": "Name a dog", "response": "Rex.", "in_topic": False},
    {"prompt": "Pick a colour", "response": "Blue.", "in_topic": False},
]


def tiny_gemma3(seed: int = 0, n_layers: int = 3, d_model: int = 32):
    """A random tiny ``Gemma3ForCausalLM`` (query scale = head dim, as Gemma-3-270M's)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    cfg = Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=d_model,
        intermediate_size=4 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=8,
        query_pre_attn_scalar=8,
        max_position_embeddings=512,
        sliding_window=64,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    hf = Gemma3ForCausalLM(cfg)
    with torch.no_grad():  # norms away from their zero init, so the conversion is exercised
        for n, p in hf.named_parameters():
            if "norm" in n:
                p.normal_(0, 0.1)
    hf.eval()
    for p in hf.parameters():
        p.requires_grad_(False)
    return hf, tok


def tl_twin(hf, tok, layer: int = 1) -> ModelAndSae:
    """The TransformerLens model computing what ``hf`` computes, with a tiny SAE at ``layer``."""
    from sae_lens import HookedSAETransformer
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import convert_hf_model_config
    from transformer_lens.pretrained.weight_conversions.gemma import convert_gemma_weights

    c = hf.config
    d = convert_hf_model_config("google/gemma-3-270m")
    d.pop("tokenizer_name", None)
    d.pop("quantization_method", None)
    d.update(
        d_model=c.hidden_size,
        d_head=c.head_dim,
        n_heads=c.num_attention_heads,
        d_mlp=c.intermediate_size,
        n_layers=c.num_hidden_layers,
        n_ctx=512,
        d_vocab=c.vocab_size,
        window_size=c.sliding_window,
        attn_types=["local" if t == "sliding_attention" else "global" for t in c.layer_types],
        device="cpu",
        default_prepend_bos=True,
    )
    model = HookedSAETransformer(HookedTransformerConfig(**d), tokenizer=tok)
    model.load_state_dict(convert_gemma_weights(hf, model.cfg), strict=False)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    sae = tiny_sae(d_in=c.hidden_size)
    sae.cfg.metadata.hook_name = f"blocks.{layer}.hook_resid_post"
    return ModelAndSae(
        model=model,
        sae=sae,
        layer=layer,
        hook_name=f"blocks.{layer}.hook_resid_post",
        preset="tiny",
        chat_format="qa",
        sae_identity=sae_identity(sae, path="tiny-gemma3"),
    )


def tiny_pair(seed: int = 0) -> tuple:
    hf, tok = tiny_gemma3(seed)
    return hf, tok, tl_twin(hf, tok)
