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

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from saelora_core.adapter.sae_lora import SaeLora
from saelora_core.analysis.activations import latent_activations, max_activating_examples
from saelora_core.analysis.faithfulness import Faithfulness
from saelora_core.analysis.features import NEURONPEDIA, latent_fire_freq, neuronpedia_id_for
from saelora_core.analysis.labels import LatentEvidence, LlmLabeller, label_latents
from saelora_core.analysis.logits import latent_logits
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
    edges: Any = None
    """``analysis.edges.EdgeChecks`` for an adapter of at most 16 + 16 latents, when checked."""

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
            "edges": self.edges.to_dict() if self.edges is not None else None,
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
