"""Figures build with titles and axis labels, and plot the values they are given."""

import pandas as pd
import torch

from saelora_core import SaeLora
from saelora_core.analysis import (
    BehaviourResult,
    per_token_reads_writes,
    sorted_weight_curves,
    top_feats_summary,
    top_toks_table,
)
from saelora_core.reporting.figures import (
    fig_behaviour,
    fig_loss_curve,
    fig_pareto,
    fig_per_token,
    fig_prune_curve,
    fig_sorted_weights,
    fig_top_feats,
    fig_top_toks,
)


def _lora() -> SaeLora:
    lora = SaeLora(64, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora.s.copy_(torch.tensor([1.0, -0.5]))
    return lora


def test_all_figures_titled_and_labelled(tiny_mas):
    lora = _lora()
    rates = pd.DataFrame(
        {
            "condition": ["base", "base", "adapter", "adapter"],
            "split": ["in_topic", "off_topic"] * 2,
            "rate": [0.1, 0.0, 0.8, 0.2],
            "n": [10, 10, 10, 10],
        }
    )
    figs = [
        fig_top_feats(top_feats_summary(lora, k=4)),
        fig_top_toks(top_toks_table(lora, tiny_mas, k_latents=2, k_tokens=3)),
        fig_sorted_weights(sorted_weight_curves(lora)),
        fig_loss_curve(
            [{"step": 0, "eval_ce": 3.0}, {"step": 5, "eval_ce": 2.5, "train_ce_last": 2.4}]
        ),
        fig_behaviour(BehaviourResult(rates, pd.DataFrame())),
        fig_per_token(per_token_reads_writes(lora, tiny_mas, "hi")),
        fig_pareto(
            pd.DataFrame(
                {"l0": [1, 4, 16], "effect_retained": [0.2, 0.7, 0.95], "method": ["topk"] * 3}
            )
        ),
        fig_prune_curve(
            pd.DataFrame(
                {
                    "k": [1, 4, 16, 1, 4, 16],
                    "effect": [0.1, 0.5, 0.8] * 2,
                    "kind": ["top"] * 3 + ["random"] * 3,
                }
            )
        ),
    ]
    for fig in figs:
        assert fig.layout.title.text
        assert any(ax.title.text for ax in fig.select_xaxes())
        assert any(ax.title.text for ax in fig.select_yaxes())
        assert len(fig.data) > 0
    assert "effect +0.70" in figs[4].layout.title.text

    def traces(fig):
        return {t.name: (list(t.x), [float(v) for v in t.y]) for t in fig.data}

    # the plotted values are the inputs'
    assert traces(figs[3]) == {
        "eval CE": ([0, 5], [3.0, 2.5]),
        "train CE (last step)": ([5], [2.4]),
    }
    assert traces(figs[4]) == {
        "base": (["in_topic", "off_topic"], [0.1, 0.0]),
        "adapter": (["in_topic", "off_topic"], [0.8, 0.2]),
    }
    assert traces(figs[6]) == {"topk": ([1, 4, 16], [0.2, 0.7, 0.95])}
    assert traces(figs[7]) == {
        "top": ([1, 4, 16], [0.1, 0.5, 0.8]),
        "random": ([1, 4, 16], [0.1, 0.5, 0.8]),
    }
    bars = sorted(float(v) for t in figs[0].data for v in t.y)
    assert bars == sorted(top_feats_summary(lora, k=4)["weight"].astype(float).tolist())


def test_fig_prompt_attribution_plots_group_means_and_each_prompt():
    from saelora_core.reporting.figures import TOPIC_COLORS, fig_prompt_attribution

    per = pd.DataFrame(
        {
            "prompt": ["What is 2+2?"] * 2
            + ["Say hi"] * 2
            + ["Add 3 and 4, then double it please"] * 2,
            "topic": ["in-topic"] * 2 + ["off-topic"] * 2 + ["in-topic"] * 2,
            "token": [" le", "F"] * 3,
            "token_id": [7, 9] * 3,
            "logit_diff": [2.0, -1.0, 0.5, 0.25, 4.0, 1.0],
        }
    )
    fig = fig_prompt_attribution(per)
    assert fig.layout.title.text and fig.layout.yaxis.title.text == "Δ logit (adapter − base)"
    assert fig.layout.xaxis2.title.text.startswith("next token")
    bars = {t.name: (list(t.x), list(t.y), t.marker.color) for t in fig.data if t.type == "bar"}
    assert bars == {
        "in-topic (n=2)": (["' le'", "F"], [3.0, 0.0], TOPIC_COLORS["in-topic"]),
        "off-topic (n=1)": (["' le'", "F"], [0.5, 0.25], TOPIC_COLORS["off-topic"]),
    }
    (heat,) = [t for t in fig.data if t.type == "heatmap"]
    assert list(heat.x) == ["' le'", "F"]
    assert list(heat.y) == [
        "1. What is 2+2? (in-topic)",
        "2. Say hi (off-topic)",
        "3. Add 3 and 4, then double it please (in-topic)",
    ]
    assert heat.z.tolist() == [[2.0, -1.0], [0.5, 0.25], [4.0, 1.0]]
    assert (heat.zmin, heat.zmid, heat.zmax) == (-4.0, 0, 4.0)
    assert heat.colorbar.title.text == "Δ logit"


def test_fig_top_feats_one_y_title_and_latent_labels():
    """Faceted (rank 4) or not, every titled y axis says the same thing; latents carry the
    labels given (cut), and bare numbers without them."""
    from saelora_core.reporting.figures import SIDE_COLORS, WEIGHT_TITLE

    lora = SaeLora(64, 4, generator=torch.Generator().manual_seed(0))
    feats = top_feats_summary(lora, k=2)
    lat = int(feats["latent"].iloc[0])
    labels = {lat: "fires on digits · promotes French articles"}
    for df in (feats, feats[feats["component"] < 2]):
        fig = fig_top_feats(df, labels=labels)
        titles = [ax.title.text for ax in fig.select_yaxes() if ax.title.text]
        assert titles and set(titles) == {WEIGHT_TITLE}
        ticks = [x for t in fig.data for x in t.x]
        assert any(x.endswith(f"{lat} · fires on digits · promotes …") for x in ticks)
        other = int(feats["latent"].iloc[1])
        assert any(x.endswith(f" {other}") for x in ticks)
        assert {t.name: t.marker.color for t in fig.data} == SIDE_COLORS
    assert len([ax for ax in fig_top_feats(feats).select_yaxes() if ax.title.text]) == 2  # rows


def test_fig_per_token_legend_names_are_readable(tiny_mas):
    fig = fig_per_token(per_token_reads_writes(_lora(), tiny_mas, "hi there"))
    assert [t.name for t in fig.data] == [
        "read, component 0",
        "read, component 1",
        "edit size ‖Δz W_dec‖",
    ]
    assert fig.layout.yaxis.title.text == "read activation z·Â"
    assert fig.layout.yaxis2.title.text == "edit norm (residual units)"


def test_card_labels_from_the_written_card(tmp_path):
    from saelora_core.analysis.card_render import card_labels, write_card
    from tests.analysis.test_card_render import card

    assert card_labels(tmp_path) == {}
    c = card()
    write_card(c, tmp_path)
    want = {x.latent: x.label for x in c.reads + c.writes if x.label}
    assert card_labels(tmp_path) == want and want
