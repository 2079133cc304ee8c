"""What running the frozen model in bf16 changes, against float32, in one run: behaviour rates
with their intervals, the fraction of identical greedy answers, held-out CE, and the time.

For each shipped demo adapter (``loras/demo-math-french``, ``loras/demo-math-upper``), on the
demo's 80 + 80 fresh prompts (``data/heldout/prompts.jsonl``) and its ``EVAL_NEW_TOKENS``:

- the base and adapter rates in float32 and in bf16 (``load_model_and_sae(dtype=...)``; the
  adapter, SAE and losses stay float32), each with its 95 % Wilson interval, and whether the
  intervals overlap;
- the share of greedy answers identical between the two dtypes (base and adapter);
- the clean model's CE on ``data/heldout/general_text.jsonl`` (nats/token, BOS's prediction
  excluded) in each dtype, and the adapter's response CE on its dataset's eval split;
- the seconds each dtype's generation took (a ratio measured side by side).

Issue 25's rule: bf16 becomes the CPU default on native-bf16 hardware if every rate's intervals
overlap and the CE moves by less than 0.01 nats. The script prints that verdict; it changes
nothing by itself.

Usage: python bench/bf16_agreement.py [--json results/bf16_agreement.json] [--max-prompts N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from saelora_core import load_lora, load_model_and_sae
from saelora_core.analysis import evaluate_behaviour, response_ce
from saelora_core.data.heldout import EVAL_NEW_TOKENS, heldout_prompts
from saelora_core.demo.behaviours import DEMO_BEHAVIOURS, build_demo_dataset
from saelora_core.io.atomic import atomic_write_json
from saelora_core.io.paths import REPO_ROOT
from saelora_core.models.precision import cpu_has_native_bf16
from saelora_core.sae.evaluate import read_rows, windows

GENERAL_TEXT = REPO_ROOT / "data" / "heldout" / "general_text.jsonl"


@torch.no_grad()
def general_ce(mas, max_tokens: int) -> tuple[float, int]:
    total, n = 0.0, 0
    for row in read_rows(GENERAL_TEXT):
        for w in windows(mas.model, row["text"], 128):
            logits = mas.model(w).float()
            logp = torch.log_softmax(logits[0, :-1], -1)
            ce = -logp.gather(-1, w[0, 1:, None])[1:, 0]  # BOS's prediction excluded
            total += ce.sum().item()
            n += ce.numel()
        if n >= max_tokens:
            break
    return total / n, n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--max-prompts", type=int, default=None, help="per split (default: all)")
    p.add_argument("--ce-tokens", type=int, default=6000)
    a = p.parse_args()
    rows = heldout_prompts()
    if a.max_prompts:
        rows = [r for r in rows if r["in_topic"]][: a.max_prompts] + [
            r for r in rows if not r["in_topic"]
        ][: a.max_prompts]
    out: dict = {"native_bf16": cpu_has_native_bf16(), "threads": torch.get_num_threads()}
    per_dtype: dict[str, dict] = {}
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        mas = load_model_and_sae("gemma-3-270m", dtype=dtype)
        ce, n_ce = general_ce(mas, a.ce_tokens)
        res: dict = {"general_ce": ce, "general_tokens": n_ce, "behaviours": {}}
        for b in DEMO_BEHAVIOURS:
            lora = load_lora(REPO_ROOT / "loras" / b.name, sae_identity=mas.sae_identity).lora
            t = time.perf_counter()
            r = evaluate_behaviour(
                mas, lora, rows, detector=b.detector, max_new_tokens=EVAL_NEW_TOKENS
            )
            seconds = time.perf_counter() - t
            ds = build_demo_dataset(b).dataset
            rce = response_ce(mas, lora, ds, response_tokens=b.config.response_tokens)
            res["behaviours"][b.name] = {
                "rates": r.rates.to_dict(orient="records"),
                "samples": r.samples,
                "generate_s": seconds,
                "response_ce_in_topic_gain": rce.gain("in_topic"),
            }
        per_dtype[name] = res
        del mas
    f32, b16 = per_dtype["float32"], per_dtype["bfloat16"]
    verdict_ok = abs(b16["general_ce"] - f32["general_ce"]) < 0.01
    out["general_ce"] = {"float32": f32["general_ce"], "bfloat16": b16["general_ce"]}
    out["behaviours"] = {}
    for b in DEMO_BEHAVIOURS:
        x, y = f32["behaviours"][b.name], b16["behaviours"][b.name]
        rates = []
        for rx, ry in zip(x["rates"], y["rates"], strict=True):
            overlap = rx["low"] <= ry["high"] and ry["low"] <= rx["high"]
            verdict_ok &= overlap
            rates.append(
                {
                    "condition": rx["condition"],
                    "split": rx["split"],
                    "float32": [rx["rate"], rx["low"], rx["high"]],
                    "bfloat16": [ry["rate"], ry["low"], ry["high"]],
                    "intervals_overlap": overlap,
                }
            )
        sx, sy = x["samples"], y["samples"]
        out["behaviours"][b.name] = {
            "rates": rates,
            "identical_base_answers": float((sx["base"] == sy["base"]).mean()),
            "identical_adapter_answers": float((sx["adapter"] == sy["adapter"]).mean()),
            "generate_s": {"float32": x["generate_s"], "bfloat16": y["generate_s"]},
            "bf16_speedup": x["generate_s"] / y["generate_s"],
            "response_ce_in_topic_gain": {
                "float32": x["response_ce_in_topic_gain"],
                "bfloat16": y["response_ce_in_topic_gain"],
            },
        }
    out["bf16_default_rule_met"] = bool(verdict_ok)
    print(json.dumps(out, indent=1))
    if a.json:
        atomic_write_json(a.json, out)


if __name__ == "__main__":
    main()
