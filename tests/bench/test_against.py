"""bench/against.py: a bench run on an earlier revision (a git worktree) and on the working tree,
its throughputs matched row by row."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _against():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import against
    finally:
        sys.path.pop(0)
    return against


def test_rows_match_on_their_text_fields_and_get_ratios():
    against = _against()
    old = {"rows": [{"dtype": "float32", "path": "batched", "tokens_per_s": 100.0, "seconds": 9}]}
    new = {
        "rows": [
            {"dtype": "float32", "path": "batched", "tokens_per_s": 250.0, "seconds": 3},
            {"dtype": "bfloat16", "path": "batched", "tokens_per_s": 400.0, "seconds": 2},
        ]
    }
    (row,) = against.compare(old, new)  # the bf16 row has no counterpart
    assert row["dtype"] == "float32" and row["path"] == "batched"
    assert row["tokens_per_s_ratio"] == 2.5 and "seconds_ratio" not in row
    slower = {"rows": [{**new["rows"][0], "tokens_per_s": 150.0}]}
    faster = {"rows": [{**new["rows"][0], "tokens_per_s": 400.0}]}
    runs = [against.compare(old, x) for x in (new, slower, faster)]
    (med,) = against.median_rows(runs)  # the median pair, with every pair's ratio
    assert med["dtype"] == "float32" and med["tokens_per_s_new"] == 250.0
    assert med["tokens_per_s_ratio"] == 2.5 and med["tokens_per_s_ratios"] == [2.5, 1.5, 4.0]


def test_runs_the_committed_bench_and_the_working_tree_one_after_the_other(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: there is no earlier revision to check out")
    out = tmp_path / "against.json"
    before = _worktrees()
    args = ["--tiny", "--examples", "8", "--epochs", "1", "--dtypes", "float32"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "against.py"), "HEAD", "--json", str(out), "--"]
        + ["bench/train_throughput.py", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = json.loads(out.read_text())
    (row,) = rec["rows"]
    assert row["path"] == "batched" and row["dtype"] == "float32"
    assert row["tokens_per_s_old"] > 0 and row["tokens_per_s_new"] > 0
    assert row["tokens_per_s_ratio"] == row["tokens_per_s_new"] / row["tokens_per_s_old"]
    assert len(rec["commit"]) == 40
    assert _worktrees() == before  # the earlier revision's worktree is removed again


def _worktrees() -> list[str]:
    cmd = ["git", "worktree", "list", "--porcelain"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.startswith("worktree ")]
