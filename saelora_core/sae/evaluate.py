"""How much an SAE costs the model, per genre of text it never trained on.

For each passage (cut into windows of ``context_size`` tokens, each starting with BOS), with the
SAE's reconstruction spliced in at its hook, BOS excluded everywhere:

- explained variance, mean-centred within the group: ``1 - Σ‖x - x̂‖² / Σ‖x - x̄‖²``;
- CE of the next token: clean, with the SAE spliced in, with the hook zero-ablated; the CE
  increase ``CE_sae - CE_clean`` and the CE recovered ``(CE_zero - CE_sae) / (CE_zero - CE_clean)``;
- mean L0 and the fraction of latents that never fired on the group's tokens.

Groups are a field of the rows (``kind`` in ``data/heldout/general_text.jsonl``, ``genre`` or
``lang`` in the corpus's held-out split); ``overall`` pools every token.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


@dataclass
class SpliceStats:
    """Sums over tokens, so that groups pool exactly."""

    n: int = 0
    """Activation positions (BOS excluded)."""
    n_pred: int = 0
    """Next-token predictions made from those positions."""
    sse: float = 0.0
    sum_x: torch.Tensor | None = None
    sum_sq: float = 0.0
    l0: float = 0.0
    ce_clean: float = 0.0
    ce_sae: float = 0.0
    ce_zero: float = 0.0
    fired: torch.Tensor | None = None

    def add(self, other: SpliceStats) -> None:
        self.n += other.n
        self.n_pred += other.n_pred
        self.sse += other.sse
        self.sum_sq += other.sum_sq
        self.l0 += other.l0
        self.ce_clean += other.ce_clean
        self.ce_sae += other.ce_sae
        self.ce_zero += other.ce_zero
        for name in ("sum_x", "fired"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if theirs is not None:
                merged = (
                    theirs.clone()
                    if mine is None
                    else (mine + theirs if name == "sum_x" else mine | theirs)
                )
                setattr(self, name, merged)


@dataclass
class SpliceMetrics:
    tokens: int
    explained_variance: float
    ce_clean: float
    ce_with_sae: float
    ce_zero_ablated: float
    ce_increase: float
    ce_loss_recovered: float
    mean_l0: float
    dead_fraction: float


def metrics_of(s: SpliceStats) -> SpliceMetrics:
    if s.n == 0 or s.sum_x is None or s.fired is None:
        raise ValueError("no tokens to evaluate on")
    sst = s.sum_sq - s.sum_x.pow(2).sum().item() / s.n
    clean, sae, zero = (v / max(1, s.n_pred) for v in (s.ce_clean, s.ce_sae, s.ce_zero))
    return SpliceMetrics(
        tokens=s.n,
        explained_variance=1 - s.sse / sst,
        ce_clean=clean,
        ce_with_sae=sae,
        ce_zero_ablated=zero,
        ce_increase=sae - clean,
        ce_loss_recovered=(zero - sae) / (zero - clean)
        if not math.isclose(zero, clean)
        else math.nan,
        mean_l0=s.l0 / s.n,
        dead_fraction=1 - s.fired.float().mean().item(),
    )


def windows(model, text: str, context_size: int) -> Iterable[torch.Tensor]:
    """``(1, ≤ context_size)`` token windows of ``text``, each beginning with BOS."""
    toks = model.to_tokens(text, prepend_bos=True)[0]
    body = toks[1:]
    for start in range(0, len(body), context_size - 1):
        chunk = body[start : start + context_size - 1]
        if len(chunk) < 2:
            break
        yield torch.cat([toks[:1], chunk]).unsqueeze(0)


def _per_token_ce(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits[0, :-1].float(), -1)
    return -logp.gather(-1, tokens[0, 1:, None])[:, 0]


@torch.no_grad()
def window_stats(model, sae, hook_name: str, tokens: torch.Tensor) -> SpliceStats:
    """Splice statistics of one window; positions 1.. (BOS excluded) for the activations, and
    the predictions of tokens 2.. (those made from a non-BOS position) for the CE."""
    clean, cache = model.run_with_cache(tokens, names_filter=hook_name)
    x = cache[hook_name][0, 1:].float()
    z = sae.encode(x)
    x_hat = sae.decode(z)

    def splice(fn):
        def hook(act, hook):
            out = act.clone()
            out[:, 1:] = fn(act[:, 1:])
            return out

        return hook

    with_sae = model.run_with_hooks(
        tokens, fwd_hooks=[(hook_name, splice(lambda v: sae.decode(sae.encode(v)).to(v.dtype)))]
    )
    zero = model.run_with_hooks(tokens, fwd_hooks=[(hook_name, splice(torch.zeros_like))])
    ce = [_per_token_ce(lg, tokens)[1:] for lg in (clean, with_sae, zero)]
    return SpliceStats(
        n=x.shape[0],
        n_pred=ce[0].numel(),
        sse=(x - x_hat).pow(2).sum().item(),
        sum_x=x.sum(0),
        sum_sq=x.pow(2).sum().item(),
        l0=(z > 0).sum().item(),
        ce_clean=ce[0].sum().item(),
        ce_sae=ce[1].sum().item(),
        ce_zero=ce[2].sum().item(),
        fired=(z > 0).any(0),
    )


def evaluate_by_group(
    model,
    sae,
    hook_name: str,
    rows: Iterable[dict],
    *,
    group_key: str = "kind",
    context_size: int = 128,
    max_tokens_per_group: int | None = None,
) -> dict[str, SpliceMetrics]:
    """Splice metrics per value of ``row[group_key]`` and ``overall``."""
    groups: dict[str, SpliceStats] = {}
    for row in rows:
        g = str(row.get(group_key) or "unlabelled")
        stats = groups.setdefault(g, SpliceStats())
        for w in windows(model, row["text"], context_size):
            if max_tokens_per_group is not None and stats.n >= max_tokens_per_group:
                break
            stats.add(window_stats(model, sae, hook_name, w))
    overall = SpliceStats()
    for s in groups.values():
        overall.add(s)
    out = {g: metrics_of(s) for g, s in sorted(groups.items())}
    out["overall"] = metrics_of(overall)
    return out


def read_rows(path: str | Path) -> list[dict]:
    return [
        json.loads(line)
        for line in Path(path).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def metrics_table(results: dict[str, dict[str, SpliceMetrics]]) -> str:
    """Markdown: one row per (SAE, group)."""
    head = "| SAE | group | tokens | EV | CE increase | CE recovered | L0 | silent latents |"
    lines = [head, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, groups in results.items():
        for g, m in groups.items():
            lines.append(
                f"| {name} | {g} | {m.tokens:,} | {m.explained_variance:.3f} | "
                f"{m.ce_increase:+.3f} | {m.ce_loss_recovered:.3f} | {m.mean_l0:.1f} | "
                f"{m.dead_fraction:.1%} |"
            )
    return "\n".join(lines)


def as_json(results: dict[str, dict[str, SpliceMetrics]]) -> dict:
    return {name: {g: asdict(m) for g, m in groups.items()} for name, groups in results.items()}


@dataclass
class SaeMetrics:
    """One SAE's splice metrics on one set of texts (``metrics.json`` beside trained SAEs)."""

    explained_variance: float
    mean_l0: float
    dead_fraction: float
    ce_clean: float
    ce_with_sae: float
    ce_zero_ablated: float
    ce_loss_recovered: float
    n_tokens: int
    extra: dict = field(default_factory=dict)


def evaluate_sae(
    model, sae, layer: int, texts: list[str], *, max_tokens: int = 20_000, context_size: int = 128
) -> SaeMetrics:
    """:func:`evaluate_by_group` on ``texts`` as one group, up to about ``max_tokens`` tokens."""
    rows = [{"text": t} for t in texts]
    m = evaluate_by_group(
        model,
        sae,
        f"blocks.{layer}.hook_resid_post",
        rows,
        group_key="group",
        context_size=context_size,
        max_tokens_per_group=max_tokens,
    )["overall"]
    return SaeMetrics(
        explained_variance=m.explained_variance,
        mean_l0=m.mean_l0,
        dead_fraction=m.dead_fraction,
        ce_clean=m.ce_clean,
        ce_with_sae=m.ce_with_sae,
        ce_zero_ablated=m.ce_zero_ablated,
        ce_loss_recovered=m.ce_loss_recovered,
        n_tokens=m.tokens,
    )
