"""Corpus builder determinism, the SAE training entry point end to end on a tiny model, and the
shipped default SAE's recorded quality."""

import json
from pathlib import Path

import pytest
import torch
from sae_lens import SAE

from saelora_core.models.presets import DEFAULT_SAE_DIR
from saelora_core.sae.corpus import build_corpus
from saelora_core.sae.evaluate import evaluate_sae
from saelora_core.sae.project_sources import dialogue_documents, math_documents, seed_documents
from saelora_core.sae.train import SaeTrainConfig, train_sae


def small_sources():
    return {
        "seed": (lambda: seed_documents()[:40], 2),
        "math": (lambda: math_documents(60), 1),
        "dialogue": (lambda: dialogue_documents(["french"])[:20], 1),
    }


def test_corpus_is_deterministic(tmp_path):
    a = build_corpus(tmp_path / "a", sources=small_sources(), heldout_frac=0.2)
    b = build_corpus(tmp_path / "b", sources=small_sources(), heldout_frac=0.2)
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == (
        tmp_path / "b" / "train.jsonl"
    ).read_bytes()
    assert a.manifest["train_sha256"] == b.manifest["train_sha256"]
    train = [
        json.loads(x)["text"] for x in (tmp_path / "a" / "train.jsonl").read_text().splitlines()
    ]
    held = [
        json.loads(x)["text"] for x in (tmp_path / "a" / "heldout.jsonl").read_text().splitlines()
    ]
    assert held and not set(held) & set(train)  # held-out text never appears in training
    s = a.manifest["sources"]["seed"]
    assert s["train_documents"] * 2 == sum(
        1 for r in (tmp_path / "a" / "train.jsonl").read_text().splitlines() if '"seed"' in r
    )
    assert any("Réponse" in d or "font" in d for d in math_documents(30))  # French math is there


def test_sae_training_entry_point_runs_end_to_end(tiny_mas, tmp_path):
    corpus = build_corpus(tmp_path / "corpus", sources=small_sources(), heldout_frac=0.2)
    cfg = SaeTrainConfig(
        preset="tiny",
        layer=tiny_mas.layer,
        d_sae=48,
        k=4,
        training_tokens=4096,
        context_size=32,
        train_batch_size_tokens=256,
        store_batch_size_prompts=4,
        n_batches_in_buffer=8,
        n_batches_for_norm_estimate=2,
        n_checkpoints=0,
        eval_tokens=512,
        save_dtype="bfloat16",
    )
    out = train_sae(
        tiny_mas.model, corpus.train_path, cfg, tmp_path / "sae", corpus_heldout=corpus.heldout_path
    )
    sae = SAE.load_from_disk(out)
    assert sae.cfg.d_sae == 48 and sae.cfg.d_in == tiny_mas.model.cfg.d_model
    from safetensors import safe_open

    with safe_open(out / "sae_weights.safetensors", "pt") as f:
        assert f.get_tensor("W_dec").dtype == torch.bfloat16  # stored small
    assert sae.W_dec.dtype == torch.float32  # restored on load
    m = json.loads((out / "metrics.json").read_text())
    assert m["mean_l0"] <= 4 + 1e-6 and 0 <= m["dead_fraction"] <= 1 and m["n_tokens"] > 0
    assert json.loads((out / "train_config.json").read_text())["k"] == 4


def test_evaluate_sae_perfect_reconstruction_scores_one(tiny_mas):
    """An SAE that reconstructs exactly (identity dictionary, k = d) has EV 1 and CE recovered 1."""
    from sae_lens import TopKSAE, TopKSAEConfig

    d = tiny_mas.model.cfg.d_model
    sae = TopKSAE(
        TopKSAEConfig(
            d_in=d, d_sae=2 * d, k=2 * d, dtype="float32", device="cpu", apply_b_dec_to_input=False
        )
    )
    with torch.no_grad():
        eye = torch.eye(d)
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    sae.activation_fn = torch.nn.ReLU()  # ReLU(x) - ReLU(-x) = x: exact reconstruction
    m = evaluate_sae(
        tiny_mas.model,
        sae,
        tiny_mas.layer,
        ["Question: what is two plus two?"] * 3,
        max_tokens=200,
        context_size=32,
    )
    assert m.explained_variance == pytest.approx(1.0, abs=1e-5)
    assert m.ce_loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert m.ce_with_sae == pytest.approx(m.ce_clean, abs=1e-4)


HELD_OUT = [
    "Question: How many sides does a hexagon have?\nAnswer: A hexagon has six sides.",
    "Question : Combien font 7 fois 8 ?\nRéponse : 7 fois 8 font 56.",
    "The context manager closes the file when the block exits, even if an exception is raised.",
]


@pytest.mark.skipif(not (DEFAULT_SAE_DIR / "metrics.json").exists(), reason="default SAE not built")
def test_shipped_sae_loads_with_recorded_shapes_and_quality():
    from saelora_core import load_model_and_sae

    cfg = json.loads((DEFAULT_SAE_DIR / "cfg.json").read_text())
    metrics = json.loads((DEFAULT_SAE_DIR / "metrics.json").read_text())
    assert Path(DEFAULT_SAE_DIR / "sae_weights.safetensors").stat().st_size < 25 * 2**20
    mas = load_model_and_sae("gemma-3-270m")
    assert (
        mas.sae.W_dec.shape == (cfg["d_sae"], cfg["d_in"]) and mas.sae.W_dec.dtype == torch.float32
    )
    m = evaluate_sae(mas.model, mas.sae, mas.layer, HELD_OUT, max_tokens=500, context_size=128)
    # Three short sentences are a noisy sample of general text: generous tolerance.
    assert m.explained_variance > metrics["general_text"]["overall"]["explained_variance"] - 0.15
    # BatchTopK saved as JumpReLU: L0 is k on average over a batch, not on every token.
    k = cfg["metadata"]["training_architecture_details"]["k"]
    assert k / 2 < m.mean_l0 < 2 * k


def test_runner_config_keeps_no_machine_path(tmp_path, monkeypatch):
    import json

    from saelora_core.io import paths
    from saelora_core.sae.train import portable_runner_config

    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    out = tmp_path / "data" / "saes" / "x"
    out.mkdir(parents=True)
    (out / "runner_cfg.json").write_text(
        json.dumps(
            {"output_path": "/tmp/run/x", "checkpoint_path": "/tmp/run/.x-ckpt/ab12", "lr": 4e-4}
        )
    )
    portable_runner_config(out)
    rc = json.loads((out / "runner_cfg.json").read_text())
    assert rc == {
        "output_path": "data/saes/x",
        "checkpoint_path": "data/saes/.x-ckpt/ab12",
        "lr": 4e-4,
    }
