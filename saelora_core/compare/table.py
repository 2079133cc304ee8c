"""The comparison's outputs: CSV, Markdown and one HTML page, and a Pareto figure.

Files written by :func:`write_outputs` to the output directory:

- ``table.csv`` / ``table.md`` / ``table.html``: one row per method (columns in
  ``docs/compare.md``); the HTML page also holds the near-miss rates per category, the
  capability cost per genre and every hit with its answer;
- ``answers.csv.gz``: every answer of every row (split, category, prompt, answer, hit, loops,
  distinct-n, target fraction, judge scores), gzip-compressed (``pd.read_csv`` reads it as is);
- ``near_miss_by_category.csv``, ``capability_by_genre.csv``;
- ``compare.json``: the settings and the table as JSON.
"""

from __future__ import annotations

import csv
import gzip
import html
import json
import math
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from saelora_core.compare.run import NOT_JUDGED, CompareResult
from saelora_core.io.atomic import atomic_write_bytes, atomic_write_json


def _num(x: Any, fmt: str = "{:.2f}") -> str:
    if isinstance(x, str):
        return x
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return fmt.format(x)


def _rate(r: pd.Series, name: str) -> str:
    return f"{_num(r[name])} [{_num(r[f'{name}_low'])}, {_num(r[f'{name}_high'])}]"


def _judge(r: pd.Series) -> str:
    if str(r["judge"]) == NOT_JUDGED or str(r["judge_combined"]) == NOT_JUDGED:
        return NOT_JUDGED
    return " / ".join(
        _num(r[f"judge_{k}"]) for k in ("concept", "instruction", "fluency", "combined")
    )


HEADERS = [
    "method",
    "trainable params",
    "nonzero params",
    "distinct latents",
    "in-topic [95 % CI]",
    "effect [95 % CI]",
    "near-miss [95 % CI]",
    "far off-topic [95 % CI]",
    "general ΔCE",
    "general KL",
    "repetition",
    "hits' target share",
    "judge C / I / F / HM",
]


def display_rows(table: pd.DataFrame) -> list[list[str]]:
    out = []
    for _, r in table.iterrows():
        out.append(
            [
                str(r["method"]),
                f"{int(cast(Any, r['trainable_params'])):,}",
                f"{int(cast(Any, r['nonzero_params'])):,}",
                str(r["distinct_latents"]),
                _rate(r, "in_topic"),
                f"{_num(r['effect'], '{:+.2f}')} [{_num(r['effect_low'], '{:+.2f}')}, "
                f"{_num(r['effect_high'], '{:+.2f}')}]",
                _rate(r, "near_miss"),
                _rate(r, "off_topic"),
                _num(r["delta_ce"], "{:+.4f}"),
                _num(r["kl"], "{:.4f}"),
                _num(r["repetition"]),
                _num(r["hit_target_fraction"]),
                _judge(r),
            ]
        )
    return out


def display_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The table as the Markdown and HTML pages show it: formatted strings under ``HEADERS``."""
    return pd.DataFrame(display_rows(table), columns=HEADERS)


def hits_frame(res: CompareResult, method: str | None = None) -> pd.DataFrame:
    """Every answer the detector counted as a hit (of ``method``, or of every row), with the
    prompt, its split and category, so each counted hit can be read."""
    a = res.answers
    hit = a["hit"].astype(str).str.lower().isin(["true", "1", "1.0"])
    keep = a[hit & ((a["method"] == method) if method else True)]
    cols = ["method", "split", "category", "prompt", "answer", "loops", "target_fraction"]
    return pd.DataFrame(keep[[c for c in cols if c in keep.columns]]).reset_index(drop=True)


def table_markdown(res: CompareResult) -> str:
    s = res.settings
    p = s["prompts"]
    lines = [
        f"# Comparison: {s['behaviour']} ({s['guideline']}; detector {s['detector']})",
        "",
        f"Greedy answers of {s['max_new_tokens']} tokens on {p['in_topic']} in-topic, "
        f"{p['near_miss']} near-miss and {p['off_topic']} far off-topic fresh prompts; rates "
        "with 95 % Wilson intervals, effect = in-topic rate − the base model's with a 95 % "
        f"paired bootstrap interval; general ΔCE and KL(base ‖ edited) in nats/token on "
        f"{s['general_texts']} texts (BOS excluded); repetition = share of in-topic answers "
        "that loop; hits' target share = mean share of a hit's sentences that show the "
        f"behaviour; judge: {s['judge']}.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + " --- |" * len(HEADERS),
    ]
    for row in display_rows(res.table):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    if len(res.near_miss):
        piv = res.near_miss.pivot(index="category", columns="method", values="rate")
        piv = piv[[m for m in res.table["method"] if m in piv.columns]]
        lines += [
            "",
            "## Near-miss rate per category",
            "",
            "| category | " + " | ".join(piv.columns) + " |",
            "|" + " --- |" * (len(piv.columns) + 1),
        ]
        for cat, r in piv.iterrows():
            lines.append(f"| {cat} | " + " | ".join(_num(v) for v in r.tolist()) + " |")
    lines += ["", f"Settings: `{json.dumps(s, default=str)}`", ""]
    return "\n".join(lines)


def table_html(res: CompareResult) -> str:
    """One self-contained page (no scripts, no external resources)."""
    e = html.escape
    s = res.settings
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Comparison: {e(s['behaviour'])}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;"
        "padding:0 1em}table{border-collapse:collapse;margin:1em 0;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:4px 6px;vertical-align:top;text-align:left}"
        "th{background:#f3f3f3}</style></head><body>",
        f"<h1>Comparison: {e(s['behaviour'])} ({e(s['guideline'])})</h1>",
        "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in HEADERS) + "</tr>",
    ]
    for row in display_rows(res.table):
        parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
    parts.append("</table>")
    if len(res.near_miss):
        parts.append("<h2>Near-miss rate per category</h2>")
        parts.append(res.near_miss.to_html(index=False, float_format="%.2f", border=0))
    if len(res.capability):
        parts.append("<h2>Capability cost per genre</h2>")
        parts.append(res.capability.to_html(index=False, float_format="%.4f", border=0))
    hits = hits_frame(res)
    parts.append(f"<h2>Every hit ({len(hits)} answers the detector counts)</h2>")
    parts.append(hits.to_html(index=False, float_format="%.2f", border=0))
    parts.append(f"<p>Settings: <code>{e(json.dumps(s, default=str))}</code></p></body></html>")
    return "".join(parts)


ANSWERS = "answers.csv.gz"
"""Every answer of every row, gzip-compressed CSV."""


def write_outputs(res: CompareResult, out_dir: str | Path) -> list[Path]:
    """Write every file named in the module doc (atomically); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = {
        "table.csv": res.table.to_csv(index=False),
        "table.md": table_markdown(res),
        "table.html": table_html(res),
        "near_miss_by_category.csv": res.near_miss.to_csv(index=False),
        "capability_by_genre.csv": res.capability.to_csv(index=False),
    }
    files = []
    for name, text in texts.items():
        atomic_write_bytes(out / name, text.encode("utf-8"))
        files.append(out / name)
    # Strings quoted: a generated answer may hold a bare "\r", which unquoted splits a row.
    # Compressed (mtime 0, so the bytes depend on the answers only): every answer of every row
    # is most of a comparison's size.
    answers = res.answers.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC).encode("utf-8")
    atomic_write_bytes(out / ANSWERS, gzip.compress(answers, mtime=0))
    files.append(out / ANSWERS)
    atomic_write_json(
        out / "compare.json",
        {"settings": res.settings, "table": res.table.to_dict(orient="records")},
    )
    files.append(out / "compare.json")
    res.files = files
    return files


def read_outputs(out_dir: str | Path) -> CompareResult:
    """The :class:`CompareResult` that :func:`write_outputs` wrote to ``out_dir`` (for notebooks
    and reports: reading a finished comparison runs no model). A missing file is named."""
    out = Path(out_dir)
    # A comparison written before the answers were compressed holds a plain answers.csv.
    answers = (
        ANSWERS
        if (out / ANSWERS).is_file() or not (out / "answers.csv").is_file()
        else "answers.csv"
    )
    need = ["table.csv", answers, "near_miss_by_category.csv", "capability_by_genre.csv"]
    missing = [n for n in [*need, "compare.json"] if not (out / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{out} holds no finished comparison ({', '.join(missing)} missing): run "
            "`saelora compare --behaviour <french|upper> --train` (docs/compare.md)"
        )
    frames = [pd.read_csv(out / n, keep_default_na=False, na_values=[""]) for n in need]
    settings = json.loads((out / "compare.json").read_text(encoding="utf-8"))["settings"]
    return CompareResult(*frames, settings=settings, files=[out / n for n in need])


def pareto_figure(table: pd.DataFrame, x: str = "trainable_params"):
    """Effect (with its interval) against ``x`` ("trainable_params", "nonzero_params" or
    "n_latents"), one point per method, log-scaled x; rows without ``x`` are left out."""
    import plotly.graph_objects as go

    values = np.nan_to_num(np.asarray(pd.to_numeric(table[x], errors="coerce"), dtype=float))
    t = pd.DataFrame(table[values > 0])
    fig = go.Figure(
        go.Scatter(
            x=t[x],
            y=t["effect"],
            mode="markers+text",
            text=t["method"],
            textposition="top center",
            error_y={
                "type": "data",
                "symmetric": False,
                "array": t["effect_high"] - t["effect"],
                "arrayminus": t["effect"] - t["effect_low"],
            },
        )
    )
    label = {
        "trainable_params": "trainable parameters",
        "nonzero_params": "nonzero parameters",
        "n_latents": "distinct latents (read + write)",
    }.get(x, x)
    fig.update_layout(
        xaxis={"type": "log", "title": label},
        yaxis={"title": "effect (in-topic rate − base)"},
        title=f"Effect against {label}",
        template="plotly_white",
    )
    return fig
