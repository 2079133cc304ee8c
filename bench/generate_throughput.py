"""Greedy generation tokens/s on the default model: the previous path against today's, in one run.

- before: the model in TransformerLens's own weight layout (each forward copies ``W_U`` and the
  MLP and attention weights, see ``models/weight_layout.py``) and the previous decoding loop, which computed
  the prompt forward's logits at every position and synced with the host every step; batch 8,
  as the demo ran it.
- after: :func:`saelora_core.adapter.generate.generate` as the library runs it (re-laid weights,
  last-position logits, tokens kept on the device), at batch 8 and at the demo's batch
  (``GENERATE_BATCH``), with float32 and bfloat16 logits.

Each row generates the same prompts with the demo's French adapter, ``--new-tokens`` tokens each
(rows stop early only when every answer has ended). The tokens/s count the tokens asked for.
``--profile`` also prints where one batch of today's path spends its time.

Usage: python bench/generate_throughput.py [--prompts 40] [--new-tokens 32] [--profile]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from transformer_lens import TransformerLensKeyValueCache

from saelora_core import load_lora, load_model_and_sae
from saelora_core.adapter.generate import (
    GENERATE_BATCH,
    generate,
    left_pad,
    lora_on,
    masked_hook,
    stop_token_ids,
)
from saelora_core.data.heldout import heldout_prompts
from saelora_core.demo.behaviours import FRENCH
from saelora_core.models.chat import prompt_tokens, strip_response
from saelora_core.models.weight_layout import relayout_, standard_layout_


@torch.no_grad()
def previous_generate_tokens(mas, prompts, lora, mode="resid_add", max_new_tokens=64):
    """The decoding loop as it was before this benchmark (git 824c889, generate.py)."""
    model = mas.model
    tok: Any = mas.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    stops = stop_token_ids(tok)
    tokens, attn = left_pad(prompts, pad_id)
    device = model.cfg.device
    lora = lora_on(lora, device)
    first = attn.argmax(dim=1)
    edit = attn.bool().clone()
    edit[torch.arange(len(prompts)), first] = False
    state = {"edit": edit}
    hooks = [(mas.hook_name, masked_hook(mode, mas, lora, state))] if lora is not None else []
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, len(prompts))
    out: list[list[int]] = [[] for _ in prompts]
    done = torch.zeros(len(prompts), dtype=torch.bool)
    with model.hooks(fwd_hooks=hooks):
        logits = model(tokens, attention_mask=attn, past_kv_cache=cache)
        state["edit"] = torch.ones((len(prompts), 1), dtype=torch.bool)
        for step in range(max_new_tokens):
            nxt = logits[:, -1].argmax(-1)
            for i, t in enumerate(nxt.tolist()):
                if not done[i]:
                    out[i].append(t)
                    done[i] = t in stops
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            new = nxt[:, None]
            logits = model(new, attention_mask=torch.ones_like(new), past_kv_cache=cache)
    return out


def previous_generate(mas, prompts, lora, max_new_tokens, batch_size=8):
    tok, stops, texts = mas.tokenizer, stop_token_ids(mas.tokenizer), []
    for s in range(0, len(prompts), batch_size):
        chunk = [prompt_tokens(tok, p, mas.chat_format) for p in prompts[s : s + batch_size]]
        for ids in previous_generate_tokens(mas, chunk, lora, max_new_tokens=max_new_tokens):
            ids = ids[:-1] if ids and ids[-1] in stops else ids
            texts.append(strip_response(tok.decode(ids), mas.chat_format))
    return texts


def timed(fn) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--before-prompts", type=int, default=16, help="the slow path runs fewer")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    mas = load_model_and_sae("gemma-3-270m")
    lora = load_lora(f"loras/{FRENCH.name}", sae_identity=mas.sae_identity).lora
    rows = heldout_prompts()
    half = args.prompts // 2  # in-topic and off-topic, as the demo evaluates
    prompts = [r["prompt"] for r in rows if r["in_topic"]][:half]
    prompts += [r["prompt"] for r in rows if not r["in_topic"]][: args.prompts - half]
    n_new = args.new_tokens
    print(f"threads={torch.get_num_threads()} prompts={len(prompts)} new_tokens={n_new}")

    standard_layout_(mas.model)
    before = prompts[: args.before_prompts]
    dt, old = timed(lambda: previous_generate(mas, before, lora, n_new))
    base_rate = len(before) * n_new / dt
    print(f"before (TL layout, previous loop, batch 8): {base_rate:7.1f} tok/s ({dt:.1f} s)")

    relayout_(mas.model)
    results = {}
    for bs, dtype in ((8, "float32"), (GENERATE_BATCH, "float32"), (GENERATE_BATCH, "bfloat16")):
        dt, out = timed(
            lambda bs=bs, dtype=dtype: generate(
                mas, prompts, lora, max_new_tokens=n_new, batch_size=bs, logits_dtype=dtype
            )
        )
        results[(bs, dtype)] = out
        rate = len(prompts) * n_new / dt
        print(
            f"after (batch {bs:2d}, {dtype:8s} logits):      {rate:7.1f} tok/s ({dt:.1f} s)"
            f"  {rate / base_rate:5.1f}x before"
        )
    same = sum(a == b for a, b in zip(old, results[(8, "float32")], strict=False))
    print(f"answers identical to the previous path (float32): {same}/{len(old)}")
    same16 = sum(
        a == b
        for a, b in zip(results[(GENERATE_BATCH, "float32")], results[(GENERATE_BATCH, "bfloat16")])
    )
    print(f"bfloat16-logit answers identical to float32: {same16}/{len(prompts)}")
    if args.profile:
        from torch.profiler import profile

        with profile() as p:
            generate(mas, prompts[:GENERATE_BATCH], lora, max_new_tokens=n_new)
        print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
