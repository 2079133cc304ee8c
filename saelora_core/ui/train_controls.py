"""The training notebook's controls: one marimo control per ``LoraTrainingConfig`` field that
matters, grouped, and the config they describe; plus the live view of a running training.

marimo is imported inside the functions, so the library imports without it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from saelora_core.reporting import figures
from saelora_core.training.config import HookMode, Init, LoraTrainingConfig, Sparsity

GROUPS: dict[str, tuple[str, ...]] = {
    "Optimizer": ("lr", "s_lr", "batch_size", "micro_batch", "epochs", "seed"),
    "Adapter and init": ("rank", "mode", "init", "init_examples", "init_from"),
    "Training targets": ("max_len", "response_tokens", "eval_fraction", "distill_from"),
    "Sparsity": (
        "sparsity",
        "sparsity_weight",
        "topk",
        "topk_schedule",
        "gate_lr",
        "freeze_support",
    ),
    "Speed and checkpoints": ("precompute", "logits_dtype", "checkpoint_every"),
}
"""The controls' sections, in order; every field but ``layer`` (the loaded SAE's) and ``name``
(a control of its own)."""


def _controls(cfg: LoraTrainingConfig) -> dict[str, Any]:
    import marimo as mo

    def num(key: str, start: float, stop: float, step: float, label: str | None = None):
        return mo.ui.number(
            start=start, stop=stop, step=step, value=getattr(cfg, key), label=label or key
        )

    return {
        "lr": num("lr", 1e-6, 10.0, 1e-6),
        "s_lr": mo.ui.number(
            start=0.0, stop=10.0, step=1e-6, value=cfg.s_lr or 0.0, label="s_lr (0: = lr)"
        ),
        "batch_size": num("batch_size", 1, 1024, 1),
        "micro_batch": num("micro_batch", 1, 256, 1),
        "epochs": num("epochs", 1, 100, 1),
        "seed": num("seed", 0, 2**31 - 1, 1),
        "rank": num("rank", 1, 64, 1),
        "mode": mo.ui.dropdown(list(get_args(HookMode)), value=cfg.mode, label="mode"),
        "init": mo.ui.dropdown(list(get_args(Init)), value=cfg.init, label="init"),
        "init_examples": num("init_examples", 1, 10_000, 1),
        "init_from": mo.ui.text(
            value=cfg.init_from or "", label="init_from (adapter dir; empty: init)"
        ),
        "max_len": num("max_len", 8, 8192, 1),
        "response_tokens": num("response_tokens", 0, 8192, 1, "response_tokens (0: all)"),
        "eval_fraction": num("eval_fraction", 0.0, 0.99, 0.01),
        "distill_from": mo.ui.text(
            value=cfg.distill_from or "", label="distill_from (teacher dir; empty: CE)"
        ),
        "sparsity": mo.ui.dropdown(list(get_args(Sparsity)), value=cfg.sparsity, label="sparsity"),
        "sparsity_weight": num("sparsity_weight", 0.0, 100.0, 1e-4, "sparsity_weight (λ)"),
        "topk": num("topk", 1, 100_000, 1, "topk (sparsity=topk)"),
        "topk_schedule": mo.ui.text(
            value=", ".join(map(str, cfg.topk_schedule)), label="topk_schedule (k per epoch)"
        ),
        "gate_lr": num("gate_lr", 1e-6, 10.0, 1e-4, "gate_lr (hard_concrete)"),
        "freeze_support": mo.ui.checkbox(value=cfg.freeze_support, label="freeze_support"),
        "precompute": mo.ui.checkbox(value=cfg.precompute, label="precompute"),
        "logits_dtype": mo.ui.dropdown(
            ["float32", "bfloat16"], value=cfg.logits_dtype, label="logits_dtype"
        ),
        "checkpoint_every": num("checkpoint_every", 0, 1_000_000, 1, "checkpoint_every (steps)"),
    }


def training_controls(cfg: LoraTrainingConfig):
    """A ``mo.ui.dictionary`` with one control per field of :data:`GROUPS`, set to ``cfg``."""
    import marimo as mo

    return mo.ui.dictionary(_controls(cfg))


def controls_layout(controls) -> Any:
    """The controls of :func:`training_controls` in their :data:`GROUPS`, one row each."""
    import marimo as mo

    return mo.vstack(
        [
            mo.vstack(
                [
                    mo.md(f"**{group}**"),
                    mo.hstack([controls[k] for k in keys], justify="start", wrap=True),
                ],
                gap=0.25,
            )
            for group, keys in GROUPS.items()
        ]
    )


def _path(text: str, root: Path) -> str | None:
    text = text.strip()
    if not text:
        return None
    return str(Path(text) if Path(text).is_absolute() else root / text)


def config_from_controls(
    values: dict[str, Any], *, name: str, root: Path, layer: int | None = None
) -> LoraTrainingConfig:
    """The config the controls' ``values`` describe (raises ValueError with the reason when it
    is invalid). Relative ``init_from``/``distill_from`` paths are taken from ``root``."""
    v = dict(values)
    ints = (
        "batch_size",
        "micro_batch",
        "epochs",
        "seed",
        "rank",
        "init_examples",
        "max_len",
        "response_tokens",
        "topk",
        "checkpoint_every",
    )
    for k in ints:
        v[k] = int(v[k])
    for k in ("lr", "sparsity_weight", "eval_fraction", "gate_lr"):
        v[k] = float(v[k])
    v["s_lr"] = float(v["s_lr"]) or None
    v["init_from"] = _path(v["init_from"], root)
    v["distill_from"] = _path(v["distill_from"], root)
    try:
        v["topk_schedule"] = [
            int(k) for k in str(v["topk_schedule"]).replace(",", " ").split() if k
        ]
    except ValueError:
        raise ValueError(
            f"topk_schedule must be whole numbers, e.g. 512, 256, 128; got {v['topk_schedule']!r}"
        ) from None
    return LoraTrainingConfig.from_dict({**v, "name": name.strip() or "lora", "layer": layer})


@dataclass
class LiveTraining:
    """``on_step`` for ``train_lora`` that moves a marimo progress bar and redraws the loss
    curve below it about once a second (:func:`live_training`)."""

    bar: Any
    every_s: float = 1.0
    steps: list[dict[str, Any]] = field(default_factory=list)
    _shown: bool = False
    _last: float = 0.0

    def on_step(self, info: dict[str, Any]) -> None:
        import marimo as mo

        self.steps.append(info)
        # ``step`` counts from the start of the run, so a resumed run jumps ahead.
        self.bar.update(
            increment=info["step"] - self.bar.current,
            subtitle=f"epoch {info['epoch']:.2f} · train CE {info['train_ce']:.3f}",
        )
        now = time.monotonic()
        done = info["step"] >= self.bar.total
        if now - self._last < self.every_s and not done:
            return
        self._last = now
        fig = figures.fig_loss_curve([], self.steps)
        fig.update_layout(title="Loss curve (live)", height=360)
        if self._shown:
            mo.output.replace_at_index(fig, 1)  # 0 is the progress bar
        else:
            mo.output.append(fig)
            self._shown = True


@contextmanager
def live_training(cfg: LoraTrainingConfig, total_steps: int) -> Iterator[LiveTraining]:
    """A progress bar for ``total_steps`` optimizer steps with a live loss curve under it;
    pass ``.on_step`` to ``train_lora``."""
    import marimo as mo

    with mo.status.progress_bar(
        total=total_steps,
        title=f"Training {cfg.name}",
        completion_title=f"Trained {cfg.name}",
    ) as bar:
        yield LiveTraining(bar)
