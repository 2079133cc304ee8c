"""The real configurations at their real shapes, without their weights: training and generation
speed, peak memory and the fraction of the device's peak FLOP/s.

The hub cannot be reached here, so each model is built in TransformerLens from its published
configuration numbers (TransformerLens's own name-based Gemma-2 configs) with **random
weights**, and paired with a **random JumpReLU SAE** of Gemma Scope's widths (16k, 131k) at the
seed's layer. Everything then runs through the library's own path: ``ModelAndSae`` (re-laid
weights), ``forward.batch_losses`` for a training step and ``generate.generate_tokens`` for
greedy decoding. This is a performance harness only: nothing trained or generated on random
weights means anything.

For each configuration it prints:

- training tokens/s of one optimizer step over ``--batch`` examples of ``--seq`` tokens
  (``--prompt`` of them prompt, the rest response, the seed's rank-1 adapter): **naive** (the
  whole model with the adapter hooked in, one example at a time), **per-example** (the hook
  residual precomputed, then blocks above the hook, one example at a time) and **batched** (the
  same, all examples in one right-padded pass);
- generation tokens/s (``--gen-batch`` prompts of ``--prompt`` tokens, ``--new`` tokens each);
- peak memory of each (CUDA: ``max_memory_allocated``; CPU: the peak resident set of a fresh
  process per configuration);
- MFU: the step's model FLOPs divided by its time and by the device's peak. Model FLOPs count
  the work the step must do, from the parameter and token counts: a forward of the blocks below
  the hook (2·N_below per token), forward and backward of those above it (2·N_above + 2·N_above:
  the frozen weights need no weight gradient), the causal attention scores, and the
  unembedding at the response positions (forward and backward). On a CPU the peak is measured
  in the same run by a GEMM microbenchmark (``--peak`` overrides it); on CUDA it is the
  device's bf16 dense peak from its name (H100/H200: 989 TFLOP/s, A100: 312).

Usage:
  python bench/scale.py                     # CPU: tiny, gemma-3-270m-shape and gemma-2-2b at --seq 256
  python bench/scale.py --configs gemma-2-2b-16k,gemma-2-9b-131k --seq 2048   # a GPU
  python bench/scale.py --configs tiny --quick   # what CI runs
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

CONFIGS = {
    # name: (TransformerLens model name or None for tiny, hook layer, SAE width)
    "tiny": (None, 2, 256),
    "gemma-3-270m": ("google/gemma-3-270m", 12, 4096),
    "gemma-2-2b-16k": ("google/gemma-2-2b-it", 12, 16384),
    "gemma-2-2b-131k": ("google/gemma-2-2b-it", 12, 131072),
    "gemma-2-9b-16k": ("google/gemma-2-9b-it", 31, 16384),
    "gemma-2-9b-131k": ("google/gemma-2-9b-it", 31, 131072),
}
"""The seed's configuration is gemma-2-9b-it with the 131k Gemma Scope SAE at layer 31; the
2B preset hooks layer 12 (``models.PRESETS``)."""

CUDA_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40": 181e12, "A10": 125e12}


def tl_config(name: str | None, dtype: torch.dtype, device: str):
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config

    if name is None:  # a Gemma-2-shaped toy: same architecture flags, tiny sizes
        return HookedTransformerConfig(
            d_model=64,
            d_head=16,
            n_heads=4,
            n_key_value_heads=2,
            d_mlp=128,
            n_layers=4,
            n_ctx=512,
            d_vocab=512,
            act_fn="gelu_pytorch_tanh",
            normalization_type="RMS",
            positional_embedding_type="rotary",
            gated_mlp=True,
            final_rms=True,
            attn_scores_soft_cap=50.0,
            output_logits_soft_cap=30.0,
            use_normalization_before_and_after=True,
            dtype=dtype,
            device=device,
        )
    return get_pretrained_model_config(name, dtype=dtype, device=device)


def random_jumprelu_sae(d_in: int, d_sae: int, layer: int, dtype, device, seed: int = 0):
    """A JumpReLU SAE of Gemma Scope's shape with random weights; thresholds set so that about
    1 % of latents fire on random residuals (Gemma Scope's SAEs have L0 in the tens to
    hundreds)."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    cfg = JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, dtype=str(dtype).split(".")[-1], device=device)
    cfg.metadata.hook_name = f"blocks.{layer}.hook_resid_post"
    sae = JumpReLUSAE(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = torch.randn(d_in, d_sae, generator=g) / math.sqrt(d_in)
        sae.W_enc.copy_(w)
        sae.W_dec.copy_(w.T / w.T.norm(dim=1, keepdim=True))
        sae.threshold.fill_(2.33)  # pre-activations ~ N(0, |x|²/d_in): P(> 2.33σ) ≈ 1 %
    return sae.requires_grad_(False)


def build(config: str, device: str, dtype: torch.dtype):
    from sae_lens import HookedSAETransformer

    from saelora_core.models.presets import ModelAndSae
    from saelora_core.testing import tiny_tokenizer

    name, layer, width = CONFIGS[config]
    cfg = tl_config(name, dtype, device)
    torch.manual_seed(0)
    model = HookedSAETransformer(cfg, tokenizer=tiny_tokenizer(), default_padding_side="left")
    model.requires_grad_(False).eval()
    sae = random_jumprelu_sae(cfg.d_model, width, layer, torch.float32, device)
    mas = ModelAndSae(model, sae, layer, f"blocks.{layer}.hook_resid_post", f"random:{config}")
    return mas


@dataclass
class Shape:
    seq: int
    prompt: int
    batch: int
    gen_batch: int
    new: int


def examples(mas, shape: Shape, seed: int):
    from saelora_core.adapter.batch import Example
    from saelora_core.models.chat import ChatTokens

    g = torch.Generator().manual_seed(seed)
    vocab = mas.model.cfg.d_vocab
    out = []
    for _ in range(shape.batch):
        tokens = torch.randint(4, vocab, (shape.seq,), generator=g)
        tokens[0] = 1
        mask = torch.zeros(shape.seq, dtype=torch.bool)
        mask[shape.prompt :] = True
        out.append(Example(ChatTokens(tokens, mask, shape.prompt)))
    return out


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def step_flops(mas, shape: Shape) -> float:
    cfg = mas.model.cfg
    per_block = sum(p.numel() for p in mas.model.blocks[0].parameters())
    below, above = mas.layer + 1, cfg.n_layers - mas.layer - 1
    t, r = shape.seq, shape.seq - shape.prompt
    attn = 2 * t * t * cfg.n_heads * cfg.d_head  # QK and PV, causal half of 2·2·t²·hd
    fwd_below = below * (2 * per_block * t + attn)
    fwd_above = above * (2 * per_block * t + attn)
    unembed = 2 * cfg.d_model * cfg.d_vocab * r
    return shape.batch * (fwd_below + 2 * fwd_above + 2 * unembed)


def train_step(mas, lora, exs, mode: str, micro: int, precompute: bool, device: str) -> float:
    from saelora_core.adapter.batch import chunks, make_batch
    from saelora_core.adapter.forward import batch_losses

    for ex in exs:
        ex.resid = None  # every path pays for its own forward below the hook
    sync(device)
    t = time.perf_counter()
    lora.zero_grad(set_to_none=True)
    for part in chunks(exs, micro):
        losses = batch_losses(mas, lora, make_batch(mas, part), mode, precompute, "float32")
        (losses.sum() / len(exs)).backward()
    sync(device)
    return time.perf_counter() - t


def measure_peak_flops(device: str, dtype: torch.dtype) -> float:
    """A square GEMM's FLOP/s on this device, best of a few runs."""
    n = 2048 if device == "cpu" else 8192
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    best = 0.0
    for _ in range(5):
        sync(device)
        t = time.perf_counter()
        _ = a @ b
        sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def run_one(config: str, device: str, dtype: torch.dtype, shape: Shape, peak: float) -> dict:
    from saelora_core.adapter.generate import generate_tokens
    from saelora_core.adapter.sae_lora import SaeLora

    t0 = time.perf_counter()
    mas = build(config, device, dtype)
    n_params = sum(p.numel() for p in mas.model.parameters())
    build_s = time.perf_counter() - t0
    lora = SaeLora(mas.sae.cfg.d_sae, 1).to(device)
    with torch.no_grad():
        lora.s.fill_(1.0)
    exs = examples(mas, shape, 0)
    flops = step_flops(mas, shape)
    row: dict = {"config": config, "device": device, "dtype": str(dtype).split(".")[-1]}
    row.update(params_b=n_params / 1e9, build_s=build_s, seq=shape.seq, batch=shape.batch)
    train_step(mas, lora, exs[:1], "resid_add", 1, True, device)  # warm-up
    for path, micro, pre in (
        ("naive", 1, False),
        ("per_example", 1, True),
        ("batched", shape.batch, True),
    ):
        reset_peak(device)
        dt = train_step(mas, lora, exs, "resid_add", micro, pre, device)
        row[f"train_{path}_tok_s"] = shape.batch * shape.seq / dt
        row[f"train_{path}_mfu"] = flops / dt / peak
        row[f"train_{path}_peak_gb"] = peak_gb(device)
    prompts = [ex.chat.tokens[: shape.prompt] for ex in exs[:1]] * shape.gen_batch
    reset_peak(device)
    sync(device)
    t = time.perf_counter()
    out = generate_tokens(mas, prompts, lora, max_new_tokens=shape.new)
    sync(device)
    dt = time.perf_counter() - t
    row["gen_tok_s"] = sum(len(o) for o in out) / dt
    row["gen_peak_gb"] = peak_gb(device)
    return row


def fmt(row: dict) -> str:
    if "skipped" in row:
        return f"{row['config']:16s} {row['device']:5s} skipped: {row['skipped']}"
    parts = [f"{row['config']:16s} {row['device']:5s} {row['dtype']:8s} {row['params_b']:.2f}B"]
    for path in ("naive", "per_example", "batched"):
        parts.append(
            f"{path} {row[f'train_{path}_tok_s']:8.1f} tok/s MFU {row[f'train_{path}_mfu']:6.1%}"
        )
    parts.append(
        f"batched/per-example {row['train_batched_tok_s'] / row['train_per_example_tok_s']:.2f}x"
    )
    parts.append(f"train peak {row['train_batched_peak_gb']:.2f} GB")
    parts.append(f"generate {row['gen_tok_s']:7.1f} tok/s, peak {row['gen_peak_gb']:.2f} GB")
    return " | ".join(parts)


def weights_gb(config: str, dtype: torch.dtype) -> float:
    name, _, width = CONFIGS[config]
    cfg = tl_config(name, dtype, "meta")
    per_block = (
        2 * cfg.d_model * cfg.n_heads * cfg.d_head
        + 2 * cfg.d_model * (cfg.n_key_value_heads or cfg.n_heads) * cfg.d_head
        + 3 * cfg.d_model * (cfg.d_mlp or 4 * cfg.d_model)
    )
    n = cfg.n_layers * per_block + 2 * cfg.d_model * cfg.d_vocab
    size = torch.finfo(dtype).bits // 8
    return (n * size + 2 * cfg.d_model * width * 4) / 2**30


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default=None, help=f"comma-separated, of {sorted(CONFIGS)}")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: bf16 on cuda)")
    ap.add_argument("--seq", type=int, default=None, help="tokens per example (seed: 2048)")
    ap.add_argument("--prompt", type=int, default=None, help="prompt tokens (default: seq/4)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--gen-batch", type=int, default=8)
    ap.add_argument("--new", type=int, default=16)
    ap.add_argument("--peak", type=float, default=None, help="peak FLOP/s (default: measured)")
    ap.add_argument("--quick", action="store_true", help="tiny shapes (CI)")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = args.device
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else (torch.bfloat16 if device == "cuda" else torch.float32)
    )
    if args.quick:
        args.seq, args.batch, args.gen_batch, args.new = args.seq or 32, 2, 2, 4
    seq = args.seq or (2048 if device == "cuda" else 256)
    shape = Shape(seq, args.prompt or seq // 4, args.batch, args.gen_batch, args.new)
    if args.one:  # a child process: one configuration, its own peak memory
        row = run_one(args.one, device, dtype, shape, args.peak)
        print("ROW " + json.dumps(row))
        return
    names = (args.configs or ("tiny" if args.quick else "tiny,gemma-3-270m,gemma-2-2b-16k")).split(
        ","
    )
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        sys.exit(f"unknown configs {unknown}; use some of {sorted(CONFIGS)}")
    peak = args.peak or (
        measure_peak_flops(device, dtype)
        if device == "cpu"
        else next((v for k, v in CUDA_PEAK_BF16.items() if k in torch.cuda.get_device_name()), None)
        or measure_peak_flops(device, dtype)
    )
    dev_name = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"cpu x{torch.get_num_threads()} threads"
    )
    print(
        f"device {dev_name}; dtype {dtype}; peak {peak / 1e9:.0f} GFLOP/s "
        f"({'measured GEMM' if device == 'cpu' and not args.peak else 'nominal'}); {shape}"
    )
    rows = []
    for name in names:
        need = weights_gb(name, dtype)
        if device == "cpu":
            avail = _available_gb()
            if need * 1.3 > avail:
                row = {
                    "config": name,
                    "device": device,
                    "skipped": (f"weights alone need {need:.1f} GB, {avail:.1f} GB available"),
                }
                print(fmt(row), flush=True)
                rows.append(row)
                continue
        cmd = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--device",
            device,
            "--dtype",
            str(dtype).split(".")[-1],
            "--seq",
            str(shape.seq),
            "--prompt",
            str(shape.prompt),
            "--batch",
            str(shape.batch),
            "--gen-batch",
            str(shape.gen_batch),
            "--new",
            str(shape.new),
            "--peak",
            str(peak),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("ROW ")), None)
        if line is None:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            row = {"config": name, "device": device, "skipped": f"failed: {' / '.join(tail)}"}
        else:
            row = json.loads(line[4:])
        print(fmt(row), flush=True)
        rows.append(row)
    if args.json:
        from saelora_core.io.atomic import atomic_write_json

        atomic_write_json(args.json, {"peak_flops": peak, "device": dev_name, "rows": rows})
    if any("skipped" in r and r["skipped"].startswith("failed") for r in rows):
        sys.exit(1)


def _available_gb() -> float:
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) for line in f}
    return info.get("MemAvailable", 0) / 2**20


if __name__ == "__main__":
    main()
