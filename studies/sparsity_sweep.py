"""Sparsity methods side by side on the default experiment, with the seed's method as baseline.

For each (method, strength, init) it trains an adapter (config: the demo's, see
``saelora_core.demo.behaviours.SWEEP_BEHAVIOUR``, the flagship "if the prompt is about math, respond in
French") and records the exact L0 of Â and B̂, the behaviour rate on
held-out in-topic and off-topic prompts (greedy answers scored by the demo's detector), and
the held-out CE of the target responses with and without the adapter (``response_ce``: its
in-topic gain is the continuous behaviour effect, which moves even when no greedy answer
flips). Then it prunes the sparse adapter with the largest behaviour effect (in-topic rate minus
the base model's) to its top-k latents, k = 1 … 64, next to a same-L0 random-latent control, and
measures the effect kept (greedy answers on the in-topic prompts) and the CE gain kept. It also measures the two diagnoses of the seed's method:

1. ``l1_raw`` is scale-degenerate: the raw norms ‖a‖, ‖b‖ shrink while the unit vectors stay
   as dense as noise;
2. latents that never fire on the training set get no prediction-loss gradient, so under a
   random init their read weights stay at (a rescaled copy of) their initial noise.

Every finished run writes ``runs/<name>/sweep_row.json``; a killed sweep re-run skips finished
runs (and ``train_lora`` resumes unfinished ones from their checkpoints).

Writes ``<out>/{runs,prune}.csv``, ``diagnosis.json`` and the Pareto, pruning and diagnosis
figures (HTML + PNG). The distilled student with the largest effect, its random control and the
teacher are also scored on 80 + 80 prompts outside every dataset split (``heldout.csv``), since
20 eval prompts leave a rate at ±0.1.

Stages (each a function below, each resumable from what it wrote): ``train_runs``,
``diagnose``, ``pick_adapter_to_prune``, ``prune``, ``finetune_pruned``, ``distil``,
``heldout_check``, ``plot``, ``feature_reports``.

Usage: python studies/sparsity_sweep.py [--quick] [--epochs N] [--eval-prompts N] [--only M ...]
       [--prune LORA_DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.express as px
import torch

from saelora_core import (
    LoraTrainingConfig,
    SaeLora,
    load_lora,
    load_model_and_sae,
    random_support_control,
    save_lora,
    train_lora,
)
from saelora_core.adapter.saving import build_metadata
from saelora_core.adapter.sparsity import split_rank
from saelora_core.analysis import (
    adapter_sparsity,
    effect_retained,
    evaluate_behaviour,
    latent_dashboard,
    load_texts,
    response_ce,
    top_feats_summary,
)
from saelora_core.analysis.behaviour import BehaviourResult
from saelora_core.analysis.prune_sweep import prune_variants, score_variants
from saelora_core.data.heldout import EVAL_NEW_TOKENS, heldout_prompts
from saelora_core.demo.behaviours import SWEEP_BEHAVIOUR, build_demo_dataset
from saelora_core.models.presets import ModelAndSae
from saelora_core.reporting import figures
from saelora_core.reporting.export import save_figure, save_table
from saelora_core.training.splits import split_dataset

# (method, strength, init). For topk the strength is k; otherwise it is sparsity_weight.
RUNS = [
    ("l1_raw", 0.05, "random"),  # the seed's method and init: the baseline
    ("none", 0.0, "contrastive"),  # no sparsity pressure: the dense reference
    ("l1_normalized", 0.05, "contrastive"),
    ("proximal_l1", 0.002, "contrastive"),
    ("proximal_l1", 0.02, "contrastive"),
    ("topk", 16, "contrastive"),
    ("hard_concrete", 1e-3, "contrastive"),
]
SWEEP_CONFIG = SWEEP_BEHAVIOUR.config
PRUNE_K = (1, 2, 4, 8, 16, 32, 64)
FINETUNE_K = (4, 16)
# Distillation (rank, k per read/write vector): the student starts from the pruned adapter
# (split into `rank` components, lora.split_rank), cuts its support along DISTILL_SCHEDULE
# one epoch per step, then trains DISTILL_EPOCHS_AT_K more epochs at k, matching the
# adapter's next-token distribution (distill_from). Each has a same-L0 random-latent control:
# random support, trained the same way for the same number of epochs with the support frozen.
DISTILL = ((8, 16), (4, 16))  # rank 8 splits each vector into 2 read × 4 write parts
DISTILL_SCHEDULE = [512, 256, 128, 64, 32]
DISTILL_EPOCHS_AT_K = 4
DISTILL_S_LR = 0.05


def eval_rows_balanced(ds, n: int) -> list[dict]:
    rows = list(ds["eval"])
    return [r for r in rows if r["in_topic"]][:n] + [r for r in rows if not r["in_topic"]][:n]


@torch.no_grad()
def fired_on(mas, examples) -> torch.Tensor:
    """Latents that fire on at least one non-BOS token of ``examples``."""
    fired = torch.zeros(mas.sae.cfg.d_sae, dtype=torch.bool)
    for ex in examples:
        resid = mas.model(ex.chat.tokens[None], stop_at_layer=mas.layer + 1)
        fired |= (mas.sae.encode(resid[0, 1:]) > 0).any(0)
    return fired


def drift(final: SaeLora, init: SaeLora, fired: torch.Tensor) -> dict[str, float]:
    """How far the read vector moved from its initialisation, on firing and never-firing latents.

    Compared on the unit vectors Â (the function), as the cosine between init and final weights
    restricted to each group: 1 means the group still holds its initial random pattern.
    """
    out = {}
    a0, a1 = init.read_dirs()[:, 0], final.read_dirs()[:, 0]
    for name, m in (("firing", fired), ("never_firing", ~fired)):
        x0, x1 = a0[m], a1[m]
        cos = (x0 @ x1 / (x0.norm() * x1.norm()).clamp_min(1e-12)).item()
        out[f"read_cos_to_init_{name}"] = cos
        out[f"read_mass_{name}"] = (x1.pow(2).sum()).item()  # share of ‖Â‖² = 1
    return out


def write_feature_report(mas, lora: SaeLora, ds, texts, out: Path, tag: str) -> pd.DataFrame:
    """``top_feats{_tag}`` (top 16 latents per vector, firing rates on in-topic vs off-topic
    training prompts) and ``read_latent_dashboards{_tag}.html`` (max-activating examples of the
    four largest read latents)."""
    suffix = f"_{tag}" if tag else ""
    feats = top_feats_summary(lora, k=16, mas=mas, dataset=ds["train"], max_rows_for_freq=200)
    save_table(feats, out, f"top_feats{suffix}")
    reads = feats[feats.side == "read"].sort_values("mass_share", ascending=False)
    html = "".join(
        latent_dashboard(mas, lat, texts, k=6, title=f"read latent {lat}").html
        for lat in reads.latent.drop_duplicates().tolist()[:4]
    )
    (out / f"read_latent_dashboards{suffix}.html").write_text(
        f"<html><meta charset='utf-8'><body>{html}</body></html>"
    )
    return feats


def heldout_table(files: list[Path]) -> pd.DataFrame:
    """``heldout.csv`` from the cached per-adapter results (``<f>`` and ``<f>.samples.csv``,
    the teacher's first): each adapter's effect retained, with its 95 % paired-bootstrap
    interval over the in-topic prompts."""
    teacher = pd.read_csv(files[0].with_suffix(".samples.csv"))
    rows = []
    for f in files:
        ratio, lo, hi = effect_retained(pd.read_csv(f.with_suffix(".samples.csv")), teacher)
        rows.append(json.loads(f.read_text()) | {"retained": ratio, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


@dataclass
class Sweep:
    """What every stage reads: the model, the data, the evaluation settings and the output."""

    args: argparse.Namespace
    out: Path
    mas: ModelAndSae
    ds: Any
    data: dict
    eval_rows: list[dict]
    ce_rows: list[dict]
    gen: dict
    base: BehaviourResult


@dataclass
class Pruning:
    """The adapter the pruning stages start from, and its own effect and CE gain."""

    full: SaeLora
    full_name: str
    src: str | None
    """Its directory when it is a saved adapter (fine-tuning and distillation need one)."""
    in_rows: list[dict]
    base_in: BehaviourResult
    base_ce: Any
    full_effect: float
    full_gain: float


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="16 train rows, 2 eval prompts a side")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--eval-prompts", type=int, default=12, help="per side, for the rates")
    ap.add_argument("--only", nargs="*", help="method names to run (default: all)")
    ap.add_argument(
        "--prune",
        default=f"loras/{SWEEP_BEHAVIOUR.name}",
        help="adapter to prune (default: the demo's; if missing, the sweep's best sparse run)",
    )
    ap.add_argument("--out", default="exports/sparsity_sweep")
    return ap.parse_args()


def setup(args: argparse.Namespace) -> Sweep:
    """Load the model, build the flagship dataset, and generate the base model's answers."""
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    mas = load_model_and_sae("gemma-3-270m")
    ds = build_demo_dataset(SWEEP_BEHAVIOUR).dataset
    data = {"train": ds["train"], "eval": ds["eval"]}
    n_eval = args.eval_prompts
    if args.quick:
        data = {"train": ds["train"].shuffle(seed=0).select(range(16)), "eval": ds["eval"]}
        n_eval = 2
    eval_rows = eval_rows_balanced(ds, n_eval)
    ce_rows = list(ds["eval"]) if not args.quick else eval_rows
    gen = {"detector": SWEEP_BEHAVIOUR.detector, "max_new_tokens": EVAL_NEW_TOKENS}
    base = evaluate_behaviour(mas, None, eval_rows, **gen)
    print("base", base.rates.to_dict(orient="records"), flush=True)
    return Sweep(args, out, mas, ds, data, eval_rows, ce_rows, gen, base)


def run_config(sw: Sweep, method: str, lam: float, init: str, name: str) -> LoraTrainingConfig:
    extra = (
        {"topk": int(lam), "sparsity_weight": 0.0} if method == "topk" else {"sparsity_weight": lam}
    )
    if method == "hard_concrete":
        extra["gate_lr"] = 0.3  # log_alpha must travel from 2 to below -2.4 in ~25 steps
    return LoraTrainingConfig.from_dict(
        {
            **SWEEP_CONFIG.to_dict(),
            "epochs": sw.args.epochs,
            "sparsity": method,
            "init": init,
            "name": name,
            **extra,
        }
    )


def train_run(sw: Sweep, method: str, lam: float, init: str) -> tuple[dict, SaeLora]:
    """Train one (method, strength, init) and score it; cached in ``runs/<name>/sweep_row.json``."""
    name = f"{method}-{lam:g}-{init}"
    run_dir = sw.out / "runs" / name
    row_file = run_dir / "sweep_row.json"
    if row_file.exists():
        row = json.loads(row_file.read_text())
        print("cached", json.dumps(row), flush=True)
        return row, load_lora(run_dir).lora
    cfg = run_config(sw, method, lam, init, name)
    t = time.perf_counter()
    res = train_lora(sw.mas, sw.data, cfg, out_dir=run_dir, progress=False)
    beh = evaluate_behaviour(sw.mas, res.lora, sw.eval_rows, base=sw.base, **sw.gen)
    ce = response_ce(sw.mas, res.lora, sw.ce_rows, max_len=cfg.max_len, logits_dtype="bfloat16")
    (l0r,), (l0w,) = res.lora.l0()
    row = {
        "name": name,
        "method": method,
        "strength": lam,
        "init": init,
        "l0_read": l0r,
        "l0_write": l0w,
        "l0": max(l0r, l0w),
        "in_topic": beh.rate("adapter", "in_topic"),
        "off_topic": beh.rate("adapter", "off_topic"),
        "base_in_topic": beh.rate("base", "in_topic"),
        "base_off_topic": beh.rate("base", "off_topic"),
        "effect": beh.effect,
        "ce_gain_in_topic": ce.gain("in_topic"),
        "ce_gain_off_topic": ce.gain("off_topic"),
        "eval_ce": res.history[-1]["eval_ce"],
        "eval_ce_start": res.history[0]["eval_ce"],
        "s": res.lora.s.item(),
        "raw_norm_a": res.lora.a.norm().item(),
        "raw_norm_b": res.lora.b.norm().item(),
        "seconds": time.perf_counter() - t,
    }
    sp = adapter_sparsity(res.lora, noise_baseline=False).set_index("side")
    row |= {
        f"{side}_{k}": float(sp.loc[side, k])
        for side in ("read", "write")
        for k in ("hoyer", "gini", "top16_mass")
    }
    row_file.write_text(json.dumps(row, indent=1))
    beh.samples.to_csv(run_dir / "samples.csv", index=False)
    print(json.dumps(row), flush=True)
    return row, res.lora


def train_runs(sw: Sweep) -> tuple[pd.DataFrame, dict[str, SaeLora]]:
    """Stage 1: every method of ``RUNS`` (or ``--only``), written to ``runs.csv``."""
    rows, adapters = [], {}
    for method, lam, init in RUNS:
        if sw.args.only and method not in sw.args.only:
            continue
        row, lora = train_run(sw, method, lam, init)
        rows.append(row)
        adapters[row["name"]] = lora
    runs = pd.DataFrame(rows)
    runs.to_csv(sw.out / "runs.csv", index=False)
    return runs, adapters


def diagnose(sw: Sweep, adapters: dict[str, SaeLora]) -> None:
    """Stage 2: never-firing latents and what each init leaves on them (``diagnosis.json`` and
    its figure)."""
    mas, out = sw.mas, sw.out
    train_ex, _, _ = split_dataset(mas, sw.data, LoraTrainingConfig(max_len=SWEEP_CONFIG.max_len))
    fired = fired_on(mas, train_ex)
    diag: dict = {"d_sae": int(fired.numel()), "never_fire_share": 1 - fired.float().mean().item()}
    d_sae = mas.sae.cfg.d_sae
    for name, lora in adapters.items():
        init_kind = name.rsplit("-", 1)[-1]
        if init_kind == "random":
            init = SaeLora(d_sae, 1, generator=torch.Generator().manual_seed(SWEEP_CONFIG.seed))
            diag[name] = drift(lora, init, fired) | {
                "raw_norm_a_init": init.a.norm().item(),
                "raw_norm_a_final": lora.a.norm().item(),
            }
        else:
            a = lora.read_dirs()[:, 0]
            diag[name] = {"read_mass_never_firing": a[~fired].pow(2).sum().item()}
    (out / "diagnosis.json").write_text(json.dumps(diag, indent=1))
    print("diagnosis", json.dumps(diag), flush=True)
    dg = pd.DataFrame(
        [
            {"adapter": n, "latents": g, "share of |Â|²": v}
            for n, d in diag.items()
            if isinstance(d, dict)
            for g in ("firing", "never_firing")
            if (v := d.get(f"read_mass_{g}")) is not None
        ]
    )
    if len(dg):
        fig = px.bar(dg, x="adapter", y="share of |Â|²", color="latents", barmode="stack")
        fig.update_layout(
            title=f"Read-vector mass on latents that never fire on the training set "
            f"({diag['never_fire_share']:.0%} of {d_sae})"
        )
        save_figure(fig, out, "diagnosis_never_firing", formats=("html", "png"))


def pick_adapter_to_prune(sw: Sweep, runs: pd.DataFrame, adapters: dict[str, SaeLora]) -> Pruning:
    """Stage 3: the adapter to prune, ``--prune`` (the demo's) when it exists, else the sparse
    run with the largest behaviour effect (ties: the larger in-topic CE gain). Pruned adapters
    answer the in-topic prompts only (the effect is defined there); the base answers are reused."""
    mas, gen = sw.mas, sw.gen
    sparse = pd.DataFrame(runs[~runs.method.isin(["l1_raw", "none"])])
    pick = (sparse if len(sparse) else runs).sort_values(by=["effect", "ce_gain_in_topic"]).iloc[-1]
    full, full_name = adapters[pick["name"]], str(pick["name"])
    args = sw.args
    src = args.prune if args.prune and Path(args.prune, "params.pt").exists() else None
    if src:
        full, full_name = load_lora(src).lora, str(src)
    in_rows = [r for r in sw.ds["eval"] if r["in_topic"]][: 2 if args.quick else None]
    base_in = evaluate_behaviour(mas, None, in_rows, **gen)
    base_ce = response_ce(
        mas, full, sw.ce_rows, max_len=SWEEP_CONFIG.max_len, logits_dtype="bfloat16"
    )
    full_effect = evaluate_behaviour(mas, full, in_rows, base=base_in, **gen).effect
    full_gain = base_ce.gain("in_topic")
    print(f"pruning {full_name}: effect {full_effect:+.3f}, CE gain {full_gain:+.4f}", flush=True)
    return Pruning(full, full_name, src, in_rows, base_in, base_ce, full_effect, full_gain)


def pruned_columns(sw: Sweep, p: Pruning, lora: SaeLora, beh: BehaviourResult) -> dict:
    """Effect retained and CE gains of a pruned adapter whose in-topic answers are ``beh``."""
    ce = response_ce(
        sw.mas, lora, sw.ce_rows, max_len=SWEEP_CONFIG.max_len, logits_dtype="bfloat16",
        base=p.base_ce,
    )  # fmt: skip
    return {
        "adapter": p.full_name,
        "in_topic": beh.rate("adapter", "in_topic"),
        "retained": beh.effect / p.full_effect if p.full_effect else float("nan"),
        "ce_gain_in_topic": ce.gain("in_topic"),
        "ce_gain_off_topic": ce.gain("off_topic"),
        "ce_retained": ce.gain("in_topic") / p.full_gain if p.full_gain else float("nan"),
    }


def prune_row(sw: Sweep, p: Pruning, kind: str, k: int, lora: SaeLora) -> dict:
    """Effect (greedy, in-topic prompts) and CE gains of a trained, pruned adapter."""
    beh = evaluate_behaviour(sw.mas, lora, p.in_rows, base=p.base_in, **sw.gen)
    return {"k": k, "kind": kind, "effect": beh.effect} | pruned_columns(sw, p, lora, beh)


def prune(sw: Sweep, p: Pruning) -> list[dict]:
    """Stage 4: top-k pruning against a same-L0 random control, k = 1 … 64
    (``analysis.prune_sweep``); a re-run reuses the rows of the same adapter in ``prune.csv``."""
    prune_file = sw.out / "prune.csv"
    if prune_file.exists():
        cached = pd.read_csv(prune_file)
        if set(cached.adapter) == {p.full_name} and set(cached.k) == set(PRUNE_K):
            return cached[~cached.kind.str.contains("fine-tuned|distilled")].to_dict(
                orient="records"
            )
    variants = prune_variants(
        p.full,
        PRUNE_K,
        lambda k: torch.Generator().manual_seed(k),
        include_full=False,
        kinds=("top-k latents", "random latents (same L0)"),
    )
    table = score_variants(
        sw.mas,
        variants,
        p.in_rows,
        base=p.base_in,
        extra=lambda v, beh: pruned_columns(sw, p, v.lora, beh),
        **sw.gen,
    )
    print(table.to_string(), flush=True)
    return table.to_dict(orient="records")


def off_topic_rate(sw: Sweep, lora: SaeLora, cache: dict) -> float:
    """The adapter's off-topic rate; the base answers are generated once (kept in ``cache``)."""
    off_rows = [r for r in sw.eval_rows if not r["in_topic"]]
    if "base" not in cache:
        cache["base"] = evaluate_behaviour(sw.mas, None, off_rows, **sw.gen)
    off = evaluate_behaviour(sw.mas, lora, off_rows, base=cache["base"], **sw.gen)
    return off.rate("adapter", "off_topic")


def finetune_pruned(sw: Sweep, p: Pruning, off_cache: dict) -> list[dict]:
    """Stage 5: prune, then fine-tune: start from the pruned adapter (init_from +
    sparsity="topk") and train it for --epochs on the same data, so the kept latents can take
    over the work of the dropped ones."""
    rows = []
    for k in FINETUNE_K if p.src else ():
        name = f"finetune-top{k}"
        run_dir = sw.out / "runs" / name
        row_file = run_dir / "prune_row.json"
        if row_file.exists():
            rows.append(json.loads(row_file.read_text()))
            continue
        ft_cfg = LoraTrainingConfig.from_dict(
            {
                **SWEEP_CONFIG.to_dict(),
                "epochs": sw.args.epochs,
                "sparsity": "topk",
                "topk": k,
                "sparsity_weight": 0.0,
                "init_from": str(p.src),
                "name": name,
            }
        )
        lora = train_lora(sw.mas, sw.data, ft_cfg, out_dir=run_dir, progress=False).lora
        row = prune_row(sw, p, "top-k, fine-tuned", k, lora) | {
            "off_topic": off_topic_rate(sw, lora, off_cache),
            "l0_read": lora.l0()[0][0],
            "l0_write": lora.l0()[1][0],
        }
        row_file.write_text(json.dumps(row, indent=1))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def distil_config(sw: Sweep, p: Pruning, rank: int, k: int, name: str, control: bool):
    """The student's config: top-k along ``DISTILL_SCHEDULE`` from the pruned adapter, or (the
    control) random latents with the student's per-vector L0 and the support frozen."""
    common = {
        **SWEEP_CONFIG.to_dict(),
        "epochs": len(DISTILL_SCHEDULE) + DISTILL_EPOCHS_AT_K,
        "rank": rank,
        "s_lr": DISTILL_S_LR,
        "sparsity_weight": 0.0,
        "distill_from": str(p.src),
        "name": name,
    }
    if not control:
        extra = {"sparsity": "topk", "topk": k, "topk_schedule": DISTILL_SCHEDULE}
        return LoraTrainingConfig.from_dict(common | extra | {"init_from": str(p.src)})
    start = random_support_control(
        split_rank(p.full, rank), k, torch.Generator().manual_seed(rank * 100 + k)
    )
    init_dir = sw.out / "runs" / name / "init"
    meta = build_metadata(
        start,
        config={},
        preset=sw.mas.preset,
        sae_identity=sw.mas.sae_identity,
        layer=sw.mas.layer,
        mode=SWEEP_CONFIG.mode,
    )
    save_lora(start, init_dir, meta)
    extra = {"sparsity": "none", "init_from": str(init_dir), "freeze_support": True}
    return LoraTrainingConfig.from_dict(common | extra)


def distil(sw: Sweep, p: Pruning, off_cache: dict) -> list[dict]:
    """Stage 6: distil the adapter into sparse students, and the same-L0 random-latent
    controls; each cached in ``runs/<name>/prune_row.json``."""
    rows = []
    for rank, k in DISTILL if p.src else ():
        for control in (False, True):
            name = f"distill-r{rank}-top{k}" + ("-random" if control else "")
            row_file = sw.out / "runs" / name / "prune_row.json"
            if row_file.exists():
                rows.append(json.loads(row_file.read_text()))
                continue
            cfg = distil_config(sw, p, rank, k, name, control)
            t = time.perf_counter()
            lora = train_lora(sw.mas, sw.data, cfg, out_dir=row_file.parent, progress=False).lora
            l0r, l0w = lora.l0()
            kind = "random latents, distilled" if control else "top-k, distilled"
            row = prune_row(sw, p, f"{kind} (rank {rank})", k, lora) | {
                "rank": rank,
                "off_topic": off_topic_rate(sw, lora, off_cache),
                "l0_read": max(l0r),
                "l0_write": max(l0w),
                "latents_read": int((lora.a != 0).any(1).sum()),
                "latents_write": int((lora.b != 0).any(0).sum()),
                "seconds": time.perf_counter() - t,
            }
            row_file.write_text(json.dumps(row, indent=1))
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def heldout_check(sw: Sweep, p: Pruning, pdf: pd.DataFrame) -> str | None:
    """Stage 7: the student with the largest effect on the eval prompts (the sparse adapter to
    describe), its random control and the teacher, on a larger held-out set: 80 math and 80
    general prompts that no dataset split contains (``data.heldout``). Returns the student."""
    dist = pdf[pdf.kind.str.startswith("top-k, distilled")] if len(pdf) else pdf
    best = None
    if len(dist):
        row = dist.sort_values("effect").iloc[-1]
        best = f"distill-r{int(row['rank'])}-top{int(row['k'])}"
    held = heldout_prompts()
    held = held[:2] + held[-2:] if sw.args.quick else held
    out = sw.out
    cands = [("teacher", p.full, out / "heldout_teacher.json")]
    for name in (best, f"{best}-random") if best else ():
        if (out / "runs" / name / "params.pt").exists():
            cands.append(
                (name, load_lora(out / "runs" / name).lora, out / "runs" / name / "heldout.json")
            )
    base_held = None
    for name, lora, f in cands:
        if not f.exists():
            base_held = base_held or evaluate_behaviour(sw.mas, None, held, **sw.gen)
            r = evaluate_behaviour(sw.mas, lora, held, base=base_held, **sw.gen)
            r.samples.to_csv(f.with_suffix(".samples.csv"), index=False)
            f.write_text(
                json.dumps(
                    {
                        "adapter": name,
                        "in_topic": r.rate("adapter", "in_topic"),
                        "off_topic": r.rate("adapter", "off_topic"),
                        "base_in_topic": r.rate("base", "in_topic"),
                        "base_off_topic": r.rate("base", "off_topic"),
                        "effect": r.effect,
                        "n_prompts": len(held),
                    },
                    indent=1,
                )
            )
    hdf = heldout_table([f for _, _, f in cands])
    hdf.to_csv(out / "heldout.csv", index=False)
    print(hdf.to_string(), flush=True)
    return best


def plot(sw: Sweep, p: Pruning, runs: pd.DataFrame, pdf: pd.DataFrame) -> None:
    """Stage 8: the Pareto figure of the methods and the pruning curves."""
    retained = runs.assign(
        effect_retained=runs.effect / p.full_effect if p.full_effect else float("nan"),
        method=runs.method + " (" + runs.init + ")",
    )
    save_figure(figures.fig_pareto(retained, x="l0"), sw.out, "pareto", formats=("html", "png"))
    save_figure(
        figures.fig_prune_curve(pdf, x="k", y="retained", color="kind"),
        sw.out,
        "prune",
        formats=("html", "png"),
    )


def feature_reports(sw: Sweep, p: Pruning, best: str | None) -> None:
    """Stage 9: are the chosen latents the topic's? Firing rates on in/off-topic train prompts,
    and max-activating examples of the top read latents, for the pruned adapter and the best
    distilled student."""
    texts = load_texts(sw.mas, sw.ds["train"], n=120)
    feats = write_feature_report(sw.mas, p.full, sw.ds, texts, sw.out, "")
    print(feats.to_string(), flush=True)
    if best:
        student = load_lora(sw.out / "runs" / best).lora
        write_feature_report(sw.mas, student, sw.ds, texts, sw.out, "distilled")


def main() -> None:
    t0 = time.perf_counter()
    sw = setup(parse_args())
    runs, adapters = train_runs(sw)
    diagnose(sw, adapters)
    p = pick_adapter_to_prune(sw, runs, adapters)
    off_cache: dict = {}  # the base model's off-topic answers, generated once when needed
    rows = prune(sw, p) + finetune_pruned(sw, p, off_cache) + distil(sw, p, off_cache)
    pdf = pd.DataFrame(rows)
    pdf.to_csv(sw.out / "prune.csv", index=False)
    best = heldout_check(sw, p, pdf)
    plot(sw, p, runs, pdf)
    feature_reports(sw, p, best)
    print(f"done in {time.perf_counter() - t0:.0f}s; results in {sw.out}", flush=True)


if __name__ == "__main__":
    main()
