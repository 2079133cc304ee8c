"""The adapter: a rank-r map inside SAE latent space, its sparsity penalties and pruning.

    Δz = ((z @ Â) * s) @ B̂,   Â[:, j] = a[:, j] / ‖a[:, j]‖,   B̂[j, :] = b[j, :] / ‖b[j, :]‖

Each read vector Â[:, j] and write vector B̂[j, :] is a unit vector over the d_sae latents; ``s``
carries all the magnitude and starts at 0, so a new adapter is an exact no-op.

Why the seed's L1 fails: because Â and B̂ are normalized, ``‖a‖₁`` can be lowered by shrinking
``a`` as a whole without changing Â, so the raw penalty selects no support (:func:`penalty`
``"l1_raw"``). The penalties here act on the unit vectors instead, and the proximal and top-k
projections write exact zeros.

Hard-concrete gates (Louizos et al. 2018, "Learning Sparse Neural Networks through L0
Regularization"), ``gates=True``: every entry of ``a`` and ``b`` is multiplied by a stochastic
gate in [0, 1] with a learned ``log_alpha``. Training samples the gates (``self.training``) and
penalizes the expected number of open gates, the expected L0; evaluation uses the deterministic
gate ``clamp(sigmoid(log_alpha)·(ζ-γ)+γ, 0, 1)``, which is exactly 0 for ``log_alpha`` below
about -2.4. :meth:`SaeLora.folded` bakes the deterministic gates into ``a``/``b`` and returns a
plain adapter with exact zeros: that is what gets saved, evaluated and analysed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

EPS = 1e-12
# Hard-concrete constants from Louizos et al.: temperature β and the stretch interval (γ, ζ).
HC_BETA, HC_GAMMA, HC_ZETA = 2 / 3, -0.1, 1.1
HC_INIT_LOG_ALPHA = 2.0
"""Gates start mostly open (deterministic gate 1, P(open) ≈ 0.96)."""


class SaeLora(nn.Module):
    """Sparse LoRA in SAE latent space: reads ``rank`` latent directions, writes ``rank`` others."""

    def __init__(
        self,
        d_sae: int,
        rank: int = 1,
        *,
        init: str = "random",
        generator: torch.Generator | None = None,
        gates: bool = False,
    ) -> None:
        super().__init__()
        self.d_sae, self.rank = d_sae, rank
        if init == "random":
            a = torch.randn(d_sae, rank, generator=generator)
            b = torch.randn(rank, d_sae, generator=generator)
        elif init == "zeros":
            # Zero support: every read/write vector is exactly 0 until something writes it
            # (gradient_svd_init_ in train.py, or a hand-set adapter). Â/B̂ are then 0 too.
            a = torch.zeros(d_sae, rank)
            b = torch.zeros(rank, d_sae)
        elif init == "uniform_small":
            # Equal entries: no latent is favoured, and a latent the data never activates keeps
            # exactly the same value as every other untouched one, with no random pattern to
            # mistake for a learned feature. A proximal or top-k step zeroes them.
            a = torch.full((d_sae, rank), 1.0)
            b = torch.full((rank, d_sae), 1.0)
        else:
            raise ValueError(f"unknown init {init!r}; use 'random', 'zeros' or 'uniform_small'")
        self.a = nn.Parameter(a)
        self.b = nn.Parameter(b)
        self.s = nn.Parameter(torch.zeros(rank))
        self.gates = gates
        if gates:
            self.log_alpha_a = nn.Parameter(torch.full((d_sae, rank), HC_INIT_LOG_ALPHA))
            self.log_alpha_b = nn.Parameter(torch.full((rank, d_sae), HC_INIT_LOG_ALPHA))

    def _gate(self, log_alpha: Tensor) -> Tensor:
        if self.training:
            u = torch.rand_like(log_alpha).clamp(1e-6, 1 - 1e-6)
            g = torch.sigmoid((u.log() - (-u).log1p() + log_alpha) / HC_BETA)
        else:
            g = torch.sigmoid(log_alpha)
        return (g * (HC_ZETA - HC_GAMMA) + HC_GAMMA).clamp(0, 1)

    def gated_params(self) -> tuple[Tensor, Tensor]:
        """``a`` and ``b`` times their gates (sampled in training mode, deterministic in eval)."""
        if not self.gates:
            return self.a, self.b
        return self.a * self._gate(self.log_alpha_a), self.b * self._gate(self.log_alpha_b)

    def expected_l0(self) -> Tensor:
        """Expected number of open gates over all read and write entries (0 without gates)."""
        if not self.gates:
            return self.s.new_zeros(())
        shift = HC_BETA * math.log(-HC_GAMMA / HC_ZETA)
        return sum(torch.sigmoid(la - shift).sum() for la in (self.log_alpha_a, self.log_alpha_b))  # type: ignore[return-value]

    @torch.no_grad()
    def folded(self) -> SaeLora:
        """A plain adapter (no gates) computing what this one computes in eval mode."""
        out = SaeLora(self.d_sae, self.rank, init="zeros")
        was = self.training
        self.eval()
        a, b = self.gated_params()
        self.train(was)
        out.a.copy_(a)
        out.b.copy_(b)
        out.s.copy_(self.s)
        return out

    def read_dirs(self) -> Float[Tensor, "d_sae rank"]:
        """Â: each column a unit vector (0 where ``a`` is all zero)."""
        a = self.gated_params()[0]
        return a / a.norm(dim=0, keepdim=True).clamp_min(EPS)

    def write_dirs(self) -> Float[Tensor, "rank d_sae"]:
        """B̂: each row a unit vector (0 where ``b`` is all zero)."""
        b = self.gated_params()[1]
        return b / b.norm(dim=1, keepdim=True).clamp_min(EPS)

    def delta(self, z: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_sae"]:
        """Δz = ((z @ Â) * s) @ B̂."""
        return ((z @ self.read_dirs()) * self.s) @ self.write_dirs()

    def forward(self, z: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_sae"]:
        return self.delta(z)

    def distinct_latents(self) -> tuple[list[int], list[int]]:
        """The latents the adapter reads and writes over all its components: the nonzero rows of
        ``a`` and the nonzero columns of ``b`` (gates folded in). Their counts are the length of
        the adapter's description ("reads X, Y; writes Z"), whatever its rank."""
        lora = self.folded() if self.gates else self
        return (
            torch.nonzero(lora.a.detach().ne(0).any(1)).flatten().tolist(),
            torch.nonzero(lora.b.detach().ne(0).any(0)).flatten().tolist(),
        )

    def l0(self) -> tuple[list[int], list[int]]:
        """Exact nonzero counts of each read vector and each write vector (with gates: under
        the deterministic test-time gates)."""
        lora = self.folded() if self.gates else self
        return ((lora.a != 0).sum(0).tolist(), (lora.b != 0).sum(1).tolist())


def penalty(lora: SaeLora, kind: str) -> Tensor:
    """The sparsity term added to the loss (times ``l1_weight``).

    - ``l1_raw``: ‖a‖₁ + ‖b‖₁ on the raw parameters (the seed's; degenerate under normalization).
    - ``l1_normalized``: ‖Â‖₁ + ‖B̂‖₁, invariant to rescaling a or b. For a unit vector, ‖v‖₁ ranges
      from 1 (one nonzero) to √d (uniform), so it rewards concentration, not shrinkage.
    - ``hard_concrete``: the expected L0 of the gates (see the module docstring).
    - ``none``, ``proximal_l1``, ``topk``: 0 (the latter two act by projection after each step).
    """
    if kind == "hard_concrete":
        if not lora.gates:
            raise ValueError("sparsity='hard_concrete' needs an adapter built with gates=True")
        return lora.expected_l0()
    if kind == "l1_raw":
        return lora.a.abs().sum() + lora.b.abs().sum()
    if kind == "l1_normalized":
        return lora.read_dirs().abs().sum() + lora.write_dirs().abs().sum()
    return lora.s.new_zeros(())


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
