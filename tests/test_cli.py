"""The `saelora` command line on real files."""

import json

import pytest

from saelora_core import SaeLora, save_lora
from saelora_core.checkpoint import build_metadata
from saelora_core.cli import build_parser, main


def test_info_summarizes_an_adapter(tiny_mas, tmp_path, capsys):
    lora = SaeLora(64, 2)
    meta = build_metadata(
        lora,
        config={"lr": 0.1},
        preset="tiny",
        sae_identity=tiny_mas.sae_identity,
        layer=1,
        mode="resid_add",
        history=[{"epoch": 1, "eval_ce": 2.5}],
    )
    save_lora(lora, tmp_path / "x", meta)
    assert main(["info", str(tmp_path / "x")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["d_sae"] == 64 and out["rank"] == 2 and out["last_eval"]["eval_ce"] == 2.5
    assert out["l0"] == {"read": [64, 64], "write": [64, 64]}


def test_train_flags_map_onto_the_config():
    from saelora_core.cli import _config_from_args
    from saelora_core.config import LoraTrainingConfig

    args = build_parser().parse_args(
        [
            "train",
            "--dataset",
            "d",
            "--lr",
            "0.3",
            "--sparsity",
            "topk",
            "--topk",
            "4",
            "--precompute",
            "false",
        ]
    )
    cfg = _config_from_args(LoraTrainingConfig, args)
    assert (cfg.lr, cfg.sparsity, cfg.topk, cfg.precompute, cfg.batch_size) == (
        0.3,
        "topk",
        4,
        False,
        32,
    )
    bad = build_parser().parse_args(["train", "--dataset", "d", "--mode", "nope"])
    with pytest.raises(ValueError, match="mode must be one of"):
        _config_from_args(LoraTrainingConfig, bad)


def test_train_on_missing_dataset_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--dataset", str(tmp_path / "none")]) == 2
    assert "none" in capsys.readouterr().err


def test_train_recipe_defaults_to_recommended_and_flags_override_it(tmp_path):
    from saelora_core.cli import train_config
    from saelora_core.config import RECIPES, LoraTrainingConfig, recipe

    cfg = train_config(build_parser().parse_args(["train", "--dataset", "d"]))
    assert cfg == recipe("recommended") and cfg.response_tokens == 4 and cfg.s_lr == 0.2
    seed = train_config(
        build_parser().parse_args(["train", "--dataset", "d", "--recipe", "seed (baseline)"])
    )
    assert seed == LoraTrainingConfig()  # the seed's method is the dataclass defaults
    (tmp_path / "c.json").write_text(json.dumps({"epochs": 2, "lr": 0.1}))
    over = train_config(
        build_parser().parse_args(
            ["train", "--dataset", "d", "--config", str(tmp_path / "c.json"), "--lr", "0.5"]
        )
    )
    assert (over.epochs, over.lr, over.init) == (2, 0.5, RECIPES["recommended"]["init"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--dataset", "d", "--recipe", "nope"])
