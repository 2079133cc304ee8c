"""Named training recipes: field overrides of :class:`LoraTrainingConfig` that the notebooks, the
CLI (``--recipe``) and the demo start from."""

from __future__ import annotations

from typing import Any

from saelora_core.training.config import LoraTrainingConfig

RECIPES: dict[str, dict[str, Any]] = {
    "recommended": {
        "lr": 0.3,
        "s_lr": 0.2,
        "sparsity_weight": 0.002,
        "batch_size": 8,
        "rank": 1,
        "epochs": 4,
        "max_len": 128,
        "response_tokens": 4,
        "sparsity": "proximal_l1",
        "init": "contrastive",
        "init_examples": 32,
        "mode": "resid_add",
        "seed": 0,
        "logits_dtype": "bfloat16",
    },
    "seed (baseline)": {},
    "sparse (distilled, rank 8, top-16)": {
        "lr": 0.3,
        "s_lr": 0.05,
        "sparsity_weight": 0.0,
        "batch_size": 8,
        "rank": 8,
        "epochs": 9,
        "max_len": 128,
        "response_tokens": 4,
        "sparsity": "topk",
        "topk": 16,
        "topk_schedule": [512, 256, 128, 64, 32],
        "init": "contrastive",
        "init_from": "loras/demo-math-french",
        "distill_from": "loras/demo-math-french",
        "init_examples": 32,
        "logits_dtype": "bfloat16",
    },
}
"""Named training recipes: the fields each sets over :class:`LoraTrainingConfig`'s defaults.

- ``recommended``: the demo's recipe (``make demo``; about a minute on 2 CPU cores for 100
  rows). Large learning rates for a 100-step budget, ``s`` with its own step, the first 4
  response tokens only (the answer's language or case is decided there), a contrastive init
  and a proximal L1 (exact zeros).
- ``seed (baseline)``: the seed experiment's method, exactly the dataclass defaults (lr 1e-4,
  ``l1_raw``, random init, batch 32, 3 epochs, all response tokens). It learns nothing in a
  CPU budget (effect 0.00) and is kept as the baseline.
- ``sparse (distilled, rank 8, top-16)``: docs/sparsity.md's student: distils the trained
  dense adapter ``loras/demo-math-french`` (the teacher, also its start) into 16 latents per
  vector, cutting the support one step per epoch (about 10 minutes).
"""


DEFAULT_RECIPE = "recommended"


def recipe(name: str = DEFAULT_RECIPE, /, **overrides: Any) -> LoraTrainingConfig:
    """The config of recipe ``name`` (a key of :data:`RECIPES`) with ``overrides`` on top."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(map(repr, RECIPES))}")
    return LoraTrainingConfig.from_dict({**RECIPES[name], **overrides})
