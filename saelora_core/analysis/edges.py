"""Which "reads X → writes Y" statements carry an adapter's behaviour: its edges, checked.

An adapter's map on latents is ``Δz = z @ M``, ``M = Â · diag(s) · B̂``; the entry ``M[i, j]`` is
the **edge** "one unit of read latent i adds ``M[i, j]`` to write latent j". For an adapter of
at most ``MAX_LATENTS`` + ``MAX_LATENTS`` distinct latents the card lists its ``n_edges``
strongest edges (largest ``|M[i, j]|``), and each gets two interventions, measured as the
behaviour effect (in-topic rate − base rate, greedy answers) on the in-topic prompts:

- **sufficiency**: an adapter holding only that edge (rank 1: ``a = e_i``, ``b = e_j``,
  ``s = M[i, j]``); its effect, and its share of the full adapter's;
- **necessity**: the full adapter minus that edge, exactly: its components plus one more,
  ``(e_i, e_j, −M[i, j])``, so ``Δz' = z @ M − z_i · M[i, j] · e_j``; the change in effect,
  and the share of the full effect lost.

Each has a same-count random control: sufficiency of one edge of the same weight between a
random read latent and a random write latent; necessity of removing another edge of the adapter
chosen at random. An edge carries the behaviour where its own numbers stand clear of its
control's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from saelora_core.adapter.sae_lora import SaeLora
from saelora_core.analysis.behaviour import BehaviourResult, evaluate_behaviour
from saelora_core.analysis.card import latent_map
from saelora_core.models.presets import ModelAndSae

MAX_LATENTS = 16


@dataclass(frozen=True)
class Edge:
    read: int
    write: int
    weight: float


def top_edges(lora: SaeLora, n: int = 8) -> list[Edge]:
    """The ``n`` entries of ``M`` with the largest magnitude (ties: read, then write order)."""
    read, write, m = latent_map(lora)
    flat = m.abs().flatten()
    order = sorted(range(len(flat)), key=lambda k: (-float(flat[k]), k))
    out = []
    for k in order[:n]:
        i, j = divmod(k, m.shape[1])
        if float(m[i, j]) != 0:
            out.append(Edge(read[i], write[j], float(m[i, j])))
    return out


@torch.no_grad()
def single_edge(d_sae: int, edge: Edge) -> SaeLora:
    """A rank-1 adapter computing only ``edge``: ``Δz_j = z_i · weight``."""
    out = SaeLora(d_sae, 1, init="zeros")
    out.a[edge.read, 0] = 1.0
    out.b[0, edge.write] = 1.0
    out.s.fill_(edge.weight)
    return out


@torch.no_grad()
def without_edge(lora: SaeLora, edge: Edge) -> SaeLora:
    """``lora`` minus ``edge``, exactly (one extra component of weight −``edge.weight``)."""
    src = lora.folded()
    r = src.rank
    out = SaeLora(src.d_sae, r + 1, init="zeros").to(src.s.device)
    out.a[:, :r] = src.read_dirs()
    out.b[:r] = src.write_dirs()
    out.s[:r] = src.s
    out.a[edge.read, r] = 1.0
    out.b[r, edge.write] = 1.0
    out.s[r] = -edge.weight
    return out


@dataclass
class EdgeChecks:
    table: pd.DataFrame
    """read, write, weight, sufficiency, sufficiency_share, random_sufficiency, necessity_change,
    necessity_share, random_necessity_change (effects on the in-topic prompts)."""
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table.to_dict(orient="records"), "settings": self.settings}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EdgeChecks:
        return cls(pd.DataFrame(d["table"]), d["settings"])


def check_edges(
    mas: ModelAndSae,
    lora: SaeLora,
    rows: list[dict],
    *,
    detector: str | Callable[[str], bool] = "french",
    n_edges: int = 8,
    mode: str = "resid_add",
    max_new_tokens: int = 16,
    max_prompts: int = 40,
    seed: int = 0,
) -> EdgeChecks:
    """The edge checks of the module doc on the in-topic ``rows`` (the first ``max_prompts``)."""
    read, write = lora.distinct_latents()
    if len(read) > MAX_LATENTS or len(write) > MAX_LATENTS:
        raise ValueError(
            f"the adapter reads {len(read)} and writes {len(write)} latents; edges are listed "
            f"for at most {MAX_LATENTS} + {MAX_LATENTS} (distil it to a k=16 student first)"
        )
    ins = [r for r in rows if r.get("in_topic")][:max_prompts]
    if not ins:
        raise ValueError("edge checks need in-topic prompts (rows with in_topic=True)")
    gen: dict[str, Any] = {"detector": detector, "mode": mode, "max_new_tokens": max_new_tokens}
    base = evaluate_behaviour(mas, None, ins, **gen)

    def effect(ad: SaeLora) -> float:
        return evaluate_behaviour(mas, ad, ins, base=base, **gen).effect

    full = effect(lora)
    edges = top_edges(lora, n_edges)
    _, _, m = latent_map(lora)
    all_edges = [
        Edge(read[i], write[j], float(m[i, j]))
        for i in range(len(read))
        for j in range(len(write))
        if float(m[i, j]) != 0
    ]
    g = torch.Generator().manual_seed(seed)
    out = []
    for e in edges:
        suff = effect(single_edge(lora.d_sae, e))
        nec = effect(without_edge(lora, e)) - full
        while True:
            ri, rw = (int(x) for x in torch.randint(0, lora.d_sae, (2,), generator=g))
            if (ri, rw) != (e.read, e.write):
                break
        rand_suff = effect(single_edge(lora.d_sae, Edge(ri, rw, e.weight)))
        others = [x for x in all_edges if (x.read, x.write) != (e.read, e.write)]
        if others:
            pick = others[int(torch.randint(0, len(others), (1,), generator=g))]
            rand_nec = effect(without_edge(lora, pick)) - full
        else:
            rand_nec = float("nan")
        out.append(
            {
                "read": e.read,
                "write": e.write,
                "weight": e.weight,
                "sufficiency": suff,
                "sufficiency_share": suff / full if full else float("nan"),
                "random_sufficiency": rand_suff,
                "necessity_change": nec,
                "necessity_share": -nec / full if full else float("nan"),
                "random_necessity_change": rand_nec,
            }
        )
    settings = {
        "full_effect": full,
        "base_rate": BehaviourResult.from_samples(base.samples, base.detector).rate(
            "base", "in_topic"
        ),
        "prompts_in_topic": len(ins),
        "max_new_tokens": max_new_tokens,
        "n_edges": n_edges,
        "seed": seed,
        "mode": mode,
    }
    return EdgeChecks(pd.DataFrame(out), settings)


def _pct(x: float) -> str:
    return "–" if x != x else f"{x:.0%}"


def edges_markdown(checks: EdgeChecks) -> str:
    """The card's "Edges" section."""
    st = checks.settings
    lines = [
        "## Edges (read → write)",
        "",
        f"The strongest entries of Â·diag(s)·B̂, each checked alone on {st['prompts_in_topic']} "
        f"in-topic prompts ({st['max_new_tokens']} tokens; the full adapter's effect there: "
        f"{st['full_effect']:+.2f}). Sufficiency: only that edge; necessity: the adapter "
        "without it; random: one edge of the same weight between random latents / another of "
        "the adapter's edges removed.",
        "",
        "| read → write | weight | sufficiency (share) | random | necessity: change (share) "
        "| random |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in checks.table.itertuples():
        lines.append(
            f"| {r.read} → {r.write} | {r.weight:+.3g} | {r.sufficiency:+.2f} "  # type: ignore[arg-type]
            f"({_pct(r.sufficiency_share)}) | {r.random_sufficiency:+.2f} | "  # type: ignore[arg-type]
            f"{r.necessity_change:+.2f} ({_pct(r.necessity_share)}) | "  # type: ignore[arg-type]
            f"{r.random_necessity_change:+.2f} |"  # type: ignore[arg-type]
        )
    return "\n".join(lines + [""])


def edges_html(checks: EdgeChecks) -> str:
    rows = "".join(
        f"<tr><td>{r.read} → {r.write}</td><td>{r.weight:+.3g}</td>"  # type: ignore[arg-type]
        f"<td>{r.sufficiency:+.2f} ({_pct(r.sufficiency_share)})</td>"  # type: ignore[arg-type]
        f"<td>{r.random_sufficiency:+.2f}</td>"  # type: ignore[arg-type]
        f"<td>{r.necessity_change:+.2f} ({_pct(r.necessity_share)})</td>"  # type: ignore[arg-type]
        f"<td>{r.random_necessity_change:+.2f}</td></tr>"  # type: ignore[arg-type]
        for r in checks.table.itertuples()
    )
    return (
        "<h2>Edges (read → write)</h2><table><tr><th>read → write</th><th>weight</th>"
        "<th>sufficiency (share)</th><th>random</th><th>necessity: change (share)</th>"
        f"<th>random</th></tr>{rows}</table>"
    )
