"""``saelora sae ...``: build the SAE corpus, cache activations, train SAEs and measure them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from saelora_core.cli.commands import emit
from saelora_core.cli.config_flags import add_config_flags, config_from_args

GENERAL_TEXT = "data/heldout/general_text.jsonl"


def cmd_sae_corpus(args: argparse.Namespace) -> int:
    from saelora_core.models.hf import preset_tokenizer
    from saelora_core.sae.corpus import build_default_corpus

    res = build_default_corpus(
        args.out, tokenizer=preset_tokenizer(args.preset), train_tokens=args.train_tokens
    )
    emit({"corpus": str(args.out), "train_tokens": res.manifest.get("train_tokens")})
    return 0


def cmd_sae_train(args: argparse.Namespace) -> int:
    """The first default SAE's route: sae_lens's runner on the model, no cache (TopK)."""
    from saelora_core.models.presets import load_base_model
    from saelora_core.sae.corpus import build_default_corpus
    from saelora_core.sae.train import SaeTrainConfig, train_sae

    base = json.loads(Path(args.config).read_text()) if args.config else {}
    cfg = config_from_args(SaeTrainConfig, args, base)
    model = load_base_model(cfg.preset)
    corpus = Path(args.corpus)
    if args.build_corpus or not (corpus / "train.jsonl").exists():
        build_default_corpus(corpus, tokenizer=model.tokenizer)
    out = Path(args.out)
    train_sae(
        model,
        corpus / "train.jsonl",
        cfg,
        out,
        corpus_heldout=corpus / "heldout.jsonl",
        resume_from=args.resume,
    )
    if (corpus / "manifest.json").exists():
        (out / "corpus_manifest.json").write_text((corpus / "manifest.json").read_text())
    emit({"sae": str(out), "metrics": json.loads((out / "metrics.json").read_text())})
    return 0


def caching_dtype() -> torch.dtype:
    """The model's dtype while caching activations: bfloat16 where the hardware multiplies it
    natively (a GPU, or a CPU with AMX / AVX512-BF16), float32 elsewhere."""
    from saelora_core.adapter.forward import cpu_has_native_bf16

    native = torch.cuda.is_available() or cpu_has_native_bf16()
    return torch.bfloat16 if native else torch.float32


def cmd_sae_build(args: argparse.Namespace) -> int:
    """Corpus (must exist) → activation cache → SAE from the cache → general-text metrics."""
    from dataclasses import replace

    from saelora_core.models.presets import load_base_model
    from saelora_core.sae.pipeline import (
        DEFAULT_SAE_RECIPE,
        cache_stage,
        eval_stage,
        fit_stage,
        heldout_stage,
        write_metrics,
    )

    corpus = Path(args.corpus)
    if not (corpus / "train.jsonl").exists():
        raise SystemExit(f"no corpus at {corpus}: run `make sae-corpus` (or `saelora sae corpus`)")
    base = json.loads(Path(args.config).read_text()) if args.config else {}
    cfg = config_from_args(type(DEFAULT_SAE_RECIPE), args, {**DEFAULT_SAE_RECIPE.to_dict(), **base})
    cfg = replace(cfg, matryoshka_widths=tuple(cfg.matryoshka_widths))
    model = load_base_model(cfg.preset, dtype=caching_dtype())
    cache_stage(model, corpus, args.cache, args.cache_tokens or cfg.training_tokens, cfg)
    out = fit_stage(model, args.cache, cfg, args.out)
    if (corpus / "manifest.json").exists():
        (out / "corpus_manifest.json").write_text((corpus / "manifest.json").read_text())
    heldout = None
    if args.heldout_cache:  # the held-out split's cache, in the caching dtype as the train split's
        heldout = heldout_stage(model, out, corpus, args.heldout_cache)
    if model.cfg.dtype != torch.float32:  # metrics in float32, as every SAE's are measured
        model = load_base_model(cfg.preset, dtype=torch.float32)
    record = eval_stage(
        model,
        {out.name: out},
        args.texts,
        out / "general_text_eval.json",
        max_tokens=args.max_tokens,
    )
    write_metrics(out, record, out.name, heldout)
    emit(
        {
            "sae": str(out),
            "overall": record["results"][out.name]["overall"],
            "corpus_heldout": heldout,
        }
    )
    return 0


def cmd_sae_eval(args: argparse.Namespace) -> int:
    """Splice metrics per genre of each SAE directory given."""
    from saelora_core.io.atomic import atomic_write_json
    from saelora_core.models.presets import load_base_model
    from saelora_core.sae.pipeline import eval_stage, heldout_stage

    model = load_base_model(args.preset)
    saes = {Path(p).name: p for p in args.sae}
    record = eval_stage(
        model, saes, args.texts, args.out, group_key=args.group, max_tokens=args.max_tokens
    )
    summary = {k: {"general_text": v["overall"]} for k, v in record["results"].items()}
    if args.heldout_cache:
        cache_model = load_base_model(args.preset, dtype=caching_dtype())
        for name, path in saes.items():
            summary[name]["corpus_heldout"] = heldout_stage(
                cache_model, path, args.corpus, args.heldout_cache
            )
        out = Path(args.out).with_name(Path(args.out).stem + "_corpus_heldout.json")
        atomic_write_json(out, {k: v["corpus_heldout"] for k, v in summary.items()})
    emit(summary)
    return 0


def add_sae_parser(sub) -> None:
    from saelora_core.sae.corpus import DEFAULT_TRAIN_TOKENS
    from saelora_core.sae.train import SaeTrainConfig

    sae = sub.add_parser("sae", help="build and measure SAEs").add_subparsers(
        dest="sae_command", required=True
    )
    p = sae.add_parser("corpus", help="build the SAE corpus (train/held-out text, no hub)")
    p.add_argument("--out", default="data/corpus")
    p.add_argument("--preset", default="gemma-3-270m", help="its tokenizer counts the tokens")
    p.add_argument(
        "--train-tokens", type=int, default=DEFAULT_TRAIN_TOKENS, help="mix to this many"
    )
    p.set_defaults(func=cmd_sae_corpus)

    p = sae.add_parser(
        "build", help="activation cache -> BatchTopK SAE -> general-text metrics (resumes)"
    )
    p.add_argument("--corpus", default="data/corpus")
    p.add_argument("--cache", default="data/activations/gemma-3-270m-l12")
    p.add_argument("--cache-tokens", type=int, default=None, help="default: training_tokens")
    p.add_argument("--out", default="data/saes/gemma-3-270m-l12-bt8k")
    p.add_argument("--texts", default=GENERAL_TEXT, help="JSONL of held-out text to measure on")
    p.add_argument("--max-tokens", type=int, default=None, help="metrics: tokens per genre")
    p.add_argument("--config", default=None, help="JSON file of SaeTrainConfig fields")
    p.add_argument(
        "--heldout-cache",
        default="data/activations/gemma-3-270m-l12-heldout",
        help="cache of the corpus's held-out split, for EV / L0 / never-firing latents on all "
        "of it ('' to skip)",
    )
    add_config_flags(p, SaeTrainConfig)
    p.set_defaults(func=cmd_sae_build)

    p = sae.add_parser("eval", help="splice metrics per genre of held-out text")
    p.add_argument("sae", nargs="+", help="SAE directories (sae_lens format)")
    p.add_argument("--preset", default="gemma-3-270m")
    p.add_argument("--texts", default=GENERAL_TEXT)
    p.add_argument("--group", default="kind", help="the rows' field that names the genre")
    p.add_argument("--max-tokens", type=int, default=None, help="per genre")
    p.add_argument("--out", default="runs/sae-eval/general_text.json")
    p.add_argument("--corpus", default="data/corpus", help="whose held-out split to cache")
    p.add_argument(
        "--heldout-cache",
        default=None,
        help="also measure EV / L0 / never-firing latents on the corpus's whole held-out split, "
        "cached here (built on first use)",
    )
    p.set_defaults(func=cmd_sae_eval)

    p = sae.add_parser("train", help="train a TopK SAE with sae_lens's runner on the model")
    p.add_argument("--corpus", default="data/corpus", help="dir with train.jsonl/heldout.jsonl")
    p.add_argument("--build-corpus", action="store_true", help="(re)build the default corpus first")
    p.add_argument("--out", default="data/saes/gemma-3-270m-l12-topk")
    p.add_argument("--config", default=None, help="JSON file of SaeTrainConfig fields")
    p.add_argument("--resume", default=None, help="sae_lens checkpoint dir to resume from")
    add_config_flags(p, SaeTrainConfig)
    p.set_defaults(func=cmd_sae_train)
