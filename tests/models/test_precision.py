"""The frozen model's dtype (models/precision.py): bf16 by default where the hardware has it
natively (CUDA; a CPU with AMX or AVX512-BF16), float32 on a CPU that would emulate it; the
probe is monkeypatched both ways, so each branch runs on any machine. bf16 agrees with float32
on the tiny model within the tolerances stated here."""

import logging

import pytest
import torch

from saelora_core import SaeLora, attach_lora
from saelora_core.adapter.batch import Example, make_batch
from saelora_core.adapter.forward import batch_losses
from saelora_core.models import precision, presets
from saelora_core.models.chat import format_turn
from saelora_core.models.presets import ModelAndSae
from saelora_core.testing import tiny_model_and_sae

LOGIT_ATOL = 0.15
"""bf16 against float32 logits on the tiny model (logits of std ~1; bf16 keeps 8 bits)."""
LOSS_RTOL = 0.02
GRAD_COSINE = 0.99


@pytest.mark.parametrize("native", [True, False])
def test_frozen_dtype_is_bf16_by_default_where_native(monkeypatch, caplog, native):
    monkeypatch.delenv("SAELORA_FROZEN_DTYPE", raising=False)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert precision.native_bf16("cpu") is native
    assert precision.native_bf16("cuda") is True
    # The CPU takes bf16 only where it multiplies it natively.
    assert precision.frozen_dtype("cpu") == (torch.bfloat16 if native else torch.float32)
    assert precision.frozen_dtype("cuda") == torch.bfloat16  # every CUDA device, either way
    # The switch overrides the default both ways.
    monkeypatch.setenv("SAELORA_FROZEN_DTYPE", "float32")
    assert precision.frozen_dtype("cuda") == torch.float32
    monkeypatch.setenv("SAELORA_FROZEN_DTYPE", "bfloat16")
    with caplog.at_level(logging.WARNING, logger=precision.__name__):
        assert precision.frozen_dtype("cpu") == torch.bfloat16
    # Opting in on a CPU that emulates bf16 warns; on a native one it does not.
    assert ("no native bf16" in caplog.text) is not native
    monkeypatch.setenv("SAELORA_FROZEN_DTYPE", "fp8")
    with pytest.raises(ValueError, match="SAELORA_FROZEN_DTYPE='fp8'"):
        precision.frozen_dtype("cpu")


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("switch", [None, "float32", "bfloat16"])
def test_load_model_and_sae_takes_its_default_dtype_from_precision(monkeypatch, native, switch):
    want = {
        None: torch.bfloat16 if native else torch.float32,
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
    }[switch]
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    if switch is None:
        monkeypatch.delenv("SAELORA_FROZEN_DTYPE", raising=False)
    else:
        monkeypatch.setenv("SAELORA_FROZEN_DTYPE", switch)
    seen = {}

    def fake_load_base_model(preset, *, device, dtype, **kw):
        seen["dtype"] = dtype
        raise RuntimeError("stop")  # the dtype reached the model loader; load nothing

    monkeypatch.setattr(presets, "load_sae", lambda **kw: (object(), {}))
    monkeypatch.setattr(presets, "sae_model_kwargs", lambda sae: {})
    monkeypatch.setattr(presets, "load_base_model", fake_load_base_model)
    with pytest.raises(RuntimeError, match="stop"):
        presets.load_model_and_sae("gemma-3-270m", device="cpu")
    assert seen["dtype"] == want
    # An explicit dtype wins over both.
    with pytest.raises(RuntimeError, match="stop"):
        presets.load_model_and_sae("gemma-3-270m", device="cpu", dtype=torch.float16)
    assert seen["dtype"] == torch.float16


def _bf16_twin(mas: ModelAndSae) -> ModelAndSae:
    """The same tiny model (rebuilt from its seed) in bf16, with the same float32 SAE."""
    low = tiny_model_and_sae()
    low.model.to(torch.bfloat16)
    assert torch.equal(low.model.W_E.float(), mas.model.W_E.to(torch.bfloat16).float())
    return ModelAndSae(low.model, mas.sae, mas.layer, mas.hook_name, mas.preset, mas.chat_format)


def _lora(d_sae: int) -> SaeLora:
    lora = SaeLora(d_sae, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora.s.copy_(torch.tensor([2.0, -1.0]))
    return lora


def test_bf16_frozen_model_agrees_with_float32(tiny_mas):
    low = _bf16_twin(tiny_mas)
    lora = _lora(tiny_mas.sae.cfg.d_sae)
    tokens = torch.randint(10, 100, (2, 24), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = tiny_mas.tokenizer.bos_token_id
    with attach_lora(tiny_mas, lora):
        want = tiny_mas.model(tokens)
    with attach_lora(low, lora):
        got = low.model(tokens)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=0, atol=LOGIT_ATOL)
    assert not torch.equal(got.float(), want)  # the bf16 path was taken


def test_bf16_training_step_keeps_the_adapter_and_loss_in_float32(tiny_mas):
    ex = [
        Example(format_turn(tiny_mas.tokenizer, f"Say yes {i}", "yes yes", "qa")) for i in range(3)
    ]
    grads, losses = {}, {}
    for name, mas in (("fp32", tiny_mas), ("bf16", _bf16_twin(tiny_mas))):
        lora = _lora(tiny_mas.sae.cfg.d_sae)
        for e in ex:
            e.resid = None  # each model caches its own hook residuals
        loss = batch_losses(mas, lora, make_batch(mas, ex), "resid_add").mean()
        loss.backward()
        assert loss.dtype == torch.float32 and lora.s.grad.dtype == torch.float32
        grads[name] = torch.cat([p.grad.flatten() for p in (lora.a, lora.b, lora.s)])
        losses[name] = loss.item()
    assert abs(losses["bf16"] - losses["fp32"]) < LOSS_RTOL * losses["fp32"]
    cos = torch.nn.functional.cosine_similarity(grads["bf16"], grads["fp32"], dim=0)
    assert cos > GRAD_COSINE
