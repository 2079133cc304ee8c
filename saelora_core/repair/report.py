"""The repair comparison as a table and figures: gap closed per method (with its interval), the
gap-closed-against-tokens curves, and the latent adapter's gap closed against its latents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from saelora_core.io.atomic import atomic_write_bytes, atomic_write_json
from saelora_core.reporting.export import BrowserNotFoundError, save_figure, save_table

LABELS = {
    "model_lora": "model LoRA (2501.19406)",
    "sae_finetune": "SAE KL+MSE finetune (2503.17272)",
    "linear_adapter": "linear adapter (2503.17272)",
    "latent_adapter": "latent adapter (ours)",
}


def _label(name: str, rec: dict) -> str:
    cfg = rec.get("config", {})
    base: str = LABELS.get(cfg.get("method", ""), str(cfg.get("method", name)))
    if cfg.get("sae_path"):
        base = f"finetune, then {base.split(' (')[0]}"
    if cfg.get("method") == "latent_adapter":
        base += f", r{cfg.get('latent_rank')}" + (
            f" top-{cfg['latent_topk']}" if cfg.get("latent_topk") else " dense"
        )
    return base


def comparison_table(records: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per run and text set: every number of ``evaluate.RepairEval`` plus the budget."""
    rows = []
    for name, rec in records.items():
        for text_set, ev in rec.get("eval", {}).items():
            lat = rec.get("latents", {})
            rows.append(
                {
                    "run": name,
                    "method": _label(name, rec),
                    "text_set": text_set,
                    "train_tokens": rec.get("train_tokens_seen"),
                    **{k: v for k, v in ev.items() if k != "text_set"},
                    "latents_used": lat.get("total"),
                    "train_tokens_per_s": rec.get("tokens_per_s_this_run"),
                }
            )
    return pd.DataFrame(rows)


def curves_table(records: dict[str, dict[str, Any]]) -> pd.DataFrame:
    rows = [
        {"run": name, "method": _label(name, rec), **pt}
        for name, rec in records.items()
        for pt in rec.get("curve", [])
    ]
    return pd.DataFrame(rows)


def fig_loss_curves(records: dict[str, dict[str, Any]], window: int = 8) -> go.Figure:
    """Training KL to the clean model against tokens seen (a running mean over ``window``
    steps: each step sees other windows, so the raw curve is mostly batch-to-batch noise)."""
    fig = go.Figure()
    for name, rec in records.items():
        hist = pd.DataFrame(rec.get("history", []))
        if hist.empty:
            continue
        fig.add_scatter(
            x=hist["tokens"],
            y=hist["kl"].rolling(window, min_periods=1).mean(),
            mode="lines",
            name=_label(name, rec),
        )
    fig.update_layout(
        title=f"Training KL(clean ‖ spliced), running mean over {window} steps",
        xaxis_title="training tokens seen",
        yaxis_title="KL (nats / token)",
        height=440,
    )
    return fig


TEXT_SET_COLORS = {"heldout": "#1c7ed6", "general": "#e8590c"}
"""One colour per text set (``run.TEXT_SETS``), the same in every figure of the study."""
OTHER_COLOR = "#868e96"


def text_set_color(text_set: object) -> str:
    return TEXT_SET_COLORS.get(str(text_set), OTHER_COLOR)


def fig_gap_closed(df: pd.DataFrame) -> go.Figure:
    """Fraction of the gap closed per method, one bar group per text set, 95 % intervals."""
    fig = go.Figure()
    for text_set, g in df.groupby("text_set", sort=False):
        fig.add_bar(
            name=str(text_set),
            marker_color=text_set_color(text_set),
            x=g["method"],
            y=g["gap_closed"],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": g["gap_closed_hi"] - g["gap_closed"],
                "arrayminus": g["gap_closed"] - g["gap_closed_lo"],
            },
        )
    tokens = df["train_tokens"].dropna().unique()
    fig.update_layout(
        title=f"Fraction of the SAE's CE gap closed ({', '.join(f'{int(t):,}' for t in tokens)} training tokens each; 95 % CI over windows)",
        yaxis_title="fraction of gap closed",
        barmode="group",
        height=520,
        xaxis_tickangle=-25,
    )
    return fig


def fig_curves(curves: pd.DataFrame) -> go.Figure:
    """Held-out gap closed against training tokens seen, one line per run."""
    fig = go.Figure()
    for _, g in curves.groupby("run", sort=False):
        fig.add_scatter(
            x=g["tokens"], y=g["gap_closed"], mode="lines+markers", name=str(g["method"].iloc[0])
        )
    fig.update_layout(
        title="Held-out gap closed against training tokens (curve windows)",
        xaxis_title="training tokens seen",
        yaxis_title="fraction of gap closed",
        height=480,
    )
    return fig


def fig_latent_pareto(df: pd.DataFrame) -> go.Figure:
    """The latent adapter's gap closed against the distinct latents it reads or writes."""
    sub = pd.DataFrame(df[df["latents_used"].notna()]).sort_values(by="latents_used")
    fig = go.Figure()
    for text_set, g in sub.groupby("text_set", sort=False):
        fig.add_scatter(
            x=g["latents_used"],
            y=g["gap_closed"],
            mode="lines+markers",
            name=str(text_set),
            marker_color=text_set_color(text_set),
            line_color=text_set_color(text_set),
            error_y={
                "type": "data",
                "symmetric": False,
                "array": g["gap_closed_hi"] - g["gap_closed"],
                "arrayminus": g["gap_closed"] - g["gap_closed_lo"],
            },
            text=g["method"],
        )
    fig.update_layout(
        title="Latent adapter: gap closed against distinct latents used",
        xaxis_title="distinct latents read or written",
        xaxis_type="log",
        yaxis_title="fraction of gap closed",
        height=440,
    )
    return fig


def markdown_table(df: pd.DataFrame) -> str:
    cols = [
        ("method", "method", "{}"),
        ("text_set", "text", "{}"),
        ("gap_closed", "gap closed", "{:.3f}"),
        ("gap_closed_lo", "95 % CI lo", "{:.3f}"),
        ("gap_closed_hi", "95 % CI hi", "{:.3f}"),
        ("ce_clean", "CE clean", "{:.3f}"),
        ("ce_before", "CE spliced before", "{:.3f}"),
        ("ce_after", "CE spliced after", "{:.3f}"),
        ("ce_zero", "CE zero-abl.", "{:.2f}"),
        ("recovered_after", "CE recovered", "{:.4f}"),
        ("kl_before", "KL before", "{:.3f}"),
        ("kl_after", "KL after", "{:.3f}"),
        ("explained_variance", "EV", "{:.3f}"),
        ("mean_l0", "L0", "{:.0f}"),
        ("dead_fraction", "dead", "{:.3f}"),
        ("latents_used", "latents", "{}"),
    ]
    head = "| " + " | ".join(c[1] for c in cols) + " |"
    sep = "| " + " | ".join("---" for _ in cols) + " |"
    lines = [head, sep]
    for _, r in df.iterrows():
        cells = []
        for key, _, fmt in cols:
            v = r.get(key)
            cells.append(
                "–"
                if v is None or (isinstance(v, float) and v != v)
                else fmt.format(int(v) if key == "latents_used" else v)
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def study_outputs(records: dict[str, dict[str, Any]], out_dir: str | Path) -> str | None:
    """Write the table (CSV, TeX, Markdown), curves and figures; return the latent run with the
    largest held-out gap closed (None without one)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = comparison_table(records)
    curves = curves_table(records)
    save_table(df, out, "table")
    atomic_write_bytes(out / "table.md", markdown_table(df).encode())
    atomic_write_bytes(out / "curves.csv", curves.to_csv(index=False).encode())
    for name, rec in records.items():
        atomic_write_json(out / "records" / f"{name}.json", rec)
    figs = {
        "gap": fig_gap_closed(df),
        "curves": fig_curves(curves),
        "loss_curves": fig_loss_curves(records),
    }
    if bool(df["latents_used"].notna().any()):
        figs["latent_pareto"] = fig_latent_pareto(df)
    for name, fig in figs.items():
        # PNG for the repository (each self-contained HTML embeds 4.6 MB of plotly.js; the
        # notebook's export writes HTML); HTML only when no browser can render a PNG.
        try:
            save_figure(fig, out, name, formats=("png",))
        except BrowserNotFoundError:
            save_figure(fig, out, name, formats=("html",))
    lat = df[(df["latents_used"].notna()) & (df["text_set"] == "heldout")]
    return (
        None if lat.empty else str(pd.DataFrame(lat).sort_values(by="gap_closed").iloc[-1]["run"])
    )


def load_records(runs_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The study's run records (``results/repair/records/<name>.json``), by run name."""
    import json

    d = Path(runs_dir)
    return {p.stem: json.loads(p.read_text()) for p in sorted(d.glob("*.json"))}


def latent_usage(lora, k: int = 12) -> pd.DataFrame:
    """The latents a latent adapter uses most, summed over its components weighted by ``|s|``:
    ``read_mass = Σ_j |s_j|·Â[i, j]²`` and ``write_mass = Σ_j |s_j|·B̂[j, i]²``, as shares."""
    s = lora.s.detach().abs()
    read = (lora.read_dirs().detach() ** 2 * s).sum(1)
    write = (lora.write_dirs().detach() ** 2 * s[:, None]).sum(0)
    rows = []
    for side, mass in (("read", read), ("write", write)):
        share = mass / mass.sum().clamp_min(1e-12)
        top = share.topk(min(k, int((share > 0).sum()) or 1))
        rows += [
            {"side": side, "latent": int(i), "share": float(v)}
            for v, i in zip(top.values, top.indices, strict=True)
            if v > 0
        ]
    return pd.DataFrame(rows)
