"""The adapter: a rank-r map inside SAE latent space and its sparsity penalties.

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
            # (gradient_svd_init_ in training/inits.py, or a hand-set adapter). Â/B̂ are then 0 too.
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

    def delta_mapped(
        self, z: Float[Tensor, "... d_sae"], w: Float[Tensor, "d_sae d_out"]
    ) -> Float[Tensor, "... d_out"]:
        """Δz @ w without forming Δz: ((z @ Â) * s) @ (B̂ @ w). With ``w`` the SAE's write
        matrix this is the residual-space edit; the (rank × d_sae) @ (d_sae × d_out) product
        replaces a (tokens × d_sae) @ (d_sae × d_out) one and the dense (tokens × d_sae) Δz."""
        return ((z @ self.read_dirs()) * self.s) @ (self.write_dirs() @ w)

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
    """The sparsity term added to the loss (times ``sparsity_weight``).

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
