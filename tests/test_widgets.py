"""The ipywidgets explorer: changing the dropdown shows the chosen latent's dashboard."""

import torch

from saelora_core import SaeLora, save_lora
from saelora_core.analysis import load_texts
from saelora_core.checkpoint import build_metadata
from saelora_core.widgets import explore

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
        config={"name": "tiny-test"},
        preset=mas.preset,
        sae_identity=mas.sae_identity,
        layer=mas.layer,
        mode="resid_add",
    )
    save_lora(lora, out_dir, meta)


def test_explore_dropdown_updates_dashboard(tiny_mas, tmp_path):
    saved_adapter(tiny_mas, tmp_path / "ad")
    box = explore(tmp_path / "ad", mas=tiny_mas, texts=load_texts(tiny_mas, ROWS))
    dropdown, pane = box.children[1], box.children[2]
    assert [v for _, v in dropdown.options] == [7, 3, 12, 50]
    assert dropdown.value == 7 and 'data-latent="7"' in pane.value
    before = pane.value
    dropdown.value = 50
    assert pane.value != before
    assert 'data-latent="50"' in pane.value and "Latent 50" in pane.value
