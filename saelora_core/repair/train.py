"""The repair training loop: one pass over token windows, checkpoints, resume, a curve.

Each step: the clean model's next-token distribution (no splice, LoRA off, no autograd), then
the repaired splice's logits, the objective (``objective.py``), AdamW with gradient clipping,
the method's constraints (``methods.after_backward`` / ``after_step``); the step's loss is in
``step.py``. Every
``ceil(steps / curve_points)`` steps the held-out CE of a fixed set of curve windows is
measured (fp32), giving the fraction of the gap closed against tokens seen.

Data parallel: under ``torchrun`` each rank takes its share of every batch of windows and the
gradients (and the KL+MSE weight ``α``) are those of the whole batch
(``training/distributed.py``, ``step.shared_step_loss``); only rank 0 reads and writes files.
Dropout (``lora_dropout``) draws different masks per rank.

``out_dir/train_state.pt`` (atomic, every ``checkpoint_every`` steps) holds the trained tensors,
the optimizer, the schedule and the history; a rerun with the same config resumes from it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE
from torch import Tensor, nn
from tqdm.auto import tqdm

from saelora_core.adapter.saving import VERSION, CheckpointError
from saelora_core.io.atomic import atomic_torch_save
from saelora_core.repair.config import RepairConfig
from saelora_core.repair.evaluate import Baseline, baseline
from saelora_core.repair.methods import (
    RepairSetup,
    after_backward,
    after_step,
    build_repair,
    init_latent_adapter_,
    load_trainable_state,
    save_result,
    trainable_state,
)
from saelora_core.repair.objective import RepairLoss
from saelora_core.repair.step import curve_ce, shared_step_loss, step_loss
from saelora_core.training.distributed import (
    all_reduce_grads_,
    barrier,
    broadcast_object,
    broadcast_params_,
    init_from_env,
    is_main,
    world_size,
)

logger = logging.getLogger(__name__)


@dataclass
class RepairResult:
    setup: RepairSetup
    history: list[dict[str, Any]]
    curve: list[dict[str, Any]]
    artifact: Path
    record: dict[str, Any] = field(default_factory=dict)


def read_state(path: Path, cfg: RepairConfig) -> dict[str, Any]:
    """A run's checkpoint, refused with the reason when it is unreadable or has another config."""
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path} is unreadable ({e}); delete it to start over") from e
    want = cfg.to_dict()
    if st.get("config") != want:
        diff = sorted(k for k in want if st.get("config", {}).get(k) != want[k])
        raise CheckpointError(
            f"{path.parent} holds a run with another config (differs in {diff}); give another "
            "output directory (--out) or start over (--no-resume / resume=False)"
        )
    return st


def read_state_everywhere(path: Path, cfg: RepairConfig, resume: bool) -> dict[str, Any] | None:
    """Rank 0 reads the checkpoint (if any) and hands it, or its refusal, to every rank."""
    st: Any = None
    if resume and is_main() and path.exists():
        try:
            st = read_state(path, cfg)
        except CheckpointError as e:
            st = e
    st = broadcast_object(st)
    if isinstance(st, CheckpointError):
        raise st
    return st


def _lr_lambda(cfg: RepairConfig):
    steps, warm = max(cfg.steps, 1), cfg.warmup_steps
    linear = cfg.effective_schedule == "linear"

    def factor(i: int) -> float:
        w = min(1.0, (i + 1) / warm) if warm > 0 else 1.0
        return w * (max(0.0, 1 - i / steps) if linear else 1.0)

    return factor


def train_repair(
    hf: nn.Module,
    sae: SAE,
    layer: int,
    cfg: RepairConfig,
    *,
    train_windows: Tensor,
    curve_windows: Tensor,
    out_dir: str | Path,
    init_windows: Tensor | None = None,
    reference_sae: SAE | None = None,
    record: dict[str, Any] | None = None,
    resume: bool = True,
    progress: bool = True,
) -> RepairResult:
    """Train ``cfg.method`` on ``train_windows`` and save its artifact under ``out_dir``.

    ``init_windows`` (default: the first ``cfg.init_tokens`` of ``train_windows``) feed the
    latent adapter's gradient-SVD init. ``reference_sae`` (default ``sae``) defines the gap on the curve: for a combination that
    starts from a finetuned SAE it is the preset's original SAE. ``record`` is merged into
    ``repair.json`` (preset, SAE identity, ...).
    """
    init_from_env()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_steps = cfg.steps
    if cfg.batch_size < world_size():
        raise ValueError(
            f"batch_size {cfg.batch_size} is smaller than the {world_size()} ranks: each rank "
            "needs at least one window per step; raise batch_size or run fewer processes"
        )
    need = n_steps * cfg.batch_size
    if len(train_windows) < need:
        raise ValueError(
            f"{len(train_windows)} train windows hold fewer than the budget's {need} "
            f"({cfg.train_tokens} tokens at context {cfg.context_size}); lower train_tokens "
            "or add text to the corpus"
        )
    if train_windows.shape[1] != cfg.context_size:
        raise ValueError("train windows must be cfg.context_size tokens long")
    torch.manual_seed(cfg.seed)
    state_path = out / "train_state.pt"
    st = read_state_everywhere(state_path, cfg, resume)
    # Before build_repair: a model LoRA is injected into ``hf`` in place.
    ref = (
        Baseline(**st["curve_baseline"])
        if st is not None
        else baseline(hf, reference_sae or sae, layer, curve_windows)
    )
    setup = build_repair(hf, sae, layer, cfg)
    opt = torch.optim.AdamW(setup.param_groups, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    start, history, curve, extra = 0, [], [], {}
    if st is not None:
        load_trainable_state(setup, st["trainable"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        start, history, curve, extra = st["step"], st["history"], st["curve"], st["extra"]
        torch.set_rng_state(st["rng"])
        logger.info("resuming %s at step %d of %d", out, start, n_steps)
    assert ref is not None
    if start == 0 and not history and cfg.method == "latent_adapter":
        if init_windows is None:
            init_windows = train_windows[: max(1, cfg.init_tokens // cfg.context_size)]
        extra = init_latent_adapter_(
            setup, init_windows, cfg, lambda b: step_loss(setup, b, cfg).loss
        )
    broadcast_params_(p for g in setup.param_groups for p in g["params"])
    ce_clean = sum(ref.ce_clean) / len(ref.ce_clean)
    ce_before = sum(ref.ce_before) / len(ref.ce_before)

    def curve_point(step: int) -> None:
        ce = curve_ce(setup, curve_windows)
        gap = (ce_before - ce) / (ce_before - ce_clean) if ce_before != ce_clean else float("nan")
        curve.append(
            {
                "step": step,
                "tokens": step * cfg.batch_size * cfg.context_size,
                "ce": ce,
                "gap_closed": gap,
            }
        )

    def save_state(step: int) -> None:
        if not is_main():
            return
        atomic_torch_save(
            {
                "config": cfg.to_dict(),
                "trainable": trainable_state(setup),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "step": step,
                "history": history,
                "curve": curve,
                "curve_baseline": ref.__dict__,
                "extra": extra,
                "rng": torch.get_rng_state(),
                "version": VERSION,
            },
            state_path,
        )

    if not curve:
        curve_point(0)
    every = max(1, math.ceil(n_steps / max(cfg.curve_points, 1)))
    bar = tqdm(
        total=n_steps,
        initial=start,
        desc=f"repair {cfg.method}",
        disable=not progress or not is_main(),
        unit="step",
    )
    t0 = time.perf_counter()
    lm = setup.spliced.lm
    for step in range(start, n_steps):
        batch = train_windows[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        lm.train(cfg.method == "model_lora")
        for m in setup.modules.values():
            m.train()
        lr_now = sched.get_last_lr()[0]
        res = shared_step_loss(setup, batch, cfg)
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        params = [p for g in setup.param_groups for p in g["params"]]
        # Data parallel: the whole batch's gradients and logged values (one process: as is).
        logged = all_reduce_grads_(
            params, res.loss, res.kl, *([res.mse] if res.mse is not None else [])
        )
        res = RepairLoss(logged[0], logged[1], logged[2] if len(logged) > 2 else None, res.alpha)
        after_backward(setup)
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        after_step(setup, cfg)
        lm.eval()
        for m in setup.modules.values():
            m.eval()
        row = {
            "step": step + 1,
            "tokens": (step + 1) * cfg.batch_size * cfg.context_size,
            "loss": res.loss.item(),
            "kl": res.kl.item(),
            "lr": lr_now,
        }
        if res.mse is not None:
            row["mse"] = res.mse.item()
        history.append(row)
        bar.update(1)
        bar.set_postfix(kl=f"{row['kl']:.3f}")
        done = step + 1 == n_steps
        if (step + 1) % every == 0 or done:
            curve_point(step + 1)
        if (step + 1) % cfg.checkpoint_every == 0 or done:
            save_state(step + 1)
    bar.close()
    elapsed = time.perf_counter() - t0
    trained = n_steps - start
    rec = {
        **(record or {}),
        "config": cfg.to_dict(),
        "method": cfg.method,
        "train_tokens_seen": n_steps * cfg.batch_size * cfg.context_size,
        "tokens_per_s_this_run": (trained * cfg.batch_size * cfg.context_size / elapsed)
        if trained
        else None,
        "curve": curve,
        "history": history,
        **extra,
        "version": VERSION,
    }
    if cfg.method == "latent_adapter":
        latent = setup.modules["latent"]
        rec["latents"] = distinct_latents(latent)  # type: ignore[arg-type]
    artifact = save_result(setup, out, rec) if is_main() else None
    artifact = Path(broadcast_object(str(artifact)))
    barrier()
    return RepairResult(setup, history, curve, artifact, rec)


def distinct_latents(lora) -> dict[str, int]:
    """Distinct latents the adapter reads and writes, over all its components."""
    read = (lora.a != 0).any(1)
    write = (lora.b != 0).any(0)
    return {"read": int(read.sum()), "write": int(write.sum()), "total": int((read | write).sum())}
