"""Training loop: frozen model and SAE, only the adapter's a, b, s learn.

    loss = CE(assistant tokens only) + l1_weight · penalty(Â, B̂)

With ``distill_from`` (a teacher adapter) the CE is replaced by KL(teacher ‖ student), the
divergence of the next-token distributions at the same positions: compressing a dense adapter
into a sparse one by matching what it does, not the dataset's targets.

``micro_batch`` examples run together, right-padded, in one forward and backward pass, and
gradients accumulate over ``batch_size`` examples per step; each example's loss is the mean over
its own tokens, so the step's loss does not depend on ``micro_batch`` (``micro_batch=1`` is the
one-at-a-time path; the two agree to float rounding, tested). The forward pass and its losses
live in ``forward.py``; ``bench/train_throughput.py`` measures the paths side by side.

Speed (``precompute=True``): the residual at the hook depends only on the frozen blocks below
it, so it is computed once per example and reused every epoch; the forward then starts at block
``L+1`` and logits are computed only at positions that predict an assistant token. This is exact
(checked against the plain path in the tests).

Checkpoints: ``params.pt`` + ``metadata.json`` + ``train_state.pt`` (optimizer, position,
history) are written atomically at the end of each epoch and every ``checkpoint_every`` steps;
``train_lora`` on the same ``out_dir`` resumes where the last checkpoint left off.
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

from saelora_core.checkpoint import build_metadata, load_lora, save_lora
from saelora_core.config import LoraTrainingConfig
from saelora_core.forward import (
    Example,
    batch_losses,
    chunks,
    device_of,
    evaluate_ce,
    hook_resids,
    make_batch,
    tokenize_rows,
)
from saelora_core.io.atomic import atomic_torch_save
from saelora_core.lora import SaeLora, penalty, project_, split_rank
from saelora_core.models.presets import ModelAndSae

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    lora: SaeLora
    out_dir: Path
    history: list[dict[str, Any]]
    metadata: dict[str, Any]
    skipped_rows: list[str] = field(default_factory=list)


def _rows(dataset, split: str) -> list[dict] | None:
    if hasattr(dataset, "keys") and callable(dataset.keys) and split in dataset:  # DatasetDict
        return list(dataset[split])
    if split == "train" and not (hasattr(dataset, "keys") and callable(dataset.keys)):
        return list(dataset)
    return None


def split_dataset(
    mas: ModelAndSae, dataset, cfg: LoraTrainingConfig
) -> tuple[list[Example], list[Example], list[str]]:
    train_rows = _rows(dataset, "train")
    if not train_rows:
        raise ValueError(
            "the training dataset is empty: build one with `saelora dataset make` "
            "or pass rows with 'prompt' and 'response'"
        )
    train, skipped = tokenize_rows(mas, train_rows, cfg.max_len, cfg.response_tokens or None)
    eval_rows = _rows(dataset, "eval")
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


def _state_path(out: Path) -> Path:
    return out / "train_state.pt"


def _comparable(config: dict) -> dict:
    """A config without the fields that change speed, not results (``micro_batch``)."""
    return {k: v for k, v in config.items() if k != "micro_batch"}


def _state_mismatch(
    state: dict, cfg: LoraTrainingConfig, mas: ModelAndSae, out: Path
) -> str | None:
    """Why the checkpoint ``state`` cannot be resumed with ``cfg`` on ``mas`` (None: it can)."""
    if _comparable(state["config"]) != _comparable(cfg.to_dict()):
        return (
            f"{out} holds a run with a different config; use another out_dir or "
            "resume=False to start over"
        )
    want = mas.sae_identity.get("hash")
    if state.get("sae_hash", want) != want:
        return (
            f"{out} holds a run trained on another SAE (hash {state.get('sae_hash')}, loaded "
            f"{want}); use another out_dir or resume=False"
        )
    return None


def resumable(out_dir: str | Path, cfg: LoraTrainingConfig, mas: ModelAndSae) -> bool | None:
    """None: no checkpoint in ``out_dir``; True: ``train_lora`` would resume it; False: it holds
    a run with another config or SAE (``train_lora`` would refuse it)."""
    path = _state_path(Path(out_dir))
    if not path.exists():
        return None
    return _state_mismatch(torch.load(path, weights_only=True), cfg, mas, path.parent) is None


def topk_at(cfg: LoraTrainingConfig, epoch: int) -> int:
    """The top-k of ``epoch`` (0-based): ``cfg.topk_schedule[epoch]``, then ``cfg.topk``."""
    return cfg.topk_schedule[epoch] if epoch < len(cfg.topk_schedule) else cfg.topk


@torch.no_grad()
def _warm_start_(lora: SaeLora, cfg: LoraTrainingConfig, mas: ModelAndSae) -> None:
    """Copy the adapter in ``cfg.init_from`` into ``lora`` (projected for topk/proximal). A
    lower-rank source is split into ``lora.rank`` components first (:func:`lora.split_rank`)."""
    src = load_lora(cfg.init_from, sae_identity=mas.sae_identity).lora  # type: ignore[arg-type]
    if lora.rank % src.rank:
        raise ValueError(
            f"init_from={cfg.init_from} has rank {src.rank}, which does not divide the config's "
            f"rank {lora.rank}"
        )
    if src.rank != lora.rank:
        src = split_rank(src, lora.rank)
    lora.a.copy_(src.a)
    lora.b.copy_(src.b)
    lora.s.copy_(src.s)
    project_(lora, cfg.sparsity, tau=0.0, k=topk_at(cfg, 0))


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
    out = Path(out_dir)
    layer = cfg.layer if cfg.layer is not None else mas.layer
    if layer != mas.layer:
        raise ValueError(f"config layer {layer} differs from the loaded SAE's layer {mas.layer}")
    train, ev, skipped = split_dataset(mas, dataset, cfg)
    for s in skipped:
        logger.warning("skipped %s", s)
    if cfg.precompute:  # every hook residual once, in batches
        hook_resids(mas, train + ev, cfg.micro_batch)

    torch.manual_seed(cfg.seed)
    lora = SaeLora(
        mas.sae.cfg.d_sae,
        cfg.rank,
        init="random" if cfg.init in ("gradient_svd", "contrastive") else cfg.init,
        generator=torch.Generator().manual_seed(cfg.seed),
        gates=cfg.sparsity == "hard_concrete",
    ).to(device_of(mas))
    groups = [
        {"params": [lora.a, lora.b], "lr": cfg.lr},
        {"params": [lora.s], "lr": cfg.s_lr or cfg.lr},
    ]
    if lora.gates:
        groups.append({"params": [lora.log_alpha_a, lora.log_alpha_b], "lr": cfg.gate_lr})
    opt = torch.optim.Adam(groups)
    teacher = (
        # Any rank: only the teacher's output distribution is used.
        load_lora(cfg.distill_from, sae_identity=mas.sae_identity)
        .lora.requires_grad_(False)
        .to(device_of(mas))
        if cfg.distill_from
        else None
    )
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    history: list[dict[str, Any]] = []
    epoch, step_in_epoch, created, ce_sum = 0, 0, None, float("nan")

    if resume and _state_path(out).exists():
        state = torch.load(_state_path(out), weights_only=True, map_location=device_of(mas))
        if (why := _state_mismatch(state, cfg, mas, out)) is not None:
            raise ValueError(why)
        lora.load_state_dict(state["lora"])
        opt.load_state_dict(state["optimizer"])
        epoch, step_in_epoch = state["epoch"], state["step_in_epoch"]
        history, created = state["history"], state.get("created")
        ce_sum = state.get("last_train_ce", float("nan"))
        if "rng" in state:  # hard-concrete gate samples continue exactly where they left off
            torch.set_rng_state(state["rng"].cpu())
        logger.info("resuming %s at epoch %d step %d", out, epoch, step_in_epoch)
    elif not history:
        if cfg.init_from:
            _warm_start_(lora, cfg, mas)
        elif cfg.init in ("gradient_svd", "contrastive"):
            from saelora_core.lora_init import data_init_

            info = data_init_(mas, lora, cfg, train, _rows(dataset, "train") or [])
            logger.info("%s init: %s", cfg.init, info)
        history.append(
            {
                "epoch": 0,
                "step": 0,
                "eval_ce": evaluate_ce(
                    mas, lora, ev, cfg.mode, cfg.precompute, cfg.logits_dtype, cfg.micro_batch
                )
                if ev
                else None,
            }
        )

    def checkpoint(done: bool) -> dict:
        plain = lora.folded() if lora.gates else lora
        meta = build_metadata(
            plain,
            config=cfg.to_dict(),
            preset=mas.preset,
            sae_identity=mas.sae_identity,
            layer=layer,
            mode=cfg.mode,
            history=history,
            created=created,
            extra={
                "n_train": len(train),
                "n_eval": len(ev),
                "complete": done,
                "skipped_rows": skipped[:50],
                **(extra_metadata or {}),
            },
        )
        save_lora(plain, out, meta)
        atomic_torch_save(
            {
                "config": cfg.to_dict(),
                "lora": lora.state_dict(),
                "optimizer": opt.state_dict(),
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "history": history,
                "last_train_ce": ce_sum,
                "created": meta["created"],
                "rng": torch.get_rng_state(),
                "sae_hash": mas.sae_identity.get("hash"),
            },
            _state_path(out),
        )
        return meta

    # freeze_support: the support at the start (a resumed run has kept exactly it).
    support = (lora.a != 0, lora.b != 0) if cfg.freeze_support else None
    bar = tqdm(
        total=cfg.epochs * steps_per_epoch,
        initial=epoch * steps_per_epoch + step_in_epoch,
        disable=not progress,
        desc=f"train {cfg.name}",
    )
    meta: dict = {}
    try:
        while epoch < cfg.epochs:
            order = torch.randperm(
                len(train), generator=torch.Generator().manual_seed(cfg.seed + epoch)
            ).tolist()
            while step_in_epoch < steps_per_epoch:
                batch = order[step_in_epoch * cfg.batch_size : (step_in_epoch + 1) * cfg.batch_size]
                opt.zero_grad(set_to_none=True)
                ce = torch.zeros((), device=lora.s.device)
                # Longest first, so a micro-batch pads little; the step's loss is the same sum.
                ordered = sorted(batch, key=lambda i: -len(train[i].chat.tokens))
                for part in chunks(ordered, cfg.micro_batch):
                    losses = batch_losses(
                        mas,
                        lora,
                        make_batch(mas, [train[i] for i in part]),
                        cfg.mode,
                        cfg.precompute,
                        cfg.logits_dtype,
                        teacher,
                    )
                    loss = losses.sum() / len(batch)
                    loss.backward()
                    ce = ce + loss.detach()
                pen = penalty(lora, cfg.sparsity)
                if pen.requires_grad and cfg.l1_weight > 0:
                    (cfg.l1_weight * pen).backward()
                opt.step()
                project_(lora, cfg.sparsity, tau=cfg.lr * cfg.l1_weight, k=topk_at(cfg, epoch))
                if support is not None:
                    with torch.no_grad():
                        lora.a.mul_(support[0])
                        lora.b.mul_(support[1])
                step_in_epoch += 1
                # The step's one device-to-host transfer: what the progress bar and log show.
                logged = torch.cat(
                    [ce[None], pen.detach().reshape(1).to(ce), lora.s.detach().to(ce)]
                ).tolist()
                ce_sum, pen_v, s_v = logged[0], logged[1], logged[2:]
                info = {
                    "epoch": epoch + step_in_epoch / steps_per_epoch,
                    "step": epoch * steps_per_epoch + step_in_epoch,
                    "train_ce": ce_sum,
                    "penalty": pen_v,
                    **({"expected_l0": lora.expected_l0().item()} if lora.gates else {}),
                    "s": s_v,
                }
                bar.update(1)
                bar.set_postfix(ce=f"{ce_sum:.3f}", pen=f"{pen_v:.3g}")
                if cfg.checkpoint_every and info["step"] % cfg.checkpoint_every == 0:
                    checkpoint(done=False)
                if on_step is not None:
                    on_step(info)
            epoch, step_in_epoch = epoch + 1, 0
            history.append(
                {
                    "epoch": epoch,
                    "step": epoch * steps_per_epoch,
                    "train_ce_last": ce_sum,
                    "eval_ce": evaluate_ce(
                        mas, lora, ev, cfg.mode, cfg.precompute, cfg.logits_dtype, cfg.micro_batch
                    )
                    if ev
                    else None,
                    "l0_read": lora.l0()[0],
                    "l0_write": lora.l0()[1],
                    "s": lora.s.detach().tolist(),
                }
            )
            meta = checkpoint(done=epoch == cfg.epochs)
    finally:
        bar.close()
    if not meta:  # resumed a finished run
        meta = checkpoint(done=True)
    return TrainResult(lora.folded() if lora.gates else lora, out, history, meta, skipped)
