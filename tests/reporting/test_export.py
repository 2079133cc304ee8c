"""Export writes real PNG/SVG/PDF/HTML/CSV/LaTeX, atomically and with open()'s file mode."""

import pandas as pd
import plotly.graph_objects as go
import pytest

from saelora_core.reporting import export
from saelora_core.reporting.export import (
    BrowserNotFoundError,
    export_results,
    save_figure,
    save_table,
)
from saelora_core.reporting.figures import fig_loss_curve


def test_save_figure_all_formats(tmp_path):
    fig = fig_loss_curve([{"step": 0, "eval_ce": 3.0}, {"step": 1, "eval_ce": 2.0}])
    paths = save_figure(fig, tmp_path / "figs", "loss")
    assert [p.suffix for p in paths] == [".html", ".png", ".svg", ".pdf"]
    png, svg, pdf = (tmp_path / "figs" / f"loss.{e}" for e in ("png", "svg", "pdf"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in svg.read_text()[:500]
    assert pdf.read_bytes()[:5] == b"%PDF-"
    html = (tmp_path / "figs" / "loss.html").read_text()
    assert 'src="https://cdn.plot.ly' not in html and 'src="plotly.min.js"' in html
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "loss.html",
        "loss.pdf",
        "loss.png",
        "loss.svg",
        "plotly.min.js",
    ]  # no temporary files left


def test_html_figures_share_one_plotly_js(tmp_path):
    """Two exported figures: one plotly.min.js (the package's own) beside two pages that load
    it, together far smaller than two embedded copies."""
    from plotly.offline import get_plotlyjs

    loss = fig_loss_curve([{"step": 0, "eval_ce": 3.0}, {"step": 1, "eval_ce": 2.0}])
    other = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    written = export_results(tmp_path, figures={"loss": loss, "bars": other}, formats=("html",))
    assert [p.name for p in written] == ["loss.html", "bars.html", "plotly.min.js"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bars.html",
        "loss.html",
        "plotly.min.js",
    ]
    script = get_plotlyjs()
    assert (tmp_path / "plotly.min.js").read_text() == script
    for page in ("loss.html", "bars.html"):
        html = (tmp_path / page).read_text()
        assert html.count('<script charset="utf-8" src="plotly.min.js"></script>') == 1
        assert len(html) < 50_000 and script[:200] not in html
    total = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert total < 1.1 * len(script) < 2 * len(script)
    mtime = (tmp_path / "plotly.min.js").stat().st_mtime_ns
    save_figure(other, tmp_path, "again", formats=("html",))  # the script is not rewritten
    assert (tmp_path / "plotly.min.js").stat().st_mtime_ns == mtime


def test_save_figure_inline_is_self_contained(tmp_path):
    (path,) = save_figure(go.Figure(), tmp_path, "f", formats=("html",), plotlyjs="inline")
    assert len(path.read_text()) > 1_000_000 and not (tmp_path / "plotly.min.js").exists()
    with pytest.raises(ValueError, match="directory"):
        save_figure(go.Figure(), tmp_path, "g", formats=("html",), plotlyjs="cdn")  # type: ignore[arg-type]


def test_save_figure_without_browser(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "find_browser", lambda: None)
    fig = fig_loss_curve([{"step": 0, "eval_ce": 3.0}])
    with pytest.raises(BrowserNotFoundError, match="apt-get install"):
        save_figure(fig, tmp_path, "f", formats=("html", "png"))
    assert (tmp_path / "f.html").stat().st_size > 0 and not (tmp_path / "f.png").exists()


def test_save_table(tmp_path):
    df = pd.DataFrame(
        {
            "latent": [7, 3],
            "weight": [0.81234, -0.5],
            "side": ["read", "write_x"],
            "l0": [[1.523008942604065], [679, 1303]],
            "ce": [float("nan"), 1063.25],
        }
    )
    csv, tex = save_table(df, tmp_path, "feats")
    back = pd.read_csv(csv)
    assert back["latent"].tolist() == [7, 3] and back["weight"].tolist() == [0.8123, -0.5]
    assert back["l0"].tolist() == ["1.523", "679, 1303"]  # no Python list repr
    text = tex.read_text()
    assert "\\begin{tabular}" in text and "0.8123" in text and "write\\_x" in text
    assert "[1.52" not in text and "1063 " in text and "—" in text


def test_exports_follow_the_umask(tmp_path):
    """CSV/TeX/HTML go through the atomic writer; they get open()'s mode, not mkstemp's 0600."""
    import os

    old = os.umask(0o022)
    try:
        paths = save_table(pd.DataFrame({"a": [1]}), tmp_path, "t")
        paths += save_figure(go.Figure(), tmp_path, "f", formats=("html",))
        paths.append(tmp_path / "plotly.min.js")
        (tmp_path / "plain").write_text("x")
        assert {oct(p.stat().st_mode & 0o777) for p in paths} == {"0o644"}
        assert (tmp_path / "plain").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        (p,) = save_figure(go.Figure(), tmp_path, "g", formats=("html",))
        assert p.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_export_results_writes_every_figure_and_table(tmp_path):
    fig = fig_loss_curve([{"step": 0, "eval_ce": 3.0}])
    df = pd.DataFrame({"a": [1, 2]})
    written = export_results(tmp_path, figures={"f": fig}, tables={"t": df}, formats=("html",))
    assert [p.name for p in written] == ["f.html", "plotly.min.js", "t.csv", "t.tex"]
    assert pd.read_csv(tmp_path / "t.csv").equals(df)
