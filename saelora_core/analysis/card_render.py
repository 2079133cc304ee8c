"""An adapter card rendered for people: Markdown, a standalone HTML page, and ``card.json``
(see ``card.py`` for what the card holds)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from saelora_core.analysis.card import ALWAYS_ON, AdapterCard, CardLatent
from saelora_core.analysis.faithfulness import MIN_PER_LATENT_PROMPTS
from saelora_core.io.atomic import atomic_write_bytes
from saelora_core.io.format import MISSING, fmt_list, fmt_num, fmt_pct, is_missing


def _pct(x: float) -> str:
    return fmt_pct(x)


def _rate(x: float) -> str:
    return MISSING if is_missing(x) else f"{x:.2f}"


def _signed(x: float | None, digits: int = 3) -> str:
    if x is None or is_missing(x):
        return MISSING
    return ("+" if x >= 0 else "") + fmt_num(x, digits)


ALWAYS_ON_NOTE = (
    f"always on: fires on more than {ALWAYS_ON:.0%} of the prompt tokens in-topic and "
    "off-topic, so it does not select the topic"
)


def groups(cs: list[CardLatent]) -> list[tuple[str | None, list[CardLatent]]]:
    """The listed latents of one side as (heading, latents): the selective ones, then the
    always-on ones under a heading of their own."""
    sel = [c for c in cs if not c.always_on]
    on = [c for c in cs if c.always_on]
    out: list[tuple[str | None, list[CardLatent]]] = [(None, sel)]
    if on:
        out.append((f"Always on ({len(on)}): {ALWAYS_ON_NOTE}", on))
    return out


def per_latent_rows(card: AdapterCard) -> tuple[str, list[dict[str, str]]]:
    """The per-latent effects as a note and formatted rows: each change with its 95 %
    interval; its share of the effect only where the interval excludes 0. No rows (the note
    says why) when fewer than ``MIN_PER_LATENT_PROMPTS`` prompts were used."""
    f = card.faithfulness
    assert f is not None
    st = f.settings
    n = int(st.get("per_latent_prompts", 0))
    if n < MIN_PER_LATENT_PROMPTS:
        return (
            f"Per-latent effects are left out: they were measured on {n} in-topic prompts, "
            f"too few to resolve one latent's part (at least {MIN_PER_LATENT_PROMPTS}).",
            [],
        )
    note = (
        f"Per latent (each removed alone; {n} in-topic prompts, {st['per_latent_tokens']} "
        f"tokens; the full adapter's effect there: {_signed(st['per_latent_full_effect'], 2)}). "
        "Effect change with its 95 % paired bootstrap interval; its share of the effect only "
        "where the interval excludes 0."
    )
    rows = []
    for r in f.per_latent.to_dict(orient="records"):
        lo, hi = float(r.get("ci_low", math.nan)), float(r.get("ci_high", math.nan))
        known = not (is_missing(lo) or is_missing(hi))
        clear = known and (lo > 0 or hi < 0)
        rows.append(
            {
                "side": str(r["side"]),
                "latent": str(r["latent"]),
                "without": _rate(r["in_topic_without"]),
                "change": _signed(r["effect_change"])
                + (f" [{_signed(lo)}, {_signed(hi)}]" if known else " [interval not measured]"),
                "share": fmt_pct(r["share"]) if clear else MISSING,
            }
        )
    return note, rows


def _tok(t: str) -> str:
    return repr(t)[1:-1] if t.strip() != t or not t else t


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


SIDES = (("Read latents", "reads", "weight ‖M[i,:]‖"), ("Write latents", "writes", "mean write"))


def _label(c: CardLatent) -> str:
    src = "" if c.label_source == "llm" else " (rule)"
    return c.label + src + (" · always on" if c.always_on else "")


def card_markdown(card: AdapterCard) -> str:
    """The card as Markdown."""
    i = card.info
    lines = [
        f"**{card.first_line}**",
        "",
        f"# Adapter card: {card.name}",
        "",
        card.summary,
        "",
        f"- adapter: `{i.get('source', card.name)}`; preset `{i['preset']}`, SAE `{i['sae']}`, "
        f"layer {i['layer']}, mode `{i.get('mode', 'resid_add')}`, rank {i['rank']}",
        f"- distinct latents: **{i['distinct_read']} read, {i['distinct_write']} write** "
        f"(listed here: {len(card.reads)} + {len(card.writes)})",
        f"- s = {fmt_list(i['s'])}",
        "",
    ]
    for title, attr, wname in SIDES:
        lines += [f"## {title}", ""]
        for heading, cs in groups(getattr(card, attr)):
            if not cs:
                continue
            if heading:
                lines += [f"**{heading}**", ""]
            lines += [
                f"| latent | label | {wname} | share | fires in-topic | off-topic | promotes | "
                "suppresses | top snippet |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            ]
            for c in cs:
                link = f"[{c.latent}]({c.url})" if c.url else str(c.latent)
                cells = [
                    link,
                    _md_cell(_label(c)),
                    _signed(c.weight) if c.side == "write" else fmt_num(c.weight, 3),
                    _pct(c.share),
                    _pct(c.fire_in),
                    _pct(c.fire_off),
                    _md_cell(", ".join(f"`{_tok(t)}`" for t in c.promoted[:4])),
                    _md_cell(", ".join(f"`{_tok(t)}`" for t in c.suppressed[:4])),
                    _md_cell(c.snippets[0] if c.snippets else MISSING),
                ]
                lines.append("| " + " | ".join(cells) + " |")
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
        for r in f.table.to_dict(orient="records"):
            lines.append(
                f"| {r['check']} | {r['adapter']} | {r['read']} / {r['write']} | "
                f"{_rate(r['in_topic'])} | {_rate(r['off_topic'])} | {_signed(r['effect'], 2)} | "
                f"{_pct(r['retained'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}] |"
            )
        note, rows = per_latent_rows(card)
        lines += ["", note, ""]
        if rows:
            lines += [
                "| side | latent | in-topic rate without it | effect change [95 % CI] | "
                "share of effect |",
                "| --- | --- | --- | --- | --- |",
            ]
            lines += [f"| {' | '.join(r.values())} |" for r in rows]
            lines.append("")
    if card.edges is not None:
        from saelora_core.analysis.edges import edges_markdown

        lines.append(edges_markdown(card.edges))
    if i.get("command"):
        lines += [f"Generated by `{i['command']}`.", ""]
    return "\n".join(lines)


CARD_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1em;padding:0}"
    ".saelora-card{width:100%;box-sizing:border-box}"
    ".saelora-card table{border-collapse:collapse;margin:1em 0;font-size:14px;width:100%}"
    ".saelora-card td,.saelora-card th{border:1px solid #ccc;padding:4px 6px;"
    "vertical-align:top;text-align:left}"
    ".saelora-card th{background:#f3f3f3}.saelora-card .snip{font-family:monospace;"
    "font-size:12px}.saelora-card code{background:#f5f5f5}"
    ".saelora-card .on{color:#666}"
)


def card_body_html(card: AdapterCard) -> str:
    """The card as an HTML fragment at full width (a ``div.saelora-card`` with its own style):
    what a notebook shows inline and :func:`card_html` wraps in a page."""
    e = html.escape
    i = card.info
    ok = card.faithfulness is not None and card.faithfulness.carries
    colour = "#1b5e20" if ok else "#b71c1c"
    parts = [
        f"<div class='saelora-card'><style>{CARD_CSS}</style>",
        f"<p style='font-weight:bold;color:{colour}'>{e(card.first_line)}</p>",
        f"<h1>Adapter card: {e(card.name)}</h1>",
        f"<p>{e(card.summary)}</p>",
        f"<p>adapter <code>{e(str(i.get('source', card.name)))}</code>; preset "
        f"<code>{e(str(i['preset']))}</code>, SAE <code>{e(str(i['sae']))}</code>, layer "
        f"{i['layer']}, mode <code>{e(str(i.get('mode', 'resid_add')))}</code>, rank {i['rank']}"
        f"<br>distinct latents: <b>{i['distinct_read']} read, {i['distinct_write']} write</b> "
        f"(listed: {len(card.reads)} + {len(card.writes)}); s = {e(fmt_list(i['s']))}</p>",
    ]
    for title, attr, wname in SIDES:
        parts.append(f"<h2>{title}</h2>")
        for heading, cs in groups(getattr(card, attr)):
            if not cs:
                continue
            if heading:
                parts.append(f"<h3 class='on'>{e(heading)}</h3>")
            parts.append(
                f"<table><tr><th>latent</th><th>label</th><th>{wname}</th>"
                "<th>share</th><th>fires in / off</th><th>promotes</th><th>suppresses</th>"
                "<th>top activating snippets</th></tr>"
            )
            for c in cs:
                link = f"<a href='{e(c.url)}'>{c.latent}</a>" if c.url else str(c.latent)
                w = _signed(c.weight) if c.side == "write" else fmt_num(c.weight, 3)
                snips = "<br>".join(c.snippets_html[:3]) or MISSING
                parts.append(
                    f"<tr><td>{link}</td><td>{e(_label(c))}</td><td>{w}</td>"
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
        for r in f.table.to_dict(orient="records"):
            parts.append(
                f"<tr><td>{e(str(r['check']))}</td><td>{e(str(r['adapter']))}</td>"
                f"<td>{r['read']} / {r['write']}</td><td>{_rate(r['in_topic'])}</td>"
                f"<td>{_rate(r['off_topic'])}</td><td>{_signed(r['effect'], 2)}</td>"
                f"<td>{_pct(r['retained'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]</td></tr>"
            )
        parts.append("</table>")
        note, rows = per_latent_rows(card)
        parts.append(f"<p>{e(note)}</p>")
        if rows:
            parts.append(
                "<table><tr><th>side</th><th>latent</th><th>in-topic without it</th>"
                "<th>effect change [95 % CI]</th><th>share of effect</th></tr>"
            )
            parts += [
                "<tr>" + "".join(f"<td>{e(v)}</td>" for v in r.values()) + "</tr>" for r in rows
            ]
            parts.append("</table>")
    if card.edges is not None:
        from saelora_core.analysis.edges import edges_html

        parts.append(edges_html(card.edges))
    parts.append("</div>")
    return "".join(parts)


def card_html(card: AdapterCard) -> str:
    """The card as one self-contained HTML page at full width (no scripts, no external
    resources)."""
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Adapter card: {html.escape(card.name)}</title></head><body>"
        f"{card_body_html(card)}</body></html>"
    )


def card_fragment(card_dir: str | Path) -> str:
    """The full-width card fragment (``div.saelora-card``) of the ``card.html`` written in
    ``card_dir``: what a notebook shows inline, without the page around it."""
    page = (Path(card_dir) / "card.html").read_text(encoding="utf-8")
    start, end = page.find("<div class='saelora-card'>"), page.rfind("</body>")
    return page[start:end] if start >= 0 and end > start else page


def card_labels(card_dir: str | Path) -> dict[int, str]:
    """Latent → label of the card written in ``card_dir`` (its ``card.json``: reads and
    writes); empty when no card has been written there, so a figure falls back to numbers."""
    path = Path(card_dir) / "card.json"
    if not path.is_file():
        return {}
    card = json.loads(path.read_text(encoding="utf-8"))
    return {
        int(c["latent"]): str(c["label"])
        for side in ("reads", "writes")
        for c in card.get(side, [])
        if c.get("label")
    }


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
