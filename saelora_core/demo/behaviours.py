"""The demo's behaviours: "if the prompt is about math, respond in French" (the flagship) and
"... respond in uppercase" (the fallback), each with its guideline, detector and training config,
and how their datasets are built from the offline seed set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from saelora_core.io.paths import REPO_ROOT
from saelora_core.training.config import LoraTrainingConfig
from saelora_core.training.recipes import recipe


def demo_config(name: str, **overrides) -> LoraTrainingConfig:
    """The ``recommended`` recipe (training.recipes.RECIPES) under ``name``."""
    return recipe("recommended", name=name, **overrides)


@dataclass(frozen=True)
class DemoBehaviour:
    """One behaviour the demo builds, trains, evaluates and reports."""

    name: str
    """The dataset's and the adapter's name (``data/datasets/<name>``, ``<out>/<name>``)."""
    guideline: str
    detector: str
    """A key of ``analysis.DETECTORS``."""
    config: LoraTrainingConfig


FRENCH = DemoBehaviour(
    "demo-math-french", "respond in French", "french", demo_config("demo-math-french")
)


UPPERCASE = DemoBehaviour(
    "demo-math-upper", "respond in uppercase", "uppercase", demo_config("demo-math-upper")
)


DEMO_BEHAVIOURS = (FRENCH, UPPERCASE)
"""The demo's settings. The learning rates are far above the seed's 1e-4 because the budget is
100 optimizer steps on 2 CPU cores: ``a`` and ``b`` start with norm √d_sae = 64, so Adam's
per-entry step of 0.3 moves a unit-vector entry by ~0.5% of the vector per step.
``init="contrastive"`` starts Â on the topic's selective latents and B̂ on the behaviour's
(training/inits.py): with the seed's random init, ``s`` stays near 0 and nothing is learned in this
budget."""


SWEEP_BEHAVIOUR = FRENCH
"""The behaviour ``studies/sparsity_sweep.py`` measures (the flagship; its greedy rate moves)."""


def build_demo_dataset(behaviour: DemoBehaviour = FRENCH, out: Path | None = None):
    from saelora_core.data import DatasetConfig, build_dataset

    cfg = DatasetConfig(
        source="seed",
        topic="math",
        guideline=behaviour.guideline,
        n=100,
        eval_n=20,
        backend="offline",
        name=behaviour.name,
        out=str(out or REPO_ROOT / "data" / "datasets"),
        progress=False,
    )
    return build_dataset(cfg)
