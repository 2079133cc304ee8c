"""The notebooks in a real browser: served by ``marimo run`` on 127.0.0.1, opened in Debian's
Chromium (driven by playwright; no browser is downloaded), on the tiny test model.

For each notebook the test waits for its main outputs, fails on any cell that shows an error
(marimo marks it ``has-error``) or on one of our own error callouts, presses the cheap run
buttons (build a dataset, a tiny training run, the logit attribution) and checks that their
outputs appear. No page may reach past 127.0.0.1 (no CDN). A last check opens a notebook with
``marimo edit``: the project's ``[tool.marimo.runtime]`` makes its cells run on open.

Skipped, with the reason, when no Chromium or no playwright is installed (``make setup``
installs both).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from saelora_core.reporting.export import find_browser

ROOT = Path(__file__).resolve().parents[2]
MARIMO = Path(sys.executable).with_name("marimo")
NOTEBOOK_ENV = ("SAELORA_ROOT", "SAELORA_PRESET", "SAELORA_LORA", "SAELORA_DATASETS")
OPEN_TIMEOUT_MS = 120_000  # typically 5-15 s per notebook on the tiny model
BUTTON_TIMEOUT_MS = 120_000
# marimo's own plotly plugin asks for MathJax from a CDN whenever it draws a figure (its frontend,
# marimo 0.25); figures still draw without it. Exported files must not (test_exports_offline).
MARIMO_CDN = ("https://cdn.jsdelivr.net/npm/mathjax-full@",)
LOCAL = ("http://127.0.0.1", "data:", "blob:", *MARIMO_CDN)
# Our own error callouts (cells that catch an error and stop with a message).
ERROR_TEXTS = (
    "Cannot load",
    "Build failed",
    "Training refused",
    "Invalid settings",
    "Traceback",
)


@dataclass(frozen=True)
class Press:
    button: str
    """The run button's label."""
    shows: str
    """Text that appears once its step has run."""


@dataclass(frozen=True)
class Page:
    texts: tuple[str, ...]
    """Texts the page shows once its cheap cells have run ("{adapter}": the adapter's name)."""
    selectors: tuple[str, ...] = ()
    """CSS selectors that must match (plotly figures are ``marimo-plotly``)."""
    presses: tuple[Press, ...] = field(default=())
    check_cells: bool = False
    """After the presses, no table cell may show a Python list or a float with more than
    ``MAX_DIGITS`` significant digits (``io.format`` formats every table)."""


MAX_DIGITS = 4
PY_LIST = re.compile(r"^\s*\[.*\]\s*$|^\s*\{.*\}\s*$", re.S)
DECIMAL = re.compile(r"(?<![\w.])[-+]?(\d+)\.(\d+)(?:e[-+]?\d+)?(?![\w.])", re.I)


def significant_digits(whole: str, frac: str) -> int:
    """Significant digits of ``whole.frac`` as written (leading zeros do not count)."""
    return len((whole + frac).lstrip("0")) or 1


def unreadable_cells(texts: list[str]) -> list[str]:
    """The cells that show a Python list/dict, or a decimal with more than ``MAX_DIGITS``
    significant digits."""
    bad = []
    for t in texts:
        if PY_LIST.match(t) or any(
            significant_digits(w, f) > MAX_DIGITS for w, f in DECIMAL.findall(t)
        ):
            bad.append(t)
    return bad


PAGES = {
    "01_dataset": Page(
        ("Press Build dataset", "train: 16 rows", "Training target"),
        ("marimo-table",),
        (Press("Build dataset", "Built"),),
    ),
    "02_train": Page(
        ("Loaded tiny", "Estimated time", "Optimizer", "Sparsity", "Press Train to start"),
        (),
        (Press("Train", "Saved to"),),
    ),
    "03_features": Page(
        ("Adapter {adapter}", "Reads and writes per token"),
        ("marimo-plotly",),
        (Press("Compare answers", "Per token of the adapter's answer"),),
        check_cells=True,
    ),
    "04_logit_attribution": Page(
        ("{adapter}",),
        ("marimo-plotly",),
        (Press("Run attribution on these prompts", "in − off"),),
        check_cells=True,
    ),
    "05_sparsity": Page(("{adapter}", "Run pruning sweep"), ("marimo-plotly",)),
    "06_sae_repair": Page(("Run repair",), ("marimo-plotly",)),
    "07_compare": Page(("Every answer counted as a hit",), ("marimo-plotly",)),
}


def _unavailable() -> str | None:
    if find_browser() is None:
        return "no Chromium found (apt-get install chromium, or make setup)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None


pytestmark = pytest.mark.skipif(_unavailable() is not None, reason=str(_unavailable()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serve(args: list[str], env: dict[str, str]) -> Iterator[str]:
    """``marimo <args>`` on a free port of 127.0.0.1; yields its URL, stops it afterwards."""
    port = _free_port()
    base = {k: v for k, v in os.environ.items() if k not in NOTEBOOK_ENV}
    base.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.Popen(
        [str(MARIMO), *args, "--headless", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env={**base, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read() if proc.stdout else ""
                    raise RuntimeError(f"marimo did not start ({' '.join(args)}):\n{out}") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=find_browser(), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def served(tiny_env: dict[str, str], tmp_path_factory) -> Iterator[tuple[str, Path, str]]:
    """All notebooks served by one ``marimo run notebooks/`` (its kernels share one process, so
    the tiny model loads once), writing into a temporary root."""
    root = tmp_path_factory.mktemp("browser")
    datasets = root / "data" / "datasets"
    shutil.copytree(tiny_env["SAELORA_DATASETS"], datasets)
    (root / "results").symlink_to(ROOT / "results")  # 06 shows the committed repair study
    env = {**tiny_env, "SAELORA_ROOT": str(root), "SAELORA_DATASETS": str(datasets)}
    with _serve(["run", "notebooks", "--no-token", "--show-tracebacks"], env) as url:
        yield url, root, Path(tiny_env["SAELORA_LORA"]).name


def _problems(page, *, texts: bool = True) -> list[str]:
    """Cells marimo marks as failed, and (``texts``; not in edit mode, whose page shows the
    source code) our own error callouts."""
    found = []
    for cell in page.locator(".marimo-cell.has-error").all():
        found.append("cell error: " + cell.inner_text()[:800])
    if not texts:
        return found
    text = page.inner_text("body")
    found += [f"page shows {t!r}" for t in ERROR_TEXTS if t in text]
    if "loras//" in text:
        found.append("a label lost its <name> to the HTML parser: 'loras//'")
    return found


def _text(page, text: str):
    """The first element showing ``text`` (case-sensitive; playwright's plain string match
    ignores case, and "Saved to" would match the label "saved to loras/NAME/")."""
    return page.get_by_text(re.compile(re.escape(text))).first


def _wait_for(page, spec: Page, adapter: str) -> None:
    for text in spec.texts:
        _text(page, text.format(adapter=adapter)).wait_for(timeout=OPEN_TIMEOUT_MS)
    for sel in spec.selectors:
        page.locator(sel).first.wait_for(state="attached", timeout=OPEN_TIMEOUT_MS)


@pytest.mark.parametrize("name", list(PAGES))
def test_notebook_in_the_browser(name: str, served, browser):
    url, root, adapter = served
    spec = PAGES[name]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside: list[str] = []
    page.on(
        "request",
        lambda r: outside.append(r.url) if not r.url.startswith(LOCAL) else None,
    )
    try:
        page.goto(f"{url}/?file={name}.py")
        _wait_for(page, spec, adapter)
        assert not _problems(page), _problems(page)
        for press in spec.presses:
            page.get_by_role("button", name=press.button).first.click()
            _text(page, press.shows).wait_for(timeout=BUTTON_TIMEOUT_MS)
            assert not _problems(page), (press.button, _problems(page))
        if spec.check_cells:
            cells = [c.inner_text() for c in page.locator("td").all()]
            assert cells, f"{name}: no table cell found"
            assert not unreadable_cells(cells), unreadable_cells(cells)[:10]
        assert not outside, f"{name} reached past 127.0.0.1: {outside[:5]}"
    finally:
        page.close()
    if name == "02_train":
        assert (root / "loras" / "lora" / "params.pt").exists()


def test_edit_mode_runs_the_cells_on_open(tiny_env: dict[str, str], browser):
    """``marimo edit`` (what ``make notebooks`` opens) runs the cheap cells without a click:
    pyproject's ``[tool.marimo.runtime] auto_instantiate = true``."""
    env = {**tiny_env, "SAELORA_ROOT": str(Path(tiny_env["SAELORA_DATASETS"]).parent)}
    with _serve(["edit", "notebooks/01_dataset.py", "--no-token"], env) as url:
        page = browser.new_page()
        try:
            page.goto(url)
            _text(page, "Builds into").wait_for(timeout=OPEN_TIMEOUT_MS)
            assert not _problems(page, texts=False), _problems(page, texts=False)
        finally:
            page.close()


def test_exported_html_is_self_contained(tiny_mas, tiny_env: dict[str, str], browser, tmp_path):
    """A figure's HTML export (with the plotly.min.js written beside it) and an adapter's HTML
    report (plotly.js inline) open offline: no MathJax or other CDN."""
    from saelora_core.reporting import figures
    from saelora_core.reporting.adapter_report import export_report
    from saelora_core.reporting.export import save_figure

    fig = figures.fig_loss_curve([{"step": 0, "eval_ce": 3.0}, {"step": 2, "eval_ce": 2.5}])
    fig.update_layout(title="CE in nats: $\\log p$ and λ")
    (figure,) = save_figure(fig, tmp_path, "loss", formats=("html",))
    report = export_report(tiny_env["SAELORA_LORA"], tmp_path / "report.html", mas=tiny_mas)
    for path in (figure, report):
        page = browser.new_page()
        outside: list[str] = []
        page.on(
            "request",
            lambda r, outside=outside: (
                outside.append(r.url) if not r.url.startswith(("file:", "data:", "blob:")) else None
            ),
        )
        try:
            page.goto(path.as_uri())
            page.locator(".plotly, .js-plotly-plot").first.wait_for(timeout=30_000)
            page.wait_for_timeout(500)
            assert not outside, f"{path.name} fetched {outside[:5]}"
        finally:
            page.close()


def test_unreadable_cells_are_found():
    """The cell check itself (no browser needed): lists, dicts and long floats are caught."""
    assert unreadable_cells(["[679]", "{'read': [1]}", "1.523008942604065", "+1.06e+03 x"]) == [
        "[679]",
        "{'read': [1]}",
        "1.523008942604065",
    ]
    assert unreadable_cells(["0.8123", "1303", "-0.0042", "12.5 %", "'Hi'", "1,303"]) == []
    assert unreadable_cells(["12.345", "0.000012345"]) == ["12.345", "0.000012345"]
