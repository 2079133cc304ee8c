"""Sources and config: seed set, local JSONL/CSV/datasets folders, HelpSteer, validation."""

from __future__ import annotations

import json

import datasets
import pytest

from saelora_core.data import (
    DatasetConfig,
    SourceError,
    default_seed_dir,
    load_helpsteer,
    load_local,
    load_seed,
    load_source,
)
from saelora_core.data.sources import Columns
from tests.llm_server import seed_rows, write_seed_dir


def test_seed_loader_skips_malformed_rows_with_file_and_line(tmp_path):
    bad = [
        "{not json",
        json.dumps({"id": "x1", "topic": "math", "prompt": "", "response": "r"}),
        json.dumps({"id": "x2", "topic": "math", "response": "r"}),
        json.dumps({"id": "x3", "topic": "math", "prompt": 5, "response": "r"}),
        json.dumps(["a", "list"]),
        json.dumps({"id": "math-000", "topic": "math", "prompt": "dup id", "response": "r"}),
    ]
    seed = write_seed_dir(tmp_path / "seed", seed_rows(3, 2), bad)
    data = load_seed(seed)
    assert [r.id for r in data.rows] == [
        "math-000",
        "math-001",
        "math-002",
        "history-000",
        "history-001",
    ]
    assert data.rows[0].response_fr == "0 + 0 font 0."
    assert data.rows[3].response_fr is None and data.rows[3].topic == "history"
    reasons = {s.location: s.reason for s in data.skipped}
    assert set(reasons) == {f"tiny.jsonl:{line}" for line in range(6, 12)}
    assert "invalid JSON" in reasons["tiny.jsonl:6"]
    assert reasons["tiny.jsonl:7"] == "empty 'prompt'"
    assert reasons["tiny.jsonl:8"] == "missing 'prompt'"
    assert reasons["tiny.jsonl:9"] == "'prompt' is int, not a string"
    assert "expected an object" in reasons["tiny.jsonl:10"]
    assert "duplicate id 'math-000'" in reasons["tiny.jsonl:11"]


def test_source_with_no_usable_rows_is_a_clear_error(tmp_path):
    seed = write_seed_dir(tmp_path / "seed", [{"id": "a", "prompt": "", "response": "r"}])
    with pytest.raises(
        SourceError, match=r"yielded no usable rows \(1 skipped: tiny.jsonl:1: empty"
    ):
        load_seed(seed)
    with pytest.raises(SourceError, match="no seed files"):
        load_seed(tmp_path / "missing")


def test_local_jsonl_and_csv_with_custom_columns(tmp_path):
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text(
        json.dumps({"question": "q1", "answer": "a1"})
        + "\n\n"
        + json.dumps({"question": "q2"})
        + "\n"
    )
    data = load_local(jsonl, Columns(prompt="question", response="answer"))
    assert [(r.id, r.prompt, r.response, r.topic) for r in data.rows] == [
        ("pairs-1", "q1", "a1", "")
    ]
    assert data.skipped[0].location == "pairs.jsonl:3"

    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text('prompt,response,topic\n"multi\nline q",a1,math\nq2,,x\n')
    data = load_local(csv_path)
    assert [(r.prompt, r.topic) for r in data.rows] == [("multi\nline q", "math")]
    assert data.skipped[0].reason == "empty 'response'"
    with pytest.raises(SourceError, match=r"no column\(s\) \['question'\]"):
        load_local(csv_path, Columns(prompt="question"))
    with pytest.raises(SourceError, match="unsupported source file"):
        (tmp_path / "x.txt").write_text("hi")
        load_local(tmp_path / "x.txt")
    with pytest.raises(SourceError, match="source not found"):
        load_local(tmp_path / "nope.jsonl")


def test_local_datasets_folder_dataset_and_dict(tmp_path):
    ds = datasets.Dataset.from_dict({"prompt": ["p1", "p2"], "response": ["r1", None]})
    ds.save_to_disk(str(tmp_path / "flat"))
    data = load_local(tmp_path / "flat")
    assert [r.prompt for r in data.rows] == ["p1"] and data.skipped[
        0
    ].reason == "missing 'response'"
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "dict"))
    assert load_local(tmp_path / "dict", split="test").rows[0].response == "r1"
    with pytest.raises(SourceError, match=r"no split 'train'; splits: \['test'\]"):
        load_local(tmp_path / "dict")


def test_helpsteer_goes_through_datasets_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_dict(
            {"prompt": ["What is 2+2?"], "response": ["4"], "helpfulness": [4]}
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = load_helpsteer("validation")
    assert calls == [("nvidia/HelpSteer", "validation")]
    assert data.rows[0].prompt == "What is 2+2?" and data.name == "nvidia/HelpSteer[validation]"
    assert load_source(DatasetConfig(source="helpsteer")).rows[0].response == "4"


def test_real_seed_set_loads():
    if not any(default_seed_dir().glob("*.jsonl")):
        pytest.skip(f"no seed files in {default_seed_dir()} yet")
    data = load_seed()
    assert len(data.rows) >= 100
    assert not data.skipped, data.skipped[:3]
    assert all(row.topic for row in data.rows)


def test_config_validation_and_round_trip():
    cfg = DatasetConfig(topic="Mathematics", guideline="respond in French", n=3)
    assert cfg.dataset_name == "seed-mathematics-respond-in-french"
    assert DatasetConfig.from_dict(cfg.to_dict()) == cfg
    assert "api_key" not in json.dumps(cfg.to_dict()).replace("api_key_env", "")
    for bad, match in [
        ({"n": 0}, "n must be >= 1"),
        ({"eval_n": -1}, "eval_n must be >= 0"),
        ({"backend": "gpt"}, "backend must be one of"),
        ({"base_url": "openrouter.ai"}, "base_url must start with http"),
        ({"name": "../x"}, "plain directory name"),
        ({"topic": " "}, "topic must not be empty"),
    ]:
        with pytest.raises(ValueError, match=match):
            DatasetConfig(**bad)
    with pytest.raises(ValueError, match=r"unknown DatasetConfig fields: \['api_key'\]"):
        DatasetConfig.from_dict({"api_key": "x"})
