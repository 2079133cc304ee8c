"""Sparsity methods side by side on the default "math → French" experiment.

For each (method, penalty strength) it trains an adapter and records exact L0 of Â and B̂, the
behaviour rate on held-out in-topic and off-topic prompts, and held-out CE on response tokens.
Then it prunes one adapter to its top-k latents (and a same-L0 random-latent control) and
measures the behaviour kept. It also prints the two diagnoses of the seed's method: the share
of latents that never fire on the training set, and how far their weights moved from the
initialisation under ``l1_raw``.

Writes ``exports/sparsity_sweep/{runs,prune}.csv`` and the Pareto / pruning figures.

Usage: python bench/sparsity_sweep.py [--quick] [--epochs 2] [--train-n 100] [--eval-prompts 20]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from saelora_core import (
    LoraTrainingConfig,
    SaeLora,
    load_model_and_sae,
    prune_topk,
    random_support_control,
    train_lora,
)
from saelora_core.analysis import evaluate_behaviour
from saelora_core.demo import build_demo_dataset
from saelora_core.train import split_dataset

METHODS = {
    "l1_raw": [0.05],
    "l1_normalized": [0.01, 0.05],
    "proximal_l1": [0.02, 0.1],
    "topk": [16],  # for topk the "strength" is k
}


@torch.no_grad()
def never_fire_share(mas, examples) -> tuple[float, torch.Tensor]:
    fired = torch.zeros(mas.sae.cfg.d_sae, dtype=torch.bool)
    for ex in examples:
        resid = mas.model(ex.chat.tokens[None], stop_at_layer=mas.layer + 1)
        fired |= (mas.sae.encode(resid[0, 1:]) > 0).any(0)
    return 1 - fired.float().mean().item(), fired


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-n", type=int, default=100, help="train rows used (of 200)")
    ap.add_argument("--eval-prompts", type=int, default=20, help="per side")
    ap.add_argument("--out", default="exports/sparsity_sweep")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mas = load_model_and_sae("gemma-3-270m")
    ds = build_demo_dataset().dataset
    train = ds["train"].shuffle(seed=0).select(range(min(args.train_n, len(ds["train"]))))
    eval_rows = list(ds["eval"])
    data = {"train": train, "eval": ds["eval"]}
    if args.quick:
        data = {"train": train.select(range(16)), "eval": ds["eval"].select(range(4))}
        eval_rows = eval_rows[:4] + eval_rows[-4:]

    base = evaluate_behaviour(mas, None, eval_rows, max_prompts=args.eval_prompts)
    rows = []
    adapters: dict[str, SaeLora] = {}
    for method, strengths in METHODS.items():
        for lam in strengths:
            extra = {"topk": int(lam), "l1_weight": 0.0} if method == "topk" else {"l1_weight": lam}
            cfg = LoraTrainingConfig(
                **{
                    "lr": 2e-2,
                    "batch_size": 8,
                    "epochs": args.epochs,
                    "max_len": 256,
                    "sparsity": method,
                    "name": f"{method}-{lam}",
                    **extra,
                }
            )
            t = time.perf_counter()
            init = SaeLora(mas.sae.cfg.d_sae, 1, generator=torch.Generator().manual_seed(cfg.seed))
            res = train_lora(mas, data, cfg, out_dir=out / "runs" / cfg.name, progress=False)
            beh = evaluate_behaviour(
                mas, res.lora, eval_rows, max_prompts=args.eval_prompts, base=base
            )
            l0r, l0w = res.lora.l0()
            moved = (res.lora.read_dirs() - init.read_dirs()).abs()
            rows.append(
                {
                    "method": method,
                    "strength": lam,
                    "l0_read": l0r[0],
                    "l0_write": l0w[0],
                    "in_topic": beh.rate("adapter", "in_topic"),
                    "off_topic": beh.rate("adapter", "off_topic"),
                    "base_in_topic": beh.rate("base", "in_topic"),
                    "effect": beh.effect,
                    "eval_ce": res.history[-1]["eval_ce"],
                    "s": res.lora.s.item(),
                    "mean_abs_move_read": moved.mean().item(),
                    "train_s": time.perf_counter() - t,
                }
            )
            adapters[cfg.name] = res.lora
            print(json.dumps(rows[-1]), flush=True)
    runs = pd.DataFrame(rows)
    runs.to_csv(out / "runs.csv", index=False)

    train_ex, _, _ = split_dataset(mas, data, LoraTrainingConfig(max_len=256))
    share, fired = never_fire_share(mas, train_ex)
    raw = adapters.get("l1_raw-0.05")
    diag = {"never_fire_share": share}
    if raw is not None:
        init = SaeLora(mas.sae.cfg.d_sae, 1, generator=torch.Generator().manual_seed(0))
        move = (raw.read_dirs() - init.read_dirs()).abs()[:, 0]
        diag |= {
            "l1_raw_move_on_never_firing": move[~fired].mean().item(),
            "l1_raw_move_on_firing": move[fired].mean().item(),
            "l1_raw_raw_norm_a": raw.a.norm().item(),
        }
    print("diagnosis", json.dumps(diag), flush=True)
    (out / "diagnosis.json").write_text(json.dumps(diag, indent=1))

    best = runs[runs.method != "l1_raw"].sort_values("effect").iloc[-1]
    full = adapters[f"{best.method}-{best.strength}"]
    prune = []
    for k in (1, 2, 4, 8, 16, 32, 64):
        for kind, lora in (
            ("top-k", prune_topk(full, k).lora),
            ("random control", random_support_control(full, k, torch.Generator().manual_seed(k))),
        ):
            beh = evaluate_behaviour(mas, lora, eval_rows, max_prompts=args.eval_prompts, base=base)
            prune.append(
                {
                    "k": k,
                    "kind": kind,
                    "effect": beh.effect,
                    "retained": beh.effect / best.effect if best.effect else float("nan"),
                }
            )
            print(json.dumps(prune[-1]), flush=True)
    pd.DataFrame(prune).to_csv(out / "prune.csv", index=False)

    from saelora_core import plots

    plots.save_figure(
        plots.fig_pareto(runs.assign(l0=runs.l0_read, effect_retained=runs.effect)), out, "pareto"
    )
    plots.save_figure(
        plots.fig_prune_curve(pd.DataFrame(prune), x="k", y="effect", color="kind"), out, "prune"
    )


if __name__ == "__main__":
    main()
