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

Also measures the adapter's overhead against a plain forward and backward of the same model
with no hook (gradient taken w.r.t. a zero bias at the same hook point, so the backward pass
covers the same layers).

Usage: python bench/train_throughput.py [--examples 64] [--epochs 2] [--tiny] [--full-responses]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from saelora_core import LoraTrainingConfig, load_model_and_sae, train_lora
from saelora_core.adapter.batch import tokenize_rows
from saelora_core.demo.behaviours import FRENCH, build_demo_dataset


def rows(n: int) -> list[dict]:
    ds = build_demo_dataset(FRENCH).dataset["train"]  # offline, cached after the first build
    return [dict(r) for r in ds.select(range(min(n, len(ds))))]


def gemm_peak() -> float:
    """fp32 FLOP/s of a 2048² GEMM on this machine, best of 5."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
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
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.tiny:
        from saelora_core.testing import tiny_model_and_sae

        mas = tiny_model_and_sae()
    else:
        mas = load_model_and_sae("gemma-3-270m", device="cpu")
    data = rows(args.examples)
    base = {
        **FRENCH.config.to_dict(),
        "init": "random",  # the data inits cost the same on every path; time the steps
        "eval_fraction": 0.0,
        "response_tokens": 0 if args.full_responses else FRENCH.config.response_tokens,
    }
    exs, _ = tokenize_rows(mas, data, base["max_len"], base["response_tokens"] or None)
    n_tok = sum(len(e.chat.tokens) for e in exs) * args.epochs
    peak = gemm_peak()
    print(
        f"model={mas.preset} examples={len(data)} epochs={args.epochs} "
        f"tokens/example={n_tok / args.epochs / len(exs):.0f} threads={torch.get_num_threads()} "
        f"fp32 GEMM peak {peak / 1e9:.0f} GFLOP/s (measured now)"
    )
    results = {}
    for name, pre, micro in (("naive", False, 1), ("per-example", True, 1), ("batched", True, 8)):
        dt, _ = run(mas, data, args.epochs, pre, micro, base)
        frac = work_flops(mas, exs, args.epochs, pre) / dt / peak
        results[name] = dt
        print(
            f"{name:12s} (precompute={pre!s:5s} micro_batch={micro}): {n_tok / dt:8.1f} tokens/s "
            f"({dt:.1f} s), {frac:5.1%} of the GEMM peak in model FLOPs"
        )
    print(
        f"batched / per-example: {results['per-example'] / results['batched']:.2f}x; "
        f"batched / naive: {results['naive'] / results['batched']:.2f}x"
    )


if __name__ == "__main__":
    main()
