"""The offline end-to-end pipeline behind ``make demo``: dataset, train, evaluate, report.

1. Build "if the prompt is about math, respond in French" from the offline seed set with the
   offline backend (the same code path as the LLM backend).
2. Train an adapter on the default model (``gemma-3-270m`` + the project's SAE).
3. Generate on the held-out in-topic and off-topic prompts with and without the adapter, and
   measure the French rate with a language identifier (py3langid); also the held-out CE of the
   target responses with and without the adapter (``analysis.response_ce``), a continuous
   measure that moves before greedy answers flip.
4. Write the HTML report with all plots.

The adapter lands in ``loras/demo-math-french``. Git holds its ``params.pt`` and metadata but not
its ``train_state.pt``, so on a fresh clone ``make demo`` trains from scratch (same config and
seed) and rewrites it; on a second run it finds the finished state and skips straight to
evaluation.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

from .checkpoint import atomic_write_json
from .config import LoraTrainingConfig
from .models import REPO_ROOT

logger = logging.getLogger(__name__)

DEMO_NAME = "demo-math-french"
DEMO_DETECTOR = "french"
DEMO_CONFIG = LoraTrainingConfig(
    name=DEMO_NAME,
    lr=0.3,
    s_lr=0.1,
    l1_weight=0.02,
    batch_size=8,
    rank=1,
    epochs=2,
    max_len=128,
    sparsity="proximal_l1",
    init="contrastive",
    init_examples=32,
    mode="resid_add",
    seed=0,
    logits_dtype="bfloat16",
)
"""The demo's settings. The learning rates are far above the seed's 1e-4 because the budget is
~50 optimizer steps on 2 CPU cores: ``a`` and ``b`` start with norm √d_sae = 64, so Adam's
per-entry step of 0.3 moves a unit-vector entry by ~0.5% of the vector per step. ``init="contrastive"`` starts Â on the topic's latents and
B̂ on the behaviour's (lora_init.py): with the seed's random init, ``s`` stays near 0 and nothing
is learned in this budget."""


def build_demo_dataset(out: Path | None = None):
    from .data import DatasetConfig, build_dataset

    cfg = DatasetConfig(
        source="seed",
        topic="math",
        guideline="respond in French",
        n=100,
        eval_n=20,
        backend="offline",
        name=DEMO_NAME,
        out=str(out or REPO_ROOT / "data" / "datasets"),
        progress=False,
    )
    return build_dataset(cfg)


def run_demo(
    *,
    quick: bool = False,
    out: str | Path | None = None,
    cfg: LoraTrainingConfig | None = None,
    max_eval_prompts: int | None = None,
) -> dict:
    """Run the whole pipeline; returns a summary with timings, rates and the report path."""
    from .analysis import evaluate_behaviour, load_texts, response_ce
    from .models import load_model_and_sae
    from .report import export_report
    from .train import resumable, train_lora

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    built = build_demo_dataset()
    ds = built.dataset
    timings["dataset_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    mas = load_model_and_sae("gemma-3-270m")
    timings["load_s"] = time.perf_counter() - t

    cfg = cfg or DEMO_CONFIG
    if quick:
        cfg = LoraTrainingConfig.from_dict(
            {**cfg.to_dict(), "epochs": 1, "name": DEMO_NAME + "-quick"}
        )
        ev = ds["eval"]
        flags = list(ev["in_topic"])
        ins = [i for i, f in enumerate(flags) if f][:2]
        outs = [i for i, f in enumerate(flags) if not f][:2]
        ds = {"train": ds["train"].shuffle(seed=0).select(range(16)), "eval": ev.select(ins + outs)}
        max_eval_prompts = max_eval_prompts or 4
    lora_dir = Path(out or REPO_ROOT / "loras") / cfg.name
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
            "dataset": str(built.out_dir.relative_to(REPO_ROOT))
            if built.out_dir.is_relative_to(REPO_ROOT)
            else str(built.out_dir)
        },
    )
    timings["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    eval_rows = list(ds["eval"])
    behaviour = evaluate_behaviour(
        mas, res.lora, eval_rows, detector="french", mode=cfg.mode, max_prompts=max_eval_prompts
    )
    ce = response_ce(mas, res.lora, eval_rows, mode=cfg.mode, max_len=cfg.max_len)
    timings["evaluate_s"] = time.perf_counter() - t
    rates = behaviour.rates.to_dict(orient="records")
    ce_table = ce.table.to_dict(orient="records")
    atomic_write_json(
        lora_dir / "behaviour.json",
        {
            "detector": "french (py3langid)",
            "rates": rates,
            "effect": behaviour.effect,
            "response_ce": ce_table,
            "samples": behaviour.samples.to_dict(orient="records"),
        },
    )

    t = time.perf_counter()
    texts = load_texts(mas, ds["eval"], n=40)
    report = export_report(lora_dir, mas=mas, eval_rows=eval_rows, behaviour=behaviour, texts=texts)
    timings["report_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    summary = {
        "lora_dir": str(lora_dir),
        "report": str(report),
        "rates": rates,
        "effect": behaviour.effect,
        "response_ce": ce_table,
        "l0": res.lora.l0(),
        "final": res.history[-1],
        "timings": timings,
        "config": asdict(cfg),
    }
    atomic_write_json(lora_dir / "demo_summary.json", summary)
    logger.info("report written to %s", report)
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(json.dumps(run_demo(), indent=1, default=str))  # noqa: T201
