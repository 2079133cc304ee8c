"""What one token of the SAE build costs here: the model's forward to the hook, and one SAE
training step, each as tokens/s and as a fraction of this machine's GEMM peak measured in the
same run; then the hours the recipe (`sae.pipeline.DEFAULT_SAE_RECIPE`) would take.

    python bench/sae_build_throughput.py [--d-sae 16384] [--tokens 4096] [--no-model]
"""

import argparse
import time

import torch

from saelora_core.adapter.forward import cpu_has_native_bf16
from saelora_core.sae.pipeline import DEFAULT_SAE_RECIPE
from saelora_core.sae.train import SaeTrainConfig
from saelora_core.sae.train_cached import training_sae


def gemm_peak(dtype: torch.dtype, n: int = 2048, reps: int = 3) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def sae_step_rate(d_sae: int, k: int, tokens: int, d_in: int = 640, steps: int = 3) -> float:
    from sae_lens.saes.sae import TrainStepInput

    sae = training_sae(SaeTrainConfig(d_sae=d_sae, k=k, architecture="batchtopk"), d_in)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    x = torch.randn(tokens, d_in)
    dead = torch.zeros(d_sae, dtype=torch.bool)
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        out = sae.training_forward_pass(
            TrainStepInput(x, {}, dead, n_training_steps=i, is_logging_step=False)
        )
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    return tokens / min(times[1:])


def forward_rate(batch: int = 32, ctx: int = 128) -> float:
    from saelora_core.models.gguf import load_gemma3_270m_offline

    model = load_gemma3_270m_offline()
    toks = torch.randint(1000, 20000, (batch, ctx))
    with torch.inference_mode():
        model(toks[:2], stop_at_layer=13)
        t = time.perf_counter()
        model(toks, stop_at_layer=13)
    return batch * ctx / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--d-sae", type=int, default=DEFAULT_SAE_RECIPE.d_sae)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--no-model", action="store_true", help="skip the real model's forward")
    a = p.parse_args()
    fp32 = gemm_peak(torch.float32)
    print(f"threads {torch.get_num_threads()}; native bf16: {cpu_has_native_bf16()}")
    print(f"fp32 GEMM peak here: {fp32:.0f} GFLOP/s")
    rate = sae_step_rate(a.d_sae, DEFAULT_SAE_RECIPE.k, a.tokens)
    flop = 9 * 2 * 640 * a.d_sae  # 9 products of (tokens x 640) by (640 x d_sae), fwd + bwd + aux
    print(
        f"SAE step, {a.d_sae} latents: {rate:.0f} tok/s = {rate * flop / 1e9:.1f} GFLOP/s "
        f"({rate * flop / 1e9 / fp32:.0%} of the fp32 GEMM peak)"
    )
    total = DEFAULT_SAE_RECIPE.training_tokens
    hours = total / rate / 3600
    if not a.no_model:
        fwd = forward_rate()
        print(f"forward to layer 12, fp32: {fwd:.0f} tok/s")
        hours += total / fwd / 3600
    print(f"recipe ({total / 1e6:.0f}M tokens) at these rates: {hours:.1f} h")


if __name__ == "__main__":
    main()
