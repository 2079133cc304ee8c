"""Export of figures and tables: HTML, PNG, SVG, PDF (figures), CSV and LaTeX (tables).

Static export uses kaleido 1.x, which drives a Chromium-based browser. The browser is never
downloaded: it is the system's Chromium (``apt-get install chromium``; ``make setup`` does it),
found via ``$BROWSER_PATH``, then ``PATH``, then ``/usr/bin/chromium``. MathJax is switched off so
the export never reaches for a CDN; plotly.js comes from the plotly package.

HTML figures share one copy of plotly.js: ``plotly.min.js``, written once beside the pages they
reference it from (plotly's ``include_plotlyjs="directory"``), so a folder of figures still opens
offline and costs one 4.6 MB script rather than one per figure.
"""

from __future__ import annotations

import html
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from saelora_core.io.atomic import atomic_write_bytes
from saelora_core.io.format import DIGITS, format_frame

logger = logging.getLogger(__name__)

STATIC_FORMATS = ("png", "svg", "pdf")
PLOTLY_JS = "plotly.min.js"
PlotlyJs = Literal["directory", "inline"]


BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class BrowserNotFoundError(RuntimeError):
    """Static figure export needs a Chromium-based browser, and none was found."""


def find_browser() -> str | None:
    """``$BROWSER_PATH``, else the first Chromium-based browser on ``PATH``, else
    ``/usr/bin/chromium``; None when none exists."""
    env = os.environ.get("BROWSER_PATH")
    if env and Path(env).is_file():
        return env
    for name in BROWSER_NAMES:
        if p := shutil.which(name):
            return p
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


EXPORT_ATTEMPTS = 2


def static_export(
    fig: go.Figure,
    paths: dict[str, Path],
    *,
    width: int | None = None,
    height: int | None = None,
    scale: float = 2.0,
) -> None:
    """Write ``fig`` to each ``{format: path}`` with one browser session (atomic writes)."""
    import kaleido

    browser = find_browser()
    if browser is None:
        raise BrowserNotFoundError(
            "Static figure export (png/svg/pdf) needs Chromium: run `apt-get install -y "
            "chromium` (or `make setup`), or set BROWSER_PATH to a Chromium-based browser."
        )
    opts = {"width": width or fig.layout.width or 900, "height": height or fig.layout.height or 500}
    with tempfile.TemporaryDirectory(
        dir=next(iter(paths.values())).parent, prefix=".export-"
    ) as tmp:
        specs = [
            {
                "fig": fig,
                "path": str(Path(tmp) / f"fig.{fmt}"),
                "opts": {**opts, "format": fmt, "scale": scale if fmt == "png" else 1},
            }
            for fmt in paths
        ]
        for attempt in range(EXPORT_ATTEMPTS):
            try:
                kaleido.write_fig_from_object_sync(
                    specs, kopts={"path": browser, "mathjax": False}, cancel_on_error=True
                )
                break
            except Exception as e:  # kaleido raises its own JavascriptError, among others
                # On a loaded machine kaleido's tab can run the render before its own page
                # script has defined it ("kaleido_scopes is not defined"); a fresh session
                # then succeeds. Any other failure repeats and is raised on the last attempt.
                if attempt == EXPORT_ATTEMPTS - 1:
                    raise
                logger.warning("static export failed (%s); retrying once", str(e)[:120])
        for fmt, dest in paths.items():
            os.replace(Path(tmp) / f"fig.{fmt}", dest)


def write_plotly_js(out_dir: str | Path) -> Path:
    """``<out_dir>/plotly.min.js``, the plotly package's own copy, written (atomically) unless
    the same script is already there; the one script every ``"directory"`` HTML figure loads."""
    path = Path(out_dir) / PLOTLY_JS
    script = get_plotlyjs().encode()
    if not (path.is_file() and path.stat().st_size == len(script) and path.read_bytes() == script):
        atomic_write_bytes(path, script)
    return path


def save_figure(
    fig: go.Figure,
    out_dir: str | Path,
    name: str,
    formats: Sequence[str] = ("html", "png", "svg", "pdf"),
    *,
    plotlyjs: PlotlyJs = "directory",
    **export_kw: Any,
) -> list[Path]:
    """Write ``<out_dir>/<name>.<fmt>`` for each format; returns the paths written.

    HTML works offline: with ``plotlyjs="directory"`` (the default) it loads the
    ``plotly.min.js`` written once beside it (:func:`write_plotly_js`, not listed in the paths
    returned); with ``"inline"`` it embeds its own copy (one self-contained file). PNG/SVG/PDF
    go through kaleido and the system's Chromium; without one, the HTML is still written and
    :class:`BrowserNotFoundError` says how to install it. Every file is written to a temporary
    name and renamed into place.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    unknown = set(formats) - {"html", *STATIC_FORMATS}
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}; use html, png, svg or pdf")
    if plotlyjs not in ("directory", "inline"):
        raise ValueError(f"plotlyjs={plotlyjs!r}; use 'directory' or 'inline'")
    written = []
    if "html" in formats:
        path = out / f"{name}.html"
        include: str | bool = True
        if plotlyjs == "directory":
            write_plotly_js(out)
            include = "directory"
        atomic_write_bytes(path, fig.to_html(include_plotlyjs=include, full_html=True).encode())
        written.append(path)
    static = {fmt: out / f"{name}.{fmt}" for fmt in formats if fmt in STATIC_FORMATS}
    if static:
        static_export(fig, static, **export_kw)
        written += list(static.values())
    return written


def save_table(
    df: pd.DataFrame, out_dir: str | Path, name: str, *, digits: int = DIGITS
) -> list[Path]:
    """Write ``<name>.csv`` and ``<name>.tex`` (``DataFrame.to_latex``), every cell formatted
    by ``io.format.format_frame``: numbers to ``digits`` significant digits, lists as
    comma-separated values, missing values as "—"."""
    out = Path(out_dir)
    csv, tex = out / f"{name}.csv", out / f"{name}.tex"
    cells = format_frame(df, digits)
    atomic_write_bytes(csv, cells.to_csv(index=False).encode())
    atomic_write_bytes(tex, cells.to_latex(index=False, escape=True).encode())
    return [csv, tex]


def save_page(
    fragments: str | Sequence[str], out_dir: str | Path, name: str, *, title: str | None = None
) -> Path:
    """``<out_dir>/<name>.html``: the HTML ``fragments`` one after another on one UTF-8 page
    (the latent dashboards, say), titled ``title`` (else ``name``); nothing added that reaches
    outside the file. Written atomically."""
    parts = [fragments] if isinstance(fragments, str) else list(fragments)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.html"
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title or name)}</title></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


def copy_files(files: dict[str, str | Path], out_dir: str | Path) -> list[Path]:
    """Copy each ``{new name: existing file}`` into ``out_dir`` (atomic writes); the paths
    written. A missing source is an error that names it."""
    missing = [str(src) for src in files.values() if not Path(src).is_file()]
    if missing:
        raise FileNotFoundError(f"cannot export {missing}: no such file")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for dest, src in files.items():
        atomic_write_bytes(out / dest, Path(src).read_bytes())
        written.append(out / dest)
    return written


def export_results(
    out_dir: Path,
    *,
    figures: dict[str, go.Figure] | None = None,
    tables: dict[str, pd.DataFrame] | None = None,
    pages: dict[str, str | Sequence[str]] | None = None,
    files: dict[str, str | Path] | None = None,
    formats: Sequence[str] = ("html", "png", "svg", "pdf"),
) -> list[Path]:
    """Save each figure (:func:`save_figure`, its HTML sharing one ``plotly.min.js`` in
    ``out_dir``), each table (:func:`save_table`), each HTML page (:func:`save_page`) under its
    name in ``out_dir``, and copy ``files`` (:func:`copy_files`); the files written, figures
    first (then ``plotly.min.js`` when HTML was written), then tables, pages and copies. What
    every notebook's export cell runs."""
    written: list[Path] = []
    for name, fig in (figures or {}).items():
        written += save_figure(fig, out_dir, name, formats=formats)
    if figures and "html" in formats:
        written.append(Path(out_dir) / PLOTLY_JS)
    for name, df in (tables or {}).items():
        written += save_table(df, out_dir, name)
    for name, fragments in (pages or {}).items():
        written.append(save_page(fragments, out_dir, name))
    if files:
        written += copy_files(files, out_dir)
    return written
