"""``saelora`` command line: train adapters, inspect them, build datasets, train SAEs, run the demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from saelora_core.data.cli import add_dataset_parser
from saelora_core.training.config import LoraTrainingConfig
from saelora_core.training.recipes import DEFAULT_RECIPE, RECIPES

logger = logging.getLogger("saelora")


def _out(obj: Any) -> None:
    sys.stdout.write(
        (obj if isinstance(obj, str) else json.dumps(obj, indent=1, default=str)) + "\n"
    )


def _add_config_flags(p: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One ``--field-name`` flag per dataclass field, typed from its default."""
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            p.add_argument(
                flag,
                dest=f.name,
                type=lambda s: s.lower() in {"1", "true", "yes"},
                default=None,
                metavar="BOOL",
            )
        elif default is None:
            # An optional field: its type comes from the annotation ("float | None", ...).
            ann = str(f.type)
            if "bool" in ann:
                kind = lambda s: s.lower() in {"1", "true", "yes"}  # noqa: E731
            elif "float" in ann:
                kind = float
            elif "int" in ann:
                kind = int
            else:
                kind = str
            p.add_argument(flag, dest=f.name, type=kind, default=None)
        else:
            # Choices are validated by the config's __post_init__, with a message listing them.
            p.add_argument(flag, dest=f.name, type=type(default), default=None)


def _config_from_args(cls, args: argparse.Namespace, base: dict | None = None):
    d = dict(base or {})
    d.update(
        {
            f.name: getattr(args, f.name)
            for f in fields(cls)
            if getattr(args, f.name, None) is not None
        }
    )
    return cls.from_dict(d)


def train_config(args: argparse.Namespace) -> LoraTrainingConfig:
    """The config ``saelora train`` runs: the ``--recipe``'s fields, over them the ``--config``
    file's, over those the flags."""
    base = {**RECIPES[args.recipe]}
    if args.config:
        base.update(json.loads(Path(args.config).read_text()))
    return _config_from_args(LoraTrainingConfig, args, base)


def cmd_train(args: argparse.Namespace) -> int:
    from saelora_core.data import load_behaviour_dataset
    from saelora_core.models.presets import load_model_and_sae
    from saelora_core.training.loop import train_lora

    cfg = train_config(args)
    dataset = load_behaviour_dataset(args.dataset)
    mas = load_model_and_sae(args.preset, sae_path=args.sae_path)
    out = Path(args.out) / cfg.name
    res = train_lora(
        mas,
        dataset,
        cfg,
        out_dir=out,
        resume=not args.no_resume,
        extra_metadata={"dataset": str(args.dataset)},
    )
    _out({"out_dir": str(out), "history": res.history[-1], "l0": res.lora.l0()})
    return 0


def _fmt_metric(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) <= 8:
        return "[" + ", ".join(_fmt_metric(v) for v in value) + "]"
    if isinstance(value, (list, dict)):
        return f"<{type(value).__name__} of {len(value)}>"
    return str(value)


def _fmt_l0(counts: Any) -> str:
    """One count per rank component; a single component's count without brackets."""
    return str(counts[0]) if isinstance(counts, list) and len(counts) == 1 else str(counts)


def _info_text(path: Path, info: dict[str, Any]) -> str:
    """The human summary `saelora info` prints: one fact per line, top latents per component."""
    sae = info.get("sae") or {}
    sae_name = sae.get("path") or "/".join(str(sae[k]) for k in ("release", "sae_id") if sae.get(k))
    sae_bits = [sae.get("architecture"), f"d_sae {info.get('d_sae')}", f"hash {sae.get('hash')}"]
    l0 = info.get("l0") or {}
    cfg = info.get("config") or {}
    lines = [
        f"adapter  {path}",
        f"preset   {info.get('preset')} (layer {info.get('layer')}, {info.get('hook_name')})",
        f"SAE      {sae_name or '?'} ({', '.join(str(b) for b in sae_bits if b)})",
        f"mode     {info.get('mode')}",
        f"rank     {info.get('rank')}",
        f"L0       read {_fmt_l0(l0.get('read'))}, write {_fmt_l0(l0.get('write'))} "
        f"(of {info.get('d_sae')} latents)",
    ]
    if cfg:
        keys = ["sparsity", "l1_weight", "init", "lr", "epochs", "batch_size"]
        if "topk" in str(cfg.get("sparsity")):
            keys.insert(1, "topk")
        shown = [f"{k}={cfg[k]}" for k in keys if cfg.get(k) is not None]
        if shown:
            lines.append("training " + ", ".join(shown))
    data = [f"{info[k]} {k[2:]} rows" for k in ("n_train", "n_eval") if info.get(k) is not None]
    if info.get("dataset"):
        data.insert(0, str(info["dataset"]))
    if data:
        lines.append("data     " + ", ".join(data))
    state = "complete" if info.get("complete") else "incomplete (resumable)"
    lines.append(f"status   {state}; updated {info.get('updated')}")
    lines.append("top latents (latent:weight, largest |weight| of each unit vector):")
    for comp in info["top_latents"]:
        lines.append(f"  component {comp['component']} (s = {comp['s']:.4g})")
        for side in ("read", "write"):
            entries = " ".join(f"{lat}:{w:+.3f}" for lat, w in comp[side]) or "(all zero)"
            lines.append(f"    {side:<5} {entries}")
    last = info.get("last_metrics") or {}
    if last:
        metrics = ", ".join(f"{k} {_fmt_metric(v)}" for k, v in last.items())
        lines.append(f"last metrics  {metrics}")
    return "\n".join(lines)


def cmd_describe(args: argparse.Namespace) -> int:
    from saelora_core.describe import describe

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
    _out({"card": [str(p) for p in res.files]})
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from saelora_core.adapter.saving import load_lora
    from saelora_core.analysis.features import top_entries

    path = Path(args.lora_dir)
    loaded = load_lora(path)
    meta, lora = loaded.metadata, loaded.lora
    keys = (
        "preset",
        "sae",
        "layer",
        "hook_name",
        "mode",
        "d_sae",
        "rank",
        "l0",
        "config",
        "created",
        "updated",
        "version",
        "complete",
        "n_train",
        "n_eval",
        "dataset",
    )
    info: dict[str, Any] = {k: meta.get(k) for k in keys}
    info["last_eval"] = info["last_metrics"] = (meta.get("history") or [{}])[-1]
    read, write, scales = lora.read_dirs().detach(), lora.write_dirs().detach(), lora.s.detach()
    info["top_latents"] = [
        {
            "component": j,
            "s": float(scales[j]),
            "read": top_entries(read[:, j].float(), args.top),
            "write": top_entries(write[j].float(), args.top),
        }
        for j in range(lora.rank)
    ]
    _out(info if args.json else _info_text(path, info))
    return 0


def cmd_sae_train(args: argparse.Namespace) -> int:
    from saelora_core.models.presets import load_base_model
    from saelora_core.sae.corpus import build_corpus
    from saelora_core.sae.train import SaeTrainConfig, train_sae

    base = json.loads(Path(args.config).read_text()) if args.config else {}
    cfg = _config_from_args(SaeTrainConfig, args, base)
    model = load_base_model(cfg.preset)
    corpus = Path(args.corpus)
    if args.build_corpus or not (corpus / "train.jsonl").exists():
        build_corpus(corpus, tokenizer=model.tokenizer)
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
    _out({"sae": str(out), "metrics": json.loads((out / "metrics.json").read_text())})
    return 0


def cmd_sae_corpus(args: argparse.Namespace) -> int:
    from saelora_core.models.hf import preset_tokenizer
    from saelora_core.sae.corpus import build_corpus

    res = build_corpus(args.out, tokenizer=preset_tokenizer(args.preset))
    _out({"corpus": str(args.out), "train_tokens": res.manifest.get("train_tokens")})
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from saelora_core.demo import run_demo

    summary = run_demo(quick=args.quick, out=args.out)
    _out(summary)
    for b in summary["behaviours"]:
        r = {(x["condition"], x["split"]): x for x in b["rates"]}

        def rate(c: str, s: str, r=r) -> str:
            x = r[(c, s)]
            return f"{x['rate']:.2f} [{x['low']:.2f}, {x['high']:.2f}]"

        sys.stderr.write(
            f"{b['name']} ({b['guideline']}): {b['detector']} rate in-topic "
            f"{rate('base', 'in_topic')} -> {rate('adapter', 'in_topic')}, off-topic "
            f"{rate('base', 'off_topic')} -> {rate('adapter', 'off_topic')} "
            f"(n = {r[('adapter', 'in_topic')]['n']} + {r[('adapter', 'off_topic')]['n']} fresh "
            f"prompts, 95 % Wilson intervals); report: {b['report']}\n"
        )
    sys.stderr.write(f"demo finished in {summary['total_s']:.0f} s\n")
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    from saelora_core.models.hf import preset_tokenizer
    from saelora_core.repair import RepairConfig, run_repair

    base = json.loads(Path(args.config).read_text()) if args.config else {}
    base["method"] = args.method
    cfg = _config_from_args(RepairConfig, args, base)
    if args.build_corpus or not (Path(args.corpus) / "train.jsonl").exists():
        from saelora_core.sae.corpus import build_corpus

        build_corpus(args.corpus, tokenizer=preset_tokenizer(args.preset))
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
    _out({"out_dir": str(out), "artifact": run.record["artifact"], "eval": rows})
    return 0


def build_parser() -> argparse.ArgumentParser:
    from saelora_core.sae.train import SaeTrainConfig

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
    _add_config_flags(p, LoraTrainingConfig)
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

    sae = sub.add_parser("sae", help="train SAEs").add_subparsers(dest="sae_command", required=True)
    p = sae.add_parser("train", help="train a TopK SAE with sae_lens on a local corpus")
    p.add_argument("--corpus", default="data/corpus", help="dir with train.jsonl/heldout.jsonl")
    p.add_argument("--build-corpus", action="store_true", help="(re)build the default corpus first")
    p.add_argument("--out", default="data/saes/gemma-3-270m-l12-topk")
    p.add_argument("--config", default=None, help="JSON file of SaeTrainConfig fields")
    p.add_argument("--resume", default=None, help="sae_lens checkpoint dir to resume from")
    _add_config_flags(p, SaeTrainConfig)
    p.set_defaults(func=cmd_sae_train)
    p = sae.add_parser("corpus", help="build the SAE corpus (train/held-out text, no hub)")
    p.add_argument("--out", default="data/corpus")
    p.add_argument("--preset", default="gemma-3-270m", help="its tokenizer counts the tokens")
    p.set_defaults(func=cmd_sae_corpus)

    p = sub.add_parser("demo", help="the offline pipeline: dataset, train, evaluate, report")
    p.add_argument("--quick", action="store_true", help="a tiny budget, for smoke tests")
    p.add_argument(
        "--out",
        default=None,
        help="parent directory of the demo's adapters and reports (default: the repository's "
        "runs/demo, which git ignores; --out loras refreshes the shipped loras/demo-*)",
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
    _add_config_flags(p, RepairConfig, skip=("method", "lora_targets"))
    p.set_defaults(func=cmd_repair)

    add_dataset_parser(sub)
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
