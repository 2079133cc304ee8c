"""The ipywidgets explorer: changing the dropdown shows the chosen latent's dashboard."""

from saelora_core.analysis import load_texts
from saelora_core.testing import TINY_ROWS, save_planted_adapter
from saelora_core.ui.widgets import explore


def test_explore_dropdown_updates_dashboard(tiny_mas, tmp_path):
    save_planted_adapter(tiny_mas, tmp_path / "ad")
    box = explore(tmp_path / "ad", mas=tiny_mas, texts=load_texts(tiny_mas, TINY_ROWS))
    dropdown, pane = box.children[1], box.children[2]
    assert [v for _, v in dropdown.options] == [7, 3, 12, 50]
    assert dropdown.value == 7 and 'data-latent="7"' in pane.value
    before = pane.value
    dropdown.value = 50
    assert pane.value != before
    assert 'data-latent="50"' in pane.value and "Latent 50" in pane.value
