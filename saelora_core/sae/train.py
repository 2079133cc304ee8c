"""Train a TopK SAE on any model's residual stream with sae_lens's own runner, and measure it.

``train_sae`` wraps ``LanguageModelSAETrainingRunner`` (``override_model`` = our loaded model,
``override_dataset`` = a local text corpus), then writes the inference SAE in sae_lens's disk
format (``cfg.json`` + ``sae_weights.safetensors``), optionally in bf16, and a ``metrics.json``
from :func:`evaluate_sae` on held-out text.

Quality metrics (on held-out text, BOS excluded):

- explained variance ``1 - Σ‖x - x̂‖² / Σ‖x - mean(x)‖²``;
- mean L0 (active latents per token) and the dead-latent fraction (never active on held-out);
- CE loss recovered ``(CE_zero - CE_sae) / (CE_zero - CE_clean)``, where ``CE_sae`` splices the SAE's
  reconstruction into the hook and ``CE_zero`` zero-ablates the hook point.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from sae_lens import SAE, HookedSAETransformer

from saelora_core.io.config import ConfigBase
from saelora_core.sae.evaluate import evaluate_sae
from saelora_core.sae.loading import quiet_sae_kwargs_hint

logger = logging.getLogger(__name__)


@dataclass
class SaeTrainConfig(ConfigBase):
    """How to train an SAE (all fields are saved next to the weights)."""

    preset: str = "gemma-3-270m"
    """Model preset (or TransformerLens model name) whose activations the SAE learns."""
    layer: int = 12
    """The SAE reads ``blocks.{layer}.hook_resid_post``."""
    d_sae: int = 4096
    """Number of latents."""
    k: int = 32
    """Active latents per token (TopK)."""
    training_tokens: int = 2_000_000
    context_size: int = 128
    train_batch_size_tokens: int = 1024
    store_batch_size_prompts: int = 16
    n_batches_in_buffer: int = 16
    lr: float = 4e-4
    lr_warm_up_steps: int = 50
    n_batches_for_norm_estimate: int = 30
    """Batches used to estimate the activation-norm scale (sae_lens's default, 1000, costs
    as much model time as the whole training run on a CPU)."""
    autocast_lm: bool = False
    """Run the language model in bfloat16 autocast while collecting activations (Gemma is a
    bf16-native model). Measured on the 2-core AVX512-BF16 dev machine through TransformerLens: no faster than fp32, so off by default. The SAE trains in fp32."""
    dead_feature_window: int = 100
    """Steps without firing after which a latent counts as dead and the TopK auxiliary loss
    works on reviving it. sae_lens's default (1000) exceeds a 2M-token CPU run (~980 steps), so
    the aux loss never engages: the shipped SAE (trained before this field existed) has ~95% of
    latents silent on held-out text."""
    n_checkpoints: int = 4
    """Checkpoints written during training, for resuming a killed run."""
    seed: int = 42
    save_dtype: Literal["float32", "bfloat16"] = "bfloat16"
    """dtype of the shipped weights (the loader restores float32)."""
    eval_tokens: int = 6_000
    """Held-out tokens for ``metrics.json``."""
    architecture: Literal["topk", "batchtopk", "matryoshka_batchtopk"] = "topk"
    """sae_lens architecture for :func:`train_sae_from_cache` (``batchtopk`` and its Matryoshka
    variant save as JumpReLU, Gemma Scope 2's format). :func:`train_sae` trains ``topk``."""
    lr_decay_steps: int = 0
    """Linear decay to ``lr / 10`` over the last this-many steps (0: constant after warm-up)."""
    checkpoint_every: int = 500
    """Steps between resumable checkpoints in :func:`train_sae_from_cache`."""
    matryoshka_widths: tuple[int, ...] = ()
    """Nested widths for ``matryoshka_batchtopk`` (the last must equal ``d_sae``)."""
    snapshot_every: int = 0
    """:func:`train_sae_from_cache` also keeps the inference SAE every this-many steps (0:
    never), under the checkpoint directory's ``snapshots/``, to measure the training curve."""
    b_dec_init: Literal["mean", "zeros"] = "mean"
    """:func:`train_sae_from_cache` starts the decoder bias at the activations' mean, estimated
    on the norm-estimate batches (``zeros``: sae_lens's own start). Gemma-3-270M's residual at
    layer 12 has one dimension whose mean (~12,000) is most of every token's norm (~14,000);
    with a zero bias that shared component dominates every latent's pre-activation, the same
    few latents win TopK on every token, and most never fire again (a pilot from zeros ended
    with 7,312 of 8,192 latents dead)."""

    def __post_init__(self) -> None:
        self.matryoshka_widths = tuple(self.matryoshka_widths)
        if self.architecture == "matryoshka_batchtopk" and (
            not self.matryoshka_widths or self.matryoshka_widths[-1] != self.d_sae
        ):
            raise ValueError("matryoshka_widths must be given and end with d_sae")
        if not 0 < self.k < self.d_sae:
            raise ValueError(f"k must be in (0, d_sae); got k={self.k}, d_sae={self.d_sae}")
        if self.training_tokens < self.train_batch_size_tokens:
            raise ValueError("training_tokens must be at least one batch")


def _runner_config(
    cfg: SaeTrainConfig, d_model: int, out_dir: Path, device: str, resume_from: str | None
):
    from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig, TopKTrainingSAEConfig

    return LanguageModelSAERunnerConfig(
        sae=TopKTrainingSAEConfig(
            d_in=d_model,
            d_sae=cfg.d_sae,
            k=cfg.k,
            device=device,
            normalize_activations="expected_average_only_in",
        ),
        model_name=cfg.preset,
        hook_name=f"blocks.{cfg.layer}.hook_resid_post",
        dataset_path="local-corpus",
        is_dataset_tokenized=False,
        streaming=False,
        context_size=cfg.context_size,
        training_tokens=cfg.training_tokens,
        train_batch_size_tokens=cfg.train_batch_size_tokens,
        store_batch_size_prompts=cfg.store_batch_size_prompts,
        n_batches_in_buffer=cfg.n_batches_in_buffer,
        lr=cfg.lr,
        n_batches_for_norm_estimate=cfg.n_batches_for_norm_estimate,
        autocast_lm=cfg.autocast_lm,
        dead_feature_window=cfg.dead_feature_window,
        lr_warm_up_steps=cfg.lr_warm_up_steps,
        device=device,
        seed=cfg.seed,
        exclude_special_tokens=True,
        output_path=str(out_dir),
        checkpoint_path=str(out_dir.parent / f".{out_dir.name}-checkpoints"),
        n_checkpoints=cfg.n_checkpoints,
        resume_from_checkpoint=resume_from,
        logger=LoggingConfig(log_to_wandb=False),
    )


def train_sae(
    model: HookedSAETransformer,
    corpus_train: str | Path,
    cfg: SaeTrainConfig,
    out_dir: str | Path,
    *,
    corpus_heldout: str | Path | None = None,
    resume_from: str | None = None,
    device: str = "cpu",
) -> Path:
    """Train with sae_lens's runner; write the SAE (+ ``train_config.json``, ``metrics.json``)."""
    from datasets import Dataset
    from sae_lens import LanguageModelSAETrainingRunner

    out = Path(out_dir)
    torch.manual_seed(cfg.seed)
    dataset = Dataset.from_json(str(corpus_train)).select_columns(["text"])
    runner_cfg = _runner_config(cfg, model.cfg.d_model, out, device, resume_from)
    runner = LanguageModelSAETrainingRunner(
        runner_cfg, override_dataset=dataset, override_model=model
    )
    runner.run()
    portable_runner_config(out)
    if cfg.save_dtype != "float32":
        recast_saved_weights(out, cfg.save_dtype)
    (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    if corpus_heldout is not None:
        with quiet_sae_kwargs_hint():  # `model` is already loaded without processing
            sae = SAE.load_from_disk(out, device=device).to(torch.float32)
        texts = [json.loads(line)["text"] for line in Path(corpus_heldout).read_text().splitlines()]
        m = evaluate_sae(
            model, sae, cfg.layer, texts, max_tokens=cfg.eval_tokens, context_size=cfg.context_size
        )
        (out / "metrics.json").write_text(json.dumps(asdict(m), indent=1))
    return out


def portable_runner_config(out_dir: str | Path) -> None:
    """Rewrite the ``runner_cfg.json`` sae_lens saves next to an SAE so that it holds no machine
    path: ``output_path`` becomes where the SAE now is (repository-relative) and
    ``checkpoint_path`` the checkpoint folder beside it, as sae_lens lays them out."""
    from saelora_core.io.atomic import atomic_write_json
    from saelora_core.io.paths import repo_relative

    out = Path(out_dir)
    path = out / "runner_cfg.json"
    if not path.exists():
        return
    rc = json.loads(path.read_text())
    old_out = Path(rc.get("output_path") or out)
    if rc.get("checkpoint_path"):
        ckpt = Path(rc["checkpoint_path"])
        beside = (
            ckpt.relative_to(old_out.parent) if ckpt.is_relative_to(old_out.parent) else ckpt.name
        )
        rc["checkpoint_path"] = repo_relative(out.parent / beside)
    rc["output_path"] = repo_relative(out)
    atomic_write_json(path, rc)


def finalize_checkpoint(
    checkpoint_dir: str | Path, cfg: SaeTrainConfig, out_dir: str | Path, d_in: int
) -> Path:
    """Turn a sae_lens training checkpoint into an inference SAE on disk, as the runner's end
    of training would: fold the activation-norm scaling factor into the weights, then save.

    sae_lens's default LR schedule is constant (after warm-up), so stopping at a checkpoint is
    the same as a run with that shorter token budget. ``saelora sae train --resume`` continues.
    """
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.activation_scaler import ActivationScaler

    ckpt, out = Path(checkpoint_dir), Path(out_dir)
    sae = TopKTrainingSAE(
        TopKTrainingSAEConfig(
            d_in=d_in, d_sae=cfg.d_sae, k=cfg.k, normalize_activations="expected_average_only_in"
        )
    )
    sae.load_weights_from_checkpoint(ckpt)
    scaler = ActivationScaler()
    scaler.load(ckpt / "activation_scaler.json")
    if scaler.scaling_factor is not None:
        sae.fold_activation_norm_scaling_factor(scaler.scaling_factor)
    sae.cfg.metadata.hook_name = f"blocks.{cfg.layer}.hook_resid_post"
    sae.cfg.metadata.model_name = cfg.preset
    sae.save_inference_model(str(out))
    if cfg.save_dtype != "float32":
        recast_saved_weights(out, cfg.save_dtype)
    return out


def recast_saved_weights(out: Path, dtype: str) -> None:
    """Rewrite ``out/sae_weights.safetensors`` in ``dtype`` (sae_lens restores float32 on load)."""
    from safetensors.torch import load_file, save_file

    wpath = out / "sae_weights.safetensors"
    sd = load_file(wpath)
    save_file({k: v.to(getattr(torch, dtype)) for k, v in sd.items()}, wpath)
