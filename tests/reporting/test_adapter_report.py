"""export_report writes one self-contained HTML file for a saved tiny adapter."""

from plotly.offline import get_plotlyjs

from saelora_core.analysis import load_texts
from saelora_core.reporting.adapter_report import export_report
from saelora_core.testing import TINY_ROWS, save_planted_adapter


def test_export_report(tiny_mas, tmp_path):
    save_planted_adapter(tiny_mas, tmp_path / "ad")
    out = export_report(
        tmp_path / "ad",
        mas=tiny_mas,
        eval_rows=TINY_ROWS,
        texts=load_texts(tiny_mas, TINY_ROWS),
        max_new_tokens=8,
    )
    assert out == tmp_path / "ad" / "report.html"
    html = out.read_text()
    assert get_plotlyjs()[:200] in html and html.count(get_plotlyjs()[:200]) == 1
    assert 'src="https://cdn.plot.ly' not in html
    for lat in (7, 3, 12, 50):
        assert f'data-latent="{lat}"' in html
    for section in (
        "Summary",
        "Config",
        "Loss curve",
        "Sparsity",
        "Top latents",
        "Logit attribution",
        "Behaviour",
        "Latent dashboards",
    ):
        assert f"<h2>{section}" in html
    assert "tiny-test" in html
