"""Greedy generation tokens/s with the demo's adapter: ours against plain ``transformers``, in
one run.

Rows, each on the same prompts and the same batches (longest prompts first, as ``generate``
batches them), with the demo's French adapter on:

- ``HF generate``: plain ``transformers`` ``generate`` (SDPA, its own dynamic KV cache, greedy,
  stopping at EOS / ``<end_of_turn>``) on the preset's HF model, with the adapter as a forward
  hook on block ``L`` (every position but each prompt's BOS): the anchor.
- ``ours (tl)``: :func:`saelora_core.adapter.generate.generate` decoding with TransformerLens
  (``generate``'s default backend).
- ``ours (hf)``: the same function decoding with the ``transformers`` twin
  (``saelora_core/adapter/hf_generate.py``, ``backend="hf"``): post-rotary cache, SDPA, rows
  that ended leave the batch.
- ``ours (hf-int8)``: the same, with the next token chosen among the int8 head's top 64
  candidates scored exactly (``backend="hf-int8"``; not exact by construction, so the bench
  reports its agreement).

At batch 16 (``--prompts16`` prompts) and at batch 40 (``--prompts40`` prompts), half math and
half not, ``--new-tokens`` tokens each. The tokens/s count the tokens asked for (prompts ×
new tokens), so a path that stops finished rows early gains by it; ours stops a row at the end
of its turn, ``generate`` only when every row has hit EOS. Printed: tokens/s, the ratio to HF
generate measured in the same run, and the fraction of answers identical to the TransformerLens
path (and to HF generate's). ``--profile`` prints where one batch of ``ours (hf)`` spends time.

With ``--bf16`` (default ``auto``: where the hardware multiplies bf16 natively) every row runs
again with the frozen model in bf16 (``load_model_and_sae(dtype=torch.bfloat16)``; the adapter
stays float32), its ratio given both to the float32 HF anchor (plain ``transformers``' default
dtype) and to HF ``generate`` in bf16, and its answers compared with the float32 path's.

Usage: python bench/generate_throughput.py [--prompts16 16] [--prompts40 80] [--new-tokens 32]
       [--json out.json] [--preset gemma-3-270m] [--lora loras/demo-math-french]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from saelora_core import load_lora, load_model_and_sae
from saelora_core.adapter.generate import generate, left_pad, stop_token_ids
from saelora_core.adapter.hf_generate import decoder_layers, hf_twin
from saelora_core.adapter.hooks import hook_fn
from saelora_core.data.heldout import heldout_prompts
from saelora_core.demo.behaviours import FRENCH
from saelora_core.models.chat import prompt_tokens, strip_response
from saelora_core.models.precision import native_bf16


def hf_generate(mas, hf, prompts: list[str], lora, batch: int, n_new: int) -> list[str]:
    """Plain ``transformers`` ``generate`` with the adapter as a forward hook on block L."""
    tok: Any = mas.tokenizer
    stops = stop_token_ids(tok)
    ids = [prompt_tokens(tok, p, mas.chat_format) for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    edit = hook_fn("resid_add", mas.sae, lora, skip_bos=False)
    state: dict[str, torch.Tensor] = {}

    def hook(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        new = edit(h, hook=None)
        if h.shape[1] > 1:  # the prompt forward: not the pads, not each prompt's BOS
            new = torch.where(state["prompt_edit"][..., None], new, h)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = decoder_layers(hf)[mas.layer].register_forward_hook(hook)
    texts: dict[int, str] = {}
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    try:
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            tokens, attn = left_pad([ids[i] for i in idx], pad)
            e = attn.bool().clone()
            e[torch.arange(len(idx)), attn.argmax(1)] = False
            state["prompt_edit"] = e
            out = hf.generate(
                input_ids=tokens,
                attention_mask=attn,
                max_new_tokens=n_new,
                do_sample=False,
                eos_token_id=sorted(stops),
                pad_token_id=pad,
            )
            for i, row in zip(idx, out[:, tokens.shape[1] :].tolist(), strict=True):
                cut = next((j for j, t in enumerate(row) if t in stops), len(row))
                texts[i] = strip_response(tok.decode(row[:cut]), mas.chat_format)
    finally:
        handle.remove()
    return [texts[i] for i in range(len(prompts))]


def timed(fn) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def prompt_set(n: int) -> list[str]:
    rows = heldout_prompts()
    half = n // 2  # in-topic and off-topic, as the demo evaluates
    out = [r["prompt"] for r in rows if r["in_topic"]][:half]
    return out + [r["prompt"] for r in rows if not r["in_topic"]][: n - half]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts16", type=int, default=16)
    ap.add_argument("--prompts40", type=int, default=80)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--preset", default="gemma-3-270m")
    ap.add_argument("--lora", default=f"loras/{FRENCH.name}")
    ap.add_argument(
        "--bf16",
        choices=("auto", "yes", "no"),
        default="auto",
        help="also run every path with the frozen model in bf16 (auto: where the CPU or GPU "
        "has native bf16)",
    )
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    mas = load_model_and_sae(args.preset, dtype=torch.float32)
    lora = load_lora(args.lora, sae_identity=mas.sae_identity).lora
    models = {"": (mas, hf_twin(mas))}
    dev = str(next(mas.model.parameters()).device)
    if args.bf16 == "yes" or (args.bf16 == "auto" and native_bf16(dev)):
        mas16 = load_model_and_sae(args.preset, dtype=torch.bfloat16)
        models[", bf16"] = (mas16, hf_twin(mas16))
    n_new = args.new_tokens
    print(f"device={dev} threads={torch.get_num_threads()} new_tokens={n_new}")
    figures: dict[str, Any] = {"new_tokens": n_new, "device": dev, "rows": []}
    for batch, n in ((16, args.prompts16), (40, args.prompts40)):
        prompts = prompt_set(n)
        runs = {}
        for tag, (m, hf) in models.items():
            assert hf is not None
            runs[f"HF generate{tag}"] = lambda b=batch, p=prompts, m=m, hf=hf: hf_generate(
                m, hf, p, lora, b, n_new
            )
            for backend in ("tl", "hf", "hf-int8"):
                runs[f"ours ({backend}{tag})"] = lambda b=batch, p=prompts, m=m, k=backend: (
                    generate(m, p, lora, max_new_tokens=n_new, batch_size=b, backend=k)
                )
        rates, answers = {}, {}
        for name, fn in runs.items():
            dt, answers[name] = timed(fn)
            rates[name] = len(prompts) * n_new / dt
        for name in runs:
            same_tl = sum(a == b for a, b in zip(answers[name], answers["ours (tl)"], strict=True))
            same_hf = sum(
                a == b for a, b in zip(answers[name], answers["HF generate"], strict=True)
            )
            ratio = rates[name] / rates["HF generate"]
            anchor = "HF generate, bf16" if name.endswith("bf16)") else "HF generate"
            ratio_same = rates[name] / rates.get(anchor, rates["HF generate"])
            print(
                f"batch {batch:2d}, {len(prompts):3d} prompts, {name:20s}: "
                f"{rates[name]:7.1f} tok/s  {ratio:5.2f}x HF generate (fp32)  "
                f"{ratio_same:5.2f}x HF generate in its dtype  "
                f"answers = tl {same_tl}/{len(prompts)}, = HF generate {same_hf}/{len(prompts)}"
            )
            figures["rows"].append(
                {
                    "batch": batch,
                    "prompts": len(prompts),
                    "path": name,
                    "tok_per_s": rates[name],
                    "ratio_to_hf_generate": ratio,
                    "ratio_to_hf_generate_same_dtype": ratio_same,
                    "same_as_tl": same_tl,
                    "same_as_hf_generate": same_hf,
                }
            )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    if args.profile:
        from torch.profiler import profile

        with profile() as p:
            generate(mas, prompt_set(16), lora, max_new_tokens=n_new, batch_size=16, backend="hf")
        print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
