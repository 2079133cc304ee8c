"""``saelora compare`` fails fast, before loading a model, on rows it cannot run."""

from __future__ import annotations

from saelora_core.cli.app import build_parser, main


def test_compare_parses_rows_and_refuses_missing_adapters(tmp_path, capsys):
    args = build_parser().parse_args(
        ["compare", "--behaviour", "upper", "--row", "base=base", "--row", "p=peft:x/y"]
    )
    assert args.row == ["base=base", "p=peft:x/y"] and args.behaviour == "upper"
    assert main(["compare", "--row", f"gone=latent:{tmp_path / 'nothing'}"]) == 2
    assert "no finished adapter for the rows: gone" in capsys.readouterr().err
    assert main(["compare", "--row", "bad"]) == 2
    assert "NAME=KIND" in capsys.readouterr().err
    # The default rows: the shipped adapters exist, the baselines are untrained here.
    assert main(["compare", "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "dense residual steer" in err and "peft LoRA r8 (all layers)" in err
    assert "dense latent adapter" not in err and "--train" in err
