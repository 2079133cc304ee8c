"""Sparsity by projection and support surgery on a trained adapter.

:func:`project_` runs after each optimizer step (proximal L1, top-k, group top-k) and writes
exact zeros; :func:`prune_topk` and :func:`random_support_control` build the pruned adapters and
their random-support controls; :func:`split_rank` and :func:`restrict_latents` rewrite an adapter
into an equal one of higher rank or onto a given set of latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from saelora_core.adapter.sae_lora import EPS, SaeLora


def _soft_threshold(v: Tensor, tau: float) -> Tensor:
    return v.sign() * (v.abs() - tau).clamp_min(0)


def _keep_largest(v: Tensor, k: int, dim: int) -> Tensor:
    k = min(k, v.shape[dim])
    idx = v.abs().topk(k, dim=dim).indices
    return torch.zeros_like(v).scatter(dim, idx, v.gather(dim, idx))


@torch.no_grad()
def project_(lora: SaeLora, kind: str, *, tau: float = 0.0, k: int = 16) -> None:
    """Projection applied after each optimizer step.

    - ``proximal_l1``: soft-threshold the unit vectors by ``tau`` (the proximal operator of
      ``tau·‖·‖₁``), then store them back as unit vectors. Entries below ``tau`` become exact
      zeros; the largest entry always survives, so a vector never vanishes.
    - ``topk``: keep the ``k`` largest-magnitude entries of each unit vector, zero the rest.
    - ``group_topk``: keep the ``k`` *latents* with the largest norm over all components (rows
      of Â, columns of B̂; the group norm ``√Σ_j Â[i, j]²``) and zero every other latent in
      every component: at most ``k`` distinct read and ``k`` distinct write latents in all,
      whatever the rank. For rank 1 it is ``topk``. A rank-r adapter on a shared support of k
      latents is a rank-r map between k read and k write latents.

    ``s`` is untouched: it keeps carrying the magnitude. The raw vectors keep their norm (only
    their direction is sparsified), so the optimizer's step size relative to the entries does
    not jump when the projection first applies.
    """
    if kind not in {"proximal_l1", "topk", "group_topk"}:
        return
    for param, unit, dim in ((lora.a, lora.read_dirs(), 0), (lora.b, lora.write_dirs(), 1)):
        if kind == "group_topk":
            # dim is the latent axis of a (0) and the component axis of b (1): the latent
            # axis of b is 1, its component axis 0.
            norms = unit.norm(dim=1 - dim)
            keep = torch.zeros_like(norms, dtype=torch.bool)
            keep[norms.topk(min(k, norms.numel())).indices] = True
            keep &= norms > 0
            new = unit * (keep[:, None] if dim == 0 else keep[None, :])
        elif kind == "proximal_l1":
            new = _soft_threshold(unit, tau)
            dead = new.abs().sum(dim, keepdim=True) == 0
            new = torch.where(dead, _keep_largest(unit, 1, dim), new)
        else:
            new = _keep_largest(unit, k, dim)
        scale = param.norm(dim=dim, keepdim=True)
        param.copy_(new / new.norm(dim=dim, keepdim=True).clamp_min(EPS) * scale)


def _deal(v: Tensor, parts: int) -> list[Tensor]:
    """``v`` split into ``parts`` disjoint vectors summing to it: its entries, sorted by
    magnitude, dealt round-robin (so top-k of each part = the k·parts largest of ``v``)."""
    order = v.abs().argsort(descending=True)
    out = []
    for i in range(parts):
        part = torch.zeros_like(v)
        part[order[i::parts]] = v[order[i::parts]]
        out.append(part)
    return out


@torch.no_grad()
def split_rank(lora: SaeLora, rank: int, read_parts: int | None = None) -> SaeLora:
    """A rank-``rank`` adapter computing exactly what ``lora`` computes.

    With m = rank / lora.rank, each component j of ``lora`` has its read vector dealt into p
    parts and its write vector into q parts (p·q = m, p the largest divisor of m with p ≤ √m;
    entries sorted by magnitude and dealt round-robin), and becomes the m components
    (read part, write part). Since the parts sum to Â[:, j] and B̂[j],
    ``Σ (z·Â_i) s_i B̂_i = (z·Â[:, j]) s_j B̂[j]``: Δz is unchanged (each part's norms move into
    its ``s``). A top-k projection per component then keeps the k·p largest read entries and
    the k·q largest write entries of the source. This is how a dense rank-1 adapter is
    compressed into a sparse rank-m one (``init_from`` with a larger ``rank``): more latents
    for the same per-vector budget. ``read_parts`` sets p instead (a divisor of m): p = 1 keeps
    each read vector whole and spends all m parts on the write side.
    """
    if rank % lora.rank:
        raise ValueError(f"cannot split rank {lora.rank} into rank {rank}: not a multiple")
    m = rank // lora.rank
    p = read_parts or max(d for d in range(1, math.isqrt(m) + 1) if m % d == 0)
    if m % p:
        raise ValueError(f"read_parts={p} does not divide the rank ratio {m}")
    src = lora.folded()
    out = SaeLora(lora.d_sae, rank, init="zeros")
    a, b = src.read_dirs(), src.write_dirs()
    root = math.sqrt(lora.d_sae)  # the raw norm of a fresh vector, so Adam's steps are as usual
    for j in range(src.rank):
        reads, writes = _deal(a[:, j], p), _deal(b[j], m // p)
        for c, (ra, wb) in enumerate(((ra, wb) for ra in reads for wb in writes), start=j * m):
            na, nb = ra.norm().clamp_min(EPS), wb.norm().clamp_min(EPS)
            out.a[:, c] = ra / na * root
            out.b[c] = wb / nb * root
            out.s[c] = src.s[j] * na * nb
    return out


@torch.no_grad()
def restrict_latents(
    lora: SaeLora,
    read: list[int] | None = None,
    write: list[int] | None = None,
    *,
    drop: bool = False,
) -> SaeLora:
    """The part of ``lora`` that goes through the given latents, exactly.

    Keeps (``drop=True``: removes) the read entries ``read`` of every Â column and the write
    entries ``write`` of every B̂ row (None: that side untouched), without renormalizing: the
    norm each vector loses moves into ``s``, so

        Δz' = ((z @ Â·M_r) * s) @ (M_w·B̂)

    with M the 0/1 masks. Kept + dropped parts of one side sum to the original's Δz. This is
    the sufficiency (keep the described latents) and necessity (drop them) intervention of
    ``analysis.faithfulness``, unlike :func:`prune_topk`, which renormalizes what it keeps.
    """
    src = lora.folded()
    a, b = src.read_dirs().clone(), src.write_dirs().clone()
    for vec, idx, dim in ((a, read, 0), (b, write, 1)):
        if idx is None:
            continue
        mask = torch.zeros(lora.d_sae, dtype=torch.bool, device=vec.device)
        mask[torch.as_tensor(idx, dtype=torch.long, device=vec.device)] = True
        if drop:
            mask = ~mask
        vec.mul_(mask[:, None] if dim == 0 else mask[None, :])
    out = SaeLora(lora.d_sae, lora.rank, init="zeros").to(lora.s.device)
    na, nb = a.norm(dim=0), b.norm(dim=1)
    out.a.copy_(a / na.clamp_min(EPS))
    out.b.copy_(b / nb[:, None].clamp_min(EPS))
    out.s.copy_(src.s * na * nb)
    return out


@dataclass
class PruneResult:
    lora: SaeLora
    kept_read: list[list[int]]
    """Latent indices kept in each read vector."""
    kept_write: list[list[int]]


@torch.no_grad()
def prune_topk(lora: SaeLora, k: int) -> PruneResult:
    """A copy of ``lora`` (gates folded in) keeping only the ``k`` largest entries of each unit
    vector.

    The kept entries are renormalized to unit norm and ``s`` is unchanged.
    """
    out = lora.folded()
    project_(out, "topk", k=k)
    return PruneResult(
        out,
        [torch.nonzero(out.a[:, j]).flatten().tolist() for j in range(out.rank)],
        [torch.nonzero(out.b[j]).flatten().tolist() for j in range(out.rank)],
    )


@torch.no_grad()
def random_support_control(
    lora: SaeLora, k: int, generator: torch.Generator | None = None
) -> SaeLora:
    """Same L0 and same kept magnitudes as ``prune_topk(lora, k)``, but on random latents.

    The control for "the chosen latents matter": if this keeps the behaviour too, the top-k
    latents were not special.
    """
    pruned = prune_topk(lora, k).lora
    out = SaeLora(lora.d_sae, lora.rank)
    out.s.copy_(lora.s)
    out.a.zero_()
    out.b.zero_()
    for j in range(lora.rank):
        for src, dst in ((pruned.a[:, j], out.a[:, j]), (pruned.b[j], out.b[j])):
            vals = src[src != 0]
            idx = torch.randperm(lora.d_sae, generator=generator)[: len(vals)]
            dst[idx] = vals
    return out
