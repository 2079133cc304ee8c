"""``saelora`` command line: train adapters, inspect them, build datasets, train SAEs, run the demo.

This module parses the arguments and dispatches to ``commands.py``."""

from __future__ import annotations

import argparse
import logging
import sys

from saelora_core.cli.commands import (
    cmd_demo,
    cmd_describe,
    cmd_info,
    cmd_repair,
    cmd_train,
    cmd_try,
)
from saelora_core.cli.config_flags import add_config_flags
from saelora_core.cli.dataset import add_dataset_parser
from saelora_core.cli.sae import add_sae_parser
from saelora_core.compare.cli import add_compare_parser
from saelora_core.training.config import LoraTrainingConfig
from saelora_core.training.recipes import DEFAULT_RECIPE, RECIPES

logger = logging.getLogger("saelora")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saelora", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an adapter on a behaviour dataset")
    p.add_argument("--dataset", required=True, help="a dataset dir from `saelora dataset make`")
    p.add_argument("--preset", default="gemma-3-270m")
    p.add_argument("--sae-path", default=None, help="override the preset's SAE directory")
    p.add_argument("--out", default="loras", help="parent directory; the adapter goes to OUT/NAME")
    p.add_argument(
        "--recipe",
        default=DEFAULT_RECIPE,
        choices=list(RECIPES),
        help=f"named settings (config.RECIPES) under --config and the flags; default "
        f"{DEFAULT_RECIPE!r} (the demo's). 'seed (baseline)' is the seed's method, which "
        "learns nothing in a CPU budget",
    )
    p.add_argument("--config", default=None, help="JSON file of LoraTrainingConfig fields")
    p.add_argument(
        "--no-resume", action="store_true", help="start over even if OUT/NAME has a checkpoint"
    )
    add_config_flags(p, LoraTrainingConfig)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "info",
        help="summarize an adapter directory",
        description="Preset, SAE, mode, rank, L0, the top latents and the last metrics.",
    )
    p.add_argument("lora_dir")
    p.add_argument("--top", type=int, default=5, help="latents to list per read/write vector")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (for scripts)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "try",
        help="what an adapter does: base vs adapter answers and its edit token by token",
        description="Greedy answers to each PROMPT without and with the adapter, side by side, "
        "then per token of the adapter's answer the read latents that fired, the norm of the "
        "edit and the top written latents. With --batch N, also the behaviour rate (95 % "
        "Wilson interval) on N in-topic and N off-topic fresh prompts.",
    )
    p.add_argument("lora_dir")
    p.add_argument("prompts", nargs="+", metavar="PROMPT")
    p.add_argument("--preset", default=None, help="model preset (default: the adapter's)")
    p.add_argument("--mode", default=None, help="hook mode (default: the adapter's)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--latents", type=int, default=3, help="read/write latents shown per token")
    p.add_argument("--detector", default=None, help="behaviour detector (default: metadata's)")
    p.add_argument(
        "--batch", type=int, default=0, help="also measure the rate on N + N fresh prompts"
    )
    p.set_defaults(func=cmd_try)

    p = sub.add_parser(
        "describe",
        help="write an adapter's card (Markdown + HTML), checked on fresh prompts",
        description="The adapter described in its latents: weights, shares, firing rates, top "
        "snippets, promoted tokens and labels (by rule, or by an LLM when SAELORA_LABEL_MODEL "
        "is set), and the faithfulness checks (sufficiency, necessity, a same-count "
        "random-latent control, per-latent effects) on the fresh prompts. Writes "
        "LORA_DIR/card/card.{md,html,json}.",
    )
    p.add_argument("lora_dir")
    p.add_argument("--out", default=None, help="output dir (default LORA_DIR/card)")
    p.add_argument(
        "--reference",
        default=None,
        help="the dense adapter it compresses (default: its distill_from; 'none': no reference)",
    )
    p.add_argument("--detector", default=None, help="behaviour detector (default: from metadata)")
    p.add_argument("--max-latents", type=int, default=16, help="latents listed per side")
    p.add_argument("--max-prompts", type=int, default=None, help="fresh prompts per side")
    p.add_argument("--per-latent-prompts", type=int, default=40)
    p.add_argument("--per-latent-tokens", type=int, default=16)
    p.add_argument(
        "--no-faithfulness", action="store_true", help="skip the checks (the card says so)"
    )
    p.set_defaults(func=cmd_describe)

    add_sae_parser(sub)

    p = sub.add_parser("demo", help="the offline pipeline: dataset, train, evaluate, report")
    p.add_argument("--quick", action="store_true", help="a tiny budget, for smoke tests")
    p.add_argument(
        "--out",
        default=None,
        help="parent directory of the demo's adapters and reports (default: the repository's "
        "runs/demo, which git ignores; --out loras refreshes the shipped loras/demo-*)",
    )
    p.add_argument(
        "--preset",
        default="gemma-3-270m",
        help="model + SAE preset (e.g. gemma-3-270m-bt8k: the same recipe on another SAE)",
    )
    p.set_defaults(func=cmd_demo)

    from saelora_core.repair import METHODS, RepairConfig

    p = sub.add_parser(
        "repair",
        help="close the SAE's loss gap: model LoRA, SAE finetune, linear or latent adapter",
        description="Train one SAE-gap repair on the SAE corpus's train split and evaluate it "
        "on held-out and general text (fraction of the gap closed, KL, CE recovered).",
    )
    p.add_argument("method", choices=METHODS)
    p.add_argument("--preset", default="gemma-3-270m")
    p.add_argument("--out", default=None, help="output dir (default runs/repair/METHOD)")
    p.add_argument("--corpus", default="data/corpus", help="dir with train.jsonl/heldout.jsonl")
    p.add_argument("--build-corpus", action="store_true", help="(re)build the SAE corpus first")
    p.add_argument("--eval-tokens", type=int, default=4096, help="tokens per evaluation text set")
    p.add_argument("--config", default=None, help="JSON file of RepairConfig fields")
    p.add_argument(
        "--no-resume", action="store_true", help="start over even if OUT has a checkpoint"
    )
    add_config_flags(p, RepairConfig, skip=("method", "lora_targets"))
    p.set_defaults(func=cmd_repair)

    add_dataset_parser(sub)
    add_compare_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.verbose:
        # With OPENAI_LOG set, the openai SDK calls basicConfig when it is imported, which makes
        # the call above a no-op; set the level anyway so that -v still shows retries.
        logging.getLogger().setLevel(logging.INFO)
    from saelora_core.data import DatasetError
    from saelora_core.models.hub import PresetUnavailableError

    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, DatasetError, PresetUnavailableError) as e:
        logger.error("%s", e)
        sys.stderr.write(f"error: {e}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
