"""Training loop, checkpoints and resume on the tiny model."""

import json

import pytest
import torch

from saelora_core import (
    CheckpointError,
    LoraTrainingConfig,
    SaeLora,
    load_lora,
    save_lora,
    train_lora,
)
from saelora_core.adapter.batch import Example
from saelora_core.adapter.forward import example_loss
from saelora_core.models.chat import format_turn

ROWS = [{"id": str(i), "prompt": f"Say yes {i}", "response": "yes yes"} for i in range(12)]


def cfg(**kw):
    base = dict(
        lr=0.05,
        sparsity_weight=0.0,
        batch_size=4,
        rank=1,
        epochs=2,
        max_len=64,
        sparsity="none",
        eval_fraction=0.25,
        name="t",
    )
    base.update(kw)
    return LoraTrainingConfig(**base)


def test_assistant_mask_covers_response_only(tiny_mas):
    tok = tiny_mas.tokenizer
    for fmt in ("qa", "gemma"):
        c = format_turn(tok, "What is 2+2?", "Four.", fmt)
        resp = tok.decode(c.tokens[c.assistant_mask]).replace(" ", "")
        end = "<eos>" if fmt == "qa" else "<end_of_turn>"
        assert resp == "Four." + end
        assert c.assistant_mask[: c.prompt_len].sum() == 0
        assert c.assistant_mask[c.prompt_len :].all()
    c = format_turn(tok, "q", "a long response " * 10, "qa", max_len=30)
    assert len(c.tokens) == 30 and c.assistant_mask.sum() == 30 - c.prompt_len
    with pytest.raises(ValueError, match="no response token"):
        format_turn(tok, "a very long prompt " * 5, "x", "qa", max_len=10)
    full = format_turn(tok, "q", "a long response " * 10, "qa")
    head = format_turn(tok, "q", "a long response " * 10, "qa", response_tokens=3)
    assert head.assistant_mask.sum() == 3  # the first 3 answer tokens, no closing token
    assert torch.equal(head.tokens, full.tokens[: full.prompt_len + 3])


@pytest.mark.parametrize("mode", ["resid_add", "sae_replace"])
def test_precomputed_path_equals_plain_forward(tiny_mas, mode):
    lora = SaeLora(tiny_mas.sae.cfg.d_sae, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora.s.fill_(4.0)
    ex = Example(format_turn(tiny_mas.tokenizer, "Say yes", "yes yes", "qa"))
    fast = example_loss(tiny_mas, lora, ex, mode, precompute=True)
    slow = example_loss(tiny_mas, lora, ex, mode, precompute=False)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_only_adapter_params_get_gradients(tiny_mas):
    lora = SaeLora(tiny_mas.sae.cfg.d_sae, 1)
    with torch.no_grad():
        lora.s.fill_(1.0)
    ex = Example(format_turn(tiny_mas.tokenizer, "Say yes", "yes", "qa"))
    example_loss(tiny_mas, lora, ex, "resid_add", precompute=False).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.parameters())
    frozen = list(tiny_mas.model.parameters()) + list(tiny_mas.sae.parameters())
    assert all(not p.requires_grad and p.grad is None for p in frozen)


def test_training_lowers_loss_and_saves(tiny_mas, tmp_path):
    res = train_lora(tiny_mas, ROWS, cfg(epochs=4), out_dir=tmp_path / "a", progress=False)
    ce = [h["eval_ce"] for h in res.history]
    assert ce[-1] < ce[0] - 0.1, ce
    meta = json.loads((tmp_path / "a" / "metadata.json").read_text())
    assert meta["sae"]["hash"] == tiny_mas.sae_identity["hash"]
    assert meta["config"]["lr"] == 0.05 and meta["layer"] == tiny_mas.layer and meta["complete"]
    assert len(meta["history"]) == 5 and meta["version"]
    loaded = load_lora(tmp_path / "a", sae_identity=tiny_mas.sae_identity)
    for k, v in res.lora.state_dict().items():
        assert torch.equal(loaded.lora.state_dict()[k], v)


def test_killed_run_resumes_to_identical_result(tiny_mas, tmp_path):
    full = train_lora(tiny_mas, ROWS, cfg(), out_dir=tmp_path / "full", progress=False)

    def kill_after_3(info):
        if info["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_lora(
            tiny_mas,
            ROWS,
            cfg(checkpoint_every=1),
            out_dir=tmp_path / "k",
            progress=False,
            on_step=kill_after_3,
        )
    assert not json.loads((tmp_path / "k" / "metadata.json").read_text())["complete"]
    resumed = train_lora(
        tiny_mas, ROWS, cfg(checkpoint_every=1), out_dir=tmp_path / "k", progress=False
    )
    for k, v in full.lora.state_dict().items():
        torch.testing.assert_close(resumed.lora.state_dict()[k], v, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="different config"):
        train_lora(tiny_mas, ROWS, cfg(lr=0.01), out_dir=tmp_path / "k", progress=False)


def test_bad_inputs_give_clear_errors(tiny_mas, tmp_path):
    with pytest.raises(ValueError, match="dataset is empty"):
        train_lora(tiny_mas, [], cfg(), out_dir=tmp_path / "e", progress=False)
    with pytest.raises(ValueError, match="no usable training rows"):
        train_lora(
            tiny_mas,
            [{"prompt": "", "response": "x"}, {"prompt": 3}],
            cfg(),
            out_dir=tmp_path / "e",
            progress=False,
        )
    with pytest.raises(ValueError, match="invalid LoraTrainingConfig values: lr"):
        LoraTrainingConfig(lr=-1)
    with pytest.raises(ValueError, match="sparsity must be one of"):
        LoraTrainingConfig(sparsity="l2")

    lora = SaeLora(tiny_mas.sae.cfg.d_sae, 1)
    save_lora(lora, tmp_path / "l", {"sae": tiny_mas.sae_identity})
    with pytest.raises(CheckpointError, match="d_sae=64 but the loaded SAE has d_sae=128"):
        load_lora(tmp_path / "l", sae_identity={**tiny_mas.sae_identity, "d_sae": 128})
    with pytest.raises(CheckpointError, match="trained on SAE hash"):
        load_lora(tmp_path / "l", sae_identity={**tiny_mas.sae_identity, "hash": "0" * 16})
    (tmp_path / "l" / "params.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupted"):
        load_lora(tmp_path / "l")
    with pytest.raises(CheckpointError, match="no params.pt"):
        load_lora(tmp_path / "missing")


def test_malformed_rows_are_skipped_and_reported(tiny_mas, tmp_path):
    rows = ROWS + [{"id": "bad", "prompt": None, "response": "x"}]
    res = train_lora(tiny_mas, rows, cfg(epochs=1), out_dir=tmp_path / "m", progress=False)
    assert any("bad" in s for s in res.skipped_rows)
    assert res.metadata["n_train"] + res.metadata["n_eval"] == len(ROWS)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_logits_close_to_fp32(tiny_mas, monkeypatch, native):
    """On a CPU with native bf16 the bf16 path runs and stays within 2 % of fp32; without it
    ``unembed`` falls back to fp32 and the two losses are equal. The CPU probe is patched both
    ways, so both branches run on every machine."""
    from saelora_core.adapter import forward

    monkeypatch.setattr(forward, "cpu_has_native_bf16", lambda: native)
    lora = SaeLora(tiny_mas.sae.cfg.d_sae, 1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora.s.fill_(2.0)
    ex = Example(format_turn(tiny_mas.tokenizer, "Say yes", "yes yes", "qa"))
    a = example_loss(tiny_mas, lora, ex, "resid_add", True, "float32")
    b = example_loss(tiny_mas, lora, ex, "resid_add", True, "bfloat16")
    assert abs(a.item() - b.item()) < 0.02 * a.item()
    assert (a.item() != b.item()) == native  # bf16 rounding shows only where bf16 ran


def test_gradient_svd_init_is_a_noop_with_the_steepest_direction(tiny_mas):
    from saelora_core.adapter.batch import tokenize_rows
    from saelora_core.training.inits import gradient_svd_init_

    exs, _ = tokenize_rows(tiny_mas, ROWS[:6], 64)
    lora = SaeLora(tiny_mas.sae.cfg.d_sae, 2, init="zeros")
    sv = gradient_svd_init_(tiny_mas, lora, exs, "resid_add", write="svd")
    assert sv[0] >= sv[1] > 0 and torch.equal(lora.s, torch.zeros(2))
    # latents that never fire on the examples get exact-zero read weights
    fired = torch.zeros(lora.d_sae, dtype=torch.bool)
    for ex in exs:
        fired |= (tiny_mas.sae.encode(ex.resid)[0, 1:] > 0).any(0)
    assert (~fired).any() and (lora.a[~fired] == 0).all()
    # d(mean loss)/ds at s = 0 is -σ for each component: the SVD picked the steepest rank-r map
    loss = sum(example_loss(tiny_mas, lora, ex, "resid_add", True) for ex in exs) / len(exs)
    loss.backward()
    d = lora.d_sae  # a and b are scaled to norm √d; the unit vectors Â, B̂ are the SVD's
    torch.testing.assert_close(lora.read_dirs().norm(dim=0), torch.ones(2))
    assert abs(lora.a.norm(dim=0)[0].item() - d**0.5) < 1e-3
    torch.testing.assert_close(lora.s.grad, -sv, rtol=2e-3, atol=1e-5)
    base = SaeLora(lora.d_sae, 2)
    torch.testing.assert_close(
        example_loss(tiny_mas, lora, exs[0], "resid_add", True),
        example_loss(tiny_mas, base, exs[0], "resid_add", True),
    )


def test_gradient_svd_init_trains_faster_than_random(tiny_mas, tmp_path):
    rand = train_lora(tiny_mas, ROWS, cfg(epochs=1), out_dir=tmp_path / "r", progress=False)
    svd = train_lora(
        tiny_mas, ROWS, cfg(epochs=1, init="gradient_svd"), out_dir=tmp_path / "g", progress=False
    )
    assert svd.history[-1]["eval_ce"] < rand.history[-1]["eval_ce"]


def test_hard_concrete_training_saves_plain_sparse_adapter_and_resumes(tiny_mas, tmp_path):
    c = dict(
        sparsity="hard_concrete", sparsity_weight=0.01, gate_lr=0.5, checkpoint_every=1, epochs=3
    )
    full = train_lora(tiny_mas, ROWS, cfg(**c), out_dir=tmp_path / "f", progress=False)
    assert not full.lora.gates
    read_l0, write_l0 = full.lora.l0()
    assert read_l0[0] < tiny_mas.sae.cfg.d_sae and write_l0[0] < tiny_mas.sae.cfg.d_sae
    loaded = load_lora(tmp_path / "f").lora
    assert (
        loaded.l0() == full.lora.l0() == (full.metadata["l0"]["read"], full.metadata["l0"]["write"])
    )
    torch.testing.assert_close(loaded.a, full.lora.a)

    def kill_after_4(info):
        if info["step"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_lora(
            tiny_mas, ROWS, cfg(**c), out_dir=tmp_path / "k", progress=False, on_step=kill_after_4
        )
    resumed = train_lora(tiny_mas, ROWS, cfg(**c), out_dir=tmp_path / "k", progress=False)
    for k, v in full.lora.state_dict().items():
        torch.testing.assert_close(resumed.lora.state_dict()[k], v, rtol=0, atol=1e-6)


def test_contrastive_init_reads_topic_and_writes_behaviour(tiny_mas, tmp_path):
    from saelora_core.training.inits import MAX_OFF_TOPIC_FREQ, contrastive_init_, latent_stats

    rows = [
        {
            "prompt": f"add {i} and {i}",
            "response": "YES YES",
            "original_response": "no no",
            "in_topic": True,
        }
        for i in range(4)
    ] + [
        {
            "prompt": f"tell me about cats {i}",
            "response": "meow",
            "original_response": "meow",
            "in_topic": False,
        }
        for i in range(4)
    ]
    lora = SaeLora(tiny_mas.sae.cfg.d_sae, 1, generator=torch.Generator().manual_seed(0))
    info = contrastive_init_(tiny_mas, lora, rows, n=8, max_len=64)
    assert info["read_in_topic"] > info["read_off_topic"]
    assert (lora.a >= 0).all() and lora.s.item() == 0  # relu'd read; still a no-op
    assert info["l0_read"] < tiny_mas.sae.cfg.d_sae  # latents not more active on topic: exact 0
    # Selective read: a latent firing on more than MAX_OFF_TOPIC_FREQ of the off-topic decision
    # positions gets exactly 0, however much more it fires in-topic.
    off = latent_stats(
        tiny_mas,
        [
            format_turn(tiny_mas.tokenizer, r["prompt"], r["original_response"], "qa", 64)
            for r in rows[4:]
        ],
    )
    busy = off["fired"] > MAX_OFF_TOPIC_FREQ
    assert busy.any() and (lora.a[busy, 0] == 0).all()
    with pytest.raises(ValueError, match="original_response"):
        contrastive_init_(tiny_mas, lora, [{"prompt": "p", "response": "r"}], n=4, max_len=64)
    res = train_lora(
        tiny_mas, rows, cfg(init="contrastive", epochs=1), out_dir=tmp_path / "c", progress=False
    )
    assert res.metadata["config"]["init"] == "contrastive"


def test_resume_refuses_a_run_on_another_sae(tiny_mas, tmp_path):
    import dataclasses

    from saelora_core.training.resume import resumable

    assert resumable(tmp_path / "s", cfg(), tiny_mas) is None
    train_lora(tiny_mas, ROWS, cfg(epochs=1), out_dir=tmp_path / "s", progress=False)
    assert resumable(tmp_path / "s", cfg(epochs=1), tiny_mas) is True
    other = dataclasses.replace(tiny_mas, sae_identity={**tiny_mas.sae_identity, "hash": "f" * 16})
    assert resumable(tmp_path / "s", cfg(epochs=1), other) is False
    with pytest.raises(ValueError, match="another SAE"):
        train_lora(other, ROWS, cfg(epochs=1), out_dir=tmp_path / "s", progress=False)


def test_init_from_prunes_a_saved_adapter_and_fine_tunes_it(tiny_mas, tmp_path):
    from saelora_core import prune_topk
    from saelora_core.adapter.forward import evaluate_ce
    from saelora_core.training.splits import split_dataset

    dense = train_lora(
        tiny_mas, ROWS, cfg(init="uniform_small"), out_dir=tmp_path / "d", progress=False
    )
    c = cfg(init_from=str(tmp_path / "d"), sparsity="topk", topk=3, epochs=1)
    res = train_lora(tiny_mas, ROWS, c, out_dir=tmp_path / "p", progress=False)
    # Step 0 is exactly the pruned dense adapter (its s kept), not a no-op.
    _, ev, _ = split_dataset(tiny_mas, ROWS, c)
    start = evaluate_ce(tiny_mas, prune_topk(dense.lora, 3).lora, ev, "resid_add")
    assert res.history[0]["eval_ce"] == pytest.approx(start, rel=1e-6)
    assert res.lora.l0() == ([3], [3])
    # A rank-1 source split into rank 2 (lora.split_rank) starts from the same function.
    c2 = cfg(init_from=str(tmp_path / "d"), rank=2, epochs=1)
    res2 = train_lora(tiny_mas, ROWS, c2, out_dir=tmp_path / "r", progress=False)
    dense_ce = evaluate_ce(tiny_mas, dense.lora, ev, "resid_add")
    assert res2.history[0]["eval_ce"] == pytest.approx(dense_ce, rel=1e-5)
    with pytest.raises(ValueError, match="does not divide"):
        train_lora(
            tiny_mas,
            ROWS,
            cfg(init_from=str(tmp_path / "r"), rank=3),
            out_dir=tmp_path / "r3",
            progress=False,
        )


def test_distillation_matches_the_teacher_through_a_topk_schedule(tiny_mas, tmp_path):
    from saelora_core import prune_topk
    from saelora_core.training.splits import split_dataset

    dense = train_lora(
        tiny_mas, ROWS, cfg(init="uniform_small", lr=0.2), out_dir=tmp_path / "d", progress=False
    )
    teacher = dense.lora
    c = cfg(
        init_from=str(tmp_path / "d"),
        distill_from=str(tmp_path / "d"),
        sparsity="topk",
        topk_schedule=[8, 4],
        topk=2,
        epochs=4,
    )
    train, _, _ = split_dataset(tiny_mas, ROWS, c)

    def kl(lora):
        with torch.no_grad():
            return sum(
                example_loss(tiny_mas, lora, ex, "resid_add", True, teacher=teacher).item()
                for ex in train
            ) / len(train)

    assert kl(teacher) == pytest.approx(0.0, abs=1e-6)
    assert kl(SaeLora(teacher.d_sae, 1, init="zeros")) > 1e-3  # the no-op differs from it
    res = train_lora(tiny_mas, ROWS, c, out_dir=tmp_path / "s", progress=False)
    # One k per epoch, then topk: the support shrinks 8 → 4 → 2 and stays at 2.
    assert [h["l0_read"] for h in res.history[1:]] == [[8], [4], [2], [2]]
    assert res.lora.l0() == ([2], [2])
    # Training on the KL beats pruning the teacher to the same support size without it.
    assert kl(res.lora) < kl(prune_topk(teacher, 2).lora)
    # freeze_support: without a projection the support still cannot drift.
    c3 = cfg(init_from=str(tmp_path / "s"), distill_from=str(tmp_path / "d"), freeze_support=True)
    frozen = train_lora(tiny_mas, ROWS, c3, out_dir=tmp_path / "f", progress=False).lora
    assert torch.equal(frozen.a != 0, res.lora.a != 0)
    assert torch.equal(frozen.b != 0, res.lora.b != 0)
    assert not torch.equal(frozen.a, res.lora.a)  # it did train
    with pytest.raises(ValueError, match="topk_schedule"):
        cfg(topk_schedule=[4, 0])


def test_decision_statistics_do_not_need_the_rest_of_the_answer(tiny_mas):
    from saelora_core.training.inits import DECISION_TOKENS, latent_stats

    rows = [(f"tell me about cats {i}", "meow, they purr and sleep all day long") for i in range(3)]
    tok = tiny_mas.tokenizer
    whole = [format_turn(tok, p, r, "qa", 64) for p, r in rows]
    full = latent_stats(tiny_mas, whole)
    cut = [format_turn(tok, p, r, "qa", 64, DECISION_TOKENS - 1) for p, r in rows]
    assert all(len(c.tokens) + 8 < len(w.tokens) for c, w in zip(cut, whole, strict=True))
    short = latent_stats(tiny_mas, cut)
    torch.testing.assert_close(short["decision"], full["decision"], rtol=1e-5, atol=1e-6)
    assert torch.equal(short["fired"], full["fired"])
