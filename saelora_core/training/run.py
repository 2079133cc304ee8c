"""One training run's state and how it starts: the examples (hook residuals cached), a fresh
adapter, its optimizer and the distillation teacher (:func:`start_run`)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from saelora_core.adapter.batch import Example, device_of
from saelora_core.adapter.forward import evaluate_ce, hook_resids
from saelora_core.adapter.sae_lora import SaeLora
from saelora_core.adapter.saving import behaviour_of, load_lora, missing_behaviour
from saelora_core.models.presets import ModelAndSae
from saelora_core.training.config import LoraTrainingConfig
from saelora_core.training.distributed import all_reduce_sum, share, world_size
from saelora_core.training.splits import split_dataset

logger = logging.getLogger(__name__)


@dataclass
class Run:
    """Everything one training run holds between its steps."""

    mas: ModelAndSae
    cfg: LoraTrainingConfig
    out: Path
    layer: int
    train: list[Example]
    ev: list[Example]
    skipped: list[str]
    lora: SaeLora
    opt: torch.optim.Optimizer
    teacher: SaeLora | None
    steps_per_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch: int = 0
    step_in_epoch: int = 0
    created: str | None = None
    ce_sum: float = float("nan")
    support: tuple[torch.Tensor, torch.Tensor] | None = None
    extra_metadata: dict[str, Any] = field(default_factory=dict)


def new_adapter(mas: ModelAndSae, cfg: LoraTrainingConfig) -> SaeLora:
    """A fresh adapter for ``cfg`` on the model's device (random read/write, ``s = 0``)."""
    torch.manual_seed(cfg.seed)
    return SaeLora(
        mas.sae.cfg.d_sae,
        cfg.rank,
        init="random" if cfg.init in ("gradient_svd", "contrastive") else cfg.init,
        generator=torch.Generator().manual_seed(cfg.seed),
        gates=cfg.sparsity == "hard_concrete",
    ).to(device_of(mas))


def new_optimizer(lora: SaeLora, cfg: LoraTrainingConfig) -> torch.optim.Optimizer:
    """Adam with one learning rate for the directions, one for ``s`` and one for the gates."""
    groups = [
        {"params": [lora.a, lora.b], "lr": cfg.lr},
        {"params": [lora.s], "lr": cfg.s_lr or cfg.lr},
    ]
    if lora.gates:
        groups.append({"params": [lora.log_alpha_a, lora.log_alpha_b], "lr": cfg.gate_lr})
    return torch.optim.Adam(groups)


def load_teacher(mas: ModelAndSae, cfg: LoraTrainingConfig) -> SaeLora | None:
    """The frozen ``distill_from`` adapter (any rank: only its output distribution is used)."""
    if not cfg.distill_from:
        return None
    loaded = load_lora(cfg.distill_from, sae_identity=mas.sae_identity)
    return loaded.lora.requires_grad_(False).to(device_of(mas))


def start_run(
    mas: ModelAndSae, dataset, cfg: LoraTrainingConfig, out: Path, extra_metadata: dict | None
) -> Run:
    """Tokenize the rows (and cache their hook residuals), build the adapter and optimizer."""
    layer = cfg.layer if cfg.layer is not None else mas.layer
    if layer != mas.layer:
        raise ValueError(f"config layer {layer} differs from the loaded SAE's layer {mas.layer}")
    train, ev, skipped = split_dataset(mas, dataset, cfg)
    for s in skipped:
        logger.warning("skipped %s", s)
    if cfg.precompute:  # every hook residual once, in batches
        hook_resids(mas, train + ev, cfg.micro_batch)
    lora = new_adapter(mas, cfg)
    return Run(
        mas, cfg, out, layer, train, ev, skipped, lora, new_optimizer(lora, cfg),
        load_teacher(mas, cfg), math.ceil(len(train) / cfg.batch_size),
        extra_metadata=run_behaviour(cfg, extra_metadata),
    )  # fmt: skip


def eval_ce(run: Run) -> float | None:
    """Mean response CE on the eval examples (None without any). Data parallel: each rank
    evaluates its share, and the ranks' means are combined weighted by their tokens."""
    if not run.ev:
        return None
    cfg = run.cfg

    def ce(examples: list[Example]) -> float:
        return evaluate_ce(
            run.mas, run.lora, examples, cfg.mode, cfg.precompute, cfg.logits_dtype, cfg.micro_batch
        )

    if world_size() == 1:
        return ce(run.ev)
    mine = share(run.ev)
    n = sum(int(ex.chat.assistant_mask[1:].sum()) for ex in mine)
    mean = ce(mine) if mine else 0.0
    tot = all_reduce_sum(torch.tensor([mean * n, float(n)], dtype=torch.float64))
    return float(tot[0] / tot[1].clamp_min(1))


def run_behaviour(cfg: LoraTrainingConfig, extra_metadata: dict | None) -> dict[str, Any]:
    """``extra_metadata`` completed with the behaviour (dataset, guideline, detector) of the
    adapter the run distills from or starts from, where it names none: a student does what its
    teacher does. A run that still lacks one is logged, since its adapter will be saved
    without it."""
    extra = dict(extra_metadata or {})
    for src in (cfg.distill_from, cfg.init_from):
        if src:
            inherited = behaviour_of(src)
            extra.update({k: v for k, v in inherited.items() if not extra.get(k)})
    if missing := missing_behaviour(extra):
        logger.warning(
            "training %s without %s: pass train_lora(..., extra_metadata="
            "analysis.behaviour_metadata(<dataset dir>)) so that the adapter records them",
            cfg.name,
            ", ".join(missing),
        )
    return extra
