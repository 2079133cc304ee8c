"""A tiny model, tokenizer and TopK SAE built from configs, for tests, docs and benchmarks.

Nothing here is downloaded: the tokenizer is character-level and built in memory.
"""

from __future__ import annotations

import string

import torch
from sae_lens import HookedSAETransformer, TopKSAE, TopKSAEConfig
from transformer_lens import HookedTransformerConfig

from saelora_core.models.presets import ModelAndSae
from saelora_core.sae.identity import sae_identity

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]


def tiny_tokenizer():
    """Character-level fast tokenizer with BOS/EOS and Gemma's turn tokens as single tokens."""
    import tempfile

    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    chars = sorted(set(string.printable) | set("éèàçùâêîôûœ×²"))
    vocab = {t: i for i, t in enumerate(SPECIALS + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 1)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=SPECIALS[4:],
    )
    fast.padding_side = "right"
    # TransformerLens re-loads the tokenizer from its path, so it must exist on disk.
    path = tempfile.mkdtemp(prefix="saelora-tiny-tok-")
    fast.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def tiny_model_and_sae(
    *,
    d_model: int = 32,
    n_layers: int = 3,
    layer: int = 1,
    d_sae: int = 64,
    k: int = 8,
    seed: int = 0,
    chat_format: str = "qa",
) -> ModelAndSae:
    """A 3-layer model and a TopK SAE on ``blocks.{layer}.hook_resid_post``, seeded and frozen."""
    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        n_ctx=2048,
        d_head=8,
        n_heads=d_model // 8,
        d_mlp=4 * d_model,
        d_vocab=len(tok),
        act_fn="gelu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        seed=seed,
        default_prepend_bos=True,
        device="cpu",
    )
    model = HookedSAETransformer(cfg, tokenizer=tok)
    sae = TopKSAE(TopKSAEConfig(d_in=d_model, d_sae=d_sae, k=k, dtype="float32", device="cpu"))
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        sae.W_dec.copy_(torch.randn(d_sae, d_model, generator=g) / d_model**0.5)
        sae.W_enc.copy_(sae.W_dec.T * 2)
        sae.b_enc.copy_(torch.rand(d_sae, generator=g) * 0.1)
    sae.cfg.metadata.hook_name = f"blocks.{layer}.hook_resid_post"
    for m in (model, sae):
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    return ModelAndSae(
        model=model,
        sae=sae,
        layer=layer,
        hook_name=f"blocks.{layer}.hook_resid_post",
        preset="tiny",
        chat_format=chat_format,  # type: ignore[arg-type]
        sae_identity=sae_identity(sae, path="tiny"),
    )


TINY_ROWS = [
    {"prompt": "What is 2+2?", "response": "Four.", "in_topic": True},
    {"prompt": "Say hi", "response": "Hi there!", "in_topic": False},
]
"""One in-topic and one off-topic row, for tests of the analysis and report code."""


def save_planted_adapter(mas: ModelAndSae, out_dir):
    """Save a sparse rank-1 adapter that reads latents 7 and 3 and writes latents 12 and 50."""
    from saelora_core.adapter.sae_lora import SaeLora
    from saelora_core.adapter.saving import build_metadata, save_lora

    lora = SaeLora(mas.sae.cfg.d_sae, 1)
    with torch.no_grad():
        lora.a.zero_()
        lora.a[[7, 3], 0] = torch.tensor([0.9, -0.4])
        lora.b.zero_()
        lora.b[0, [12, 50]] = torch.tensor([1.0, -0.6])
        lora.s.fill_(2.0)
    meta = build_metadata(
        lora,
        config={"name": "tiny-test", "rank": 1},
        preset=mas.preset,
        sae_identity=mas.sae_identity,
        layer=mas.layer,
        mode="resid_add",
        history=[{"step": 0, "eval_ce": 3.0}, {"step": 2, "eval_ce": 2.5, "train_ce_last": 2.6}],
    )
    save_lora(lora, out_dir, meta)
    return lora


def tiny_hf_lm(*, d_model: int = 32, n_layers: int = 3, seed: int = 0):
    """A tiny Hugging Face Gemma-3 causal LM (random, frozen) with the tiny tokenizer, for the
    repair tests: the same HF class and forward hook path as the default preset."""
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
        max_position_embeddings=512,
        sliding_window=64,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    lm = Gemma3ForCausalLM(cfg)
    lm.eval()
    for p in lm.parameters():
        p.requires_grad_(False)
    return lm, tok


def tiny_sae(d_in: int = 32, d_sae: int = 64, k: int = 8, seed: int = 1):
    """A frozen TopK SAE with unit-norm decoder rows (seeded)."""
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, dtype="float32", device="cpu"))
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(d_sae, d_in, generator=g)
        sae.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_enc.copy_(torch.rand(d_sae, generator=g) * 0.1)
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    return sae


def tiny_gemma3_model_and_sae(
    *, d_model: int = 32, n_layers: int = 3, layer: int = 1, seed: int = 0, init: float = 0.05
):
    """A tiny Gemma-3 twice over: a ``transformers`` ``Gemma3ForCausalLM`` (random, seeded, with
    weights of std ``init`` so greedy choices are clear) and the TransformerLens model converted
    from it by TransformerLens's own Gemma converter, with a TopK SAE at ``layer``. Returns
    ``(mas, hf)``; the two models compute the same function (to float rounding)."""
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config
    from transformer_lens.pretrained.weight_conversions.gemma import convert_gemma_weights
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    d_head, n_heads = 8, 4
    types = ["sliding_attention"] * (n_layers - 1) + ["full_attention"]
    hf = Gemma3ForCausalLM(
        Gemma3TextConfig(
            vocab_size=len(tok),
            hidden_size=d_model,
            intermediate_size=2 * d_model,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            num_key_value_heads=1,
            head_dim=d_head,
            query_pre_attn_scalar=d_head,
            max_position_embeddings=512,
            sliding_window=64,
            layer_types=types,
            initializer_range=init,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    ).eval()
    hf.requires_grad_(False)
    # Gemma-3-270M's TransformerLens config, shrunk to the HF config's shapes.
    d = get_pretrained_model_config("google/gemma-3-270m").to_dict()
    d.pop("n_params", None)
    d.update(
        d_model=d_model,
        d_head=d_head,
        n_heads=n_heads,
        d_mlp=2 * d_model,
        n_layers=n_layers,
        d_vocab=len(tok),
        d_vocab_out=len(tok),
        n_ctx=512,
        window_size=64,
        rotary_dim=d_head,
        attn_scale=d_head**0.5,
        attn_types=["global" if t == "full_attention" else "local" for t in types],
        device="cpu",
    )
    model = HookedSAETransformer(HookedTransformerConfig(**d), tokenizer=tok)
    model.load_and_process_state_dict(
        convert_gemma_weights(hf, model.cfg),
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    model.eval()
    model.requires_grad_(False)
    sae = tiny_sae(d_in=d_model, seed=seed + 1)
    sae.cfg.metadata.hook_name = f"blocks.{layer}.hook_resid_post"
    mas = ModelAndSae(
        model=model,
        sae=sae,
        layer=layer,
        hook_name=f"blocks.{layer}.hook_resid_post",
        preset="tiny-gemma3",
        chat_format="qa",
        sae_identity=sae_identity(sae, path="tiny-gemma3"),
    )
    return mas, hf
