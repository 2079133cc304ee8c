"""What a repair run trains and on how many tokens (saved as JSON beside its result)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from saelora_core.io.config import ConfigBase

RepairMethod = Literal["model_lora", "sae_finetune", "linear_adapter", "latent_adapter"]
METHODS: tuple[str, ...] = ("model_lora", "sae_finetune", "linear_adapter", "latent_adapter")

# Learning rates used at this project's CPU budget, and the published ones (the notes say why
# they differ: the published runs see 15M-100M tokens, ours about 500x fewer).
DEFAULT_LR = {
    "model_lora": 1e-3,
    "sae_finetune": 5e-5,
    "linear_adapter": 3e-4,
    "latent_adapter": 3e-4,
}
PUBLISHED_LR = {"model_lora": 5e-5, "sae_finetune": 5e-5, "linear_adapter": None}
DEFAULT_MSE = {
    "model_lora": False,
    "sae_finetune": True,
    "linear_adapter": True,
    "latent_adapter": False,
}
DEFAULT_SCHEDULE = {
    "model_lora": "constant",
    "sae_finetune": "linear",
    "linear_adapter": "linear",
    "latent_adapter": "constant",
}


@dataclass
class RepairConfig(ConfigBase):
    """One repair run. Unset fields (``None``) take the method's default from this module."""

    HELP: ClassVar[str] = "; see saelora repair --help"

    method: RepairMethod = "sae_finetune"
    """``model_lora`` (peft LoRA on the model around the frozen SAE, arXiv 2501.19406),
    ``sae_finetune`` (every SAE parameter, k fixed, KL+MSE, arXiv 2503.17272),
    ``linear_adapter`` (x̂ + U·D·x̂ on the SAE output, same paper) or ``latent_adapter`` (our
    ``SaeLora`` in ``sae_replace`` mode: z + Δz before decoding)."""
    sae_path: str | None = None
    """The SAE the repair starts from (None: the preset's). A combination such as "finetune,
    then linear adapter" points this at the finetuned SAE; the gap is still measured against
    the preset's own SAE."""
    train_tokens: int = 32_768
    """Token budget: windows of ``context_size`` tokens are drawn in order from the corpus's
    train split until this many tokens have been seen (one pass, no window twice)."""
    context_size: int = 128
    """Tokens per window, BOS included (the default SAE was trained at 128)."""
    batch_size: int = 4
    """Windows per optimizer step."""
    lr: float | None = None
    """AdamW learning rate (None: ``DEFAULT_LR[method]``)."""
    schedule: Literal["constant", "linear"] | None = None
    """``constant`` or ``linear`` decay to 0 (None: the method's published choice)."""
    warmup_steps: int = 4
    """Linear warm-up at the start (Adam's first bias-corrected steps are full-size)."""
    grad_clip: float = 1.0
    mse: bool | None = None
    """Add the reconstruction MSE: loss = 0.5·(α·KL + MSE) with α = (MSE/KL).detach() each step
    (None: on for ``sae_finetune`` and ``linear_adapter``, off otherwise)."""
    autocast_bf16: bool = True
    """Run the language model in bfloat16 autocast while training (the SAE, the splice and the
    loss stay fp32). Evaluation always runs in fp32."""
    lora_rank: int = 64
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_layers: Literal["after", "all"] = "after"
    """``after``: LoRA on the blocks after the SAE's layer; ``all``: on every block."""
    lora_targets: list[str] = field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )
    adapter_rank: int = 16
    """Rank of the linear adapter U·D (residual space)."""
    latent_rank: int = 8
    """Rank of the latent adapter."""
    latent_topk: int = 0
    """Entries kept per read and write vector of the latent adapter (exact zeros after every
    step); 0 keeps them dense."""
    latent_s_lr: float = 0.02
    """Learning rate of the latent adapter's scale ``s`` (it starts at 0)."""
    init_tokens: int = 2048
    """Tokens of the train split used for the latent adapter's gradient-SVD init."""
    curve_points: int = 8
    """Held-out CE measurements during training (the gap-closed-against-tokens curve)."""
    curve_tokens: int = 1024
    """Held-out tokens per curve point."""
    checkpoint_every: int = 16
    """Optimizer steps between checkpoints (resume continues from the last)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown repair method {self.method!r}; use one of {list(METHODS)}")
        if self.context_size < 8:
            raise ValueError("context_size must be at least 8 tokens")
        if self.train_tokens < self.context_size * self.batch_size:
            raise ValueError(
                f"train_tokens={self.train_tokens} is less than one step "
                f"(batch_size x context_size = {self.batch_size * self.context_size})"
            )
        if self.schedule not in (None, "constant", "linear"):
            raise ValueError(f"schedule must be 'constant' or 'linear', not {self.schedule!r}")
        if self.lora_layers not in ("after", "all"):
            raise ValueError(f"lora_layers must be 'after' or 'all', not {self.lora_layers!r}")
        for name in ("curve_tokens", "init_tokens"):
            if getattr(self, name) < self.context_size:
                raise ValueError(
                    f"{name}={getattr(self, name)} is less than one window ({self.context_size} tokens)"
                )
        for name in ("lora_rank", "adapter_rank", "latent_rank", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    @property
    def effective_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    @property
    def effective_schedule(self) -> str:
        return self.schedule or DEFAULT_SCHEDULE[self.method]

    @property
    def effective_mse(self) -> bool:
        return self.mse if self.mse is not None else DEFAULT_MSE[self.method]

    @property
    def steps(self) -> int:
        return self.train_tokens // (self.context_size * self.batch_size)
