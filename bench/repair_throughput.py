"""Training tokens/s of each SAE-gap repair method on this machine, side by side in one run.

    python bench/repair_throughput.py [--steps 4] [--batch-size 2] [--context 128] [--fp32]

Each method runs the same windows from the SAE corpus's train split through its real training
step (clean teacher forward, spliced forward, KL(+MSE), backward, AdamW, the method's
constraint). It prints tokens/s per method and each method's ratio to the plain forward pass of
the clean model on the same batch (the floor: a step needs at least two forwards and a backward).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from saelora_core.models.hf import load_hf_causal_lm
from saelora_core.models.presets import DEFAULT_SAE_DIR, PRESETS
from saelora_core.repair import METHODS, RepairConfig, build_repair, corpus_windows, step_loss
from saelora_core.repair.methods import after_backward, after_step
from saelora_core.sae.loading import load_sae


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    args = ap.parse_args()
    hf0, tok = load_hf_causal_lm("gemma-3-270m")
    sae, _ = load_sae(path=DEFAULT_SAE_DIR)
    n = args.steps + 1
    windows = corpus_windows(
        "train", tok, context_size=args.context, max_tokens=n * args.batch_size * args.context
    )
    tokens_per_step = args.batch_size * args.context
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.fp32):
        hf0(input_ids=windows[: args.batch_size])
        t = time.perf_counter()
        for i in range(args.steps):
            hf0(input_ids=windows[i * args.batch_size : (i + 1) * args.batch_size])
        fwd = args.steps * tokens_per_step / (time.perf_counter() - t)
    print(
        f"clean forward: {fwd:.1f} tokens/s (batch {args.batch_size} x {args.context}, "
        f"{'fp32' if args.fp32 else 'bf16 autocast'})"
    )
    print(f"{'method':16s} {'tokens/s':>9s} {'ratio to forward':>17s}")
    for method in METHODS:
        hf = copy.deepcopy(hf0)
        cfg = RepairConfig(
            method=method,
            batch_size=args.batch_size,
            context_size=args.context,
            autocast_bf16=not args.fp32,
            train_tokens=n * tokens_per_step,
        )
        setup = build_repair(hf, sae, PRESETS["gemma-3-270m"].layer, cfg)
        opt = torch.optim.AdamW(setup.param_groups, weight_decay=0.0)
        params = [p for g in setup.param_groups for p in g["params"]]
        times = []
        for i in range(n):
            batch = windows[i * args.batch_size : (i + 1) * args.batch_size]
            t = time.perf_counter()
            res = step_loss(setup, batch, cfg)
            opt.zero_grad()
            res.loss.backward()
            after_backward(setup)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            after_step(setup, cfg)
            times.append(time.perf_counter() - t)
        tps = args.steps * tokens_per_step / sum(times[1:])  # the first step warms up
        print(f"{method:16s} {tps:9.1f} {tps / fwd:17.3f}")
        setup.spliced.remove()
        del hf, setup, opt


if __name__ == "__main__":
    main()
