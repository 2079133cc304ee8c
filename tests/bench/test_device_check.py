"""bench/device_check.sh runs end to end on the CPU at the tiny shape and writes one JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_device_check_runs_on_the_cpu_at_a_tiny_shape(tmp_path):
    out = tmp_path / "device_check.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "device_check.sh"), "--cpu-tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads(out.read_text())
    assert rec["device"] == "cpu"
    (row,) = rec["scale"]["rows"]
    assert row["config"] == "tiny" and row["gen_tok_s"] > 0
    checks = rec["correctness"]["checks"]
    assert set(checks) == {"hooks_equal_sae_lens_splice", "train_step", "generate_equals_unbatched"}
    assert all(c["ok"] for c in checks.values())
    assert checks["hooks_equal_sae_lens_splice"]["max_abs_diff"] < 1e-4
