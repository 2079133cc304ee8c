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

The card's first line names the behaviour and its measured rates (adapter in-topic with its
95 % Wilson interval, base in-topic, adapter off-topic: the rates the faithfulness check
measures), then the faithfulness verdict (``faithfulness.py``) when it was checked.

**Always-on** latents fire on more than :data:`ALWAYS_ON` of the prompt tokens both in-topic
and off-topic: they say nothing about the topic, so they are marked and listed apart from the
selective ones. A rule label is **unclear** when its evidence is noise (:func:`is_noise`:
an always-on latent, or one whose top snippets peak only on whitespace or punctuation), rather
than a list of such tokens. The card ends with a few sentences: what it reads (selective,
then always-on, then unclear) and what it writes (raised, then lowered).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from saelora_core.adapter.sae_lora import SaeLora
from saelora_core.analysis.activations import latent_activations, max_activating_examples
from saelora_core.analysis.behaviour import wilson_interval
from saelora_core.analysis.faithfulness import Faithfulness
from saelora_core.analysis.features import NEURONPEDIA, latent_fire_freq, neuronpedia_id_for
from saelora_core.analysis.labels import LatentEvidence, LlmLabeller, label_latents
from saelora_core.analysis.logits import latent_logits
from saelora_core.io.format import fmt_interval, fmt_list
from saelora_core.models.presets import ModelAndSae

ALWAYS_ON = 0.5
"""Firing rate (fraction of prompt tokens) above which, in-topic and off-topic both, a latent
is always on."""
UNCLEAR = "unclear"


def is_always_on(fire_in: float, fire_off: float) -> bool:
    """Fires on more than :data:`ALWAYS_ON` of the tokens in-topic and off-topic (NaN: no)."""
    return fire_in > ALWAYS_ON and fire_off > ALWAYS_ON


def is_noise(tokens: list[str], always_on: bool) -> bool:
    """Whether a latent's evidence says nothing a label could name: it is always on, or the
    tokens its top snippets peak on are all whitespace or punctuation (or there are none)."""
    return always_on or all(not any(ch.isalnum() for ch in t) for t in tokens)


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
    always_on: bool = False

    @property
    def unclear(self) -> bool:
        return self.label.startswith(UNCLEAR)


@dataclass
class AdapterCard:
    name: str
    info: dict[str, Any]
    """preset, sae, mode, rank, s, distinct read/write counts, source."""
    reads: list[CardLatent]
    writes: list[CardLatent]
    faithfulness: Faithfulness | None = None
    edges: Any = None
    """``analysis.edges.EdgeChecks`` for an adapter of at most 16 + 16 latents, when checked."""
    near_miss: Any = None
    """``analysis.near_miss.NearMissRate`` on the near-miss prompts, when measured."""

    @property
    def listed(self) -> tuple[list[int], list[int]]:
        return [c.latent for c in self.reads], [c.latent for c in self.writes]

    @property
    def behaviour_line(self) -> str | None:
        """``Behaviour "respond in French" (detector french): in-topic 0.55 [0.44, 0.66] vs
        base 0.01; off-topic 0.01.``, from the faithfulness check's own rates (None when it
        was not run)."""
        f = self.faithfulness
        if f is None:
            return None
        row = f.table.set_index("check").loc["adapter"]
        n_in, n_off = f.settings.get("prompts_in_topic", 0), f.settings.get("prompts_off_topic", 0)
        rate_in, rate_off = float(row["in_topic"]), float(row["off_topic"])
        base_in = rate_in - float(row["effect"])
        low, high = wilson_interval(round(rate_in * n_in), n_in) if n_in else (None, None)
        what = self.info.get("guideline")
        det = self.info.get("detector") or f.settings.get("detector")
        name = f'Behaviour "{what}"' if what else "Behaviour"
        name += f" (detector {det})" if det else ""
        return (
            f"{name}: in-topic {fmt_interval(rate_in, low, high)} vs base "
            f"{fmt_interval(base_in, None, None)}; off-topic {fmt_interval(rate_off, None, None)} "
            f"(n = {n_in} + {n_off} fresh prompts)."
        )

    @property
    def first_line(self) -> str:
        if self.faithfulness is None:
            return "Unchecked: faithfulness was not measured for this card."
        line = f"{self.behaviour_line} {self.faithfulness.headline}"
        if self.near_miss is None:
            return line
        if self.near_miss.flagged:  # an off-topic trigger leads the card
            return f"{self.near_miss.sentence} {line}"
        return f"{line} {self.near_miss.sentence}"

    @property
    def summary(self) -> str:
        """A few sentences: the reads (selective, always-on, unclear), then the writes (raised,
        lowered), then ``s``."""

        def named(cs: list[CardLatent]) -> str:
            return "; ".join(f"{c.latent} ({c.label})" for c in cs)

        def plural(n: int, what: str) -> str:
            return f"{n} {what} is" if n == 1 else f"{n} {what}s are"

        def ids(cs: list[CardLatent]) -> str:
            return fmt_list([c.latent for c in cs], max_items=16)

        out = []
        for verb, cs in (("reads", self.reads), ("writes", self.writes)):
            sel = [c for c in cs if not c.always_on and not c.unclear]
            on = [c for c in cs if c.always_on]
            vague = [c for c in cs if c.unclear and not c.always_on]
            bits = []
            if verb == "reads" and sel:
                n = f"{len(sel)} selective latent{'' if len(sel) == 1 else 's'}"
                bits.append(f"It reads {n}: {named(sel)}.")
            elif sel:
                up = [c for c in sel if c.weight >= 0]
                down = [c for c in sel if c.weight < 0]
                if up:
                    bits.append(f"It raises {len(up)}: {named(up)}.")
                if down:
                    bits.append(f"It lowers {len(down)}: {named(down)}.")
            side = verb[:-1]
            if on:
                bits.append(
                    f"{plural(len(on), side + ' latent')} always on (firing on most tokens in "
                    f"and off topic, so not selecting the topic): {ids(on)}."
                )
            if vague:
                bits.append(f"{plural(len(vague), side + ' latent')} unclear: {ids(vague)}.")
            out.append(" ".join(bits) or f"It {verb} no listed latent.")
        out.append(f"Scale s = {fmt_list(self.info['s'], digits=3)}.")
        return " ".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "first_line": self.first_line,
            "info": self.info,
            "reads": [asdict(c) for c in self.reads],
            "writes": [asdict(c) for c in self.writes],
            "faithfulness": self.faithfulness.to_dict() if self.faithfulness else None,
            "edges": self.edges.to_dict() if self.edges is not None else None,
            "near_miss": self.near_miss.to_dict() if self.near_miss is not None else None,
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
    on = {
        lat: is_always_on(fire_in.get(lat, math.nan), fire_off.get(lat, math.nan))
        for lat in latents
    }
    for lat in latents:
        if labels[lat].source.startswith("rule") and is_noise(
            evidence[lat].activating_tokens(), on[lat]
        ):
            why = "always on" if on[lat] else "fires on whitespace or punctuation only"
            labels[lat].text = f"{UNCLEAR} ({why})"
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
            always_on=on[lat],
        )
        for side, lat, weight, share in entries
    ]
    # Selective latents first, always-on ones after them (each group by share).
    cards.sort(key=lambda c: (c.side != "read", c.always_on))
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
