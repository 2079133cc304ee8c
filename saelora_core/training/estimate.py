"""How long ``train_lora`` will take, measured before it starts.

The estimate times the pieces of a run on one micro-batch of the real training rows, on this
machine, with the config's speed settings, and multiplies them out:

    seconds ≈ precompute · (n_train + n_eval)            (hook residuals, once; precompute only)
            + init                                        (contrastive / gradient_svd)
            + epochs · (step · n_train + forward · n_eval) + forward · n_eval   (training, evals)

where ``precompute``, ``step`` (forward + backward) and ``forward`` (no grad) are seconds per
example. It is a rough figure (the micro-batch may be shorter or longer than the average row,
and other processes on the machine change it), good to tell a 1-minute run from a 25-minute one.
The per-example timings are kept per model, dataset and speed settings, so changing the learning
rate or the epochs re-uses them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from saelora_core.adapter.batch import device_of, make_batch
from saelora_core.adapter.forward import batch_losses, hook_resids
from saelora_core.adapter.sae_lora import SaeLora
from saelora_core.models.presets import ModelAndSae
from saelora_core.training.config import LoraTrainingConfig
from saelora_core.training.splits import split_dataset

_MEASURED: dict[tuple, tuple[float, float, float]] = {}


@dataclass(frozen=True)
class TrainEstimate:
    """The predicted cost of one ``train_lora`` run from scratch."""

    seconds: float
    steps: int
    """Optimizer steps (``epochs · ceil(n_train / batch_size)``)."""
    n_train: int
    n_eval: int
    seconds_per_step: float
    """Seconds per optimizer step (``batch_size`` examples, forward and backward)."""
    measured_on: int
    """Examples the timings were measured on."""

    def describe(self) -> str:
        """E.g. ``about 1 min 10 s: 100 steps of 8 examples (measured on 8 examples)``."""
        return (
            f"about {format_duration(self.seconds)}: {self.steps} optimizer steps over "
            f"{self.n_train} training rows, {self.n_eval} eval rows (timed on "
            f"{self.measured_on} examples on this machine)"
        )


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``1 h 2 min``."""
    s = round(seconds)
    if s < 60:
        return f"{max(s, 1)} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _speed_key(mas: ModelAndSae, dataset, cfg: LoraTrainingConfig) -> tuple:
    return (
        id(mas),
        id(dataset),
        cfg.max_len,
        cfg.response_tokens,
        cfg.micro_batch,
        cfg.precompute,
        cfg.logits_dtype,
        cfg.rank,
        cfg.mode,
        cfg.distill_from is not None,
        cfg.sparsity == "hard_concrete",
    )


def _measure(mas: ModelAndSae, sample, cfg: LoraTrainingConfig) -> tuple[float, float, float]:
    """Seconds per example: hook residuals, a training forward + backward, an eval forward."""
    n = len(sample)
    gen = torch.Generator().manual_seed(0)
    dev = device_of(mas)
    d_sae = mas.sae.cfg.d_sae
    lora = SaeLora(d_sae, cfg.rank, generator=gen, gates=cfg.sparsity == "hard_concrete").to(dev)
    with torch.no_grad():
        lora.s.fill_(0.1)  # nonzero, so the backward runs through the whole edit
    teacher = (
        SaeLora(d_sae, 1, generator=gen).requires_grad_(False).to(dev) if cfg.distill_from else None
    )
    t0 = time.perf_counter()
    if cfg.precompute:
        hook_resids(mas, sample, cfg.micro_batch)
    pre = (time.perf_counter() - t0) / n
    batch = make_batch(mas, sample)

    def step() -> None:
        batch_losses(
            mas, lora, batch, cfg.mode, cfg.precompute, cfg.logits_dtype, teacher
        ).sum().backward()

    step()  # the first call allocates; time the second
    t0 = time.perf_counter()
    step()
    train = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    with torch.no_grad():
        batch_losses(mas, lora, batch, cfg.mode, cfg.precompute, cfg.logits_dtype, teacher)
    forward = (time.perf_counter() - t0) / n
    return pre, train, forward


def estimate_training(mas: ModelAndSae, dataset, cfg: LoraTrainingConfig) -> TrainEstimate:
    """Predict how long ``train_lora(mas, dataset, cfg)`` takes from scratch (see the module
    docstring for the formula). Runs one micro-batch forward and backward twice (seconds on the
    default model), unless the same model, dataset and speed settings were measured before."""
    train, ev, _ = split_dataset(mas, dataset, cfg)
    sample = train[: min(cfg.micro_batch, len(train))]
    key = _speed_key(mas, dataset, cfg)
    if key not in _MEASURED:
        _MEASURED[key] = _measure(mas, sample, cfg)
    pre, step, forward = _MEASURED[key]
    steps = cfg.epochs * -(-len(train) // cfg.batch_size)
    if cfg.init_from:
        init = 0.0
    elif cfg.init == "contrastive":  # forwards of in/off-topic prompts and both responses
        init = 4 * cfg.init_examples * max(pre, forward)
    elif cfg.init == "gradient_svd":
        init = min(cfg.init_examples, len(train)) * step
    else:
        init = 0.0
    seconds = (
        (pre * (len(train) + len(ev)) if cfg.precompute else 0.0)
        + init
        + cfg.epochs * (step * len(train) + forward * len(ev))
        + forward * len(ev)
    )
    return TrainEstimate(
        seconds=seconds,
        steps=steps,
        n_train=len(train),
        n_eval=len(ev),
        seconds_per_step=step * min(cfg.batch_size, len(train)),
        measured_on=len(sample),
    )


def bf16_is_fast() -> bool:
    """Whether this machine has native bfloat16 matmuls (a CUDA device, or a CPU with
    AVX512-BF16 or AMX: :func:`forward.cpu_has_native_bf16`). Without them
    ``logits_dtype="bfloat16"`` is far slower, not faster: measured on a 2-core AMD EPYC without
    AVX512, one backward through the 262k-token unembedding took 63 s in bfloat16 and 0.8 s in
    float32."""
    import torch

    from saelora_core.adapter.forward import cpu_has_native_bf16

    return torch.cuda.is_available() or cpu_has_native_bf16()


def machine_overrides(cfg: LoraTrainingConfig) -> dict:
    """Speed settings of ``cfg`` that this machine runs badly, with the value it runs well
    (``logits_dtype``: float32 without native bfloat16); empty when ``cfg`` suits it."""
    if cfg.logits_dtype == "bfloat16" and not bf16_is_fast():
        return {"logits_dtype": "float32"}
    return {}
