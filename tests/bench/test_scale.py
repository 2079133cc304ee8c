"""The scale harness (bench/scale.py) runs end to end on CPU at a tiny Gemma-2-shaped config."""

import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def test_scale_harness_runs_at_a_tiny_shape(tmp_path):
    out = tmp_path / "scale.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "tiny" in proc.stdout and "generate" in proc.stdout
    rec = json.loads(out.read_text())
    assert rec["peak_flops"] > 1e9  # measured in the same run
    (row,) = rec["rows"]
    for path in ("naive", "per_example", "batched"):
        assert row[f"train_{path}_tok_s"] > 0 and 0 < row[f"train_{path}_mfu"] < 1
        assert row[f"train_{path}_peak_gb"] > 0
    assert row["gen_tok_s"] > 0


def test_random_jumprelu_sae_has_gemma_scope_shape_and_sparse_codes():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import scale
    finally:
        sys.path.pop(0)
    sae = scale.random_jumprelu_sae(64, 1024, 3, torch.float32, "cpu")
    assert (
        sae.W_enc.shape == (64, 1024) and sae.cfg.metadata.hook_name == "blocks.3.hook_resid_post"
    )
    z = sae.encode(torch.randn(200, 64))
    l0 = (z > 0).float().sum(-1).mean().item()
    assert 2 < l0 < 40  # about 1 % of 1024 latents fire
    cfg = scale.tl_config("google/gemma-2-9b-it", torch.float32, "meta")
    assert (cfg.d_model, cfg.n_layers, cfg.d_vocab) == (3584, 42, 256000)  # published numbers
