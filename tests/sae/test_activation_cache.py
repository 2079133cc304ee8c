"""The activation cache: it holds exactly the model's activations on sae_lens's token stream,
resumes at a shard boundary, extends along the same stream, refuses other settings, and
training from it equals training from the model directly."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from saelora_core.sae.activation_cache import (
    CacheSettings,
    cache_activations,
    cached_tokens,
    corpus_texts,
    read_settings,
    shard_dirs,
    stream_activations,
    token_windows,
)
from saelora_core.sae.cached_batches import cached_batches, model_batches, special_token_ids
from saelora_core.sae.train import SaeTrainConfig
from saelora_core.sae.train_cached import (
    checkpoint_dir,
    start_from_data,
    train_sae_from_batches,
    train_sae_from_cache,
    trainer_config,
    training_sae,
)

TEXTS = [
    f"Document {i}: the quick brown fox {i * 7} jumps over {i % 5} lazy dogs. " * 3
    for i in range(40)
]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return path


def settings_for(mas, corpus, total_tokens=2048, seqs_per_shard=4):
    import hashlib

    return CacheSettings(
        model_name="tiny",
        hook_name=mas.hook_name,
        layer=mas.layer,
        d_in=mas.model.cfg.d_model,
        context_size=32,
        total_tokens=total_tokens,
        seqs_per_shard=seqs_per_shard,
        corpus_sha256=hashlib.sha256(corpus.read_bytes()).hexdigest(),
    )


def test_token_windows_join_documents_with_bos(tiny_mas):
    tok = tiny_mas.tokenizer
    wins = list(token_windows(iter(["ab", "cde"]), tok, context_size=4, bos_id=tok.bos_token_id))
    a, b, c, d, e = (tok.convert_tokens_to_ids(x) for x in "abcde")
    bos = tok.bos_token_id
    assert wins == [[bos, a, b, bos], [bos, c, d, e]]


def test_cache_round_trips_the_models_activations(tiny_mas, corpus, tmp_path):
    st = settings_for(tiny_mas, corpus)
    out = cache_activations(tiny_mas.model, corpus, tmp_path / "cache", st, progress=False)
    from datasets import Dataset

    shards = shard_dirs(out)
    assert len(shards) == 2048 // (4 * 32)
    ds = Dataset.load_from_disk(str(shards[1])).with_format("torch")[:]
    tokens = ds["token_ids"].long()
    _, cache = tiny_mas.model.run_with_cache(
        tokens, names_filter=tiny_mas.hook_name, stop_at_layer=tiny_mas.layer + 1
    )
    torch.testing.assert_close(ds[tiny_mas.hook_name], cache[tiny_mas.hook_name], rtol=0, atol=0)
    # the second shard holds windows 4..7 of the stream
    tok = tiny_mas.tokenizer
    wins = list(token_windows(corpus_texts(corpus), tok, 32, tok.bos_token_id))
    assert tokens.tolist() == wins[4:8]
    assert read_settings(out) == st
    assert json.loads((out / "cache_info.json").read_text())["tokens"] == 2048


def test_cache_resumes_and_refuses_other_settings(tiny_mas, corpus, tmp_path):
    full = cache_activations(
        tiny_mas.model, corpus, tmp_path / "full", settings_for(tiny_mas, corpus), progress=False
    )
    part = tmp_path / "part"
    cache_activations(tiny_mas.model, corpus, part, settings_for(tiny_mas, corpus), progress=False)
    for d in shard_dirs(part)[5:]:  # a killed run: only the first five shards were written
        import shutil

        shutil.rmtree(d)
    (part / ".tmp_shard_00005").mkdir()  # a half-written shard
    cache_activations(tiny_mas.model, corpus, part, settings_for(tiny_mas, corpus), progress=False)
    assert [d.name for d in shard_dirs(part)] == [d.name for d in shard_dirs(full)]
    for a, b in zip(shard_dirs(part), shard_dirs(full), strict=True):
        fa = sorted(a.glob("*.arrow"))[0].read_bytes()
        fb = sorted(b.glob("*.arrow"))[0].read_bytes()
        assert fa == fb
    with pytest.raises(ValueError, match="other settings"):
        cache_activations(
            tiny_mas.model, corpus, part, settings_for(tiny_mas, corpus, seqs_per_shard=8)
        )


def test_cached_batches_drop_special_tokens(tiny_mas, corpus, tmp_path):
    out = cache_activations(
        tiny_mas.model, corpus, tmp_path / "c", settings_for(tiny_mas, corpus), progress=False
    )
    ids = special_token_ids(tiny_mas.tokenizer)
    batches = list(cached_batches(out, 64, exclude_ids=ids, shuffle=False))
    tok = tiny_mas.tokenizer
    wins = list(token_windows(corpus_texts(corpus), tok, 32, tok.bos_token_id))[:64]
    tokens = torch.tensor(wins)
    acts = torch.cat(
        [
            a
            for _, a in stream_activations(
                tiny_mas.model, iter(wins), tiny_mas.hook_name, tiny_mas.layer, 16
            )
        ]
    )
    assert (tokens == tok.bos_token_id).any(1).all()  # every window has special tokens
    keep = acts.reshape(-1, acts.shape[-1])[
        ~torch.isin(tokens.reshape(-1), torch.tensor(sorted(ids)))
    ]
    got = torch.cat(batches)
    assert got.shape[0] == (keep.shape[0] // 64) * 64
    torch.testing.assert_close(got, keep[: got.shape[0]], rtol=0, atol=0)


def tiny_cfg(**kw):
    base = dict(
        preset="tiny", layer=1, d_sae=48, k=4, training_tokens=64 * 20, context_size=32,
        train_batch_size_tokens=64, n_batches_for_norm_estimate=2, lr_warm_up_steps=2,
        dead_feature_window=5, checkpoint_every=7, save_dtype="float32", architecture="batchtopk",
    )  # fmt: skip
    base.update(kw)
    return SaeTrainConfig(**base)


def test_training_from_cache_equals_training_from_the_model(tiny_mas, corpus, tmp_path):
    out = cache_activations(
        tiny_mas.model, corpus, tmp_path / "c", settings_for(tiny_mas, corpus), progress=False
    )
    ids = special_token_ids(tiny_mas.tokenizer)
    cfg = tiny_cfg(training_tokens=64 * 12)  # within one pass over the cache
    from_cache = train_sae_from_cache(
        out, cfg, tmp_path / "sae-cache", exclude_ids=ids, shuffle=False
    )
    st = settings_for(tiny_mas, corpus)

    def from_model(skip):  # the same stream, computed by the model now
        assert skip == 0
        return model_batches(tiny_mas.model, corpus, st, 64, exclude_ids=ids)

    direct = train_sae_from_batches(
        from_model, tiny_mas.model.cfg.d_model, cfg, tmp_path / "sae-direct"
    )
    a = load_file(from_cache / "sae_weights.safetensors")
    b = load_file(direct / "sae_weights.safetensors")
    assert a.keys() == b.keys() and "threshold" in a  # BatchTopK saves as JumpReLU
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert json.loads((from_cache / "cfg.json").read_text())["architecture"] == "jumprelu"


class Killed(Exception):
    pass


def killed_at_batch(index: int, monkeypatch, run) -> None:
    """``run()`` with the cache's batch stream raising at batch ``index``: a run killed there."""
    from saelora_core.sae import cached_batches as module

    original = module.cached_batches

    def dying(*a, **kw):
        for i, b in enumerate(original(*a, **kw)):
            if i == index:
                raise Killed
            yield b

    with monkeypatch.context() as m:
        m.setattr(module, "cached_batches", dying)
        with pytest.raises(Killed):
            run()


def test_training_resumes_to_the_same_weights(tiny_mas, corpus, tmp_path, monkeypatch):
    out = cache_activations(
        tiny_mas.model, corpus, tmp_path / "c", settings_for(tiny_mas, corpus), progress=False
    )
    ids = special_token_ids(tiny_mas.tokenizer)
    cfg = tiny_cfg()
    whole = train_sae_from_cache(out, cfg, tmp_path / "whole", exclude_ids=ids)

    killed_at_batch(
        15,
        monkeypatch,
        lambda: train_sae_from_cache(out, cfg, tmp_path / "resumed", exclude_ids=ids),
    )
    assert (tmp_path / ".resumed-checkpoints").exists()
    resumed = train_sae_from_cache(out, cfg, tmp_path / "resumed", exclude_ids=ids)
    a = load_file(whole / "sae_weights.safetensors")
    b = load_file(resumed / "sae_weights.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7)


def test_a_cache_extends_along_the_same_stream(tiny_mas, corpus, tmp_path):
    full = cache_activations(
        tiny_mas.model, corpus, tmp_path / "full", settings_for(tiny_mas, corpus), progress=False
    )
    grown = tmp_path / "grown"
    small = settings_for(tiny_mas, corpus, total_tokens=1024)
    cache_activations(tiny_mas.model, corpus, grown, small, progress=False)
    assert len(shard_dirs(grown)) == 1024 // (4 * 32)
    assert cached_tokens(grown) == 1024
    cache_activations(tiny_mas.model, corpus, grown, settings_for(tiny_mas, corpus), progress=False)
    assert cached_tokens(grown) == 2048
    for a, b in zip(shard_dirs(grown), shard_dirs(full), strict=True):
        assert (
            sorted(a.glob("*.arrow"))[0].read_bytes() == sorted(b.glob("*.arrow"))[0].read_bytes()
        )


def test_a_run_keeps_the_shards_it_started_with(tiny_mas, corpus, tmp_path):
    """A cache that grows between a kill and a resume does not change what the run reads."""
    half = settings_for(tiny_mas, corpus, total_tokens=1024)
    cache = cache_activations(tiny_mas.model, corpus, tmp_path / "c", half, progress=False)
    ids = special_token_ids(tiny_mas.tokenizer)
    cfg = tiny_cfg(training_tokens=64 * 12)
    whole = train_sae_from_cache(cache, cfg, tmp_path / "whole", exclude_ids=ids)
    passes = json.loads((whole / "cache_passes.json").read_text())
    assert passes["cache_shards"] == 8 and passes["cached_tokens"] == 1024

    run = tmp_path / "resumed"
    ckpt = checkpoint_dir(run)
    ckpt.mkdir()
    (ckpt / "cache_extent.json").write_text(json.dumps({"shards": 8}))  # started on 8 shards
    cache_activations(
        tiny_mas.model, corpus, cache, settings_for(tiny_mas, corpus), progress=False
    )  # the cache has grown to 16 since
    resumed = train_sae_from_cache(cache, cfg, run, exclude_ids=ids)
    a = load_file(whole / "sae_weights.safetensors")
    b = load_file(resumed / "sae_weights.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_decoder_bias_starts_at_the_scaled_mean(tiny_mas):
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(0)
    batches = [torch.randn(64, 8) * 3 + torch.arange(8.0) * 10 for _ in range(3)]
    for init in ("mean", "zeros"):
        cfg = tiny_cfg(d_sae=16, k=2, n_batches_for_norm_estimate=2, b_dec_init=init)
        sae = training_sae(cfg, 8)
        trainer = SAETrainer(
            cfg=trainer_config(cfg, Path("unused")), sae=sae, data_provider=iter(())
        )
        start_from_data(trainer, iter(batches), cfg)
        seen = torch.cat(batches[:2])
        scale = 8**0.5 / seen.norm(dim=-1).mean().item()
        assert trainer.activation_scaler.scaling_factor == pytest.approx(scale, rel=1e-6)
        want = seen.mean(0) * scale if init == "mean" else torch.zeros(8)
        torch.testing.assert_close(sae.b_dec.detach(), want, rtol=1e-5, atol=1e-6)


def test_a_snapshot_is_the_sae_of_a_run_stopped_there(tiny_mas, corpus, tmp_path):
    out = cache_activations(
        tiny_mas.model, corpus, tmp_path / "c", settings_for(tiny_mas, corpus), progress=False
    )
    ids = special_token_ids(tiny_mas.tokenizer)
    long = tiny_cfg(training_tokens=64 * 20, checkpoint_every=5, snapshot_every=10)
    train_sae_from_cache(out, long, tmp_path / "long", exclude_ids=ids, shuffle=False)
    short = tiny_cfg(training_tokens=64 * 10, checkpoint_every=5)
    ended = train_sae_from_cache(out, short, tmp_path / "short", exclude_ids=ids, shuffle=False)
    snap = checkpoint_dir(tmp_path / "long") / "snapshots" / "step_0000010"
    assert (
        json.loads((snap / "cfg.json").read_text())["metadata"]["hook_name"] == tiny_mas.hook_name
    )
    a = load_file(snap / "sae_weights.safetensors")
    b = load_file(ended / "sae_weights.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_a_resume_on_a_sparsity_window_boundary_equals_the_unbroken_run(
    tiny_mas, corpus, tmp_path, monkeypatch
):
    """sae_lens resets its feature-sparsity window every 100 steps here; a checkpoint taken on
    step 100 holds the window already reset, and resuming from it must not reset it again
    (that divided 0 by 0 in sae_lens's sparsity log and stopped the run)."""
    out = cache_activations(
        tiny_mas.model, corpus, tmp_path / "c", settings_for(tiny_mas, corpus), progress=False
    )
    ids = special_token_ids(tiny_mas.tokenizer)
    cfg = tiny_cfg(training_tokens=64 * 110, checkpoint_every=50)
    whole = train_sae_from_cache(out, cfg, tmp_path / "whole", exclude_ids=ids)

    killed_at_batch(
        105,
        monkeypatch,
        lambda: train_sae_from_cache(out, cfg, tmp_path / "resumed", exclude_ids=ids),
    )
    assert (checkpoint_dir(tmp_path / "resumed") / "step_0000100" / "done").exists()
    resumed = train_sae_from_cache(out, cfg, tmp_path / "resumed", exclude_ids=ids)
    a = load_file(whole / "sae_weights.safetensors")
    b = load_file(resumed / "sae_weights.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7)
