"""SAE latent activations on text: max-activating examples and a Neuronpedia-style dashboard.

Activations are the SAE's post-activations ``z = SAE.encode(resid)`` on the clean residual at the
hook point (no adapter). The leading BOS is dropped everywhere: its residual is far outside the
SAE's training distribution (see ``hooks.py``), so its latents are meaningless.
"""

from __future__ import annotations

import html
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from torch import Tensor

from saelora_core.analysis.logits import latent_logits
from saelora_core.models.chat import TEMPLATES, prompt_text
from saelora_core.models.presets import ModelAndSae


def dataset_rows(dataset: Any, split: str | None = None) -> list[dict]:
    """Rows (dicts) of a list of dicts, a ``datasets.Dataset`` or a ``DatasetDict``.

    For a DatasetDict: ``split`` if given, else "eval" when present, else "train".
    """
    if dataset is None:
        return []
    if hasattr(dataset, "keys") and callable(dataset.keys):  # DatasetDict or {split: rows}
        keys = list(dataset.keys())  # type: ignore[union-attr]
        name = split or ("eval" if "eval" in keys else "train")
        if name not in keys:
            raise KeyError(f"dataset has no split {name!r} (splits: {keys})")
        dataset = dataset[name]  # type: ignore[index]
    return [dict(r) for r in dataset]


def load_texts(
    mas: ModelAndSae, dataset: Any, n: int = 200, *, split: str | None = None
) -> list[str]:
    """Up to ``n`` rows as "prompt + response" texts in ``mas.chat_format`` (no BOS; the
    tokenizer adds it). Rows without a usable prompt/response are skipped."""
    t = TEMPLATES[mas.chat_format]
    tok: Any = mas.tokenizer
    end = t.end.replace("{eos}", str(tok.eos_token or ""))
    texts = []
    for row in dataset_rows(dataset, split):
        if len(texts) >= n:
            break
        prompt, response = row.get("prompt"), row.get("response")
        if not (
            isinstance(prompt, str)
            and prompt.strip()
            and isinstance(response, str)
            and response.strip()
        ):
            continue
        texts.append(
            f"{prompt_text(prompt, mas.chat_format)}{t.response_lead}{response.strip()}{end}"
        )
    return texts


@dataclass
class TokenActs:
    """Latent activations on one text, BOS excluded."""

    text_idx: int
    token_ids: Int[Tensor, " pos"]
    tokens: list[str]
    acts: Float[Tensor, "pos n_latents"]
    latents: list[int] | None = None
    """Column order of ``acts``; None when all d_sae latents are kept."""

    def column(self, latent: int) -> Tensor:
        return self.acts[:, latent if self.latents is None else self.latents.index(latent)]


def tokenize_text(mas: ModelAndSae, text: str, max_len: int = 256) -> Tensor:
    """BOS + tokens of ``text`` (special-token strings in it, such as ``<eos>``, are parsed)."""
    tok: Any = mas.tokenizer
    ids = list(tok(text, add_special_tokens=False)["input_ids"])
    if tok.bos_token_id is not None:
        ids = [tok.bos_token_id] + ids
    return torch.tensor(ids[:max_len], dtype=torch.long)


@torch.no_grad()
def sae_latents(mas: ModelAndSae, tokens: Int[Tensor, " pos"]) -> Float[Tensor, "pos d_sae"]:
    """``SAE.encode`` of the clean hook-point residual for one token sequence (BOS included).

    The model and SAE are frozen, so the result depends only on them and the tokens: the last
    :data:`LATENT_CACHE_SIZE` results are kept (sparse, as the SAE's latents are), so the
    feature tables and dashboards of another adapter on the same texts run no forward pass."""
    cache = _LATENTS.setdefault(mas.model, OrderedDict())  # dropped with the model
    key = (id(mas.sae), tuple(tokens.tolist()))
    hit = cache.get(key)
    if hit is not None:
        cache.move_to_end(key)
        return hit.to_dense()
    resid = mas.model(tokens[None].to(mas.model.cfg.device), stop_at_layer=mas.layer + 1)
    z = mas.sae.encode(resid)[0]
    cache[key] = z.to_sparse()
    if len(cache) > LATENT_CACHE_SIZE:
        cache.popitem(last=False)
    return z


LATENT_CACHE_SIZE = 4096
"""Token sequences whose SAE latents :func:`sae_latents` keeps."""
_LATENTS: WeakKeyDictionary[Any, OrderedDict[tuple, Tensor]] = WeakKeyDictionary()


@torch.no_grad()
def latent_activations(
    mas: ModelAndSae, texts: list[str], *, latents: list[int] | None = None, max_len: int = 256
) -> list[TokenActs]:
    """Activations of ``latents`` (all when None) on each text, BOS dropped."""
    out = []
    for i, text in enumerate(texts):
        ids = tokenize_text(mas, text, max_len)
        z = sae_latents(mas, ids)[1:]
        if latents is not None:
            z = z[:, latents]
        toks = [str(mas.tokenizer.decode([t])) for t in ids[1:].tolist()]
        out.append(TokenActs(i, ids[1:], toks, z.float().cpu(), latents))
    return out


def _shade(tok: str, a: float, vmax: float, mark: bool) -> str:
    alpha = 0.0 if vmax <= 0 else max(0.0, min(1.0, a / vmax))
    text = html.escape(tok).replace("\n", "↵")
    style = f"background:rgba(255,140,0,{alpha:.2f})" + (";font-weight:bold" if mark else "")
    inner = f"<mark>{text}</mark>" if mark else text
    return f'<span title="{a:.3g}" style="{style}">{inner}</span>'


def max_activating_examples(
    mas: ModelAndSae,
    latent: int,
    texts: list[str],
    *,
    k: int = 10,
    window: int = 8,
    one_per_text: bool = True,
    acts: list[TokenActs] | None = None,
) -> pd.DataFrame:
    """The ``k`` tokens where ``latent`` fires most (at most one per text by default).

    ``acts`` reuses activations from :func:`latent_activations` (must contain ``latent``).
    Columns: text_idx, pos (index in the token sequence; BOS is 0), activation, token, context_html (±``window``
    tokens, the max token in ``<mark>``, the others shaded by activation relative to the top
    example), context_text (the window with the max token in «»).
    """
    acts = acts if acts is not None else latent_activations(mas, texts, latents=[latent])
    cands = []
    for ta in acts:
        col = ta.column(latent)
        if col.numel() == 0:
            continue
        positions = [int(col.argmax())] if one_per_text else range(col.numel())
        cands += [(float(col[p]), ta, p) for p in positions if col[p] > 0]
    cands.sort(key=lambda c: -c[0])
    cands = cands[:k]
    vmax = cands[0][0] if cands else 0.0
    rows = []
    for a, ta, p in cands:
        col = ta.column(latent).tolist()
        lo, hi = max(0, p - window), min(len(ta.tokens), p + window + 1)
        parts = [_shade(ta.tokens[q], col[q], vmax, q == p) for q in range(lo, hi)]
        text = "".join(f"«{t}»" if q == p else t for q, t in enumerate(ta.tokens[lo:hi], lo))
        rows.append(
            {
                "text_idx": ta.text_idx,
                "pos": p + 1,
                "activation": a,
                "token": ta.tokens[p],
                "context_html": "".join(parts),
                "context_text": text,
            }
        )
    return pd.DataFrame(
        rows, columns=["text_idx", "pos", "activation", "token", "context_html", "context_text"]
    )


@dataclass
class LatentDashboard:
    latent: int
    examples: pd.DataFrame
    histogram: go.Figure
    top_logits: pd.DataFrame
    bottom_logits: pd.DataFrame
    html: str
    density: float = float("nan")
    """Fraction of (non-BOS) tokens of the texts where the latent fires."""
    nonzero: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _svg_histogram(values: np.ndarray, bins: int = 30, w: int = 320, h: int = 90) -> str:
    if values.size == 0:
        return "<p><i>never fires on these texts</i></p>"
    counts, edges = np.histogram(values, bins=bins)
    bw, top = w / bins, max(int(counts.max()), 1)
    bars = "".join(
        f'<rect x="{i * bw:.1f}" y="{h - c / top * h:.1f}" width="{bw - 1:.1f}" '
        f'height="{c / top * h:.1f}" fill="#f08c00"><title>{edges[i]:.3g}–{edges[i + 1]:.3g}: '
        f"{c}</title></rect>"
        for i, c in enumerate(counts.tolist())
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h + 14}">{bars}'
        f'<text x="0" y="{h + 12}" font-size="10">{edges[0]:.3g}</text>'
        f'<text x="{w}" y="{h + 12}" font-size="10" text-anchor="end">{edges[-1]:.3g}</text>'
        "</svg>"
    )


def _logit_list(df: pd.DataFrame, color: str) -> str:
    items = "".join(
        f'<li><code style="background:{color}">{html.escape(repr(t))}</code> {s:+.3f}</li>'
        for t, s in zip(df["token"], df["score"], strict=True)
    )
    return f'<ol style="margin:0;padding-left:1.4em">{items}</ol>'


def dashboard_html(d: LatentDashboard, title: str | None = None) -> str:
    """A self-contained HTML snippet (no scripts): density, activation histogram as inline SVG,
    top/bottom logits, and the max-activating examples."""
    head = html.escape(title or f"Latent {d.latent}")
    ex = "".join(
        f'<tr><td>{r.activation:.3f}</td><td style="font-family:monospace;white-space:pre-wrap">'
        f"{r.context_html}</td></tr>"
        for r in d.examples.itertuples()
    )
    ex = ex or '<tr><td colspan="2"><i>no activating examples</i></td></tr>'
    return (
        f'<div class="saelora-dashboard" data-latent="{d.latent}" style="font-family:sans-serif;'
        f'border:1px solid #ddd;padding:8px;margin:8px 0">'
        f'<h3 style="margin:0 0 4px">{head}</h3>'
        f"<p style='margin:2px 0'>firing density: {d.density:.4f} "
        f"({d.nonzero.size} nonzero activations)</p>"
        f'<div style="display:flex;gap:24px;flex-wrap:wrap"><div><b>activation histogram</b><br>'
        f"{_svg_histogram(d.nonzero)}</div>"
        f"<div><b>promoted tokens</b>{_logit_list(d.top_logits, '#d3f9d8')}</div>"
        f"<div><b>suppressed tokens</b>{_logit_list(d.bottom_logits, '#ffe3e3')}</div></div>"
        f'<table style="border-collapse:collapse;margin-top:6px"><tr><th>act</th><th>context'
        f"</th></tr>{ex}</table></div>"
    )


def latent_dashboard(
    mas: ModelAndSae,
    latent: int,
    texts: list[str],
    *,
    k: int = 10,
    k_logits: int = 10,
    acts: list[TokenActs] | None = None,
    title: str | None = None,
) -> LatentDashboard:
    """Everything about one latent: max-activating examples, histogram of its nonzero
    activations (plotly), top/bottom tokens of ``W_dec[latent] @ W_U`` and an HTML snippet."""
    acts = acts if acts is not None else latent_activations(mas, texts, latents=[latent])
    cols = [ta.column(latent) for ta in acts]
    allv = torch.cat(cols) if cols else torch.zeros(0)
    nonzero = allv[allv > 0].numpy()
    density = float(nonzero.size / allv.numel()) if allv.numel() else float("nan")
    hist = go.Figure(go.Histogram(x=nonzero, nbinsx=40, marker_color="#f08c00"))
    hist.update_layout(
        title=f"Latent {latent}: nonzero activations (density {density:.4f})",
        xaxis_title="activation",
        yaxis_title="count",
        height=300,
    )
    top, bottom = latent_logits(mas, latent, k=k_logits)
    examples = max_activating_examples(mas, latent, texts, k=k, acts=acts)
    d = LatentDashboard(latent, examples, hist, top, bottom, "", density, nonzero)
    d.html = dashboard_html(d, title)
    return d
