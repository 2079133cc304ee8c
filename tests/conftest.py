import os
from pathlib import Path

import pytest
import torch

from saelora_core import SaeLora, save_lora
from saelora_core.adapter.saving import build_metadata
from saelora_core.data import DatasetConfig, build_dataset
from saelora_core.testing import tiny_model_and_sae

# Subprocesses (marimo exports, the notebook server) import this checkout too, not whichever
# clone the shared virtual environment's editable install points to.
REPO = str(Path(__file__).resolve().parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)

# Under pytest-xdist (`make test` runs one worker per core) each worker computes on one thread,
# and so do the subprocesses it starts: two workers with a thread per core each would fight.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def tiny_mas():
    """A tiny 3-layer model with a TopK SAE at layer 1 (frozen; do not mutate)."""
    return tiny_model_and_sae()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_env(tmp_path_factory) -> dict[str, str]:
    """A tiny adapter fitting ``tiny_model_and_sae()`` and a small offline dataset."""
    tmp = tmp_path_factory.mktemp("notebooks")
    mas = tiny_model_and_sae()
    lora = SaeLora(mas.sae.cfg.d_sae, rank=2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora.s.copy_(torch.tensor([1.5, -0.5]))
    lora_dir = tmp / "tiny-test-lora"
    save_lora(
        lora,
        lora_dir,
        build_metadata(
            lora,
            config={"sparsity": "none", "init": "random"},
            preset="tiny",
            sae_identity=mas.sae_identity,
            layer=mas.layer,
            mode="resid_add",
            history=[
                {"epoch": 0, "step": 0, "eval_ce": 3.0},
                {"epoch": 1, "step": 2, "eval_ce": 2.5},
            ],
            extra={"dataset": "small", "guideline": "respond in French", "detector": "french"},
        ),
    )
    datasets = tmp / "datasets"
    build_dataset(
        DatasetConfig(
            n=8,
            eval_n=4,
            name="small",
            out=str(datasets),
            cache_dir=str(tmp / "cache"),
            progress=False,
        )
    )
    return {
        "SAELORA_PRESET": "tiny",
        "SAELORA_LORA": str(lora_dir),
        "SAELORA_DATASETS": str(datasets),
        "SAELORA_DATASET": "small",
    }
