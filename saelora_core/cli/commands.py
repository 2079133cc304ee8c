"""The ``saelora`` subcommands: one ``cmd_*`` function each, taking the parsed arguments and
returning the exit status. Results go to stdout as JSON (or text), progress to stderr."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from saelora_core.cli.config_flags import config_from_args, train_config


def emit(obj: Any) -> None:
    """Write ``obj`` to stdout: a string as is, anything else as indented JSON."""
    sys.stdout.write(
        (obj if isinstance(obj, str) else json.dumps(obj, indent=1, default=str)) + "\n"
    )


def cmd_train(args: argparse.Namespace) -> int:
    from saelora_core.analysis.behaviour import behaviour_metadata
    from saelora_core.data import load_behaviour_dataset
    from saelora_core.models.presets import load_model_and_sae
    from saelora_core.training.distributed import init_from_env, is_main, local_device
    from saelora_core.training.loop import train_lora

    cfg = train_config(args)
    dataset = load_behaviour_dataset(args.dataset)
    # Under torchrun each rank loads the model onto its own device (training/distributed.py).
    device = local_device() if init_from_env() else None
    mas = load_model_and_sae(args.preset, sae_path=args.sae_path, device=device)
    out = Path(args.out) / cfg.name
    res = train_lora(
        mas,
        dataset,
        cfg,
        out_dir=out,
        resume=not args.no_resume,
        extra_metadata=behaviour_metadata(args.dataset),
    )
    if is_main():
        emit({"out_dir": str(out), "history": res.history[-1], "l0": res.lora.l0()})
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from saelora_core.analysis.describe import describe

    res = describe(
        args.lora_dir,
        out=args.out,
        reference=args.reference,
        detector=args.detector,
        max_latents=args.max_latents,
        max_prompts=args.max_prompts,
        per_latent_prompts=args.per_latent_prompts,
        per_latent_tokens=args.per_latent_tokens,
        faithfulness=not args.no_faithfulness,
    )
    sys.stderr.write(f"{res.first_line}\n{res.summary}\n")
    emit({"card": [str(p) for p in res.files]})
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from saelora_core.adapter.saving import load_lora
    from saelora_core.adapter.summary import adapter_info, info_text

    path = Path(args.lora_dir)
    info = adapter_info(load_lora(path), args.top)
    emit(info if args.json else info_text(path, info))
    return 0


def cmd_try(args: argparse.Namespace) -> int:
    from saelora_core.adapter.saving import load_lora
    from saelora_core.analysis.playground import (
        behaviour_rate,
        playground_text,
        rate_line,
        try_adapter,
    )
    from saelora_core.models import presets

    meta = load_lora(args.lora_dir).metadata
    mas = presets.load_model_and_sae(args.preset or meta.get("preset") or "gemma-3-270m")
    lora = load_lora(args.lora_dir, sae_identity=mas.sae_identity).lora
    mode = args.mode or meta.get("mode") or "resid_add"
    detector = args.detector or meta.get("detector")
    pg = try_adapter(
        mas,
        lora,
        args.prompts,
        mode=mode,
        max_new_tokens=args.max_new_tokens,
        detector=detector,
        k_latents=args.latents,
    )
    emit(playground_text(pg).rstrip())
    if args.batch:
        if not detector:
            raise ValueError(
                f"{args.lora_dir} names no behaviour detector in its metadata; pass --detector "
                "(french or uppercase) to measure the rate"
            )
        emit(
            rate_line(behaviour_rate(mas, lora, detector=detector, n_prompts=args.batch, mode=mode))
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from saelora_core.demo.run import demo_table, run_demo
    from saelora_core.io.format import fmt_num, text_table

    summary = run_demo(quick=args.quick, out=args.out, preset=args.preset)
    emit(text_table(demo_table(summary), max_width=60))
    emit(
        "rates: share of greedy answers the detector accepts on fresh prompts (adapter: 95 % "
        f"Wilson interval); full results: {summary['json']}; demo finished in "
        f"{fmt_num(summary['total_s'], 3)} s"
    )
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    from saelora_core.models.hf import preset_tokenizer
    from saelora_core.repair import RepairConfig, run_repair

    base = json.loads(Path(args.config).read_text()) if args.config else {}
    base["method"] = args.method
    cfg = config_from_args(RepairConfig, args, base)
    if args.build_corpus or not (Path(args.corpus) / "train.jsonl").exists():
        from saelora_core.sae.corpus import build_default_corpus

        build_default_corpus(args.corpus, tokenizer=preset_tokenizer(args.preset))
    out = Path(args.out or f"runs/repair/{args.method}")
    run = run_repair(
        cfg,
        preset=args.preset,
        out_dir=out,
        eval_tokens=args.eval_tokens,
        corpus_dir=args.corpus,
        resume=not args.no_resume,
    )
    rows = {
        name: {
            "gap_closed": round(e.gap_closed, 4),
            "95% CI": [round(e.gap_closed_lo, 4), round(e.gap_closed_hi, 4)],
            "ce clean / before / after": [
                round(e.ce_clean, 4),
                round(e.ce_before, 4),
                round(e.ce_after, 4),
            ],
            "kl before / after": [round(e.kl_before, 4), round(e.kl_after, 4)],
        }
        for name, e in run.evals.items()
    }
    emit({"out_dir": str(out), "artifact": run.record["artifact"], "eval": rows})
    return 0
