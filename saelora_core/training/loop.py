"""Training loop: frozen model and SAE, only the adapter's a, b, s learn.

    loss = CE(assistant tokens only) + sparsity_weight · penalty(Â, B̂)

With ``distill_from`` (a teacher adapter) the CE is replaced by KL(teacher ‖ student), the
divergence of the next-token distributions at the same positions: compressing a dense adapter
into a sparse one by matching what it does, not the dataset's targets.

``micro_batch`` examples run together, right-padded, in one forward and backward pass, and
gradients accumulate over ``batch_size`` examples per step; each example's loss is the mean over
its own tokens, so the step's loss does not depend on ``micro_batch`` (``micro_batch=1`` is the
one-at-a-time path; the two agree to float rounding, tested). The forward pass and its losses
live in ``adapter/forward.py``; ``bench/train_throughput.py`` measures the paths side by side.

Speed (``precompute=True``): the residual at the hook depends only on the frozen blocks below
it, so it is computed once per example and reused every epoch; the forward then starts at block
``L+1`` and logits are computed only at positions that predict an assistant token. This is exact
(checked against the plain path in the tests).

Checkpoints: ``params.pt`` + ``metadata.json`` + ``train_state.pt`` (optimizer, position,
history) are written atomically at the end of each epoch and every ``checkpoint_every`` steps;
``train_lora`` on the same ``out_dir`` resumes where the last checkpoint left off (``resume.py``).

``train_lora`` is a short loop over named steps: :func:`start_run` (examples, adapter, optimizer,
teacher), :func:`resume_or_init`, then per step :func:`train_step`, per epoch :func:`end_epoch`
and :func:`save_checkpoint`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from saelora_core.adapter.batch import Example, chunks, device_of, make_batch, tokenize_rows
from saelora_core.adapter.forward import batch_losses, evaluate_ce, hook_resids
from saelora_core.adapter.sae_lora import SaeLora, penalty
from saelora_core.adapter.saving import (
    behaviour_of,
    build_metadata,
    load_lora,
    missing_behaviour,
    save_lora,
)
from saelora_core.adapter.sparsity import project_
from saelora_core.io.atomic import atomic_torch_save
from saelora_core.models.presets import ModelAndSae
from saelora_core.training.config import LoraTrainingConfig, topk_at
from saelora_core.training.inits import data_init_, warm_start_
from saelora_core.training.resume import load_state, state_path

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    lora: SaeLora
    out_dir: Path
    history: list[dict[str, Any]]
    metadata: dict[str, Any]
    skipped_rows: list[str] = field(default_factory=list)


def dataset_split_rows(dataset, split: str) -> list[dict] | None:
    if hasattr(dataset, "keys") and callable(dataset.keys) and split in dataset:  # DatasetDict
        return list(dataset[split])
    if split == "train" and not (hasattr(dataset, "keys") and callable(dataset.keys)):
        return list(dataset)
    return None


def split_dataset(
    mas: ModelAndSae, dataset, cfg: LoraTrainingConfig
) -> tuple[list[Example], list[Example], list[str]]:
    train_rows = dataset_split_rows(dataset, "train")
    if not train_rows:
        raise ValueError(
            "the training dataset is empty: build one with `saelora dataset make` "
            "or pass rows with 'prompt' and 'response'"
        )
    train, skipped = tokenize_rows(mas, train_rows, cfg.max_len, cfg.response_tokens or None)
    eval_rows = dataset_split_rows(dataset, "eval")
    if eval_rows is not None:
        ev, sk = tokenize_rows(mas, eval_rows, cfg.max_len, cfg.response_tokens or None)
        skipped += sk
    else:
        g = torch.Generator().manual_seed(cfg.seed)
        perm = torch.randperm(len(train), generator=g).tolist()
        n_eval = int(len(train) * cfg.eval_fraction)
        ev, train = [train[i] for i in perm[:n_eval]], [train[i] for i in perm[n_eval:]]
    if not train:
        raise ValueError(
            f"no usable training rows; all {len(train_rows)} were malformed: {skipped[:3]}"
        )
    return train, ev, skipped


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
    extra = run_behaviour(cfg, extra_metadata)
    return Run(
        mas, cfg, out, layer, train, ev, skipped, lora, new_optimizer(lora, cfg),
        load_teacher(mas, cfg), math.ceil(len(train) / cfg.batch_size),
        extra_metadata=extra,
    )  # fmt: skip


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


def eval_ce(run: Run) -> float | None:
    """Mean response CE on the eval examples (None without any)."""
    if not run.ev:
        return None
    cfg = run.cfg
    return evaluate_ce(
        run.mas, run.lora, run.ev, cfg.mode, cfg.precompute, cfg.logits_dtype, cfg.micro_batch
    )


def resume_or_init(run: Run, dataset, resume: bool) -> None:
    """Continue the checkpoint in ``run.out`` when there is one (and ``resume``); else apply the
    config's init and record the step-0 evaluation."""
    if resume and state_path(run.out).exists():
        state = load_state(run.out, run.cfg, run.mas, device_of(run.mas))
        run.lora.load_state_dict(state["lora"])
        run.opt.load_state_dict(state["optimizer"])
        run.epoch, run.step_in_epoch = state["epoch"], state["step_in_epoch"]
        run.history, run.created = state["history"], state.get("created")
        run.ce_sum = state.get("last_train_ce", float("nan"))
        if "rng" in state:  # hard-concrete gate samples continue exactly where they left off
            torch.set_rng_state(state["rng"].cpu())
        logger.info("resuming %s at epoch %d step %d", run.out, run.epoch, run.step_in_epoch)
    else:
        cfg = run.cfg
        if cfg.init_from:
            warm_start_(run.lora, cfg, run.mas)
        elif cfg.init in ("gradient_svd", "contrastive"):
            rows = dataset_split_rows(dataset, "train") or []
            info = data_init_(run.mas, run.lora, cfg, run.train, rows)
            logger.info("%s init: %s", cfg.init, info)
        run.history.append({"epoch": 0, "step": 0, "eval_ce": eval_ce(run)})
    # freeze_support: the support at the start (a resumed run has kept exactly it).
    if run.cfg.freeze_support:
        run.support = (run.lora.a != 0, run.lora.b != 0)


def save_checkpoint(run: Run, done: bool) -> dict:
    """Write the adapter (folded when gated), its metadata and the training state; return the
    metadata."""
    cfg, lora = run.cfg, run.lora
    plain = lora.folded() if lora.gates else lora
    meta = build_metadata(
        plain,
        config=cfg.to_dict(),
        preset=run.mas.preset,
        sae_identity=run.mas.sae_identity,
        layer=run.layer,
        mode=cfg.mode,
        history=run.history,
        created=run.created,
        extra={
            "n_train": len(run.train),
            "n_eval": len(run.ev),
            "complete": done,
            "skipped_rows": run.skipped[:50],
            **run.extra_metadata,
        },
    )
    save_lora(plain, run.out, meta)
    atomic_torch_save(
        {
            "config": cfg.to_dict(),
            "lora": lora.state_dict(),
            "optimizer": run.opt.state_dict(),
            "epoch": run.epoch,
            "step_in_epoch": run.step_in_epoch,
            "history": run.history,
            "last_train_ce": run.ce_sum,
            "created": meta["created"],
            "rng": torch.get_rng_state(),
            "sae_hash": run.mas.sae_identity.get("hash"),
        },
        state_path(run.out),
    )
    return meta


def epoch_order(run: Run) -> list[int]:
    """The training examples' order in the current epoch (seeded by ``seed + epoch``)."""
    g = torch.Generator().manual_seed(run.cfg.seed + run.epoch)
    return torch.randperm(len(run.train), generator=g).tolist()


def accumulate_gradients(run: Run, batch: list[int]) -> torch.Tensor:
    """Forward and backward over ``batch`` in micro-batches; the step's loss (detached)."""
    cfg, train = run.cfg, run.train
    ce = torch.zeros((), device=run.lora.s.device)
    # Longest first, so a micro-batch pads little; the step's loss is the same sum.
    ordered = sorted(batch, key=lambda i: -len(train[i].chat.tokens))
    for part in chunks(ordered, cfg.micro_batch):
        losses = batch_losses(
            run.mas,
            run.lora,
            make_batch(run.mas, [train[i] for i in part]),
            cfg.mode,
            cfg.precompute,
            cfg.logits_dtype,
            run.teacher,
        )
        loss = losses.sum() / len(batch)
        loss.backward()
        ce = ce + loss.detach()
    return ce


def train_step(run: Run, order: list[int]) -> dict[str, Any]:
    """One optimizer step: gradients, sparsity penalty, update, projection; what it logs."""
    cfg, lora = run.cfg, run.lora
    i = run.step_in_epoch
    batch = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
    run.opt.zero_grad(set_to_none=True)
    ce = accumulate_gradients(run, batch)
    pen = penalty(lora, cfg.sparsity)
    if pen.requires_grad and cfg.sparsity_weight > 0:
        (cfg.sparsity_weight * pen).backward()
    run.opt.step()
    project_(lora, cfg.sparsity, tau=cfg.lr * cfg.sparsity_weight, k=topk_at(cfg, run.epoch))
    if run.support is not None:
        with torch.no_grad():
            lora.a.mul_(run.support[0])
            lora.b.mul_(run.support[1])
    run.step_in_epoch += 1
    # The step's one device-to-host transfer: what the progress bar and log show.
    logged = torch.cat([ce[None], pen.detach().reshape(1).to(ce), lora.s.detach().to(ce)]).tolist()
    run.ce_sum = logged[0]
    return {
        "epoch": run.epoch + run.step_in_epoch / run.steps_per_epoch,
        "step": run.epoch * run.steps_per_epoch + run.step_in_epoch,
        "train_ce": logged[0],
        "penalty": logged[1],
        **({"expected_l0": lora.expected_l0().item()} if lora.gates else {}),
        "s": logged[2:],
    }


def end_epoch(run: Run) -> None:
    """Advance to the next epoch and record its evaluation in the history."""
    run.epoch, run.step_in_epoch = run.epoch + 1, 0
    l0_read, l0_write = run.lora.l0()
    run.history.append(
        {
            "epoch": run.epoch,
            "step": run.epoch * run.steps_per_epoch,
            "train_ce_last": run.ce_sum,
            "eval_ce": eval_ce(run),
            "l0_read": l0_read,
            "l0_write": l0_write,
            "s": run.lora.s.detach().tolist(),
        }
    )


def train_lora(
    mas: ModelAndSae,
    dataset,
    cfg: LoraTrainingConfig,
    *,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    extra_metadata: dict | None = None,
) -> TrainResult:
    """Train an adapter on ``dataset`` (a DatasetDict with train/eval, a Dataset or a list of
    dicts with ``prompt``/``response``) and write it to ``out_dir``.

    ``on_step`` is called after every optimizer step with ``{"step", "epoch", "loss", ...}``;
    raising from it (e.g. KeyboardInterrupt) stops training after the last checkpoint.
    """
    run = start_run(mas, dataset, cfg, Path(out_dir), extra_metadata)
    resume_or_init(run, dataset, resume)
    bar = tqdm(
        total=cfg.epochs * run.steps_per_epoch,
        initial=run.epoch * run.steps_per_epoch + run.step_in_epoch,
        disable=not progress,
        desc=f"train {cfg.name}",
    )
    meta: dict = {}
    try:
        while run.epoch < cfg.epochs:
            order = epoch_order(run)
            while run.step_in_epoch < run.steps_per_epoch:
                info = train_step(run, order)
                bar.update(1)
                bar.set_postfix(ce=f"{info['train_ce']:.3f}", pen=f"{info['penalty']:.3g}")
                if cfg.checkpoint_every and info["step"] % cfg.checkpoint_every == 0:
                    save_checkpoint(run, done=False)
                if on_step is not None:
                    on_step(info)
            end_epoch(run)
            meta = save_checkpoint(run, done=run.epoch == cfg.epochs)
    finally:
        bar.close()
    if not meta:  # resumed a finished run
        meta = save_checkpoint(run, done=True)
    lora = run.lora.folded() if run.lora.gates else run.lora
    return TrainResult(lora, run.out, run.history, meta, run.skipped)
