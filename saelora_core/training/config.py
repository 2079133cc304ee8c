"""The adapter's training config, validated on construction and saved as JSON next to the weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from saelora_core.io.config import ConfigBase

HookMode = Literal["resid_add", "sae_replace"]
Sparsity = Literal[
    "none", "l1_raw", "l1_normalized", "proximal_l1", "topk", "group_topk", "hard_concrete"
]
Init = Literal["random", "uniform_small", "gradient_svd", "contrastive"]


@dataclass
class LoraTrainingConfig(ConfigBase):
    """How to train one adapter. Defaults for lr, sparsity_weight, batch_size, rank and max_len are the
    seed experiment's."""

    RENAMED: ClassVar[dict[str, str]] = {"l1_weight": "sparsity_weight"}
    """Adapters saved before the rename hold ``l1_weight`` (the weight of every sparsity penalty,
    not only L1)."""

    lr: float = 1e-4
    """Adam learning rate for ``a``, ``b`` and ``s``."""
    s_lr: float | None = None
    """Learning rate for the scale ``s`` (None: ``lr``). ``s`` starts at 0 and must reach the scale
    of SAE activations, so it often needs a larger step than the directions."""
    sparsity_weight: float = 0.05
    """λ in ``loss = CE + λ · sparsity(Â, B̂)`` (for ``proximal_l1`` the per-step threshold is
    ``lr · λ``)."""
    batch_size: int = 32
    """Examples per optimizer step (gradients accumulate over micro-batches)."""
    micro_batch: int = 8
    """Examples run together in one right-padded forward and backward pass (1: one at a time).
    It changes speed and memory, not the loss: each example's loss is the mean over its own
    tokens (float rounding aside; hard-concrete gates are still sampled per example)."""
    rank: int = 1
    """Number of read/write vector pairs."""
    max_len: int = 2048
    """Tokens per example; longer examples lose the end of their response."""
    response_tokens: int = 0
    """Train on only the first N response tokens of each example (0: all of them). The answer's
    language or register is decided in its first few tokens; later ones mostly follow from the
    earlier ones under teacher forcing, so they dilute that signal, and they cost compute."""
    epochs: int = 3
    layer: int | None = None
    """Hook layer; None uses the preset's."""
    mode: HookMode = "resid_add"
    """``resid_add``: resid + Δz @ W_dec (keeps the SAE error). ``sae_replace``: decode(z + Δz)."""
    sparsity: Sparsity = "l1_raw"
    """``l1_raw`` is the seed's penalty on the raw a/b (scale-degenerate, kept as a baseline);
    ``l1_normalized`` penalizes the unit vectors; ``proximal_l1`` soft-thresholds the unit
    vectors after each step (exact zeros); ``topk`` keeps the ``topk`` largest entries of each
    vector; ``group_topk`` keeps the ``topk`` latents with the largest norm over all components,
    so the adapter reads and writes at most ``topk`` distinct latents in all (``lora.project_``);
    ``hard_concrete`` learns an L0 gate per entry and penalizes the expected L0 (λ then weighs
    a count, so it wants values ~100x smaller than the L1 methods)."""
    topk: int = 16
    """Entries kept per read/write vector for ``sparsity="topk"``; distinct latents kept over all
    components for ``sparsity="group_topk"``."""
    topk_schedule: list[int] = field(default_factory=list)
    """``sparsity="topk"``/``"group_topk"`` only: the k of each epoch in turn (e.g. ``[512, 256, 128, 64, 32]``),
    then ``topk`` for the remaining epochs. Cutting the support gradually lets the kept latents
    take over the work of the dropped ones a few at a time; cutting a dense adapter to 16 at
    once loses most of its effect (``studies/sparsity_sweep.py``)."""
    init: Init = "random"
    """``random``: Gaussian a/b (the seed's); ``uniform_small``: every entry equal, so untouched
    latents carry no random pattern (see ``training/inits.py``); ``gradient_svd``: read vectors from the top-``rank``
    left singular vectors of the loss gradient with respect to the full latent-to-latent map,
    measured at s = 0 on ``init_examples`` training rows, write vectors random (see
    ``train.gradient_svd_init_``). A latent that never fires on those rows gets an exact 0 read
    weight, so no random pattern survives on it. ``contrastive``: Â from in-topic minus
    off-topic prompt latents, B̂ from rewritten minus original response latents (see
    ``training/inits.py``)."""
    init_from: str | None = None
    """Directory of a saved adapter to start from instead of ``init`` (same SAE and rank), e.g.
    a dense adapter to prune and fine-tune: with ``sparsity="topk"`` its vectors are cut to
    their ``topk`` largest entries before the first step. Its ``s`` is kept, so training starts
    from that adapter's function, not from a no-op."""
    freeze_support: bool = False
    """Train only the entries of ``a``/``b`` that are nonzero after initialisation (e.g. the
    latents of an ``init_from`` adapter); the rest stay exactly 0. Used for the same-L0
    random-latent control, whose support must not drift to the useful latents."""
    distill_from: str | None = None
    """Directory of a trained adapter (the teacher, same SAE). The loss becomes the KL divergence
    KL(teacher ‖ student) between the next-token distributions with the teacher and with the
    trained adapter attached, at the same positions as the CE (those predicting a response
    token), instead of the CE on the dataset's targets. Used to compress a dense adapter into a
    sparse one (with ``init_from`` the same directory and ``sparsity="topk"``): the teacher's
    whole distribution is a far richer signal per position than one target token, and matching
    it keeps the teacher's behaviour, off-topic restraint included."""
    gate_lr: float = 0.1
    """Adam learning rate of the hard-concrete gates' ``log_alpha`` (they start at 2 and close
    below about -2.4)."""
    init_examples: int = 32
    """Training rows used by ``init="gradient_svd"``."""
    seed: int = 0
    eval_fraction: float = 0.1
    """Held-out share when the dataset has no ``eval`` split."""
    checkpoint_every: int = 0
    """Also checkpoint every N optimizer steps (0: at the end of each epoch only)."""
    precompute: bool = True
    """Cache the hook-point residual once per example and compute logits only at assistant
    positions (the layers below the hook are frozen, so this is exact)."""
    logits_dtype: Literal["float32", "bfloat16"] = "float32"
    """dtype of the unembedding matmul in the precomputed path. With a 262k vocabulary it is most
    of a training step; bfloat16 is ~4x faster on CPUs with AVX512-BF16 or AMX (loss stays float32); a CPU without them
    emulates bf16 at a fraction of float32 speed, so there it computes in float32
    (``forward.cpu_has_native_bf16``)."""
    name: str = "lora"

    def __post_init__(self) -> None:
        checks = {
            "lr": self.lr > 0,
            "s_lr": self.s_lr is None or self.s_lr > 0,
            "sparsity_weight": self.sparsity_weight >= 0,
            "batch_size": self.batch_size >= 1,
            "micro_batch": self.micro_batch >= 1,
            "rank": self.rank >= 1,
            "max_len": self.max_len >= 8,
            "epochs": self.epochs >= 1,
            "response_tokens": self.response_tokens >= 0,
            "topk": self.topk >= 1,
            "topk_schedule": all(isinstance(k, int) and k >= 1 for k in self.topk_schedule),
            "init_examples": self.init_examples >= 1,
            "gate_lr": self.gate_lr > 0,
            "eval_fraction": 0 <= self.eval_fraction < 1,
            "checkpoint_every": self.checkpoint_every >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"invalid LoraTrainingConfig values: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}"
            )
        if self.logits_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"logits_dtype must be float32 or bfloat16, got {self.logits_dtype!r}")
        for name, allowed in (("mode", HookMode), ("sparsity", Sparsity), ("init", Init)):
            if getattr(self, name) not in allowed.__args__:
                raise ValueError(
                    f"{name} must be one of {allowed.__args__}, got {getattr(self, name)!r}"
                )


def topk_at(cfg: LoraTrainingConfig, epoch: int) -> int:
    """The top-k of ``epoch`` (0-based): ``cfg.topk_schedule[epoch]``, then ``cfg.topk``."""
    return cfg.topk_schedule[epoch] if epoch < len(cfg.topk_schedule) else cfg.topk
