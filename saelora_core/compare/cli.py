"""``saelora compare``: parsing only; the work is ``compare.study.compare_study``."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_compare(args: argparse.Namespace) -> int:
    from saelora_core.compare.run import CompareSettings
    from saelora_core.compare.study import compare_study

    res = compare_study(
        args.behaviour,
        rows=args.row,
        out=args.out,
        runs=args.runs,
        cache_dir=args.cache_dir,
        train=args.train,
        settings=CompareSettings(
            max_new_tokens=args.max_new_tokens,
            max_prompts=args.max_prompts,
            general_per_genre=args.general_per_genre,
            corpus_heldout=args.corpus_heldout,
        ),
        judge_model=args.judge_model,
        judge_base_url=args.judge_base_url,
        judge_api_key_env=args.judge_api_key_env,
        preset=args.preset,
    )
    sys.stdout.write(json.dumps(res, indent=1, default=str) + "\n")
    return 0


def add_compare_parser(sub) -> None:
    from saelora_core.compare.run import DEFAULT_RUNS

    p = sub.add_parser(
        "compare",
        help="compare methods on one behaviour: base, prompt, latent adapters, steer, peft LoRA",
        description="Every row on the same fresh in-topic, near-miss and far off-topic prompts: "
        "trainable parameters, distinct latents, detector rates with intervals, the effect with "
        "its interval, general-text ΔCE and KL, repetition, and an LLM judge's scores when one "
        "is configured (--judge-model or SAELORA_JUDGE_MODEL). Writes table.{csv,md,html}, "
        "answers.csv.gz and more to OUT (docs/compare.md).",
    )
    p.add_argument("--behaviour", choices=["french", "upper"], default="french")
    p.add_argument(
        "--row",
        action="append",
        default=None,
        metavar="NAME=KIND[:PATH]",
        help="a row (repeat; KIND: base, prompt, latent, steer, peft); default: the issue's nine "
        "rows (base, prompt baseline, dense and k=16 latent adapters, steer, peft r1/r8 after "
        "the hook and on all layers)",
    )
    p.add_argument("--train", action="store_true", help="train missing steer and peft baselines")
    p.add_argument("--out", default=None, help="output dir (default results/compare/BEHAVIOUR)")
    p.add_argument("--runs", default=str(DEFAULT_RUNS), help="where the baselines are trained")
    p.add_argument(
        "--cache-dir", default=None, help="generation cache (default runs/compare/cache)"
    )
    p.add_argument("--max-prompts", type=int, default=None, help="prompts per set (default all)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--general-per-genre", type=int, default=None, help="general texts per genre")
    p.add_argument("--corpus-heldout", default=None, help="the SAE corpus's heldout.jsonl")
    p.add_argument("--judge-model", default=None, help="LLM judge model (default: none)")
    p.add_argument("--judge-base-url", default=None)
    p.add_argument("--judge-api-key-env", default=None, help="env var holding the judge's key")
    p.add_argument("--preset", default="gemma-3-270m")
    p.set_defaults(func=cmd_compare)
