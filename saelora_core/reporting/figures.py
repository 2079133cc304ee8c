"""Plotly figures for the analysis tables (their export is ``export.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

if TYPE_CHECKING:
    from saelora_core.analysis.behaviour import BehaviourResult


def _tok_label(t: str) -> str:
    """A token as an axis label: quoted (repr) when it has surrounding whitespace. A token in a
    right-to-left script is wrapped in a bidi isolate (U+2068 … U+2069), so the quotes and
    neighbouring text do not reorder around it."""
    import unicodedata

    label = repr(t)[1:-1] if t.strip() == t and t else repr(t)
    if any(unicodedata.bidirectional(c) in ("R", "AL") for c in t):
        return "\u2066" + label.replace(t.strip(), "\u2068" + t.strip() + "\u2069") + "\u2069"
    return label


def _unique_labels(sub: pd.DataFrame) -> list[str]:
    """Token labels for a categorical axis; ids are appended where two tokens decode alike."""
    labels = [_tok_label(t) for t in sub["token"]]
    dup = {lab for lab in labels if labels.count(lab) > 1}
    return [
        f"{lab} #{i}" if lab in dup else lab for lab, i in zip(labels, sub["token_id"], strict=True)
    ]


def _latent_label(latent: int, labels: dict[int, str] | None, width: int = 28) -> str:
    """``"778"``, or ``"778 · fires on …"`` cut at ``width`` when ``labels`` names it."""
    text = (labels or {}).get(int(latent), "")
    if not text:
        return str(latent)
    return f"{latent} · {text if len(text) <= width else text[: width - 1] + '…'}"


SIDE_COLORS = {"read": "#1c7ed6", "write": "#e8590c"}
WEIGHT_TITLE = "weight in unit vector"


def fig_top_feats(df: pd.DataFrame, labels: dict[int, str] | None = None) -> go.Figure:
    """Signed weights of the top read/write latents (``top_feats_summary``), one bar each;
    each latent named by its label where ``labels`` (latent → text, e.g. ``card_labels``) has
    one. One y-axis title for the one quantity, on the left of each row of panels."""
    d = df.copy()
    d["latent_label"] = [_latent_label(lat, labels) for lat in d["latent"]]
    d["label"] = [
        f"{s} c{c} · {name}"
        for s, c, name in zip(d["side"], d["component"], d["latent_label"], strict=True)
    ]
    components = sorted(set(d["component"]))
    facet = len(components) > 2  # rank 8 would put 160 bars in one panel
    if facet:
        d["label"] = [f"{s[0]} {n}" for s, n in zip(d["side"], d["latent_label"], strict=True)]
        d["component"] = [f"component {c}" for c in d["component"]]
    wrap = 2
    fig = px.bar(
        d,
        x="label",
        y="weight",
        color="side",
        facet_col="component" if facet else None,
        facet_col_wrap=wrap if facet else 0,
        facet_row_spacing=0.3 / max(1, -(-len(components) // wrap)) if facet else None,
        hover_data=[
            c
            for c in ("latent", "latent_label", "mass_share", "freq_in_topic", "freq_off_topic")
            if c in d
        ],
        labels={"weight": WEIGHT_TITLE, "latent_label": "label"},
        color_discrete_map=SIDE_COLORS,
    )
    fig.update_layout(title="Top latents read (Â) and written (B̂) by the adapter")
    fig.update_xaxes(type="category")
    fig.update_yaxes(title_text="")
    if facet:
        # Each panel keeps only its own latents on its x axis.
        fig.update_xaxes(matches=None, showticklabels=True, title_text="", tickfont_size=9)
        fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
        fig.update_layout(height=300 * -(-len(components) // wrap) + 120)
        fig.update_yaxes(title_text=WEIGHT_TITLE, col=1)
    else:
        fig.update_layout(xaxis_title="side, component · latent", yaxis_title=WEIGHT_TITLE)
    return fig


def fig_top_toks(df: pd.DataFrame, max_sources: int = 8) -> go.Figure:
    """Promoted/suppressed tokens per source (``top_toks_table``), one panel per source."""
    sources = list(dict.fromkeys(df["source"]))[:max_sources]
    cols = min(len(sources), 3) or 1
    rows = max(1, -(-len(sources) // cols))
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=sources or ["(empty)"], horizontal_spacing=0.18
    )
    most = 1
    for n, src in enumerate(sources):
        sub = pd.DataFrame(df[df["source"] == src]).sort_values(by="score")
        labels = _unique_labels(sub)
        most = max(most, len(labels))
        fig.add_trace(
            go.Bar(
                x=sub["score"],
                y=labels,
                orientation="h",
                showlegend=False,
                marker_color=[
                    "#2f9e44" if d == "promoted" else "#e03131" for d in sub["direction"]
                ],
            ),
            row=n // cols + 1,
            col=n % cols + 1,
        )
        # Every bar its label: plotly skips every other category label when they crowd.
        fig.update_yaxes(
            tickmode="array", tickvals=labels, ticktext=labels, row=n // cols + 1, col=n % cols + 1
        )
    fig.update_layout(
        title="Direct-path logit attribution (green: promoted, red: suppressed)",
        height=max(350, rows * (16 * most + 110)),  # 16 px per bar, so no label is dropped
    )
    fig.update_xaxes(title_text="logit score")
    fig.update_yaxes(title_text="token", type="category", tickfont_size=11, automargin=True)
    return fig


def _thin_curve(g: pd.DataFrame, max_points: int) -> pd.DataFrame:
    """Keep the first 200 ranks, ``max_points`` evenly spaced ones and the last nonzero one."""
    n = len(g)
    if n <= max_points:
        return g
    nonzero = np.flatnonzero(g["abs_weight"].to_numpy() > 0)
    keep = np.concatenate(
        [np.arange(min(n, 200)), np.linspace(0, n - 1, max_points).astype(int), nonzero[-1:]]
    )
    return g.iloc[np.unique(keep)]


def fig_sorted_weights(
    curves_df: pd.DataFrame, log_y: bool = True, *, log_x: bool = True, max_points: int = 2000
) -> go.Figure:
    """Sorted |weights| of the read/write vectors against random unit vectors (the noise
    baseline). Exact zeros drop off the log y axis, so a sparse vector's curve ends at its L0.
    x is ``rank + 1`` (log scale by default); long curves are thinned to about ``max_points``."""
    d = pd.concat(
        [
            _thin_curve(g, max_points)
            for _, g in curves_df.groupby(["component", "side"], sort=False)
        ]
    )
    d = d.assign(component=[f"c{c}" for c in d["component"]], rank1=d["rank"] + 1)
    fig = px.line(
        d,
        x="rank1",
        y="abs_weight",
        color="side",
        line_dash="component" if len(set(d["component"])) > 1 else None,
        log_y=log_y,
        log_x=log_x,
        color_discrete_map={"read": "#1c7ed6", "write": "#e8590c", "noise": "#868e96"},
    )
    fig.update_layout(
        title="Sorted |weight| of the unit vectors vs a random unit vector",
        xaxis_title="rank (1 = largest)",
        yaxis_title="|weight|",
    )
    # Label the decades only: the minor ticks' "2 5 2 5" labels crowd a log axis.
    if log_x:
        fig.update_xaxes(minorloglabels="none", dtick=1)
    if log_y:
        fig.update_yaxes(minorloglabels="none", dtick=1, exponentformat="power")
    return fig


def fig_loss_curve(
    history: list[dict[str, Any]], steps: Sequence[dict[str, Any]] = ()
) -> go.Figure:
    """Eval CE and last-step train CE over optimizer steps (training ``history``), and with
    ``steps`` (``train_lora``'s ``on_step`` records) the train CE of every step, which is all
    there is while a run is still going."""
    fig = go.Figure()
    if steps:
        fig.add_trace(
            go.Scatter(
                x=[s["step"] for s in steps],
                y=[s["train_ce"] for s in steps],
                mode="lines",
                name="train CE (each step)",
                line={"width": 1},
            )
        )
    for key, name in (("eval_ce", "eval CE"), ("train_ce_last", "train CE (last step)")):
        pts = [(h["step"], h[key]) for h in history if h.get(key) is not None and "step" in h]
        if pts:
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=name
                )
            )
    fig.update_layout(
        title="Loss curve",
        xaxis_title="optimizer step",
        yaxis_title="cross-entropy (assistant tokens)",
    )
    return fig


def fig_behaviour(result: BehaviourResult) -> go.Figure:
    """Detector hit rates, base vs adapter, on in-topic and off-topic prompts."""
    r = result.rates
    fig = px.bar(
        r,
        x="split",
        y="rate",
        color="condition",
        barmode="group",
        text=[f"{v:.2f} (n={n})" for v, n in zip(r["rate"], r["n"], strict=True)],
        color_discrete_map={"base": "#868e96", "adapter": "#e8590c"},
    )
    fig.update_layout(
        title=f"Behaviour ({result.detector}): effect {result.effect:+.2f}, "
        f"conditional gap {result.conditional_gap:+.2f}",
        xaxis_title="eval prompts",
        yaxis_title="detector hit rate",
        yaxis_range=[0, 1.05],
    )
    return fig


def per_token_name(column: str) -> str:
    """A readable legend name for a ``per_token_reads_writes`` column: ``read_0`` → "read,
    component 0", ``write_norm`` → "edit size ‖Δz W_dec‖"."""
    if column == "write_norm":
        return "edit size ‖Δz W_dec‖"
    if column.startswith("read_") and column[5:].isdigit():
        return f"read, component {column[5:]}"
    return column.replace("_", " ")


def fig_per_token(df: pd.DataFrame) -> go.Figure:
    """Per-token reads ``z @ Â[:, j]`` (top) and edit size ``‖Δz @ W_dec‖`` (bottom)."""
    labels = [f"{p}:{_tok_label(t)}" for p, t in zip(df["pos"], df["token"], strict=True)]
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=["read z·Â[:, j]", "write ‖Δz W_dec‖"],
    )
    for c in [c for c in df.columns if c.startswith("read_")]:
        fig.add_trace(go.Bar(x=labels, y=df[c], name=per_token_name(c)), row=1, col=1)
    fig.add_trace(
        go.Bar(
            x=labels,
            y=df["write_norm"],
            name=per_token_name("write_norm"),
            marker_color=SIDE_COLORS["write"],
            hovertext=df.get("top_read_latents"),
        ),
        row=2,
        col=1,
    )
    fig.update_layout(
        title="What the adapter reads and writes at each token",
        barmode="group",
        legend_title_text="",
    )
    fig.update_xaxes(title_text="position:token", type="category", row=2, col=1)
    fig.update_yaxes(title_text="read activation z·Â", row=1, col=1)
    fig.update_yaxes(title_text="edit norm (residual units)", row=2, col=1)
    return fig


def fig_pareto(
    df: pd.DataFrame, x: str = "l0", y: str = "effect_retained", color: str = "method"
) -> go.Figure:
    """Sparsity (x) against retained behaviour (y), one colour per method."""
    fig = px.scatter(
        df.sort_values(x),
        x=x,
        y=y,
        color=color if color in df else None,
        hover_data=list(df.columns),
    )
    fig.update_traces(mode="lines+markers")
    fig.update_layout(title=f"{y} vs {x}", xaxis_title=x, yaxis_title=y)
    return fig


def fig_prune_curve(
    df: pd.DataFrame, x: str = "k", y: str = "effect", color: str = "kind"
) -> go.Figure:
    """Behaviour after keeping the top-``k`` entries (and controls), against ``k``."""
    fig = px.line(
        df.sort_values(x),
        x=x,
        y=y,
        color=color if color in df else None,
        markers=True,
        log_x=bool((df[x] > 0).all() and df[x].max() > 20 * df[x].min()),
    )
    fig.update_layout(title=f"{y} after pruning to {x} entries", xaxis_title=x, yaxis_title=y)
    return fig


TOPIC_COLORS = {"in-topic": "#e8590c", "off-topic": "#868e96", "all": "#1c7ed6"}
"""One colour per prompt group, the same in every figure that splits in-topic from off-topic."""


def _prompt_labels(prompts: Sequence[str], width: int = 40) -> list[str]:
    """``"1. What is 15% of 240?"``: numbered (so equal prompts stay apart), cut at ``width``."""
    return [
        f"{n}. {p if len(p) <= width else p[: width - 1] + '…'}"
        for n, p in enumerate(prompts, start=1)
    ]


def fig_prompt_attribution(per_prompt: pd.DataFrame) -> go.Figure:
    """The edit's logit change per token (``prompt_logit_attribution``): its mean on in-topic
    and off-topic prompts (bars, top), and on each prompt (heatmap, bottom)."""
    tokens = per_prompt.drop_duplicates("token_id")
    labels = _unique_labels(tokens)
    by_id = dict(zip(tokens["token_id"], labels, strict=True))
    prompts = list(dict.fromkeys(per_prompt["prompt"]))
    topic_of = per_prompt.drop_duplicates("prompt").set_index("prompt")["topic"]
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.1,
        row_heights=[0.35, 0.65],
        subplot_titles=["mean over each group's prompts", "each prompt"],
    )
    for topic, color in TOPIC_COLORS.items():
        sub = per_prompt[per_prompt["topic"] == topic]
        if sub.empty:
            continue
        mean: Any = sub.groupby("token_id", sort=False)["logit_diff"].mean()
        n = sub["prompt"].nunique()
        fig.add_trace(
            go.Bar(
                x=[by_id[i] for i in mean.index.tolist()],
                y=mean.values,
                name=f"{topic} (n={n})",
                marker_color=color,
                legendgroup=topic,
            ),
            row=1,
            col=1,
        )
    grid = per_prompt.pivot_table(
        index="prompt", columns="token_id", values="logit_diff", sort=False
    )
    grid = grid.loc[prompts, list(tokens["token_id"])]
    zmax = float(np.nanmax(np.abs(grid.values))) if grid.size else 1.0
    fig.add_trace(
        go.Heatmap(
            x=labels,
            y=[
                f"{lab} ({topic_of[p]})"
                for lab, p in zip(_prompt_labels(prompts), prompts, strict=True)
            ],
            z=grid.values,
            colorscale="RdBu",
            reversescale=True,
            zmid=0,
            zmin=-zmax,
            zmax=zmax,
            colorbar={"title": {"text": "Δ logit"}, "len": 0.6, "y": 0.3},
            hovertemplate="%{y}<br>token %{x}: %{z:+.3g} logit<extra></extra>",
        ),
        row=2,
        col=1,
    )
    fig.update_layout(
        title="Next-token logits the edit changes, per prompt group and per prompt",
        barmode="group",
        height=320 + 24 * len(prompts),
        legend_title_text="prompts",
    )
    fig.update_xaxes(type="category")
    fig.update_xaxes(title_text="next token (the most changed, on average)", row=2, col=1)
    fig.update_yaxes(title_text="Δ logit (adapter − base)", row=1, col=1)
    fig.update_yaxes(title_text="prompt", autorange="reversed", row=2, col=1)
    return fig
