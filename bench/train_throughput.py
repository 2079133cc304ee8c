"""Training tokens per second on the default model: naive, per-example and batched, in one run.

- naive: every step runs the whole model over the whole sequence (the adapter hooked in with
  ``attach_lora``), one example at a time.
- per-example (``precompute=True, micro_batch=1``, the optimized path before batching): the
  hook-point residual is computed once per example and reused every epoch; logits only at
  positions that predict assistant tokens; one example at a time.
- batched (``micro_batch=8``): the same, 8 right-padded examples per forward and backward.

Each is ``train_lora`` on the demo's rows and recipe (batch 8, max_len 128, the first 4 response
tokens, bf16 logits; ``--full-responses`` trains on whole responses instead). The fraction of
the GEMM peak divides the model FLOPs the work needs (forward of the blocks below the hook once
per example, forward and input-gradient backward of the blocks above it, causal attention and
the unembedding at the loss positions, forward and backward) by the time and by a fp32 GEMM's
FLOP/s measured in the same run.

Each path runs once per frozen-model dtype (``--dtypes``; default float32, and bf16 too where
the hardware multiplies it natively), in the same run: the ratio bf16 / float32 is measured side
by side, and each row's model FLOP/s is given as a fraction of its own dtype's GEMM peak and of
the best peak this machine offers (bf16 where native), both measured now.

Usage: python bench/train_throughput.py [--examples 64] [--epochs 2] [--tiny] [--full-responses]
       [--paths batched] [--dtypes float32,bfloat16] [--json out.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from saelora_core import LoraTrainingConfig, load_model_and_sae, train_lora
from saelora_core.adapter.batch import tokenize_rows
from saelora_core.demo.behaviours import FRENCH, build_demo_dataset
from saelora_core.io.atomic import atomic_write_json
from saelora_core.models.precision import native_bf16

PATHS = {"naive": (False, 1), "per-example": (True, 1), "batched": (True, 8)}


def rows(n: int) -> list[dict]:
    ds = build_demo_dataset(FRENCH).dataset["train"]  # offline, cached after the first build
    return [dict(r) for r in ds.select(range(min(n, len(ds))))]


def gemm_peak(dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of a 2048² GEMM in ``dtype`` on this machine, best of 5 (after a warm-up)."""
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    _ = a @ b
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        _ = a @ b
        best = max(best, 2 * 2048**3 / (time.perf_counter() - t))
    return best


def work_flops(mas, exs, epochs: int, precompute: bool) -> float:
    """Model FLOPs of ``epochs`` over ``exs`` (see the module doc)."""
    cfg = mas.model.cfg
    per_block = sum(p.numel() for p in mas.model.blocks[0].parameters())
    below, above = mas.layer + 1, cfg.n_layers - mas.layer - 1
    tot = 0.0
    for ex in exs:
        t, r = len(ex.chat.tokens), int(ex.chat.assistant_mask[1:].sum())
        block = 2 * per_block * t + 2 * t * t * cfg.n_heads * cfg.d_head
        once = below * block  # the blocks below the hook: forward only, no gradient needed
        tot += (once if precompute else once * epochs) + epochs * (
            2 * above * block + 4 * cfg.d_model * cfg.d_vocab * r
        )
    return tot


def run(mas, data, epochs: int, precompute: bool, micro: int, base: dict) -> tuple[float, int]:
    cfg = LoraTrainingConfig.from_dict(
        {**base, "epochs": epochs, "precompute": precompute, "micro_batch": micro}
    )
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        train_lora(mas, data, cfg, out_dir=d, progress=False)
        return time.perf_counter() - t, cfg.response_tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="the tiny test model (no download)")
    ap.add_argument("--full-responses", action="store_true", help="train on whole responses")
    ap.add_argument("--paths", default="batched", help=f"comma-separated, of {sorted(PATHS)}")
    ap.add_argument(
        "--dtypes",
        default=None,
        help="frozen-model dtypes, comma-separated (default float32, plus bfloat16 if native)",
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    native = native_bf16("cpu")
    dtypes = (args.dtypes or ("float32,bfloat16" if native else "float32")).split(",")
    paths = args.paths.split(",")
    peaks = {d: gemm_peak(getattr(torch, d)) for d in dict.fromkeys(["float32", *dtypes])}
    best_peak = max(peaks.values())
    print(
        f"threads={torch.get_num_threads()} native bf16={native}; GEMM peaks (measured now): "
        + ", ".join(f"{d} {v / 1e9:.0f} GFLOP/s" for d, v in peaks.items())
    )
    data = rows(args.examples)
    base = {
        **FRENCH.config.to_dict(),
        "init": "random",  # the data inits cost the same on every path; time the steps
        "eval_fraction": 0.0,
        "response_tokens": 0 if args.full_responses else FRENCH.config.response_tokens,
    }
    results: dict = {"peaks": peaks, "native_bf16": native, "rows": []}
    for dname in dtypes:
        dtype = getattr(torch, dname)
        if args.tiny:
            from saelora_core.testing import tiny_model_and_sae

            mas = tiny_model_and_sae()
            mas.model.to(dtype)
        else:
            mas = load_model_and_sae("gemma-3-270m", device="cpu", dtype=dtype)
        exs, _ = tokenize_rows(mas, data, base["max_len"], base["response_tokens"] or None)
        n_tok = sum(len(e.chat.tokens) for e in exs) * args.epochs
        print(
            f"[{dname}] model={mas.preset} examples={len(data)} epochs={args.epochs} "
            f"tokens/example={n_tok / args.epochs / len(exs):.0f}"
        )
        for name in paths:
            pre, micro = PATHS[name]
            dt, _ = run(mas, data, args.epochs, pre, micro, base)
            flops = work_flops(mas, exs, args.epochs, pre) / dt
            row = {
                "dtype": dname,
                "path": name,
                "seconds": dt,
                "tokens_per_s": n_tok / dt,
                "frac_own_peak": flops / peaks[dname],
                "frac_best_peak": flops / best_peak,
            }
            results["rows"].append(row)
            print(
                f"[{dname}] {name:12s} (precompute={pre!s:5s} micro_batch={micro}): "
                f"{row['tokens_per_s']:8.1f} tokens/s ({dt:.1f} s), "
                f"{row['frac_own_peak']:5.1%} of the {dname} GEMM peak, "
                f"{row['frac_best_peak']:5.1%} of the best peak, in model FLOPs"
            )
        del mas
    by = {(r["dtype"], r["path"]): r["tokens_per_s"] for r in results["rows"]}
    for name in paths:
        if len(dtypes) > 1:
            ratio = by[(dtypes[-1], name)] / by[(dtypes[0], name)]
            results[f"{name}_{dtypes[-1]}_over_{dtypes[0]}"] = ratio
            print(f"{name}: {dtypes[-1]} / {dtypes[0]} tokens/s = {ratio:.2f}x")
    for d in dtypes:
        if {"batched", "per-example", "naive"} <= set(paths):
            print(
                f"[{d}] batched / per-example: "
                f"{by[(d, 'batched')] / by[(d, 'per-example')]:.2f}x; "
                f"batched / naive: {by[(d, 'batched')] / by[(d, 'naive')]:.2f}x"
            )
    if args.json:
        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
