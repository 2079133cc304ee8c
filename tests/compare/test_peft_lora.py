"""The peft LoRA baseline: a no-op at init, the same function on the TransformerLens model as on
peft's, a save/load round trip, the parameter count, and a resumed run equal to an unbroken one."""

from __future__ import annotations

import pytest
import torch

from saelora_core.compare import peft_lora
from saelora_core.compare.peft_lora import (
    PeftLoraConfig,
    load_peft,
    param_budget,
    train_peft_lora,
    trainable_params,
    wrap_peft,
)
from saelora_core.compare.peft_patch import patched_weights, peft_deltas, peft_deltas_from_dir
from tests.compare.compare_helpers import ROWS, tiny_pair


def tokens(tok):
    ids = tok("Question: What is 2+2?\nAnswer: Quatre")["input_ids"]
    return torch.tensor([ids])


def test_zero_init_leaves_logits_unchanged_and_the_patch_matches_peft():
    hf, tok, mas = tiny_pair()
    x = tokens(tok)
    with torch.no_grad():
        base_hf, base_tl = hf(x).logits, mas.model(x)
    assert torch.allclose(base_hf, base_tl, atol=1e-5)  # the twin computes the same function
    model = wrap_peft(hf, PeftLoraConfig(rank=2), layer=mas.layer)
    deltas = peft_deltas(model, mas.model.cfg)
    assert sorted(deltas) == sorted(
        f"blocks.2.{n}"
        for n in (
            "attn.W_Q", "attn._W_K", "attn._W_V", "attn.W_O", "mlp.W_gate", "mlp.W_in", "mlp.W_out"
        )
    )  # fmt: skip
    with torch.no_grad(), patched_weights(mas.model, deltas):
        assert torch.equal(model(x).logits, base_hf)  # B = 0 at init: exactly unchanged
        assert torch.equal(mas.model(x), base_tl)
    # A nonzero LoRA: the patched TransformerLens model computes what peft computes.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn_like(p) * 0.3)
        peft_out = model(x).logits
        deltas = peft_deltas(model, mas.model.cfg)
        with patched_weights(mas.model, deltas):
            tl_out = mas.model(x)
        after = mas.model(x)
    assert (peft_out - base_hf).abs().max() > 1e-2
    assert torch.allclose(tl_out, peft_out, atol=1e-5)
    assert torch.equal(after, base_tl)  # restored exactly


def test_the_patch_restores_the_weights_when_the_body_raises():
    _, _, mas = tiny_pair()
    w = mas.model.blocks[2].mlp.W_in.detach().clone()
    with (
        pytest.raises(RuntimeError),
        patched_weights(mas.model, {"blocks.2.mlp.W_in": torch.ones_like(w)}),
    ):
        assert torch.equal(mas.model.blocks[2].mlp.W_in, w + 1)
        raise RuntimeError("boom")
    assert torch.equal(mas.model.blocks[2].mlp.W_in, w)
    with (
        pytest.raises(ValueError, match="no parameters"),
        patched_weights(mas.model, {"blocks.9.mlp.W_in": w}),
    ):
        pass


def test_parameter_counts():
    hf, _, mas = tiny_pair()
    model = wrap_peft(hf, PeftLoraConfig(rank=3), layer=mas.layer)
    # Block 2 only; per projection r·(d_in + d_out): q 32+32, k 32+8, v 32+8, o 32+32,
    # gate and up 32+128, down 128+32.
    assert trainable_params(model) == 3 * (64 + 40 + 40 + 64 + 160 + 160 + 160)
    hf2, _, _ = tiny_pair()
    every = wrap_peft(hf2, PeftLoraConfig(rank=3, layers="all"), layer=mas.layer)
    assert trainable_params(every) == 3 * trainable_params(model)
    assert param_budget(rank=1, d_sae=4096) == 8193
    assert param_budget(rank=6, d_model=640) == 6 * 1281
    with pytest.raises(ValueError, match="exactly one"):
        param_budget(rank=1)
    with pytest.raises(ValueError, match="targets"):
        PeftLoraConfig(targets=["lm_head"])


def test_train_save_load_round_trip_and_resume(tmp_path, monkeypatch):
    data = {"train": ROWS}
    cfg = PeftLoraConfig(rank=1, epochs=2, batch_size=3, lr=5e-2, response_tokens=4)
    meta = {"dataset": "tiny", "guideline": "respond in French", "detector": "french"}
    hf, tok, mas = tiny_pair()
    x = tokens(tok)
    with torch.no_grad():
        base = hf(x).logits
    res = train_peft_lora(
        hf, tok, data, cfg, out_dir=tmp_path / "a", layer=mas.layer, progress=False,
        extra_metadata=meta,
    )  # fmt: skip
    assert res.history[-1]["train_ce"] < res.history[0]["train_ce"]
    assert res.metadata["trainable_params"] == 688
    assert {k: res.metadata[k] for k in meta} == meta
    assert (tmp_path / "a" / "adapter_config.json").exists()
    assert not (tmp_path / "a" / "train_state.pt").exists()
    with torch.no_grad():
        trained = res.model(x).logits
    assert (trained - base).abs().max() > 1e-3
    from_file = peft_deltas_from_dir(tmp_path / "a", mas.model.cfg)
    from_peft = peft_deltas(res.model, mas.model.cfg)
    assert sorted(from_file) == sorted(from_peft)
    for k, v in from_peft.items():
        assert torch.allclose(from_file[k], v, atol=1e-7), k
    fresh, _ = tiny_pair()[:2]
    loaded = load_peft(fresh, tmp_path / "a")
    with torch.no_grad():
        assert torch.allclose(loaded(x).logits, trained, atol=1e-6)
    # A finished run is loaded, not retrained.
    again = train_peft_lora(
        tiny_pair()[0], tok, data, cfg, out_dir=tmp_path / "a", layer=mas.layer, progress=False
    )
    assert again.history == res.history

    # Interrupted after the first epoch's checkpoint, then resumed: the same weights.
    real_save = peft_lora.atomic_torch_save

    def save_then_stop(obj, path):
        real_save(obj, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(peft_lora, "atomic_torch_save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_peft_lora(
            tiny_pair()[0], tok, data, cfg, out_dir=tmp_path / "b", layer=mas.layer,
            progress=False,
        )  # fmt: skip
    monkeypatch.setattr(peft_lora, "atomic_torch_save", real_save)
    resumed = train_peft_lora(
        tiny_pair()[0], tok, data, cfg, out_dir=tmp_path / "b", layer=mas.layer, progress=False
    )
    assert resumed.history == res.history
    with torch.no_grad():
        assert torch.allclose(resumed.model(x).logits, trained, atol=1e-6)
