"""The `saelora` command line on real files."""

import json

import pytest
import torch

from saelora_core import SaeLora, save_lora
from saelora_core.adapter.saving import build_metadata
from saelora_core.cli.app import build_parser, main


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
    assert main(["info", str(tmp_path / "x"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["d_sae"] == 64 and out["rank"] == 2 and out["last_eval"]["eval_ce"] == 2.5
    assert out["l0"] == {"read": [64, 64], "write": [64, 64]}
    assert [c["component"] for c in out["top_latents"]] == [0, 1]
    assert len(out["top_latents"][0]["read"]) == 5  # --top defaults to 5


def test_info_prints_a_short_human_summary(tiny_mas, tmp_path, capsys):
    torch.manual_seed(0)
    lora = SaeLora(64, 1)
    with torch.no_grad():  # a sparse adapter: reads latents 3 and 9, writes latent 7
        lora.a.zero_()
        lora.a[3, 0], lora.a[9, 0] = 0.6, -0.8
        lora.b.zero_()
        lora.b[0, 7] = 2.0
        lora.s.fill_(1.5)
    meta = build_metadata(
        lora,
        config={"lr": 0.3, "sparsity": "proximal_l1", "l1_weight": 0.002, "topk": 16},
        preset="tiny",
        sae_identity=tiny_mas.sae_identity,
        layer=1,
        mode="sae_replace",
        history=[{"epoch": 0, "eval_ce": 4.0}, {"epoch": 2, "step": 10, "eval_ce": 2.123456}],
    )
    save_lora(lora, tmp_path / "x", meta)
    assert main(["info", str(tmp_path / "x"), "--top", "3"]) == 0
    text = capsys.readouterr().out
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert lines["preset"].startswith("preset   tiny (layer 1")
    assert lines["mode"] == "mode     sae_replace" and lines["rank"] == "rank     1"
    assert lines["L0"] == "L0       read 2, write 1 (of 64 latents)"
    assert "sparsity=proximal_l1, l1_weight=0.002, lr=0.3" in lines["training"]
    assert "topk" not in lines["training"]  # not a top-k run
    assert "component 0 (s = 1.5)" in text
    assert lines["read"].split()[1:] == ["9:-0.800", "3:+0.600"]  # by |weight|, signed, unit
    assert lines["write"].split()[1:] == ["7:+1.000"]
    assert lines["last"] == "last metrics  epoch 2, step 10, eval_ce 2.123"
    assert not text.lstrip().startswith("{")


def test_info_on_a_directory_without_an_adapter_says_so(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 2
    assert "has no params.pt; is this an adapter directory" in capsys.readouterr().err


def test_train_flags_map_onto_the_config():
    from saelora_core.cli.config_flags import config_from_args
    from saelora_core.training.config import LoraTrainingConfig

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
    cfg = config_from_args(LoraTrainingConfig, args)
    assert (cfg.lr, cfg.sparsity, cfg.topk, cfg.precompute, cfg.batch_size) == (
        0.3,
        "topk",
        4,
        False,
        32,
    )
    bad = build_parser().parse_args(["train", "--dataset", "d", "--mode", "nope"])
    with pytest.raises(ValueError, match="mode must be one of"):
        config_from_args(LoraTrainingConfig, bad)


def test_train_on_missing_dataset_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--dataset", str(tmp_path / "none")]) == 2
    assert "none" in capsys.readouterr().err


def test_train_recipe_defaults_to_recommended_and_flags_override_it(tmp_path):
    from saelora_core.cli.config_flags import train_config
    from saelora_core.training.config import LoraTrainingConfig
    from saelora_core.training.recipes import RECIPES, recipe

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
