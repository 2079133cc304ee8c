"""Why the SAE's decoder bias starts at the activations' mean: the same short BatchTopK run from
a zero bias (sae_lens's start) and from the mean, measured on held-out activations.

Gemma-3-270M's residual at layer 12 has one dimension whose mean (~12,000) is most of every
token's norm (~14,000; ``python studies/sae_bdec_init.py --stats`` prints them). From a zero
bias that shared component dominates every latent's pre-activation, so the same few latents
win TopK on every token.

Each run: 4,096 latents, k 60, 60 steps of 2,048 tokens from the first ``--shards`` shards of
the activation cache, lr 6e-4 (10 warm-up and 10 decay steps), dead window 20 steps. Measured
on the first ``--eval-tokens`` tokens of the held-out cache (``sae.cache_metrics``).

Usage: python studies/sae_bdec_init.py [--cache data/activations/gemma-3-270m-l12]
       [--heldout-cache data/activations/gemma-3-270m-l12-heldout] [--shards 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from saelora_core.io.atomic import atomic_write_json
from saelora_core.io.paths import REPO_ROOT
from saelora_core.sae.cache_metrics import cache_metrics
from saelora_core.sae.cached_batches import cached_batches
from saelora_core.sae.loading import load_sae
from saelora_core.sae.train import SaeTrainConfig
from saelora_core.sae.train_cached import checkpoint_dir, train_sae_from_cache

EXCLUDE = {0, 1, 2}  # Gemma's pad, eos, bos


def stats(cache: Path) -> dict:
    x = torch.cat([b for _, b in zip(range(8), cached_batches(cache, 4096, exclude_ids=EXCLUDE))])
    mu = x.mean(0)
    var = (x - mu).pow(2).mean(0)
    top = int(mu.abs().argmax())
    return {
        "tokens": x.shape[0],
        "mean_token_norm": x.norm(dim=1).mean().item(),
        "norm_of_the_mean": mu.norm().item(),
        "largest_mean_dimension": top,
        "its_mean": mu[top].item(),
        "its_share_of_centred_variance": (var[top] / var.sum()).item(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cache", type=Path, default=REPO_ROOT / "data/activations/gemma-3-270m-l12")
    p.add_argument(
        "--heldout-cache",
        type=Path,
        default=REPO_ROOT / "data/activations/gemma-3-270m-l12-heldout",
    )
    p.add_argument("--shards", type=int, default=20)
    p.add_argument("--eval-tokens", type=int, default=32768)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "runs/sae-bdec-init")
    p.add_argument("--json", type=Path, default=REPO_ROOT / "results/sae_substrate/b_dec_init.json")
    p.add_argument("--stats", action="store_true", help="only print the activation statistics")
    a = p.parse_args()
    record: dict = {"activations": stats(a.cache)}
    print(json.dumps(record["activations"], indent=1))
    if a.stats:
        return
    for init in ("zeros", "mean"):
        cfg = SaeTrainConfig(
            d_sae=4096, k=60, architecture="batchtopk", training_tokens=60 * 2048,
            train_batch_size_tokens=2048, lr=6e-4, lr_warm_up_steps=10, lr_decay_steps=10,
            dead_feature_window=20, n_batches_for_norm_estimate=8, checkpoint_every=1000,
            save_dtype="float32", b_dec_init=init,
        )  # fmt: skip
        out = a.out / f"b_dec-{init}"
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(checkpoint_dir(out), ignore_errors=True)
        checkpoint_dir(out).mkdir(parents=True)
        (checkpoint_dir(out) / "cache_extent.json").write_text(json.dumps({"shards": a.shards}))
        train_sae_from_cache(a.cache, cfg, out, exclude_ids=EXCLUDE)
        sae, _ = load_sae(path=out)
        m = cache_metrics(sae, a.heldout_cache, exclude_ids=EXCLUDE, max_tokens=a.eval_tokens)
        record[init] = asdict(m)
        print(init, json.dumps(record[init]))
    atomic_write_json(a.json, record)


if __name__ == "__main__":
    main()
