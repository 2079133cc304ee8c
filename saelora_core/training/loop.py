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

Data parallel: under ``torchrun`` each rank trains on its share of every batch and the
gradients are summed over the ranks (``distributed.py``); the parameters are those of one
process running the whole batch, and only rank 0 writes checkpoints.

``train_lora`` is a short loop over named steps: ``run.start_run`` (examples, adapter, optimizer,
teacher), :func:`resume_or_init`, then per step :func:`train_step`, per epoch :func:`end_epoch`
and ``resume.save_checkpoint``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from saelora_core.adapter.batch import chunks, make_batch
from saelora_core.adapter.forward import batch_losses
from saelora_core.adapter.sae_lora import SaeLora, penalty
from saelora_core.adapter.sparsity import project_
from saelora_core.models.presets import ModelAndSae
from saelora_core.training.config import LoraTrainingConfig, topk_at
from saelora_core.training.distributed import (
    all_reduce_grads_,
    barrier,
    broadcast_object,
    broadcast_params_,
    init_from_env,
    is_main,
    share,
)
from saelora_core.training.inits import data_init_, warm_start_
from saelora_core.training.resume import save_checkpoint, state_mismatch, state_path
from saelora_core.training.run import Run, eval_ce, start_run
from saelora_core.training.splits import dataset_split_rows

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    lora: SaeLora
    out_dir: Path
    history: list[dict[str, Any]]
    metadata: dict[str, Any]
    skipped_rows: list[str] = field(default_factory=list)


def resume_or_init(run: Run, dataset, resume: bool) -> None:
    """Continue the checkpoint in ``run.out`` when there is one (and ``resume``); else apply the
    config's init and record the step-0 evaluation. Rank 0 reads the checkpoint and hands it to
    the other ranks (no shared file system needed)."""
    path = state_path(run.out)
    state = broadcast_object(
        torch.load(path, weights_only=True, map_location="cpu")
        if resume and is_main() and path.exists()
        else None
    )
    if state is not None:
        if (why := state_mismatch(state, run.cfg, run.mas, run.out)) is not None:
            raise ValueError(why)  # on every rank
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
        broadcast_params_(run.lora.parameters())  # every rank starts from rank 0's init
        run.history.append({"epoch": 0, "step": 0, "eval_ce": eval_ce(run)})
    # freeze_support: the support at the start (a resumed run has kept exactly it).
    if run.cfg.freeze_support:
        run.support = (run.lora.a != 0, run.lora.b != 0)


def epoch_order(run: Run) -> list[int]:
    """The training examples' order in the current epoch (seeded by ``seed + epoch``)."""
    g = torch.Generator().manual_seed(run.cfg.seed + run.epoch)
    return torch.randperm(len(run.train), generator=g).tolist()


def accumulate_gradients(run: Run, batch: list[int]) -> torch.Tensor:
    """Forward and backward over this rank's share of ``batch`` in micro-batches, the gradients
    summed over the ranks; the whole batch's loss (detached)."""
    cfg, train = run.cfg, run.train
    ce = torch.zeros((), device=run.lora.s.device)
    # Longest first, so a micro-batch pads little; the step's loss is the same sum.
    ordered = sorted(share(batch), key=lambda i: -len(train[i].chat.tokens))
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
    # Data parallel: the whole batch's gradient and loss (one process: unchanged).
    [ce] = all_reduce_grads_(run.lora.parameters(), ce)
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
    init_from_env()
    run = start_run(mas, dataset, cfg, Path(out_dir), extra_metadata)
    resume_or_init(run, dataset, resume)
    bar = tqdm(
        total=cfg.epochs * run.steps_per_epoch,
        initial=run.epoch * run.steps_per_epoch + run.step_in_epoch,
        disable=not progress or not is_main(),
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
    barrier()  # every rank returns once rank 0 has written
    lora = run.lora.folded() if run.lora.gates else run.lora
    return TrainResult(lora, run.out, run.history, meta, run.skipped)
