"""Training tokens per second on the default model: naive against optimized, in one run.

- naive: every step runs the whole model over the whole sequence and computes logits at every
  position (the adapter hooked in with ``attach_lora``).
- optimized (``precompute=True``): the hook-point residual is computed once per example and
  reused every epoch; logits only at positions that predict assistant tokens.

Also measures the adapter's overhead against a plain forward and backward of the same model
with no hook (gradient taken w.r.t. a zero bias at the same hook point, so the backward pass
covers the same layers).

Usage: python bench/train_throughput.py [--examples 16] [--epochs 3] [--tiny]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Literal

import torch
import torch.nn.functional as F

from saelora_core import LoraTrainingConfig, load_model_and_sae, train_lora
from saelora_core.chat import format_turn
from saelora_core.data import load_behaviour_dataset


def rows(n: int) -> list[dict]:
    try:
        ds = load_behaviour_dataset("data/datasets/demo-math-french")["train"]
        return [dict(r) for r in ds.select(range(min(n, len(ds))))]
    except Exception:
        from saelora_core.data import load_seed

        return [{"prompt": r.prompt, "response": r.response} for r in load_seed().rows[:n]]


def run(
    mas,
    data,
    precompute: bool,
    epochs: int,
    logits_dtype: Literal["float32", "bfloat16"] = "float32",
) -> tuple[float, int]:
    cfg = LoraTrainingConfig(
        logits_dtype=logits_dtype,
        lr=1e-2,
        batch_size=4,
        epochs=epochs,
        eval_fraction=0.0,
        precompute=precompute,
        sparsity="l1_normalized",
        max_len=512,
    )
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        train_lora(mas, data, cfg, out_dir=d, progress=False)
        dt = time.perf_counter() - t
    n_tok = sum(
        len(format_turn(mas.tokenizer, r["prompt"], r["response"], mas.chat_format).tokens)
        for r in data
    )
    return dt, n_tok * epochs


def plain_step_time(mas, data, with_adapter: bool) -> float:
    from saelora_core import SaeLora, attach_lora

    lora = SaeLora(mas.sae.cfg.d_sae, 1)
    with torch.no_grad():
        lora.s.fill_(1.0)
    bias = torch.zeros(mas.model.cfg.d_model, requires_grad=True)
    t = time.perf_counter()
    for r in data:
        c = format_turn(mas.tokenizer, r["prompt"], r["response"], mas.chat_format)
        pos = torch.nonzero(c.assistant_mask[1:]).flatten()
        if with_adapter:
            with attach_lora(mas, lora):
                logits = mas.model(c.tokens[None])[0, pos]
        else:
            logits = mas.model.run_with_hooks(
                c.tokens[None], fwd_hooks=[(mas.hook_name, lambda a, hook: a + bias)]
            )[0, pos]
        F.cross_entropy(logits, c.tokens[1:][pos]).backward()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="the tiny test model (no download)")
    ap.add_argument(
        "--logits-dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="unembedding dtype of the optimized path",
    )
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.tiny:
        from saelora_core.testing import tiny_model_and_sae

        mas = tiny_model_and_sae()
    else:
        mas = load_model_and_sae("gemma-3-270m", device="cpu")
    data = rows(args.examples)
    print(
        f"model={mas.preset} examples={len(data)} epochs={args.epochs} threads={torch.get_num_threads()}"
    )
    naive_t, tok = run(mas, data, False, args.epochs)
    opt_t, _ = run(mas, data, True, args.epochs, args.logits_dtype)
    print(f"naive:     {tok / naive_t:8.1f} tokens/s ({naive_t:.1f} s)")
    print(f"optimized ({args.logits_dtype} logits): {tok / opt_t:8.1f} tokens/s ({opt_t:.1f} s)")
    print(f"speedup (optimized / naive): {naive_t / opt_t:.2f}x")
    plain = plain_step_time(mas, data, with_adapter=False)
    hooked = plain_step_time(mas, data, with_adapter=True)
    print(
        f"plain fwd+bwd, no hook: {plain:.2f} s; same with adapter hook: {hooked:.2f} s; "
        f"adapter overhead: {hooked / plain:.3f}x"
    )


if __name__ == "__main__":
    main()
