"""The notebooks' library helpers: training controls round trip, formatting, form defaults."""

import json

import pandas as pd
import pytest
import torch

from saelora_core.training.config import LoraTrainingConfig
from saelora_core.training.recipes import RECIPES, recipe
from saelora_core.ui.notebook_support import (
    counts_summary,
    dataset_form_defaults,
    format_value,
    prune_sweep_cost,
    show_table,
    training_metadata,
)
from saelora_core.ui.train_controls import GROUPS, config_from_controls, training_controls


@pytest.mark.parametrize("name", list(RECIPES))
def test_controls_round_trip_every_recipe(name, tmp_path):
    cfg = recipe(name)
    controls = training_controls(cfg)
    assert set(controls.value) == {k for keys in GROUPS.values() for k in keys}
    back = config_from_controls(controls.value, name=cfg.name, root=tmp_path)
    want = cfg.to_dict()
    for key in ("init_from", "distill_from"):  # relative paths are taken from the root
        if want[key]:
            want[key] = str(tmp_path / want[key])
    assert back.to_dict() == want


def test_every_config_field_has_a_control():
    grouped = {k for keys in GROUPS.values() for k in keys}
    assert grouped | {"name", "layer"} == set(LoraTrainingConfig().to_dict())


def test_controls_reject_bad_values(tmp_path):
    values = dict(training_controls(recipe()).value)
    with pytest.raises(ValueError, match="topk_schedule"):
        config_from_controls({**values, "topk_schedule": "512, x"}, name="a", root=tmp_path)
    with pytest.raises(ValueError, match="lr"):
        config_from_controls({**values, "lr": 0}, name="a", root=tmp_path)
    ok = config_from_controls(
        {**values, "topk_schedule": "64 32, 16", "s_lr": 0}, name=" ", root=tmp_path
    )
    assert (ok.topk_schedule, ok.s_lr, ok.name) == ([64, 32, 16], None, "lora")


def test_formatting_for_people():
    assert format_value(7.039707183837891) == "7.04"
    assert format_value([0.123456, 2]) == "0.1235, 2"
    assert format_value(float("nan")) == "—"
    assert (format_value(3), format_value(True), format_value("␣FIND")) == ("3", "yes", "␣FIND")
    counts = {"train": {"total": 40, "modified": 20, "in_topic": 20}, "eval": {"total": 8}}
    assert counts_summary(counts) == (
        "train 40 rows (20 modified, 20 in-topic) · eval 8 rows (0 modified, 0 in-topic)"
    )
    table = show_table(pd.DataFrame({"token": ["␣FIND"], "mean_logit_diff": [7.0397071838]}))
    assert table.data["mean_logit_diff"].iloc[0] == 7.0397071838  # the data stays unrounded
    assert "7.04" in table.text  # shown to 4 significant digits
    assert "9 adapters" in prune_sweep_cost(4, 8, 32, "tiny")
    assert "about 11 minutes" in prune_sweep_cost(4, 8, 32, "gemma-3-270m")


def test_form_defaults_and_metadata_follow_the_dataset(tmp_path):
    ds = tmp_path / "up"
    ds.mkdir()
    (ds / "manifest.json").write_text(
        json.dumps(
            {
                "guideline": "respond in uppercase",
                "config": {"source": "seed", "topic": "math", "guideline": "respond in uppercase"},
            }
        )
    )
    form = dataset_form_defaults(tmp_path, "up")
    assert (form["topic"], form["guideline"], form["n"]) == ("math", "respond in uppercase", 100)
    assert dataset_form_defaults(tmp_path, "absent")["guideline"] == "respond in French"
    assert training_metadata(ds)["detector"] == "uppercase"


def test_trained_summary_says_when_the_adapter_is_dense():
    from saelora_core import SaeLora
    from saelora_core.ui.notebook_support import trained_summary

    dense = SaeLora(4096, 1)  # random init: every latent nonzero
    text, kind = trained_summary("loras/x", dense, 12)
    assert kind == "warn" and "L0 read 4096, write 4096 (of 4096 per vector)" in text
    assert "Dense adapter" in text and "sparse (distilled, rank 8, top-16)" in text
    sparse = SaeLora(4096, 1, init="zeros")
    with torch.no_grad():
        sparse.a[[1, 2], 0] = 1.0
        sparse.b[0, [3]] = 1.0
    text, kind = trained_summary("loras/x", sparse, 12)
    assert kind == "success" and "L0 read 2, write 1" in text and "Dense" not in text


def test_export_note_writes_the_card_and_the_dashboards(tiny_mas, tmp_path):
    """Notebook 03's export: the card written by ``write_card`` copied byte for byte, the
    latent dashboards on one HTML page, figures sharing one plotly.min.js."""
    from saelora_core.analysis import latent_dashboard, load_texts
    from saelora_core.analysis.card_render import write_card
    from saelora_core.ui.notebook_support import export_note
    from tests.analysis.test_card_render import card

    card_dir = tmp_path / "lora" / "card"
    write_card(card(), card_dir)
    rows = [{"prompt": "What is 2+2?", "response": "Four.", "in_topic": True}]
    texts = load_texts(tiny_mas, rows)
    dashboards = {lat: latent_dashboard(tiny_mas, lat, texts, k=2) for lat in (3, 5)}
    out = tmp_path / "exports"
    note = export_note(
        out,
        figures={"demo-latent-3-histogram": dashboards[3].histogram},
        pages={"demo-dashboards": [d.html for d in dashboards.values()]},
        card_dir=card_dir,
        card_name="demo-card",
        root=tmp_path,
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "demo-card.html",
        "demo-card.md",
        "demo-dashboards.html",
        "demo-latent-3-histogram.html",
        "demo-latent-3-histogram.pdf",
        "demo-latent-3-histogram.png",
        "demo-latent-3-histogram.svg",
        "plotly.min.js",
    ]
    for ext in ("md", "html"):
        assert (out / f"demo-card.{ext}").read_bytes() == (card_dir / f"card.{ext}").read_bytes()
    page = (out / "demo-dashboards.html").read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "<title>demo-dashboards</title>" in page
    assert dashboards[3].html in page and dashboards[5].html in page and "<script" not in page
    assert "- `exports/demo-card.md`" in note and "- `exports/demo-dashboards.html`" in note
    assert "No card" not in note

    again = export_note(out, card_dir=tmp_path / "none", root=tmp_path)  # said, not raised
    assert again.endswith(
        f"No card in `{tmp_path / 'none'}` yet: write it first, then export again."
    )


def test_copy_files_names_a_missing_source(tmp_path):
    from saelora_core.reporting.export import copy_files

    with pytest.raises(FileNotFoundError, match="absent.md"):
        copy_files({"x.md": tmp_path / "absent.md"}, tmp_path / "out")
    assert not (tmp_path / "out").exists()
