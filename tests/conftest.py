import pytest
import torch

from saelora_core.testing import tiny_model_and_sae


@pytest.fixture(scope="session")
def tiny_mas():
    """A tiny 3-layer model with a TopK SAE at layer 1 (frozen; do not mutate)."""
    return tiny_model_and_sae()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
