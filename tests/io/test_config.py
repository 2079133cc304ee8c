"""The config base: round trips, unknown keys refused, renamed fields still loading."""

import json

import pytest

from saelora_core.data.config import DatasetConfig
from saelora_core.repair.config import RepairConfig
from saelora_core.sae.train import SaeTrainConfig
from saelora_core.training.config import LoraTrainingConfig
from saelora_core.training.steer import SteerConfig


@pytest.mark.parametrize(
    "cls", [LoraTrainingConfig, DatasetConfig, RepairConfig, SteerConfig, SaeTrainConfig]
)
def test_round_trip_and_unknown_keys(cls):
    cfg = cls()
    assert cls.from_dict(cfg.to_dict()) == cfg
    assert cls.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match=rf"unknown {cls.__name__} fields: \['nope'\]"):
        cls.from_dict({**cfg.to_dict(), "nope": 1})


def test_older_metadata_with_l1_weight_still_loads(tmp_path):
    old = {**LoraTrainingConfig().to_dict(), "l1_weight": 0.002}
    del old["sparsity_weight"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    cfg = LoraTrainingConfig.from_json(path)
    assert cfg.sparsity_weight == 0.002 and "l1_weight" not in cfg.to_dict()
    with pytest.raises(ValueError, match="both 'l1_weight' and its new name"):
        LoraTrainingConfig.from_dict({"l1_weight": 0.1, "sparsity_weight": 0.2})


def test_a_run_saved_with_l1_weight_resumes(tiny_mas, tmp_path):
    """A training state written before the rename still counts as the same config."""
    import torch

    from saelora_core.training.resume import resumable, state_path

    cfg = LoraTrainingConfig(sparsity_weight=0.01)
    old = {**cfg.to_dict(), "l1_weight": 0.01}
    del old["sparsity_weight"]
    tmp_path.mkdir(exist_ok=True)
    torch.save({"config": old, "sae_hash": tiny_mas.sae_identity.get("hash")}, state_path(tmp_path))
    assert resumable(tmp_path, cfg, tiny_mas) is True
    assert resumable(tmp_path, LoraTrainingConfig(sparsity_weight=0.02), tiny_mas) is False
