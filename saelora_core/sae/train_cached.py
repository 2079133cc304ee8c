"""Train an SAE from an activation cache with sae_lens's own trainer, resumably.

``SAETrainer`` (sae_lens) does the optimisation: Adam, warm-up and linear decay, the activation
norm scaling, the TopK auxiliary loss on dead latents, the BatchTopK threshold. This module
feeds it batches from :mod:`activation_cache` (or from any iterator of activation batches, the
same code path), checkpoints every ``cfg.checkpoint_every`` steps, and resumes from the latest
checkpoint: weights, optimiser, schedule, dead-latent counters and the position in the data.

BatchTopK SAEs save as JumpReLU SAEs, the format of Gemma Scope 2.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from saelora_core.sae.train import SaeTrainConfig, portable_runner_config, recast_saved_weights

logger = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"


def training_sae(cfg: SaeTrainConfig, d_in: int, device: str = "cpu"):
    """The sae_lens training SAE that ``cfg.architecture`` names."""
    from sae_lens import (
        BatchTopKTrainingSAE,
        BatchTopKTrainingSAEConfig,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )

    common = {
        "d_in": d_in,
        "d_sae": cfg.d_sae,
        "device": device,
        "normalize_activations": "expected_average_only_in",
    }
    if cfg.architecture == "topk":
        return TopKTrainingSAE(TopKTrainingSAEConfig(k=cfg.k, **common))
    if cfg.architecture == "batchtopk":
        return BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(k=cfg.k, **common))
    from sae_lens import MatryoshkaBatchTopKTrainingSAE, MatryoshkaBatchTopKTrainingSAEConfig

    return MatryoshkaBatchTopKTrainingSAE(
        MatryoshkaBatchTopKTrainingSAEConfig(
            k=cfg.k, matryoshka_widths=list(cfg.matryoshka_widths), **common
        )
    )


def trainer_config(cfg: SaeTrainConfig, ckpt_dir: Path, device: str = "cpu"):
    """sae_lens's trainer settings for ``cfg``: bf16 autocast where the hardware multiplies
    bf16 natively (a GPU, or a CPU with AMX / AVX512-BF16); the weights stay float32."""
    from sae_lens import LoggingConfig
    from sae_lens.config import SAETrainerConfig

    from saelora_core.adapter.forward import cpu_has_native_bf16

    steps = cfg.training_tokens // cfg.train_batch_size_tokens
    return SAETrainerConfig(
        total_training_samples=steps * cfg.train_batch_size_tokens,
        train_batch_size_samples=cfg.train_batch_size_tokens,
        lr=cfg.lr,
        lr_end=cfg.lr / 10,
        lr_scheduler_name="constant",
        lr_warm_up_steps=cfg.lr_warm_up_steps,
        lr_decay_steps=cfg.lr_decay_steps,
        device=device,
        autocast=device.startswith("cuda") or cpu_has_native_bf16(),
        dead_feature_window=cfg.dead_feature_window,
        feature_sampling_window=max(cfg.dead_feature_window, 100),
        n_checkpoints=0,
        checkpoint_path=str(ckpt_dir),
        logger=LoggingConfig(log_to_wandb=False),
        n_batches_for_norm_estimate=cfg.n_batches_for_norm_estimate,
    )


@torch.no_grad()
def start_from_data(trainer, batches: Iterator[torch.Tensor], cfg: SaeTrainConfig) -> None:
    """Set the trainer's activation scale (sae_lens's ``expected_average_only_in`` rule,
    sqrt(d_in) / mean norm) from the first ``cfg.n_batches_for_norm_estimate`` batches, and,
    with ``cfg.b_dec_init == "mean"``, the decoder bias to their mean in the scaled space, so
    the encoder sees centred activations from the first step. ``batches`` is a separate pass
    over the start of the data: the training batches are not consumed."""
    total = torch.zeros(trainer.sae.cfg.d_in, dtype=torch.float64)
    norm_sum, count = 0.0, 0
    for _ in range(cfg.n_batches_for_norm_estimate):
        x = next(batches).double()
        total += x.sum(0)
        norm_sum += x.norm(dim=-1).sum().item()
        count += x.shape[0]
    scale = trainer.sae.cfg.d_in**0.5 / (norm_sum / count)
    trainer.activation_scaler.scaling_factor = scale
    if cfg.b_dec_init == "mean":
        b = trainer.sae.b_dec
        b.copy_((total / count * scale).to(b.dtype))


@torch.no_grad()
def save_snapshot(trainer, out: Path, metadata: dict | None = None) -> None:
    """The inference SAE as it stands mid-training (activation scale folded in, saved as the
    final one is), written atomically; the training SAE itself is untouched."""
    import copy

    snap = copy.deepcopy(trainer.sae)
    if trainer.activation_scaler.scaling_factor is not None:
        snap.fold_activation_norm_scaling_factor(trainer.activation_scaler.scaling_factor)
    for key, value in (metadata or {}).items():
        setattr(snap.cfg.metadata, key, value)
    tmp = out.with_name(f".tmp_{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    snap.save_inference_model(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def skip_window_reset_once(trainer) -> None:
    """A checkpoint taken on a step that ends a feature-sampling window holds the stats already
    reset (the trainer resets them before it asks for the batch that triggers the save);
    resuming, sae_lens's ``fit`` would reset the empty window again and divide 0 by 0 in its
    sparsity log. Skip that one repeated reset, so the resumed run equals the unbroken one."""
    window = trainer.cfg.feature_sampling_window
    if trainer.n_training_steps % window or trainer.n_frac_active_samples:
        return
    original = trainer.maybe_reset_sparsity

    def once() -> dict:
        trainer.maybe_reset_sparsity = original
        return {}

    trainer.maybe_reset_sparsity = once


def checkpoint_dir(out_dir: str | Path) -> Path:
    """Where a run writing ``out_dir`` keeps its checkpoints: a hidden sibling."""
    out = Path(out_dir)
    return out.parent / f".{out.name}-checkpoints"


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    steps = sorted(
        (int(p.name.split("_")[1]), p)
        for p in ckpt_dir.glob("step_*")
        if p.is_dir() and (p / "done").exists()
    )
    return steps[-1][1] if steps else None


class _Periodic:
    """Batches for the trainer; every ``every`` batches it first checkpoints the trainer with
    the count of batches consumed so far (the resume point in the data)."""

    def __init__(
        self,
        batches: Iterator[torch.Tensor],
        every: int,
        save: Callable[[int], None],
        consumed: int = 0,
    ):
        self.batches, self.every, self.save = batches, every, save
        self.consumed = consumed

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        if self.consumed and self.consumed % self.every == 0:
            self.save(self.consumed)
        batch = next(self.batches)
        self.consumed += 1
        return batch


def train_sae_from_batches(
    make_batches: Callable[[int], Iterator[torch.Tensor]],
    d_in: int,
    cfg: SaeTrainConfig,
    out_dir: str | Path,
    *,
    metadata: dict | None = None,
    device: str = "cpu",
) -> Path:
    """Train to ``cfg.training_tokens`` on ``make_batches(skip)`` (an iterator of
    ``(train_batch_size_tokens, d_in)`` batches with the first ``skip`` batches dropped), then
    write the inference SAE to ``out_dir`` (``cfg.json``, ``sae_weights.safetensors``,
    ``train_config.json``). Re-running on the same ``out_dir`` resumes."""
    from sae_lens.training.sae_trainer import SAETrainer

    out = Path(out_dir)
    ckpt_dir = checkpoint_dir(out)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = ckpt_dir / "train_config.json"
    if cfg_path.exists() and json.loads(cfg_path.read_text()) != json.loads(
        json.dumps(cfg.to_dict())
    ):
        raise ValueError(
            f"{ckpt_dir} holds checkpoints of a run with other settings; "
            "delete it or train into another directory"
        )
    cfg_path.write_text(json.dumps(cfg.to_dict(), indent=1))
    torch.manual_seed(cfg.seed)
    sae = training_sae(cfg, d_in, device)
    tcfg = trainer_config(cfg, ckpt_dir, device)
    holder: dict = {}

    def save(consumed: int) -> None:
        trainer = holder["trainer"]
        if trainer.activation_scaler.scaling_factor is None:
            return  # still estimating the activation norm
        path = ckpt_dir / f"step_{trainer.n_training_steps:07d}"
        if path.exists():
            shutil.rmtree(path)
        trainer.save_checkpoint(checkpoint_name=path.name)
        (path / "done").write_text(json.dumps({"batches_consumed": consumed}))
        step = trainer.n_training_steps
        if cfg.snapshot_every and step % cfg.snapshot_every == 0:
            save_snapshot(trainer, ckpt_dir / "snapshots" / path.name, metadata)
        for old in ckpt_dir.glob("step_*"):
            if old != path:
                shutil.rmtree(old)

    resume = latest_checkpoint(ckpt_dir)
    skip = 0
    if resume is not None:
        sae.load_weights_from_checkpoint(resume)
    trainer = SAETrainer(
        cfg=tcfg,
        sae=sae,
        data_provider=iter(()),  # replaced below, once the skip is known
    )
    holder["trainer"] = trainer
    if resume is not None:
        trainer.load_trainer_state(resume)
        skip_window_reset_once(trainer)
        skip = json.loads((resume / "done").read_text())["batches_consumed"]
        logger.info("resuming from %s (step %d)", resume, trainer.n_training_steps)
    else:
        start_from_data(trainer, make_batches(0), cfg)
    trainer.data_provider = _Periodic(make_batches(skip), cfg.checkpoint_every, save, skip)
    trainer.fit()
    out.mkdir(parents=True, exist_ok=True)
    meta = trainer.sae.cfg.metadata
    for key, value in (metadata or {}).items():
        setattr(meta, key, value)
    trainer.sae.save_inference_model(str(out))
    if cfg.save_dtype != "float32":
        recast_saved_weights(out, cfg.save_dtype)
    (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    portable_runner_config(out)
    return out


def train_sae_from_cache(
    cache_dir: str | Path,
    cfg: SaeTrainConfig,
    out_dir: str | Path,
    *,
    exclude_ids: set[int],
    shuffle: bool = True,
    device: str = "cpu",
) -> Path:
    """:func:`train_sae_from_batches` on a cache from :func:`activation_cache.cache_activations`;
    the cache is read as many times over as ``cfg.training_tokens`` needs (the count of
    passes goes in ``train_config.json``'s neighbour ``cache_passes.json``)."""
    from saelora_core.sae import cached_batches
    from saelora_core.sae.activation_cache import read_settings, shard_dirs, shard_rows

    settings = read_settings(cache_dir)
    # The shards this run reads are fixed at its start, so a resume sees the same data even
    # if the cache has grown since.
    extent_path = checkpoint_dir(out_dir) / "cache_extent.json"
    if extent_path.exists():
        n_shards = json.loads(extent_path.read_text())["shards"]
    else:
        n_shards = len(shard_dirs(cache_dir))
        extent_path.parent.mkdir(parents=True, exist_ok=True)
        extent_path.write_text(json.dumps({"shards": n_shards}))
    shards = shard_dirs(cache_dir)[:n_shards]
    if len(shards) < n_shards:
        raise ValueError(f"{cache_dir} lost shards since this run started ({n_shards} expected)")
    cached = sum(shard_rows(d) for d in shards) * settings.context_size
    epochs = max(1, -(-cfg.training_tokens // max(1, cached)))

    def make(skip: int) -> Iterator[torch.Tensor]:
        it = cached_batches.cached_batches(
            cache_dir,
            cfg.train_batch_size_tokens,
            exclude_ids=exclude_ids,
            seed=cfg.seed,
            shuffle=shuffle,
            epochs=epochs + 1,
            n_shards=n_shards,
        )
        for _ in range(skip):
            next(it)
        return it

    out = train_sae_from_batches(
        make,
        settings.d_in,
        cfg,
        out_dir,
        metadata={
            "hook_name": settings.hook_name,
            "model_name": settings.model_name,
            "context_size": settings.context_size,
            "prepend_bos": True,
        },
        device=device,
    )
    (Path(out) / "cache_passes.json").write_text(
        json.dumps(
            {
                "cached_tokens": cached,
                "cache_shards": n_shards,
                "training_tokens": cfg.training_tokens,
                "passes": round(cfg.training_tokens / max(1, cached), 3),
            },
            indent=1,
        )
    )
    return out
