"""A behaviour dataset on disk.

Layout of `<out>/<name>/`:
    hf/             `datasets.DatasetDict({"train", "eval"})` saved with `save_to_disk`
    manifest.json   what was built from what, counts, token usage, failed rows (written last)
    failure.json    only after a run that could not build the dataset: the error, counts and
                    every failed request (removed by the next successful run)
    .lock           held by the run writing this directory (see `lock.py`)
Read it back with `load_behaviour_dataset(<out>/<name>)`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import datasets

from saelora_core.data.config import DatasetError

FORMAT = "saelora-behaviour-dataset/1"


HF_DIR = "hf"


MANIFEST = "manifest.json"


FAILURE = "failure.json"


FAILURE_FORMAT = "saelora-behaviour-dataset-failure/1"


FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "prompt": datasets.Value("string"),
        "response": datasets.Value("string"),
        "original_response": datasets.Value("string"),
        "modified": datasets.Value("bool"),
        "in_topic": datasets.Value("bool"),
        "topic": datasets.Value("string"),
    }
)


def to_dataset_dict(splits: dict[str, list[dict]]) -> datasets.DatasetDict:
    """The rows of each split as a `DatasetDict` with :data:`FEATURES`. Column-wise, so an empty
    split (eval_n=0) still gets every column."""
    return datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict(
                {column: [row[column] for row in rows] for column in FEATURES}, features=FEATURES
            )
            for name, rows in splits.items()
        }
    )


def save_splits(out_dir: Path, dataset: datasets.DatasetDict, progress: bool) -> None:
    """Save `dataset` as `out_dir/hf`; the caller holds `out_dir`'s lock."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # The old manifest goes first: a manifest only ever describes the hf/ folder beside it.
    (out_dir / MANIFEST).unlink(missing_ok=True)
    # Leftovers of runs killed mid-save; under the lock no other run can be using them.
    for stale in out_dir.glob(f".{HF_DIR}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out_dir / f".{HF_DIR}.{os.getpid()}.tmp"
    bars_were_on = datasets.is_progress_bar_enabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        # One shard per split: the data is small, and `datasets` cannot reload an empty split
        # saved with zero shards (eval_n=0).
        dataset.save_to_disk(str(tmp), num_shards={str(name): 1 for name in dataset})
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    # Swap by renames: the old folder moves aside before the new one moves in, so `hf/` is
    # missing only between two renames, never half-deleted.
    old = out_dir / f".{HF_DIR}.{os.getpid()}.old"
    if (out_dir / HF_DIR).exists():
        os.replace(out_dir / HF_DIR, old)
    os.replace(tmp, out_dir / HF_DIR)
    shutil.rmtree(old, ignore_errors=True)


def load_behaviour_dataset(path: str | Path) -> datasets.DatasetDict:
    """Load a built dataset: `path` is the dataset directory (holding `hf/`) or `hf/` itself."""
    path = Path(path)
    target = path / HF_DIR if (path / HF_DIR).is_dir() else path
    if not target.is_dir():
        raise DatasetError(
            f"no behaviour dataset at {path} (build one with `saelora dataset make`)"
        )
    loaded = datasets.load_from_disk(str(target))
    if not isinstance(loaded, datasets.DatasetDict) or {"train", "eval"} - set(loaded):
        raise DatasetError(f"{target} is not a behaviour dataset (needs 'train' and 'eval')")
    return loaded


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read `manifest.json` of the dataset directory `path`."""
    return json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))
