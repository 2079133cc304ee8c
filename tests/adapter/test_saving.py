"""Every adapter records its behaviour (dataset, guideline, detector); one without says so."""

import json
import logging
from pathlib import Path

import pytest
import torch

from saelora_core import SaeLora, load_lora, save_lora, train_lora
from saelora_core.adapter.saving import BEHAVIOUR_KEYS, build_metadata, missing_behaviour
from saelora_core.adapter.summary import adapter_info, info_text, summary_line
from saelora_core.analysis.behaviour import behaviour_metadata
from saelora_core.io.paths import REPO_ROOT
from saelora_core.training.config import LoraTrainingConfig
from saelora_core.ui.notebook_support import dataset_choice, detector_choice

BEHAVIOUR = {
    "dataset": "data/datasets/demo-math-french",
    "guideline": "respond in French",
    "detector": "french",
}
ROWS = [{"id": str(i), "prompt": f"Say yes {i}", "response": "yes yes"} for i in range(8)]


def save(tiny_mas, out: Path, extra: dict) -> None:
    lora = SaeLora(tiny_mas.sae.cfg.d_sae, 1, generator=torch.Generator().manual_seed(0))
    meta = build_metadata(
        lora,
        config={},
        preset="tiny",
        sae_identity=tiny_mas.sae_identity,
        layer=tiny_mas.layer,
        mode="resid_add",
        extra=extra,
    )
    save_lora(lora, out, meta)


def test_behaviour_round_trips_through_the_metadata(tiny_mas, tmp_path, caplog):
    save(tiny_mas, tmp_path / "a", BEHAVIOUR)
    with caplog.at_level(logging.WARNING):
        loaded = load_lora(tmp_path / "a", sae_identity=tiny_mas.sae_identity)
    assert {k: loaded.metadata[k] for k in BEHAVIOUR_KEYS} == BEHAVIOUR
    assert loaded.missing_behaviour == []
    assert "records no" not in caplog.text
    info = adapter_info(loaded)
    assert "WARNING" not in info_text(tmp_path / "a", info)
    assert 'behaviour "respond in French" (detector french)' in summary_line(info)


def test_a_missing_field_is_reported_on_load_and_in_the_summary(tiny_mas, tmp_path, caplog):
    save(tiny_mas, tmp_path / "b", {"dataset": "data/datasets/x", "guideline": "respond in X"})
    with caplog.at_level(logging.WARNING):
        loaded = load_lora(tmp_path / "b")
    assert loaded.missing_behaviour == ["detector"]
    assert "records no detector" in caplog.text
    info = adapter_info(loaded)
    assert info["missing"] == ["detector"]
    assert "WARNING  the metadata records no detector" in info_text(tmp_path / "b", info)
    assert "**Warning:** the metadata records no detector" in summary_line(info)


def test_repair_adapters_have_no_behaviour_to_miss():
    assert missing_behaviour({"repair": {"method": "latent_adapter"}}) == []
    assert missing_behaviour({}) == list(BEHAVIOUR_KEYS)


def test_behaviour_metadata_reads_the_manifest(tmp_path):
    (tmp_path / "fr").mkdir()
    (tmp_path / "fr" / "manifest.json").write_text(json.dumps({"guideline": "Respond in French"}))
    assert behaviour_metadata(tmp_path / "fr") == {
        "dataset": str(tmp_path / "fr"),
        "guideline": "Respond in French",
        "detector": "french",
    }
    (tmp_path / "pirate").mkdir()
    (tmp_path / "pirate" / "manifest.json").write_text(json.dumps({"guideline": "talk pirate"}))
    assert "detector" not in behaviour_metadata(tmp_path / "pirate")


def test_a_student_records_its_teachers_behaviour(tiny_mas, tmp_path, caplog):
    teacher = tmp_path / "teacher"
    save(tiny_mas, teacher, BEHAVIOUR)
    cfg = LoraTrainingConfig(
        lr=0.05, sparsity_weight=0.0, batch_size=4, rank=1, epochs=1, max_len=32,
        init="random", distill_from=str(teacher), name="student",
    )  # fmt: skip
    with caplog.at_level(logging.WARNING):
        res = train_lora(tiny_mas, ROWS, cfg, out_dir=tmp_path / "s", progress=False)
    assert {k: res.metadata[k] for k in BEHAVIOUR_KEYS} == BEHAVIOUR
    assert "without" not in caplog.text
    # Its own dataset wins over the teacher's.
    mine = {"dataset": "data/datasets/mine"}
    res = train_lora(
        tiny_mas, ROWS, cfg, out_dir=tmp_path / "s2", progress=False, extra_metadata=mine
    )
    assert res.metadata["dataset"] == "data/datasets/mine"
    assert res.metadata["detector"] == "french"


def test_training_without_a_behaviour_warns(tiny_mas, tmp_path, caplog):
    cfg = LoraTrainingConfig(lr=0.05, batch_size=4, rank=1, epochs=1, max_len=32, name="bare")
    with caplog.at_level(logging.WARNING):
        train_lora(tiny_mas, ROWS, cfg, out_dir=tmp_path / "bare", progress=False)
    assert "training bare without dataset, guideline, detector" in caplog.text


@pytest.mark.parametrize(
    "lora_dir", sorted(p.parent.name for p in (REPO_ROOT / "loras").glob("*/metadata.json"))
)
def test_every_shipped_adapter_records_its_behaviour(lora_dir):
    meta = json.loads((REPO_ROOT / "loras" / lora_dir / "metadata.json").read_text())
    assert missing_behaviour(meta) == []


@pytest.mark.parametrize(
    "lora_dir", sorted(p.parent.name for p in (REPO_ROOT / "loras").glob("*/metadata.json"))
)
def test_every_shipped_adapter_names_the_preset_of_its_own_sae(lora_dir):
    """An adapter trained on the first SAE says so (preset ``gemma-3-270m-topk4k``) rather than
    pointing at a default whose SAE it no longer fits."""
    from saelora_core.models.presets import PRESETS
    from saelora_core.sae.loading import load_sae

    meta = json.loads((REPO_ROOT / "loras" / lora_dir / "metadata.json").read_text())
    _, ident = load_sae(path=REPO_ROOT / PRESETS[meta["preset"]].sae_path)
    assert meta["sae"]["hash"] == ident["hash"], meta["preset"]


def test_notebook_pickers_start_on_the_adapters_own_choice_or_ask():
    names = ["demo-math-french", "demo-math-upper"]
    assert dataset_choice(names, BEHAVIOUR) == "demo-math-french"
    assert dataset_choice(names, {}) is None  # no silent fallback to another dataset
    assert dataset_choice(names, {"dataset": "data/datasets/elsewhere"}) is None
    assert detector_choice(BEHAVIOUR) == "french"
    assert detector_choice({}) is None
