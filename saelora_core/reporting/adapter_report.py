"""A self-contained HTML report of one adapter: metadata, config, loss curve, sparsity vs noise,
feature and logit tables, behaviour, and latent dashboards. Plotly's JS is inlined once, so the
file opens offline.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from saelora_core.adapter.saving import LoadedLora, load_lora
from saelora_core.adapter.summary import adapter_info, summary_table
from saelora_core.analysis import (
    BehaviourResult,
    adapter_sparsity,
    evaluate_behaviour,
    latent_activations,
    latent_dashboard,
    sorted_weight_curves,
    top_feats_summary,
    top_toks_table,
)
from saelora_core.io.atomic import atomic_write_bytes
from saelora_core.models.presets import ModelAndSae, load_model_and_sae
from saelora_core.reporting.figures import (
    fig_behaviour,
    fig_loss_curve,
    fig_sorted_weights,
    fig_top_feats,
    fig_top_toks,
)

CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:auto;padding:1em;color:#212529}
table.df{border-collapse:collapse;font-size:13px;margin:6px 0}
table.df td,table.df th{border:1px solid #dee2e6;padding:2px 6px;text-align:right}
pre{background:#f8f9fa;padding:8px;overflow:auto;font-size:12px}
h2{border-bottom:2px solid #e8590c;padding-bottom:2px;margin-top:1.6em}
"""


def _table(df: pd.DataFrame, max_rows: int = 60) -> str:
    return df.head(max_rows).to_html(
        classes="df", index=False, float_format=lambda v: f"{v:.4g}", escape=True, na_rep="–"
    )


def _fig(fig: go.Figure) -> str:
    return fig.to_html(include_plotlyjs=False, full_html=False)


def top_latents(feats: pd.DataFrame, side: str, n: int = 3) -> list[int]:
    """The ``n`` distinct latents with the largest |weight| on ``side`` (over all components)."""
    d = (
        feats[feats["side"] == side]
        .assign(a=lambda x: x["weight"].abs())
        .sort_values("a", ascending=False)
    )
    return list(dict.fromkeys(d["latent"].tolist()))[:n]


def load_adapter_and_model(
    lora_dir: str | Path, mas: ModelAndSae | None = None
) -> tuple[LoadedLora, ModelAndSae]:
    """The adapter and, unless given, the model + SAE of its metadata's preset; refuses an
    adapter trained on a different SAE (``load_lora``'s identity check)."""
    if mas is None:
        mas = load_model_and_sae(load_lora(lora_dir).metadata["preset"])
    return load_lora(lora_dir, sae_identity=mas.sae_identity), mas


def export_report(
    lora_dir: str | Path,
    out_path: str | Path | None = None,
    *,
    mas: ModelAndSae | None = None,
    eval_rows: Any = None,
    behaviour: BehaviourResult | None = None,
    texts: list[str] | None = None,
    k: int = 10,
    max_new_tokens: int = 48,
    max_prompts: int | None = None,
) -> Path:
    """Write an HTML report of the adapter in ``lora_dir`` (default ``<lora_dir>/report.html``).

    ``mas`` defaults to ``load_model_and_sae(metadata["preset"])``. Behaviour is shown when
    ``behaviour`` is given, or computed from ``eval_rows`` (see ``evaluate_behaviour``). Latent
    dashboards for the top 3 read and top 3 write latents are added when ``texts`` are given.
    """
    lora_dir = Path(lora_dir)
    out = Path(out_path) if out_path is not None else lora_dir / "report.html"
    loaded, mas = load_adapter_and_model(lora_dir, mas)
    lora, meta = loaded.lora, loaded.metadata
    mode = meta.get("mode", "resid_add")
    name = meta.get("config", {}).get("name") or lora_dir.name

    feats = top_feats_summary(lora, k=k)
    sparsity = adapter_sparsity(lora)
    parts = [
        f"<h1>Adapter report: {html.escape(str(name))}</h1>",
        f"<p><code>{html.escape(str(lora_dir))}</code></p>",
        "<h2>Summary</h2>",
        _table(summary_table(adapter_info(loaded))),
        "<h2>Config</h2>",
        f"<pre>{html.escape(json.dumps(meta.get('config', {}), indent=1))}</pre>",
        "<h2>Loss curve</h2>",
        _fig(fig_loss_curve(meta.get("history", []))),
        "<h2>Sparsity</h2>",
        "<p>Exact L0, thresholded L0, Hoyer and Gini of each unit vector; the noise rows are "
        "random unit vectors of the same length (what an untrained vector looks like).</p>",
        _table(sparsity),
        _fig(fig_sorted_weights(sorted_weight_curves(lora))),
        "<h2>Top latents</h2>",
        _table(feats),
        _fig(fig_top_feats(feats)),
        "<h2>Logit attribution (direct path)</h2>",
    ]
    toks = top_toks_table(lora, mas)
    parts += [
        _fig(fig_top_toks(toks)),
        "<details><summary>table</summary>",
        _table(toks, 400),
        "</details>",
    ]
    if behaviour is None and eval_rows is not None:
        behaviour = evaluate_behaviour(
            mas, lora, eval_rows, mode=mode, max_new_tokens=max_new_tokens, max_prompts=max_prompts
        )
    if behaviour is not None:
        parts += [
            "<h2>Behaviour</h2>",
            _table(behaviour.rates),
            _fig(fig_behaviour(behaviour)),
            "<details><summary>samples</summary>",
            _table(behaviour.samples, 100),
            "</details>",
        ]
    if texts:
        picks = [("read", lat) for lat in top_latents(feats, "read")]
        picks += [("write", lat) for lat in top_latents(feats, "write")]
        acts = latent_activations(mas, texts, latents=sorted({lat for _, lat in picks}))
        parts.append("<h2>Latent dashboards</h2>")
        for side, lat in picks:
            d = latent_dashboard(mas, lat, texts, acts=acts, title=f"Latent {lat} ({side})")
            parts.append(d.html)
    doc = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>saelora report: "
        f"{html.escape(str(name))}</title><style>{CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        + "\n".join(parts)
        + "</body></html>"
    )
    atomic_write_bytes(out, doc.encode())
    return out
