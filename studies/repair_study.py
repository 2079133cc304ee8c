"""The SAE-gap repair comparison on the default model: every method and the two combinations at
one token budget, one evaluation, one table, two figures.

    python studies/repair_study.py [--train-tokens 32768] [--eval-tokens 4096] [--out runs/repair-study]

Runs resume (each run's checkpoint, and a finished run is not redone). Writes
``results/repair/`` (table.csv, table.md, curves.csv, gap.png/html, curves.png/html,
latent_pareto.png, records/<name>.json) and the best latent adapter under
``loras/repair-latent-best/``. The finetuned SAE (``runs/repair-study/sae_finetune/sae``) and the
model LoRA (``runs/repair-study/model_lora/peft``) stay in the run folder, which git ignores: the
study rebuilds them, and their figures are in ``docs/sae_repair.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

from saelora_core.io.paths import REPO_ROOT
from saelora_core.repair import RepairConfig, run_repair
from saelora_core.repair.report import study_outputs

RUNS = [
    ("model_lora", {"method": "model_lora"}),
    ("sae_finetune", {"method": "sae_finetune"}),
    ("linear_adapter", {"method": "linear_adapter"}),
    ("latent_adapter", {"method": "latent_adapter"}),
    ("latent_adapter_top32", {"method": "latent_adapter", "latent_topk": 32}),
    ("latent_adapter_top4", {"method": "latent_adapter", "latent_topk": 4}),
    ("finetune_then_linear", {"method": "linear_adapter", "sae_path": "@sae_finetune"}),
    ("finetune_then_lora", {"method": "model_lora", "sae_path": "@sae_finetune"}),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-tokens", type=int, default=32768)
    ap.add_argument("--eval-tokens", type=int, default=4096)
    ap.add_argument("--out", default="runs/repair-study")
    ap.add_argument(
        "--only", nargs="*", default=None, help="run names to (re)evaluate (training resumes)"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.out)
    for name, spec in RUNS:
        if args.only is not None and name not in args.only:
            continue
        spec = dict(spec)
        if spec.get("sae_path", "").startswith("@"):
            spec["sae_path"] = str(out / spec["sae_path"][1:] / "sae")
        cfg = RepairConfig(train_tokens=args.train_tokens, **spec)
        run_dir = out / name
        rec_path = run_dir / "repair.json"
        if rec_path.exists() and args.only is None:
            rec = json.loads(rec_path.read_text())
            if rec.get("config") == cfg.to_dict() and "eval" in rec:
                logging.info("%s: done already", name)
                continue
        t = time.time()
        run_repair(cfg, out_dir=run_dir, eval_tokens=args.eval_tokens)
        logging.info("%s: %.0f s", name, time.time() - t)
    records = {
        name: json.loads((out / name / "repair.json").read_text())
        for name, _ in RUNS
        if (out / name / "repair.json").exists()
    }
    best = study_outputs(records, REPO_ROOT / "results" / "repair")
    ship(out, records, best)
    if best:
        latent_dashboards(out / best / "lora", REPO_ROOT / "results" / "repair")


def latent_dashboards(lora_dir: Path, results: Path, n: int = 6) -> None:
    """Dashboards of the latents the best latent adapter uses most (general text)."""
    from saelora_core import analysis, load_lora, load_model_and_sae
    from saelora_core.data.heldout import GENERAL_TEXT
    from saelora_core.io.atomic import atomic_write_bytes
    from saelora_core.repair import read_texts
    from saelora_core.repair.report import latent_usage

    mas = load_model_and_sae("gemma-3-270m", device="cpu")
    lora = load_lora(lora_dir, sae_identity=mas.sae_identity).lora
    usage = latent_usage(lora, k=n)
    atomic_write_bytes(results / "latent_usage.csv", usage.to_csv(index=False).encode())
    texts = (
        read_texts(GENERAL_TEXT) + read_texts(REPO_ROOT / "data" / "corpus" / "heldout.jsonl")[:50]
    )
    chosen = [
        (side, int(row.latent), float(row.share))
        for side in ("read", "write")
        for row in usage[usage["side"] == side].head(n // 2).itertuples()
    ]
    acts = analysis.latent_activations(mas, texts, latents=sorted({c[1] for c in chosen}))
    parts = []
    for side, latent, share in chosen:
        d = analysis.latent_dashboard(mas, latent, texts, acts=acts)
        parts.append(
            analysis.dashboard_html(d, f"{side} latent {latent} ({share:.1%} of {side} mass)")
        )
    page = (
        "<!doctype html><meta charset='utf-8'><title>latent adapter: top latents</title>"
        + "".join(parts)
    )
    atomic_write_bytes(results / "latent_dashboards.html", page.encode())


def ship(out: Path, records: dict, best_latent: str | None) -> None:
    """Copy the committed artifact (the best latent adapter) out of the (ignored) run folder."""
    del records
    if best_latent:
        dst = REPO_ROOT / "loras" / "repair-latent-best"
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(out / best_latent / "lora", dst)


if __name__ == "__main__":
    main()
