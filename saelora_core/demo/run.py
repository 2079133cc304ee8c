"""The offline end-to-end pipeline behind ``make demo``: dataset, train, evaluate, report.

It runs two behaviours, each through the same four steps:

- **flagship**: "if the prompt is about math, respond in French" (``demo-math-french``);
- **fallback**: "if the prompt is about math, respond in uppercase"
  (``demo-math-upper``), the conditional behaviour the 270M base model learns most
  readily (the issue asks for the best one it learns beside the French attempt).

For each:

1. Build the dataset from the offline seed set with the offline backend (the same code path as
   the LLM backend).
2. Train an adapter on the default model (``gemma-3-270m`` + the project's SAE).
3. Generate on the 80 in-topic and 80 off-topic fresh prompts of ``data/heldout/prompts.jsonl``
   (in no dataset split) with and without the adapter (with the ``transformers`` twin where
   the model has one, ``adapter.generate.fastest_backend``), and score the answers with the
   behaviour's detector (py3langid for French), each rate with its 95 % Wilson interval; also
   the CE of the first 32 tokens of the eval split's target responses with and without the adapter
   (``analysis.response_ce``), a continuous measure that moves before greedy answers flip. The
   base model's answers are generated once and shared by both behaviours.
4. Write the HTML report with all plots.

Why both train on the first 4 answer tokens only (``response_tokens=4``): the answer's language
or case is decided there. Forcing the first 4 tokens of the French target makes the base model
continue in French on 9/10 held-out math prompts (2 tokens: 5/10, 1 token: 0/10); one forced
uppercase token already gives 6/10 uppercase answers. Later tokens mostly follow from earlier
ones under teacher forcing and only dilute that signal.

Where it writes: ``runs/demo/<name>/`` by default (``DEFAULT_DEMO_OUT``; git ignores ``runs/``),
so ``make demo`` never rewrites tracked files. The adapters shipped in ``loras/demo-*`` are the
output of ``saelora demo --out loras``, which refreshes them (a retrained ``params.pt`` is not
bit-identical across machines and thread counts). A second run into the same directory finds the
finished training state and skips straight to evaluation.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from saelora_core.data.heldout import EVAL_NEW_TOKENS, HELDOUT_PROMPTS, heldout_prompts
from saelora_core.demo.behaviours import DEMO_BEHAVIOURS, DemoBehaviour, build_demo_dataset
from saelora_core.io.atomic import atomic_write_json
from saelora_core.io.format import fmt_interval
from saelora_core.io.paths import REPO_ROOT, repo_relative
from saelora_core.training.config import LoraTrainingConfig

if TYPE_CHECKING:
    from saelora_core.analysis import BehaviourResult

logger = logging.getLogger(__name__)

DEFAULT_DEMO_OUT = REPO_ROOT / "runs" / "demo"
"""Where ``run_demo`` puts its adapters, reports and summaries unless told otherwise (git-ignored)."""


def run_demo(
    *,
    quick: bool = False,
    out: str | Path | None = None,
    behaviours: tuple[DemoBehaviour, ...] = DEMO_BEHAVIOURS,
    max_eval_prompts: int | None = None,
    preset: str = "gemma-3-270m",
) -> dict:
    """Run the whole pipeline for each behaviour, writing each adapter, report and summary to
    ``<out>/<name>/`` (default ``DEFAULT_DEMO_OUT``, ``runs/demo``; ``out=REPO_ROOT / "loras"``
    refreshes the shipped adapters); returns their summaries (timings, rates, report paths)
    under ``"behaviours"``, the output directory and the total time. ``preset`` picks the
    model and SAE (another SAE for the same model gives the same recipe on its latents)."""
    from saelora_core.models.presets import load_model_and_sae

    t0 = time.perf_counter()
    mas = load_model_and_sae(preset)
    load_s = time.perf_counter() - t0
    base: dict[tuple, BehaviourResult] = {}  # eval prompts -> the result holding base answers
    summaries = []
    for b in behaviours:
        summaries.append(
            _run_one(mas, b, quick=quick, out=out, max_eval_prompts=max_eval_prompts, base=base)
        )
        logger.info("%s: report written to %s", b.name, summaries[-1]["report"])
    summary = {
        "behaviours": summaries,
        "out": repo_relative(Path(out or DEFAULT_DEMO_OUT)),
        "preset": preset,
        "sae": mas.sae_identity,
        "load_s": load_s,
        "total_s": time.perf_counter() - t0,
    }
    summary["json"] = repo_relative(Path(out or DEFAULT_DEMO_OUT) / SUMMARY_FILE)
    atomic_write_json(Path(out or DEFAULT_DEMO_OUT) / SUMMARY_FILE, summary)
    return summary


DEMO_GENERATE_BATCH = 80
"""Prompts decoded together in the evaluation: the 160 fresh prompts in two batches (with the
``transformers`` twin and the French adapter, 16.9 s for all 160 against 18.9 s at batch 40, and
23.1 s with the TransformerLens decoder at batch 40, on 2 cores in bf16)."""

SUMMARY_FILE = "demo_summary.json"
"""The demo's full results (every behaviour's rates, timings, config), beside its adapters."""


def demo_table(summary: dict) -> pd.DataFrame:
    """One row per behaviour: its guideline, detector, in-topic and off-topic rates base →
    adapter (the adapter's with its 95 % Wilson interval), the prompts and the report: what
    ``make demo`` prints (formatted with ``io.format``)."""
    rows = []
    for b in summary["behaviours"]:
        r = {(x["condition"], x["split"]): x for x in b["rates"]}

        def rate(c: str, s: str, r=r, ci: bool = True) -> str:
            x = r[(c, s)]
            return fmt_interval(x["rate"], x["low"] if ci else None, x["high"] if ci else None)

        rows.append(
            {
                "behaviour": f"{b['name']} ({b['guideline']})",
                "detector": b["detector"],
                "in-topic base → adapter": f"{rate('base', 'in_topic', ci=False)} → "
                f"{rate('adapter', 'in_topic')}",
                "off-topic base → adapter": f"{rate('base', 'off_topic', ci=False)} → "
                f"{rate('adapter', 'off_topic')}",
                "prompts": f"{r[('adapter', 'in_topic')]['n']} + {r[('adapter', 'off_topic')]['n']}",
                "report": b["report"],
            }
        )
    return pd.DataFrame(rows)


def _run_one(
    mas, b: DemoBehaviour, *, quick, out, max_eval_prompts, base: dict[tuple, BehaviourResult]
) -> dict:
    from saelora_core.adapter.generate import fastest_backend
    from saelora_core.analysis import evaluate_behaviour, load_texts, response_ce
    from saelora_core.reporting.adapter_report import export_report
    from saelora_core.training.loop import train_lora
    from saelora_core.training.resume import resumable

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    built = build_demo_dataset(b)
    ds = built.dataset
    timings["dataset_s"] = time.perf_counter() - t0

    cfg = b.config
    if quick:
        cfg = LoraTrainingConfig.from_dict(
            {**cfg.to_dict(), "epochs": 1, "name": b.name + "-quick"}
        )
        ev = ds["eval"]
        flags = list(ev["in_topic"])
        ins = [i for i, f in enumerate(flags) if f][:2]
        outs = [i for i, f in enumerate(flags) if not f][:2]
        ds = {"train": ds["train"].shuffle(seed=0).select(range(16)), "eval": ev.select(ins + outs)}
        max_eval_prompts = max_eval_prompts or 4
    lora_dir = Path(out or DEFAULT_DEMO_OUT) / cfg.name
    fresh = resumable(lora_dir, cfg, mas) is False
    if fresh:
        logger.info("%s holds a run with another config or SAE: training from scratch", lora_dir)
    t = time.perf_counter()
    res = train_lora(
        mas,
        ds,
        cfg,
        out_dir=lora_dir,
        resume=not fresh,
        extra_metadata={
            "dataset": repo_relative(built.out_dir),
            "guideline": b.guideline,
            "detector": b.detector,
        },
    )
    timings["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    eval_rows = heldout_prompts()
    if max_eval_prompts is not None:  # as many off-topic as in-topic prompts
        ins = [r for r in eval_rows if r["in_topic"]][: (max_eval_prompts + 1) // 2]
        eval_rows = ins + [r for r in eval_rows if not r["in_topic"]][: max_eval_prompts // 2]
    key = tuple(r["prompt"] for r in eval_rows)
    backend = fastest_backend(mas)
    behaviour = evaluate_behaviour(
        mas,
        res.lora,
        eval_rows,
        detector=b.detector,
        mode=cfg.mode,
        max_new_tokens=EVAL_NEW_TOKENS,
        base=base.get(key),
        progress=True,
        backend=backend,
        batch_size=DEMO_GENERATE_BATCH,
    )
    if key not in base:
        base[key] = behaviour
    ce = response_ce(
        mas,
        res.lora,
        list(ds["eval"]),
        mode=cfg.mode,
        max_len=cfg.max_len,
        logits_dtype=cfg.logits_dtype,
        response_tokens=EVAL_NEW_TOKENS,  # the span the greedy answers cover
    )
    timings["evaluate_s"] = time.perf_counter() - t
    rates = behaviour.rates.to_dict(orient="records")
    ce_table = ce.table.to_dict(orient="records")
    atomic_write_json(
        lora_dir / "behaviour.json",
        {
            "detector": b.detector + (" (py3langid)" if b.detector == "french" else ""),
            "guideline": b.guideline,
            "rates": rates,
            "effect": behaviour.effect,
            "conditional_gap": behaviour.conditional_gap,
            "response_ce": ce_table,
            "max_new_tokens": EVAL_NEW_TOKENS,
            "generation": {"backend": backend, "batch_size": DEMO_GENERATE_BATCH},
            "eval_prompts": repo_relative(HELDOUT_PROMPTS),
            "samples": behaviour.samples.to_dict(orient="records"),
        },
    )

    t = time.perf_counter()
    texts = load_texts(mas, ds["eval"], n=40)
    report = export_report(lora_dir, mas=mas, eval_rows=eval_rows, behaviour=behaviour, texts=texts)
    timings["report_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    summary = {
        "name": b.name,
        "guideline": b.guideline,
        "detector": b.detector,
        "lora_dir": repo_relative(lora_dir),
        "report": repo_relative(report),
        "rates": rates,
        "effect": behaviour.effect,
        "conditional_gap": behaviour.conditional_gap,
        "response_ce": ce_table,
        "l0": res.lora.l0(),
        "final": res.history[-1],
        "timings": timings,
        "config": asdict(cfg),
    }
    atomic_write_json(lora_dir / "demo_summary.json", summary)
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(json.dumps(run_demo(), indent=1, default=str))  # noqa: T201
