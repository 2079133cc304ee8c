"""Correctness on a device (CUDA, or the CPU): the checks ``bench/device_check.sh`` runs.

On the tiny model moved to ``--device`` (float32, so the checks are exact up to kernel rounding):

- ``hooks_equal_sae_lens_splice``: ``attach_lora(mas, None, "sae_replace", skip_bos=False)``
  gives the logits of sae_lens's own splice (``HookedSAETransformer.run_with_saes``);
- ``train_step``: one training step (``adapter.forward.batch_losses``, backward, Adam) on the device
  gives the loss and the adapter of the same step on the CPU;
- ``generate_equals_unbatched``: greedy continuations of a left-padded batch equal each prompt
  decoded alone, with the adapter on (TransformerLens decoder, and the ``transformers`` twin on
  a tiny Gemma-3).

Writes ``{"device": ..., "checks": {name: {"ok": bool, ...}}}`` to ``--json``; exits 1 when a
check fails.

Usage: python bench/device_correctness.py [--device cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from saelora_core import SaeLora, attach_lora
from saelora_core.adapter.batch import Example, make_batch
from saelora_core.adapter.forward import batch_losses
from saelora_core.adapter.generate import generate_tokens
from saelora_core.adapter.hf_generate import hf_generate_tokens
from saelora_core.models.chat import format_turn, prompt_tokens
from saelora_core.models.presets import ModelAndSae
from saelora_core.testing import tiny_gemma3_model_and_sae, tiny_model_and_sae

PROMPTS = ["What is 2+2?", "Say hi", "A much longer prompt here, with words", "x"]


def on(mas: ModelAndSae, device: str) -> ModelAndSae:
    mas.model.to(device)
    mas.sae.to(device)
    return mas


def adapter(d_sae: int, device: str) -> SaeLora:
    lora = SaeLora(d_sae, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora.s.copy_(torch.tensor([8.0, -6.0]))
    return lora.to(device)


def check_splice(device: str) -> dict:
    mas = on(tiny_model_and_sae(), device)
    tokens = torch.randint(10, 100, (2, 24), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = mas.tokenizer.bos_token_id
    tokens = tokens.to(device)
    with attach_lora(mas, None, "sae_replace", skip_bos=False):
        ours = mas.model(tokens)
    theirs = mas.model.run_with_saes(tokens, saes=[mas.sae])
    plain = mas.model(tokens)
    err = (ours - theirs).abs().max().item()
    moved = (plain - theirs).abs().max().item()  # the splice does change the logits
    return {"ok": err < 1e-4 and moved > 1e-3, "max_abs_diff": err, "splice_effect": moved}


def step(mas: ModelAndSae, device: str) -> tuple[float, torch.Tensor]:
    exs = [Example(format_turn(mas.tokenizer, f"Say yes {i}", "yes yes", "qa")) for i in range(4)]
    lora = adapter(mas.sae.cfg.d_sae, device)
    opt = torch.optim.Adam(lora.parameters(), lr=0.05)
    loss = batch_losses(mas, lora, make_batch(mas, exs), "resid_add").mean()
    loss.backward()
    opt.step()
    return loss.item(), torch.cat([p.detach().flatten().cpu() for p in lora.parameters()])


def check_train_step(device: str) -> dict:
    loss, params = step(on(tiny_model_and_sae(), device), device)
    ref_loss, ref = step(tiny_model_and_sae(), "cpu")
    err = (params - ref).abs().max().item()
    ok = abs(loss - ref_loss) < 1e-4 * max(1.0, abs(ref_loss)) and err < 1e-4
    return {"ok": ok, "loss": loss, "cpu_loss": ref_loss, "max_param_diff": err}


def check_generate(device: str) -> dict:
    out = {}
    tl = on(tiny_model_and_sae(), device)
    gemma, hf = tiny_gemma3_model_and_sae()
    gemma = on(gemma, device)
    hf.to(device)
    for name, mas, fn in (
        ("tl", tl, generate_tokens),
        ("hf", gemma, lambda *a, **k: hf_generate_tokens(*a, hf=hf, **k)),
    ):
        ids = [prompt_tokens(mas.tokenizer, p, "qa") for p in PROMPTS]
        lora = adapter(mas.sae.cfg.d_sae, device)
        batched = fn(mas, ids, lora, max_new_tokens=12)
        alone = [fn(mas, [i], lora, max_new_tokens=12)[0] for i in ids]
        out[name] = sum(a == b for a, b in zip(batched, alone, strict=True)) / len(ids)
    return {"ok": all(v == 1.0 for v in out.values()), "identical_fraction": out}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    checks = {
        "hooks_equal_sae_lens_splice": check_splice(args.device),
        "train_step": check_train_step(args.device),
        "generate_equals_unbatched": check_generate(args.device),
    }
    rec = {"device": args.device, "checks": checks}
    print(json.dumps(rec, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(rec, indent=1))
    return 0 if all(c["ok"] for c in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
