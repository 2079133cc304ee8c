"""`saelora dataset make ...` through argparse, as the main CLI wires it."""

from __future__ import annotations

import argparse
import json

from saelora_core.cli.dataset import add_dataset_parser, config_from_args
from saelora_core.data import load_behaviour_dataset
from tests.llm_server import FAKE_KEY, keyword_script, running_server, write_seed_dir


def parse(argv):
    parser = argparse.ArgumentParser(prog="saelora")
    add_dataset_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_defaults_come_from_the_config():
    cfg = config_from_args(parse(["dataset", "make"]))
    assert (cfg.source, cfg.topic, cfg.n, cfg.eval_n, cfg.backend) == (
        "seed", "mathematics", 100, 20, "offline",
    )  # fmt: skip
    assert (
        cfg.base_url == "https://openrouter.ai/api/v1" and cfg.api_key_env == "OPENROUTER_API_KEY"
    )


def test_make_offline_and_llm(tmp_path, capsys, monkeypatch):
    seed = write_seed_dir(tmp_path / "seed")
    common = ["dataset", "make", "--source", "seed", "--seed-dir", str(seed), "--topic", "math"]
    common += ["--n", "8", "--eval-n", "4", "--out", str(tmp_path / "ds"), "--no-progress"]
    common += ["--cache-dir", str(tmp_path / "cache")]
    args = parse([*common, "--backend", "offline", "--name", "off"])
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train"]["modified"] == 8 and summary["eval"]["total"] == 8
    assert load_behaviour_dataset(tmp_path / "ds" / "off")["train"].num_rows == 16

    monkeypatch.setenv("MY_KEY", FAKE_KEY)
    with running_server(keyword_script("math")) as server:
        llm = [*common, "--backend", "llm", "--base-url", server.base_url, "--model", "m"]
        llm += ["--api-key-env", "MY_KEY", "--concurrency", "3", "--name", "llm"]
        args = parse(llm)
        assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["token_usage"]["requests"] == server.count() > 0
    assert summary["out_dir"].endswith("llm")


def test_errors_exit_2_with_the_message(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    args = parse(["dataset", "make", "--backend", "llm", "--api-key-env", "NO_SUCH_KEY"])
    assert args.func(args) == 2
    assert "set the environment variable NO_SUCH_KEY" in caplog.text
    args = parse(["dataset", "make", "--n", "0"])
    assert args.func(args) == 2
    assert "n must be >= 1" in caplog.text
