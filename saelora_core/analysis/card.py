"""The adapter card: an adapter described in its latents, with the evidence and its checks.

The adapter's map on latents is ``Δz = z @ M`` with ``M = Â · diag(s) · B̂`` (d_sae × d_sae,
nonzero only on the read rows R and write columns W). A read latent's **weight** is ``‖M[i, :]‖``
(how much write one unit of its activation drives) and a write latent's is the signed mean
``(z̄ @ M)[w]`` over the in-topic prompt tokens (what the adapter adds to it there: + amplifies,
− suppresses). Each latent's **share** is its part of ``‖M‖²_F`` (rows for reads, columns for
writes), so a side's shares sum to 1. The card lists up to ``max_latents`` per side, largest
share first; for each: weight, share, firing rate on in-topic and off-topic prompt tokens, top
activating snippets, the tokens its decoder direction promotes and suppresses (direct path),
a label (``labels.py``) and, where the SAE has one, its Neuronpedia page.

The card's first line is the faithfulness verdict (``faithfulness.py``) when it was checked;
it ends with the one-paragraph summary "reads …; writes …; s = …".
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from saelora_core.adapter.sae_lora import SaeLora
from saelora_core.analysis.activations import latent_activations, max_activating_examples
from saelora_core.analysis.faithfulness import Faithfulness
from saelora_core.analysis.features import NEURONPEDIA, latent_fire_freq, neuronpedia_id_for
from saelora_core.analysis.labels import LatentEvidence, LlmLabeller, label_latents
from saelora_core.analysis.logits import latent_logits
from saelora_core.io.atomic import atomic_write_bytes
from saelora_core.models.presets import ModelAndSae


@dataclass
class CardLatent:
    side: str
    latent: int
    weight: float
    share: float
    fire_in: float
    fire_off: float
    label: str = ""
    label_source: str = "rule"
    promoted: list[str] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)
    snippets: list[str] = field(default_factory=list)
    """Top activating contexts, the peak token in «»."""
    snippets_html: list[str] = field(default_factory=list)
    url: str | None = None


@dataclass
class AdapterCard:
    name: str
    info: dict[str, Any]
    """preset, sae, mode, rank, s, distinct read/write counts, source."""
    reads: list[CardLatent]
    writes: list[CardLatent]
    faithfulness: Faithfulness | None = None

    @property
    def listed(self) -> tuple[list[int], list[int]]:
        return [c.latent for c in self.reads], [c.latent for c in self.writes]

    @property
    def first_line(self) -> str:
        if self.faithfulness is None:
            return "Unchecked: faithfulness was not measured for this card."
        return self.faithfulness.headline

    @property
    def summary(self) -> str:
        def names(cs: list[CardLatent], signed: bool) -> str:
            return "; ".join(
                f"{('+' if c.weight >= 0 else '−') if signed else ''}{c.latent} ({c.label})"
                for c in cs
            )

        s = ", ".join(f"{v:.3g}" for v in self.info["s"])
        return f"reads {names(self.reads, False)}; writes {names(self.writes, True)}; s = [{s}]."

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "first_line": self.first_line,
            "info": self.info,
            "reads": [asdict(c) for c in self.reads],
            "writes": [asdict(c) for c in self.writes],
            "faithfulness": self.faithfulness.to_dict() if self.faithfulness else None,
            "summary": self.summary,
        }


@torch.no_grad()
def latent_map(lora: SaeLora) -> tuple[list[int], list[int], torch.Tensor]:
    """R, W and ``M[R][:, W] = Â[R] · diag(s) · B̂[:, W]`` (float64, on the CPU)."""
    src = lora.folded()
    read, write = src.distinct_latents()
    a, b = src.read_dirs().double().cpu(), src.write_dirs().double().cpu()
    m = (a[read] * src.s.double().cpu()) @ b[:, write]
    return read, write, m


@torch.no_grad()
def mean_prompt_latents(mas: ModelAndSae, prompts: list[str]) -> torch.Tensor:
    """Mean SAE latents over the prompts' tokens (BOS excluded), (d_sae,) on the CPU."""
    from saelora_core.analysis.activations import sae_latents
    from saelora_core.models.chat import prompt_tokens

    tot, n = None, 0
    for p in prompts:
        z = sae_latents(mas, prompt_tokens(mas.tokenizer, p, mas.chat_format))[1:].double().cpu()
        tot = z.sum(0) if tot is None else tot + z.sum(0)
        n += z.shape[0]
    if tot is None:
        return torch.zeros(mas.sae.cfg.d_sae, dtype=torch.float64)
    return tot / max(n, 1)


def build_card(
    mas: ModelAndSae,
    lora: SaeLora,
    *,
    name: str,
    in_prompts: list[str],
    off_prompts: list[str],
    texts: list[str],
    max_latents: int = 16,
    n_snippets: int = 5,
    n_tokens: int = 6,
    labeller: LlmLabeller | None = None,
    faithfulness: Faithfulness | None = None,
    info: dict[str, Any] | None = None,
) -> AdapterCard:
    """The card of ``lora`` (see the module doc). ``texts``: where the top activating snippets
    come from; ``in_prompts``/``off_prompts``: for the firing rates and the signed write weights."""
    read, write, m = latent_map(lora)
    total = float((m**2).sum()) or 1.0
    row_share = (m**2).sum(1) / total
    col_share = (m**2).sum(0) / total
    zbar = mean_prompt_latents(mas, in_prompts)[read] if in_prompts else torch.ones(len(read))
    signed_write = zbar @ m
    order_r = row_share.argsort(descending=True)[:max_latents].tolist()
    order_w = col_share.argsort(descending=True)[:max_latents].tolist()
    entries = [("read", read[i], float(m[i].norm()), float(row_share[i])) for i in order_r] + [
        ("write", write[i], float(signed_write[i]), float(col_share[i])) for i in order_w
    ]
    latents = sorted({e[1] for e in entries})
    fire_in = latent_fire_freq(mas, in_prompts, latents)
    fire_off = latent_fire_freq(mas, off_prompts, latents)
    acts = latent_activations(mas, texts, latents=latents) if texts and latents else []
    np_id = neuronpedia_id_for(mas)
    evidence: dict[int, LatentEvidence] = {}
    extra: dict[int, dict[str, Any]] = {}
    for lat in latents:
        ex = max_activating_examples(mas, lat, texts, k=n_snippets, acts=acts) if acts else None
        snippets = []
        if ex is not None:
            for r in ex.itertuples():
                ta = acts[int(r.text_idx)]  # type: ignore[arg-type]
                p = int(r.pos) - 1  # type: ignore[arg-type]
                lo, hi = max(0, p - 8), min(len(ta.tokens), p + 9)
                col = ta.column(lat).tolist()
                snippets.append([(ta.tokens[q], float(col[q])) for q in range(lo, hi)])
        top, bottom = latent_logits(mas, lat, k=n_tokens)
        evidence[lat] = LatentEvidence(lat, snippets, top["token"].tolist())
        extra[lat] = {
            "promoted": top["token"].tolist(),
            "suppressed": bottom["token"].tolist(),
            "snippets": ex["context_text"].tolist() if ex is not None else [],
            "snippets_html": ex["context_html"].tolist() if ex is not None else [],
            "url": f"{NEURONPEDIA}/{np_id}/{lat}" if np_id else None,
        }
    labels = label_latents([evidence[lat] for lat in latents], labeller)
    cards = [
        CardLatent(
            side,
            lat,
            weight,
            share,
            fire_in.get(lat, math.nan),
            fire_off.get(lat, math.nan),
            labels[lat].text,
            labels[lat].source,
            **extra[lat],
        )
        for side, lat, weight, share in entries
    ]
    base_info = {
        "rank": lora.rank,
        "s": lora.s.detach().cpu().tolist(),
        "distinct_read": len(read),
        "distinct_write": len(write),
        "preset": mas.preset,
        "sae": mas.sae_identity.get("path") or mas.sae_identity.get("release"),
        "layer": mas.layer,
    }
    return AdapterCard(
        name,
        base_info | (info or {}),
        [c for c in cards if c.side == "read"],
        [c for c in cards if c.side == "write"],
        faithfulness,
    )


def _pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0%}"


def _rate(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def _tok(t: str) -> str:
    return repr(t)[1:-1] if t.strip() != t or not t else t


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def card_markdown(card: AdapterCard) -> str:
    """The card as Markdown."""
    i = card.info
    lines = [
        f"**{card.first_line}**",
        "",
        f"# Adapter card: {card.name}",
        "",
        f"- adapter: `{i.get('source', card.name)}`; preset `{i['preset']}`, SAE `{i['sae']}`, "
        f"layer {i['layer']}, mode `{i.get('mode', 'resid_add')}`, rank {i['rank']}",
        f"- distinct latents: **{i['distinct_read']} read, {i['distinct_write']} write** "
        f"(listed here: {len(card.reads)} + {len(card.writes)})",
        f"- s = [{', '.join(f'{v:.4g}' for v in i['s'])}]",
        "",
    ]
    for side, cs, wname in (
        ("Read latents", card.reads, "weight ‖M[i,:]‖"),
        ("Write latents", card.writes, "mean write in-topic"),
    ):
        lines += [
            f"## {side}",
            "",
            f"| latent | label | {wname} | share | fires in-topic | off-topic | promotes | "
            "suppresses | top snippet |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for c in cs:
            link = f"[{c.latent}]({c.url})" if c.url else str(c.latent)
            lines.append(
                "| "
                + " | ".join(
                    [
                        link,
                        _md_cell(c.label) + ("" if c.label_source == "llm" else " *(rule)*"),
                        f"{c.weight:+.3g}" if c.side == "write" else f"{c.weight:.3g}",
                        _pct(c.share),
                        _pct(c.fire_in),
                        _pct(c.fire_off),
                        _md_cell(", ".join(f"`{_tok(t)}`" for t in c.promoted[:4])),
                        _md_cell(", ".join(f"`{_tok(t)}`" for t in c.suppressed[:4])),
                        _md_cell(c.snippets[0] if c.snippets else "–"),
                    ]
                )
                + " |"
            )
        lines.append("")
    f = card.faithfulness
    if f is not None:
        st = f.settings
        lines += [
            "## Faithfulness",
            "",
            f"On {st['prompts_in_topic']} in-topic + {st['prompts_off_topic']} off-topic fresh "
            f"prompts, greedy answers of {st['max_new_tokens']} tokens; retained = effect / "
            f"the {f.table['compared_to'].iloc[0]}'s effect, 95 % paired bootstrap interval. "
            "Few prompts leave wide intervals: read the intervals, not only the point.",
            "",
            "| check | adapter | read / write latents | in-topic | off-topic | effect | "
            "retained [95 % CI] |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in f.table.itertuples():
            lines.append(
                f"| {r.check} | {r.adapter} | {r.read} / {r.write} | {r.in_topic:.2f} | "
                f"{_rate(r.off_topic)} | {r.effect:+.2f} | {_pct(r.retained)} "  # type: ignore[arg-type]
                f"[{_pct(r.ci_low)}, {_pct(r.ci_high)}] |"  # type: ignore[arg-type]
            )
        lines += [
            "",
            f"Per latent (each removed alone; {st['per_latent_prompts']} in-topic prompts, "
            f"{st['per_latent_tokens']} tokens; the full adapter's effect there: "
            f"{st['per_latent_full_effect']:+.2f}):",
            "",
            "| side | latent | in-topic rate without it | effect change | share of effect |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in f.per_latent.itertuples():
            lines.append(
                f"| {r.side} | {r.latent} | {r.in_topic_without:.2f} | "  # type: ignore[arg-type]
                f"{r.effect_change:+.3f} | {_pct(r.share)} |"  # type: ignore[arg-type]
            )
        lines.append("")
    lines += ["## Summary", "", card.summary, ""]
    if i.get("command"):
        lines += [f"Generated by `{i['command']}`.", ""]
    return "\n".join(lines)


def card_html(card: AdapterCard) -> str:
    """The card as one self-contained HTML page (no scripts, no external resources)."""
    e = html.escape
    i = card.info
    ok = card.faithfulness is not None and card.faithfulness.carries
    colour = "#1b5e20" if ok else "#b71c1c"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Adapter card: {e(card.name)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;"
        "padding:0 1em}table{border-collapse:collapse;margin:1em 0;font-size:14px}"
        "td,th{border:1px solid #ccc;padding:4px 6px;vertical-align:top;text-align:left}"
        "th{background:#f3f3f3}.snip{font-family:monospace;font-size:12px}"
        "code{background:#f5f5f5}</style></head><body>",
        f"<p style='font-weight:bold;color:{colour}'>{e(card.first_line)}</p>",
        f"<h1>Adapter card: {e(card.name)}</h1>",
        f"<p>adapter <code>{e(str(i.get('source', card.name)))}</code>; preset "
        f"<code>{e(str(i['preset']))}</code>, SAE <code>{e(str(i['sae']))}</code>, layer "
        f"{i['layer']}, mode <code>{e(str(i.get('mode', 'resid_add')))}</code>, rank {i['rank']}"
        f"<br>distinct latents: <b>{i['distinct_read']} read, {i['distinct_write']} write</b> "
        f"(listed: {len(card.reads)} + {len(card.writes)}); s = "
        f"[{e(', '.join(f'{v:.4g}' for v in i['s']))}]</p>",
    ]
    for side, cs, wname in (
        ("Read latents", card.reads, "weight ‖M[i,:]‖"),
        ("Write latents", card.writes, "mean write in-topic"),
    ):
        parts.append(
            f"<h2>{side}</h2><table><tr><th>latent</th><th>label</th><th>{wname}</th>"
            "<th>share</th><th>fires in / off</th><th>promotes</th><th>suppresses</th>"
            "<th>top activating snippets</th></tr>"
        )
        for c in cs:
            link = f"<a href='{e(c.url)}'>{c.latent}</a>" if c.url else str(c.latent)
            w = f"{c.weight:+.3g}" if c.side == "write" else f"{c.weight:.3g}"
            src = "" if c.label_source == "llm" else f" <i>({e(c.label_source)})</i>"
            snips = "<br>".join(c.snippets_html[:3]) or "–"
            parts.append(
                f"<tr><td>{link}</td><td>{e(c.label)}{src}</td><td>{w}</td>"
                f"<td>{_pct(c.share)}</td><td>{_pct(c.fire_in)} / {_pct(c.fire_off)}</td>"
                f"<td>{e(', '.join(_tok(t) for t in c.promoted[:5]))}</td>"
                f"<td>{e(', '.join(_tok(t) for t in c.suppressed[:5]))}</td>"
                f"<td class='snip'>{snips}</td></tr>"
            )
        parts.append("</table>")
    f = card.faithfulness
    if f is not None:
        parts.append(
            "<h2>Faithfulness</h2><table><tr><th>check</th><th>adapter</th><th>read / write</th>"
            "<th>in-topic</th><th>off-topic</th><th>effect</th><th>retained [95 % CI]</th></tr>"
        )
        for r in f.table.itertuples():
            parts.append(
                f"<tr><td>{e(str(r.check))}</td><td>{e(str(r.adapter))}</td>"
                f"<td>{r.read} / {r.write}</td><td>{r.in_topic:.2f}</td>"  # type: ignore[arg-type]
                f"<td>{_rate(r.off_topic)}</td><td>{r.effect:+.2f}</td>"  # type: ignore[arg-type]
                f"<td>{_pct(r.retained)} [{_pct(r.ci_low)}, {_pct(r.ci_high)}]</td></tr>"  # type: ignore[arg-type]
            )
        parts.append(
            "</table><table><tr><th>side</th><th>latent</th><th>in-topic without it</th>"
            "<th>effect change</th><th>share of effect</th></tr>"
        )
        for r in f.per_latent.itertuples():
            parts.append(
                f"<tr><td>{r.side}</td><td>{r.latent}</td><td>{r.in_topic_without:.2f}</td>"  # type: ignore[arg-type]
                f"<td>{r.effect_change:+.3f}</td><td>{_pct(r.share)}</td></tr>"  # type: ignore[arg-type]
            )
        parts.append(f"</table><p>{e(json.dumps(f.settings))}</p>")
    parts += [f"<h2>Summary</h2><p>{e(card.summary)}</p>", "</body></html>"]
    return "".join(parts)


def write_card(card: AdapterCard, out_dir: str | Path) -> list[Path]:
    """``card.md``, ``card.html`` and ``card.json`` in ``out_dir`` (atomic writes)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "card.md": card_markdown(card),
        "card.html": card_html(card),
        "card.json": json.dumps(card.to_dict(), indent=1, default=str),
    }
    paths = []
    for name, text in files.items():
        atomic_write_bytes(out / name, text.encode("utf-8"))
        paths.append(out / name)
    return paths
