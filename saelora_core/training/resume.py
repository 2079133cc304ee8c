"""Checkpoints: the adapter, its metadata and ``train_state.pt`` (optimizer, position, history)
written atomically (:func:`save_checkpoint`), and whether a run in an ``out_dir`` can be resumed
with a given config and SAE."""

from __future__ import annotations

from pathlib import Path

import torch

from saelora_core.adapter.saving import build_metadata, save_lora
from saelora_core.io.atomic import atomic_torch_save
from saelora_core.models.presets import ModelAndSae
from saelora_core.training.config import LoraTrainingConfig
from saelora_core.training.distributed import is_main
from saelora_core.training.run import Run


def state_path(out: Path) -> Path:
    return out / "train_state.pt"


def comparable(config: dict) -> dict:
    """A config without the fields that change speed, not results (``micro_batch``)."""
    return {k: v for k, v in config.items() if k != "micro_batch"}


def state_mismatch(state: dict, cfg: LoraTrainingConfig, mas: ModelAndSae, out: Path) -> str | None:
    """Why the checkpoint ``state`` cannot be resumed with ``cfg`` on ``mas`` (None: it can)."""
    if comparable(LoraTrainingConfig.upgrade(state["config"])) != comparable(cfg.to_dict()):
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
    path = state_path(Path(out_dir))
    if not path.exists():
        return None
    return state_mismatch(torch.load(path, weights_only=True), cfg, mas, path.parent) is None


def load_state(out: Path, cfg: LoraTrainingConfig, mas: ModelAndSae, device) -> dict:
    """The training state in ``out``, refused (ValueError) when it holds another config or SAE."""
    state = torch.load(state_path(out), weights_only=True, map_location=device)
    if (why := state_mismatch(state, cfg, mas, out)) is not None:
        raise ValueError(why)
    return state


def save_checkpoint(run: Run, done: bool) -> dict:
    """Write the adapter (folded when gated), its metadata and the training state; return the
    metadata. Data parallel: rank 0 alone writes (every rank returns the metadata)."""
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
    if not is_main():
        return meta
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
