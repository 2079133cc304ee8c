"""Sparsity methods side by side on the default experiment, with the seed's method as baseline.

For each (method, strength, init) it trains an adapter (config: the demo's, see
``saelora_core.demo.SWEEP_BEHAVIOUR``, the flagship "if the prompt is about math, respond in
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

Usage: python bench/sparsity_sweep.py [--quick] [--epochs N] [--eval-prompts N] [--only M ...]
       [--prune LORA_DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import plotly.express as px
import torch

from saelora_core import (
    LoraTrainingConfig,
    SaeLora,
    load_lora,
    load_model_and_sae,
    prune_topk,
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
from saelora_core.data.heldout import EVAL_NEW_TOKENS, heldout_prompts
from saelora_core.demo.behaviours import SWEEP_BEHAVIOUR, build_demo_dataset
from saelora_core.reporting import figures
from saelora_core.reporting.export import save_figure, save_table
from saelora_core.training.loop import split_dataset

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


def main() -> None:
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
    args = ap.parse_args()
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
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

    rows, adapters = [], {}
    for method, lam, init in RUNS:
        if args.only and method not in args.only:
            continue
        name = f"{method}-{lam:g}-{init}"
        run_dir = out / "runs" / name
        extra = (
            {"topk": int(lam), "sparsity_weight": 0.0}
            if method == "topk"
            else {"sparsity_weight": lam}
        )
        if method == "hard_concrete":
            extra["gate_lr"] = 0.3  # log_alpha must travel from 2 to below -2.4 in ~25 steps
        cfg = LoraTrainingConfig.from_dict(
            {
                **SWEEP_CONFIG.to_dict(),
                "epochs": args.epochs,
                "sparsity": method,
                "init": init,
                "name": name,
                **extra,
            }
        )
        row_file = run_dir / "sweep_row.json"
        if row_file.exists():
            row = json.loads(row_file.read_text())
            adapters[name] = load_lora(run_dir).lora
            rows.append(row)
            print("cached", json.dumps(row), flush=True)
            continue
        t = time.perf_counter()
        res = train_lora(mas, data, cfg, out_dir=run_dir, progress=False)
        beh = evaluate_behaviour(mas, res.lora, eval_rows, base=base, **gen)
        ce = response_ce(mas, res.lora, ce_rows, max_len=cfg.max_len, logits_dtype="bfloat16")
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
        rows.append(row)
        adapters[name] = res.lora
        print(json.dumps(row), flush=True)
    runs = pd.DataFrame(rows)
    runs.to_csv(out / "runs.csv", index=False)

    # Diagnosis: never-firing latents and what each init leaves on them.
    train_ex, _, _ = split_dataset(mas, data, LoraTrainingConfig(max_len=SWEEP_CONFIG.max_len))
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

    # The adapter to prune: the largest behaviour effect among the sparse methods (ties: the
    # larger in-topic CE gain). Pruned adapters answer the in-topic prompts only (the effect is
    # defined there); the base answers are reused.
    sparse = pd.DataFrame(runs[~runs.method.isin(["l1_raw", "none"])])
    pick = (sparse if len(sparse) else runs).sort_values(by=["effect", "ce_gain_in_topic"]).iloc[-1]
    full, full_name = adapters[pick["name"]], str(pick["name"])
    prune_src = args.prune if args.prune and Path(args.prune, "params.pt").exists() else None
    if prune_src:  # the demo's adapter, by default
        full, full_name = load_lora(prune_src).lora, str(prune_src)
    in_rows = [r for r in ds["eval"] if r["in_topic"]][: 2 if args.quick else None]
    base_in = evaluate_behaviour(mas, None, in_rows, **gen)
    base_ce = response_ce(mas, full, ce_rows, max_len=SWEEP_CONFIG.max_len, logits_dtype="bfloat16")
    full_effect = evaluate_behaviour(mas, full, in_rows, base=base_in, **gen).effect
    full_gain = base_ce.gain("in_topic")
    print(f"pruning {full_name}: effect {full_effect:+.3f}, CE gain {full_gain:+.4f}", flush=True)

    def prune_row(kind: str, k: int, lora: SaeLora) -> dict:
        """Effect (greedy, in-topic prompts) and CE gains of a pruned adapter."""
        beh = evaluate_behaviour(mas, lora, in_rows, base=base_in, **gen)
        ce = response_ce(
            mas, lora, ce_rows, max_len=SWEEP_CONFIG.max_len, logits_dtype="bfloat16", base=base_ce
        )
        return {
            "adapter": full_name,
            "k": k,
            "kind": kind,
            "in_topic": beh.rate("adapter", "in_topic"),
            "effect": beh.effect,
            "retained": beh.effect / full_effect if full_effect else float("nan"),
            "ce_gain_in_topic": ce.gain("in_topic"),
            "ce_gain_off_topic": ce.gain("off_topic"),
            "ce_retained": ce.gain("in_topic") / full_gain if full_gain else float("nan"),
        }

    prune = []
    prune_file = out / "prune.csv"
    if prune_file.exists():  # a re-run reuses the pruning rows of the same adapter
        cached = pd.read_csv(prune_file)
        if set(cached.adapter) == {full_name} and set(cached.k) == set(PRUNE_K):
            prune = cached[~cached.kind.str.contains("fine-tuned|distilled")].to_dict(
                orient="records"
            )
    for k in () if prune else PRUNE_K:
        for kind, lora in (
            ("top-k latents", prune_topk(full, k).lora),
            (
                "random latents (same L0)",
                random_support_control(full, k, torch.Generator().manual_seed(k)),
            ),
        ):
            prune.append(prune_row(kind, k, lora))
            print(json.dumps(prune[-1]), flush=True)
    # Prune, then fine-tune: start from the pruned adapter (init_from + sparsity="topk") and
    # train it for --epochs on the same data, so the kept latents can take over the work of
    # the dropped ones.
    off_rows = [r for r in eval_rows if not r["in_topic"]]
    base_off = None  # generated on the first fine-tune that is not cached
    for k in FINETUNE_K if prune_src else ():
        name = f"finetune-top{k}"
        run_dir = out / "runs" / name
        row_file = run_dir / "prune_row.json"
        if row_file.exists():
            prune.append(json.loads(row_file.read_text()))
            continue
        ft_cfg = LoraTrainingConfig.from_dict(
            {
                **SWEEP_CONFIG.to_dict(),
                "epochs": args.epochs,
                "sparsity": "topk",
                "topk": k,
                "sparsity_weight": 0.0,
                "init_from": str(prune_src),
                "name": name,
            }
        )
        lora = train_lora(mas, data, ft_cfg, out_dir=run_dir, progress=False).lora
        base_off = base_off or evaluate_behaviour(mas, None, off_rows, **gen)
        off = evaluate_behaviour(mas, lora, off_rows, base=base_off, **gen)
        row = prune_row("top-k, fine-tuned", k, lora) | {
            "off_topic": off.rate("adapter", "off_topic"),
            "l0_read": lora.l0()[0][0],
            "l0_write": lora.l0()[1][0],
        }
        row_file.write_text(json.dumps(row, indent=1))
        prune.append(row)
        print(json.dumps(row), flush=True)
    # Distil the adapter into sparse students, and the same-L0 random-latent controls.
    for rank, k in DISTILL if prune_src else ():
        for control in (False, True):
            name = f"distill-r{rank}-top{k}" + ("-random" if control else "")
            run_dir = out / "runs" / name
            row_file = run_dir / "prune_row.json"
            if row_file.exists():
                prune.append(json.loads(row_file.read_text()))
                continue
            common = {
                **SWEEP_CONFIG.to_dict(),
                "epochs": len(DISTILL_SCHEDULE) + DISTILL_EPOCHS_AT_K,
                "rank": rank,
                "s_lr": DISTILL_S_LR,
                "sparsity_weight": 0.0,
                "distill_from": str(prune_src),
                "name": name,
            }
            if control:  # random latents with the student's per-vector L0, support frozen
                start = random_support_control(
                    split_rank(full, rank), k, torch.Generator().manual_seed(rank * 100 + k)
                )
                init_dir = run_dir / "init"
                meta = build_metadata(
                    start,
                    config={},
                    preset=mas.preset,
                    sae_identity=mas.sae_identity,
                    layer=mas.layer,
                    mode=SWEEP_CONFIG.mode,
                )
                save_lora(start, init_dir, meta)
                extra = {"sparsity": "none", "init_from": str(init_dir), "freeze_support": True}
            else:
                extra = {
                    "sparsity": "topk",
                    "topk": k,
                    "topk_schedule": DISTILL_SCHEDULE,
                    "init_from": str(prune_src),
                }
            cfg = LoraTrainingConfig.from_dict(common | extra)
            t = time.perf_counter()
            lora = train_lora(mas, data, cfg, out_dir=run_dir, progress=False).lora
            base_off = base_off or evaluate_behaviour(mas, None, off_rows, **gen)
            off = evaluate_behaviour(mas, lora, off_rows, base=base_off, **gen)
            l0r, l0w = lora.l0()
            kind = "random latents, distilled" if control else "top-k, distilled"
            row = prune_row(f"{kind} (rank {rank})", k, lora) | {
                "rank": rank,
                "off_topic": off.rate("adapter", "off_topic"),
                "l0_read": max(l0r),
                "l0_write": max(l0w),
                "latents_read": int((lora.a != 0).any(1).sum()),
                "latents_write": int((lora.b != 0).any(0).sum()),
                "seconds": time.perf_counter() - t,
            }
            row_file.write_text(json.dumps(row, indent=1))
            prune.append(row)
            print(json.dumps(row), flush=True)
    pdf = pd.DataFrame(prune)
    pdf.to_csv(prune_file, index=False)
    # The student with the largest effect on the 20 eval prompts (the sparse adapter to
    # describe), its random control and the teacher, on a larger held-out set: 80 math and 80
    # general prompts that no dataset split contains (demo.heldout_prompts).
    dist = pdf[pdf.kind.str.startswith("top-k, distilled")] if len(pdf) else pdf
    best = None
    if len(dist):
        row = dist.sort_values("effect").iloc[-1]
        best = f"distill-r{int(row['rank'])}-top{int(row['k'])}"
    held = heldout_prompts()
    held = held[:2] + held[-2:] if args.quick else held
    cands = [("teacher", full, out / "heldout_teacher.json")]
    for name in (best, f"{best}-random") if best else ():
        if (out / "runs" / name / "params.pt").exists():
            cands.append(
                (name, load_lora(out / "runs" / name).lora, out / "runs" / name / "heldout.json")
            )
    base_held = None
    for name, lora, f in cands:
        if not f.exists():
            base_held = base_held or evaluate_behaviour(mas, None, held, **gen)
            r = evaluate_behaviour(mas, lora, held, base=base_held, **gen)
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
    retained = runs.assign(
        effect_retained=runs.effect / full_effect if full_effect else float("nan"),
        method=runs.method + " (" + runs.init + ")",
    )
    save_figure(figures.fig_pareto(retained, x="l0"), out, "pareto", formats=("html", "png"))
    save_figure(
        figures.fig_prune_curve(pdf, x="k", y="retained", color="kind"),
        out,
        "prune",
        formats=("html", "png"),
    )

    # Are the chosen latents the topic's? Firing rates on in/off-topic train prompts, and
    # max-activating examples of the top read latents.
    texts = load_texts(mas, ds["train"], n=120)
    feats = write_feature_report(mas, full, ds, texts, out, "")
    print(feats.to_string(), flush=True)
    # The same for the best distilled student: its read latents, their firing rates and
    # max-activating examples.
    if best:
        write_feature_report(mas, load_lora(out / "runs" / best).lora, ds, texts, out, "distilled")
    print(f"done in {time.perf_counter() - t0:.0f}s; results in {out}", flush=True)


if __name__ == "__main__":
    main()
