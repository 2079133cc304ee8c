"""The offline pipeline end to end on the real default model, with a tiny budget."""

import json
import shutil
import subprocess

import pytest

from saelora_core.models.presets import DEFAULT_SAE_DIR

pytestmark = pytest.mark.skipif(
    not (DEFAULT_SAE_DIR / "cfg.json").exists(), reason="default SAE not built (make sae)"
)


def test_quick_demo_runs_every_stage(tmp_path):
    from saelora_core.demo.run import run_demo

    summary = run_demo(quick=True, out=tmp_path)
    names = [b["name"] for b in summary["behaviours"]]
    assert names == ["demo-math-french", "demo-math-upper"]
    for b in summary["behaviours"]:
        lora_dir = tmp_path / f"{b['name']}-quick"
        for name in (
            "params.pt",
            "metadata.json",
            "behaviour.json",
            "report.html",
            "demo_summary.json",
        ):
            assert (lora_dir / name).stat().st_size > 0, name
        rates = {(r["condition"], r["split"]): r for r in b["rates"]}
        assert {("base", "in_topic"), ("adapter", "in_topic"), ("base", "off_topic")} <= set(rates)
        assert all(0 <= r["rate"] <= 1 and r["n"] == 2 for r in rates.values())
        meta = json.loads((lora_dir / "metadata.json").read_text())
        assert meta["preset"] == "gemma-3-270m" and meta["sae"]["path"].endswith(
            "gemma-3-270m-l12-bt8k"
        )
        assert meta["config"]["response_tokens"] == 4
        html = (lora_dir / "report.html").read_text()
        assert "plotly" in html.lower() and b["name"] in html
    # The base model's answers are generated once: both behaviours share the eval prompts.
    fr, up = (json.loads((tmp_path / f"{n}-quick" / "behaviour.json").read_text()) for n in names)
    assert [s["base"] for s in fr["samples"]] == [s["base"] for s in up["samples"]]


def test_heldout_prompts_are_balanced_and_unseen():
    from saelora_core.data.heldout import heldout_prompts
    from saelora_core.io.paths import REPO_ROOT

    rows = heldout_prompts()
    assert [r["in_topic"] for r in rows] == [True] * 80 + [False] * 80
    seed = {
        json.loads(line)["prompt"].strip().lower()
        for f in (REPO_ROOT / "data" / "seed").glob("*.jsonl")
        for line in f.read_text().splitlines()
        if line.strip()
    }
    prompts = [r["prompt"].strip().lower() for r in rows]
    assert len(set(prompts)) == 160 and not seed & set(prompts)


def test_the_demo_writes_where_git_does_not_track_by_default():
    from saelora_core.cli.app import build_parser
    from saelora_core.demo.run import DEFAULT_DEMO_OUT
    from saelora_core.io.paths import REPO_ROOT

    assert DEFAULT_DEMO_OUT == REPO_ROOT / "runs" / "demo"
    assert build_parser().parse_args(["demo"]).out is None  # run_demo's default
    assert build_parser().parse_args(["demo", "--out", "loras"]).out == "loras"
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    outputs = [f"runs/demo/demo-math-french/{name}" for name in ("params.pt", "metadata.json")]
    outputs += ["runs/demo/demo-math-upper/demo_summary.json"]
    ignored = subprocess.run(
        ["git", "check-ignore", *outputs], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.split()
    assert ignored == outputs
