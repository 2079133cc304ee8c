"""SAE-gap repair: the splice, the objective, every method's training constraint, round trips of
the saved artifacts, and clear errors. Tiny HF Gemma-3 model + TopK SAE, seeded, CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from saelora_core.repair import (
    CorpusError,
    RepairConfig,
    Splice,
    SplicedLM,
    build_repair,
    clean_targets,
    gap_closed_interval,
    kl_from_clean,
    repair_loss,
    token_windows,
    train_repair,
)
from saelora_core.sae.loading import SaeMismatchError, load_sae
from saelora_core.testing import tiny_hf_lm, tiny_sae

LAYER = 1
CTX = 16


def _windows(tok, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    body = torch.randint(10, len(tok), (n, CTX - 1), generator=g)
    return torch.cat([torch.full((n, 1), tok.bos_token_id), body], 1)


def _cfg(method: str, **kw) -> RepairConfig:
    base = dict(
        method=method,
        train_tokens=2 * CTX * 2,
        context_size=CTX,
        batch_size=2,
        autocast_bf16=False,
        lora_rank=4,
        lora_alpha=8,
        lora_dropout=0.0,
        adapter_rank=4,
        latent_rank=2,
        init_tokens=2 * CTX,
        curve_points=2,
        checkpoint_every=1,
    )
    base.update(kw)
    return RepairConfig(**base)


@pytest.mark.parametrize(
    "method", ["model_lora", "sae_finetune", "linear_adapter", "latent_adapter"]
)
def test_untrained_repair_equals_plain_splice(method):
    lm, tok = tiny_hf_lm()
    sae = tiny_sae()
    tokens = _windows(tok, 2)
    plain = SplicedLM(lm, Splice(sae), LAYER)
    with torch.no_grad():
        want = plain.logits(tokens)
        clean = plain.logits(tokens, "clean")
    plain.remove()
    setup = build_repair(lm, sae, LAYER, _cfg(method))
    with torch.no_grad():
        got = setup.spliced.logits(tokens)
        got_clean = setup.spliced.logits(tokens, "clean")
    assert torch.equal(got, want)
    assert torch.equal(got_clean, clean)
    assert not torch.allclose(want, clean)  # the splice does change the output


def test_splice_keeps_bos_and_drops_the_error_term():
    lm, tok = tiny_hf_lm()
    sae = tiny_sae()
    x = torch.randn(2, 5, 32)
    out = Splice(sae)(x)
    assert torch.equal(out[:, 0], x[:, 0])
    assert torch.allclose(out[:, 1:], sae.decode(sae.encode(x[:, 1:])), atol=1e-6)


def test_kl_matches_torch_reference():
    g = torch.Generator().manual_seed(0)
    clean, other = torch.randn(2, 3, 50, generator=g), torch.randn(2, 3, 50, generator=g)
    p, neg_h = clean_targets(clean)
    want = F.kl_div(other.log_softmax(-1), clean.log_softmax(-1), log_target=True, reduction="none")
    got = kl_from_clean(p, neg_h, other)
    assert torch.allclose(got, want.sum(-1).mean(), atol=1e-6)
    assert kl_from_clean(p, neg_h, clean).abs() < 1e-6


def test_fused_kl_equals_the_eager_formula_and_its_gradient():
    from saelora_core.repair import fused_kl, kl_rows

    g = torch.Generator().manual_seed(1)
    clean = torch.randn(3, 23, 40, generator=g)  # 69 positions: two full chunks and a rest
    other = torch.randn(3, 23, 40, generator=g, requires_grad=True)
    p, neg_h = clean_targets(clean)
    ref = kl_from_clean(p, neg_h, other)
    (ref_grad,) = torch.autograd.grad(ref, other)
    got = fused_kl(clean, other)
    (got_grad,) = torch.autograd.grad(got, other)
    assert torch.allclose(got, ref, atol=1e-6)
    assert torch.allclose(got_grad, ref_grad, atol=1e-7)
    want_rows = F.kl_div(
        other.log_softmax(-1), clean.log_softmax(-1), log_target=True, reduction="none"
    ).sum(-1)
    assert torch.allclose(kl_rows(clean, other), want_rows, atol=1e-5)


def test_kl_mse_weighting_matches_its_formula():
    kl = torch.tensor(2.0, requires_grad=True)
    mse = torch.tensor(6.0, requires_grad=True)
    res = repair_loss(kl, mse, use_mse=True)
    assert res.alpha is not None and res.alpha.item() == pytest.approx(3.0)
    assert res.loss.item() == pytest.approx(0.5 * (3.0 * 2.0 + 6.0))
    res.loss.backward()
    # α is detached: ∂loss/∂KL = α/2 and ∂loss/∂MSE = 1/2.
    assert kl.grad.item() == pytest.approx(1.5) and mse.grad.item() == pytest.approx(0.5)
    assert repair_loss(kl, None, use_mse=False).loss is kl
    with pytest.raises(ValueError, match="MSE"):
        repair_loss(kl, None, use_mse=True)


def _train(method, tmp_path, lm=None, steps=2, windows=None, **kw):
    lm2, tok = tiny_hf_lm()
    lm = lm or lm2
    sae = tiny_sae()
    cfg = _cfg(method, train_tokens=steps * 2 * CTX, **kw)
    windows = windows if windows is not None else _windows(tok, steps * 2)
    res = train_repair(
        lm,
        sae,
        LAYER,
        cfg,
        train_windows=windows,
        curve_windows=_windows(tok, 2, seed=9),
        out_dir=tmp_path / method,
        progress=False,
    )
    return res, sae, tok


def test_finetune_keeps_decoder_row_norms_and_round_trips(tmp_path):
    res, sae, _ = _train("sae_finetune", tmp_path, lr=1e-2)
    tuned = res.setup.sae
    assert not torch.equal(tuned.W_dec, sae.W_dec)  # it trained
    # Each row keeps its norm (the tiny SAE's rows are unit vectors, so: stay unit norm).
    assert torch.allclose(tuned.W_dec.norm(dim=1), sae.W_dec.norm(dim=1), atol=1e-5)
    assert torch.allclose(tuned.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)
    assert tuned.cfg.k == sae.cfg.k
    loaded, ident = load_sae(path=res.artifact)
    # Saved in bf16 like the shipped SAE; sae_lens restores float32.
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        want = getattr(tuned, name).detach().to(torch.bfloat16).float()
        assert torch.equal(getattr(loaded, name), want), name
    rec = json.loads((res.artifact / "repair.json").read_text())
    assert rec["method"] == "sae_finetune" and rec["config"]["lr"] == 1e-2


def test_peft_adapter_round_trips(tmp_path):
    from peft import PeftModel

    res, sae, tok = _train("model_lora", tmp_path, lr=1e-2)
    tokens = _windows(tok, 2, seed=3)
    with torch.no_grad():
        want = res.setup.spliced.logits(tokens)
    fresh, _ = tiny_hf_lm()
    loaded = PeftModel.from_pretrained(fresh, str(res.artifact))
    spliced = SplicedLM(loaded, Splice(sae), LAYER)
    with torch.no_grad():
        got = spliced.logits(tokens)
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, spliced.logits(tokens, "clean"))


@pytest.mark.parametrize(
    ("method", "lr"), [("linear_adapter", 3e-2), ("latent_adapter", 3e-2), ("model_lora", 1e-2)]
)
def test_kl_falls_on_a_tiny_learnable_case(tmp_path, method, lr):
    _, tok = tiny_hf_lm()
    steps = 24
    windows = _windows(tok, 2).repeat(steps, 1)  # the same batch every step: learnable
    res, _, _ = _train(
        method, tmp_path, steps=steps, windows=windows, lr=lr, latent_s_lr=0.1, warmup_steps=0
    )
    kls = [h["kl"] for h in res.history]
    assert np.mean(kls[-4:]) < 0.7 * kls[0], kls


def test_latent_adapter_topk_is_exactly_sparse(tmp_path):
    res, _, _ = _train("latent_adapter", tmp_path, latent_topk=3, lr=1e-2)
    lora = res.setup.modules["latent"]
    assert ((lora.a != 0).sum(0) <= 3).all() and ((lora.b != 0).sum(1) <= 3).all()
    assert res.record["latents"]["read"] <= 6
    assert (res.artifact / "params.pt").exists()
    meta = json.loads((res.artifact / "metadata.json").read_text())
    assert meta["mode"] == "sae_replace"


def test_resume_continues_from_the_checkpoint(tmp_path, monkeypatch):
    import saelora_core.repair.train as repair_train

    _, tok = tiny_hf_lm()
    windows = _windows(tok, 8)
    full, _, _ = _train("linear_adapter", tmp_path / "a", steps=4, windows=windows, lr=1e-2)

    # A run killed during step 3 (after the step-2 checkpoint), then resumed.
    real, calls = repair_train.after_step, {"n": 0}

    def dies_at_step_3(setup, cfg):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(setup, cfg)

    monkeypatch.setattr(repair_train, "after_step", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        _train("linear_adapter", tmp_path / "b", steps=4, windows=windows, lr=1e-2)
    state = torch.load(tmp_path / "b" / "linear_adapter" / "train_state.pt", weights_only=True)
    assert state["step"] == 2
    monkeypatch.setattr(repair_train, "after_step", real)
    resumed, _, _ = _train("linear_adapter", tmp_path / "b", steps=4, windows=windows, lr=1e-2)
    assert [h["kl"] for h in resumed.history] == pytest.approx([h["kl"] for h in full.history])
    for name in ("U", "D"):
        got = getattr(resumed.setup.modules["linear"], name)
        want = getattr(full.setup.modules["linear"], name)
        assert torch.allclose(got, want, atol=1e-7), name
    # Another config on the same directory is refused with the reason.
    from saelora_core.adapter.saving import CheckpointError

    with pytest.raises(CheckpointError, match="another config"):
        _train("linear_adapter", tmp_path / "b", steps=4, windows=windows, lr=2e-2)


def test_gap_closed_interval():
    c, b = np.full(20, 2.0), np.full(20, 3.0)
    assert gap_closed_interval(c, b, b)[0] == pytest.approx(0.0)
    g, lo, hi = gap_closed_interval(c, b, c)
    assert g == pytest.approx(1.0) and lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    a = 2.5 + rng.normal(0, 0.1, 20)
    g, lo, hi = gap_closed_interval(c, b, a)
    assert lo < g < hi and abs(g - 0.5) < 0.1


def test_token_windows_start_with_bos_and_are_full():
    _, tok = tiny_hf_lm()
    texts = ["hello world, " * 20, "short", "x" * 100]
    w = token_windows(texts, tok, context_size=CTX, max_tokens=CTX * 5, max_doc_tokens=100)
    assert w.shape == (5, CTX) and (w[:, 0] == tok.bos_token_id).all()
    assert (w[:, 1:] != tok.bos_token_id).all()
    # Each document is cut to 30 tokens, "\n\n" (2 tokens) joins them: 30+2+5+2+30+2 = 71 tokens,
    # four full windows of 15 after BOS.
    capped = token_windows(texts, tok, context_size=CTX, max_tokens=CTX * 5, max_doc_tokens=30)
    assert capped.shape == (4, CTX)


def test_bad_input_gets_a_clear_error(tmp_path):
    lm, tok = tiny_hf_lm()
    with pytest.raises(SaeMismatchError, match="d_in=16"):
        SplicedLM(lm, Splice(tiny_sae(d_in=16)), LAYER)
    with pytest.raises(CorpusError, match="less than one window"):
        token_windows([], tok, context_size=CTX, max_tokens=1000)
    with pytest.raises(ValueError, match="unknown repair method 'magic'"):
        RepairConfig(method="magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown RepairConfig fields"):
        RepairConfig.from_dict({"method": "sae_finetune", "learning_rate": 1e-3})
    with pytest.raises(ValueError, match="curve_tokens=64 is less than one window"):
        RepairConfig(curve_tokens=64)
    empty = tmp_path / "corpus"
    empty.mkdir()
    (empty / "train.jsonl").write_text("")
    from saelora_core.repair import corpus_windows

    with pytest.raises(CorpusError, match="holds no text"):
        corpus_windows("train", tok, context_size=CTX, max_tokens=100, corpus_dir=empty)
    with pytest.raises(CorpusError, match="no text file"):
        corpus_windows("heldout", tok, context_size=CTX, max_tokens=100, corpus_dir=empty)


def test_cli_rejects_an_unknown_method(capsys):
    from saelora_core.cli.app import main

    with pytest.raises(SystemExit) as e:
        main(["repair", "magic"])
    assert e.value.code == 2
    assert "invalid choice: 'magic'" in capsys.readouterr().err


@pytest.mark.slow
def test_hf_and_transformer_lens_give_the_same_spliced_loss():
    from saelora_core.models.hf import load_hf_causal_lm
    from saelora_core.models.presets import load_model_and_sae

    # Both float32: the default frozen dtype is bf16 on a native-bf16 CPU, the HF twin float32.
    mas = load_model_and_sae("gemma-3-270m", device="cpu", dtype=torch.float32)
    hf, tok = load_hf_causal_lm("gemma-3-270m")
    text = "Question: What is the capital of France?\nAnswer: Paris is the capital of France."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    tokens = torch.tensor([[tok.bos_token_id, *ids]])
    spliced = SplicedLM(hf, Splice(mas.sae), mas.layer)
    with torch.no_grad():
        hf_clean = F.cross_entropy(spliced.logits(tokens, "clean")[0, :-1], tokens[0, 1:]).item()
        hf_spliced = F.cross_entropy(spliced.logits(tokens)[0, :-1], tokens[0, 1:]).item()

        def splice(act, *, hook):
            new = mas.sae.decode(mas.sae.encode(act))
            return torch.cat([act[:, :1], new[:, 1:]], 1)

        tl_clean = mas.model(tokens, return_type="loss").item()
        tl_spliced = mas.model.run_with_hooks(
            tokens, return_type="loss", fwd_hooks=[(mas.hook_name, splice)]
        ).item()
    spliced.remove()
    assert hf_clean == pytest.approx(tl_clean, abs=1e-3)
    assert hf_spliced == pytest.approx(tl_spliced, abs=1e-3)
    assert hf_spliced > hf_clean + 0.05


def test_adapters_of_the_original_sae_load_onto_its_finetune(tmp_path):
    from saelora_core import SaeLora, load_lora, save_lora
    from saelora_core.adapter.saving import CheckpointError, build_metadata
    from saelora_core.sae.identity import sae_identity

    lm, tok = tiny_hf_lm()
    sae = tiny_sae()
    original = sae_identity(sae, path="tiny")
    res = train_repair(
        lm,
        sae,
        LAYER,
        _cfg("sae_finetune", lr=1e-2),
        train_windows=_windows(tok, 4),
        curve_windows=_windows(tok, 2, seed=9),
        out_dir=tmp_path / "ft",
        record={"reference_sae": original},
        progress=False,
    )
    _, tuned = load_sae(path=res.artifact)
    assert tuned["hash"] != original["hash"] and tuned["derived_from"] == original["hash"]
    lora = SaeLora(64, 1)
    meta = build_metadata(
        lora, config={}, preset="tiny", sae_identity=original, layer=LAYER, mode="resid_add"
    )
    save_lora(lora, tmp_path / "a", meta)
    load_lora(tmp_path / "a", sae_identity=tuned)  # the finetune keeps the latents: accepted
    other = sae_identity(tiny_sae(seed=5), path="other")
    with pytest.raises(CheckpointError, match="hash"):
        load_lora(tmp_path / "a", sae_identity=other)


def test_model_lora_reference_is_measured_without_the_lora(tmp_path):
    """peft injects the LoRA into the HF model in place: the reference CE must come from before."""
    from saelora_core.repair import baseline

    res, sae, tok = _train("model_lora", tmp_path, lr=5e-2)
    state = torch.load(tmp_path / "model_lora" / "train_state.pt", weights_only=True)
    fresh, _ = tiny_hf_lm()
    want = baseline(fresh, sae, LAYER, _windows(tok, 2, seed=9))
    assert state["curve_baseline"]["ce_before"] == pytest.approx(want.ce_before, abs=1e-6)
    assert state["curve"][0]["gap_closed"] == pytest.approx(0.0, abs=1e-4)
    assert state["curve"][-1]["gap_closed"] != pytest.approx(0.0, abs=1e-3)  # it trained


def test_repair_figures_share_one_colour_per_text_set():
    """The gap-closed bars and the latent Pareto give each text set the same colour, whatever
    order the rows come in."""
    import pandas as pd

    from saelora_core.repair.report import TEXT_SET_COLORS, fig_gap_closed, fig_latent_pareto

    df = pd.DataFrame(
        {
            "method": ["latent", "latent", "finetune", "finetune"],
            "text_set": ["heldout", "general", "general", "heldout"],
            "gap_closed": [0.5, 0.2, 0.3, 0.6],
            "gap_closed_lo": [0.4, 0.1, 0.2, 0.5],
            "gap_closed_hi": [0.6, 0.3, 0.4, 0.7],
            "train_tokens": [1000] * 4,
            "latents_used": [16, 16, None, None],
        }
    )
    bars = {t.name: t.marker.color for t in fig_gap_closed(df.iloc[::-1]).data}
    pareto = fig_latent_pareto(df)
    assert bars == TEXT_SET_COLORS
    assert {t.name: t.marker.color for t in pareto.data} == TEXT_SET_COLORS
    assert {t.name: t.line.color for t in pareto.data} == TEXT_SET_COLORS
