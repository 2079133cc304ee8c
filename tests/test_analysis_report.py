"""export_report writes one self-contained HTML file for a saved tiny adapter."""

import torch
from plotly.offline import get_plotlyjs

from saelora_core import SaeLora, save_lora
from saelora_core.analysis import load_texts
from saelora_core.checkpoint import build_metadata
from saelora_core.report import export_report

ROWS = [
    {"prompt": "What is 2+2?", "response": "Four.", "in_topic": True},
    {"prompt": "Say hi", "response": "Hi there!", "in_topic": False},
]


def saved_adapter(mas, out_dir):
    """A sparse rank-1 adapter: reads latents 7 and 3, writes latents 12 and 50."""
    lora = SaeLora(64, 1)
    with torch.no_grad():
        lora.a.zero_()
        lora.a[[7, 3], 0] = torch.tensor([0.9, -0.4])
        lora.b.zero_()
        lora.b[0, [12, 50]] = torch.tensor([1.0, -0.6])
        lora.s.fill_(2.0)
    meta = build_metadata(
        lora,
        config={"name": "tiny-test", "rank": 1},
        preset=mas.preset,
        sae_identity=mas.sae_identity,
        layer=mas.layer,
        mode="resid_add",
        history=[{"step": 0, "eval_ce": 3.0}, {"step": 2, "eval_ce": 2.5, "train_ce_last": 2.6}],
    )
    save_lora(lora, out_dir, meta)
    return lora


def test_export_report(tiny_mas, tmp_path):
    saved_adapter(tiny_mas, tmp_path / "ad")
    out = export_report(
        tmp_path / "ad",
        mas=tiny_mas,
        eval_rows=ROWS,
        texts=load_texts(tiny_mas, ROWS),
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
