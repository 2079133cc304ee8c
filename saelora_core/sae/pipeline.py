"""The default SAE's build, one resumable stage at a time: corpus → activation cache → SAE → metrics.

Each stage skips work already on disk (the corpus when its manifest exists, cache shards already
written, training steps already checkpointed), so ``make sae`` can be killed and re-run at any
point. :data:`DEFAULT_SAE_RECIPE` is the shipped SAE's: a BatchTopK SAE (saved as JumpReLU) of
8,192 latents at L0 60, on 8.2M training tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

from saelora_core.io.atomic import atomic_write_json
from saelora_core.sae.activation_cache import CacheSettings, cache_activations
from saelora_core.sae.cached_batches import special_token_ids
from saelora_core.sae.train import SaeTrainConfig

logger = logging.getLogger(__name__)

DEFAULT_SAE_RECIPE = SaeTrainConfig(
    preset="gemma-3-270m",
    layer=12,
    d_sae=8192,
    k=60,
    architecture="batchtopk",
    training_tokens=8_192_000,
    context_size=128,
    train_batch_size_tokens=4096,
    lr=4e-4,
    lr_warm_up_steps=100,
    lr_decay_steps=400,
    dead_feature_window=250,
    n_batches_for_norm_estimate=20,
    checkpoint_every=50,
    snapshot_every=250,
    save_dtype="bfloat16",
)
"""The shipped SAE's recipe: 2,000 steps of 4,096 tokens, 8,192 latents at L0 60. The width is
the issue's minimum: at 16,384 the bf16 weights (42 MB) would not fit the repository's 40 MB
budget with everything else, and one step costs twice as much. ``dead_feature_window`` is an
eighth of the run, so the AuxK loss works on latents silent for ~1M tokens."""

WIDE_SAE_RECIPE = replace(
    DEFAULT_SAE_RECIPE, d_sae=16384, training_tokens=12_000_000, lr=3e-4, lr_decay_steps=600
)
"""Gemma Scope 2's smallest width, for a machine with the time (``--d-sae 16384
--training-tokens 12000000 --lr 3e-4 --lr-decay-steps 600``); not committed (42 MB in bf16)."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_stage(
    model,
    corpus_dir: str | Path,
    cache_dir: str | Path,
    tokens: int,
    cfg: SaeTrainConfig,
    split: str = "train",
) -> Path:
    """Cache ``tokens`` tokens of the corpus's ``split`` (``train`` or ``heldout``) at
    ``cfg``'s hook (resumes; a split shorter than ``tokens`` is cached whole)."""
    train = Path(corpus_dir) / f"{split}.jsonl"
    settings = CacheSettings(
        model_name=str(model.cfg.model_name),
        hook_name=f"blocks.{cfg.layer}.hook_resid_post",
        layer=cfg.layer,
        d_in=model.cfg.d_model,
        context_size=cfg.context_size,
        total_tokens=tokens,
        seqs_per_shard=256,
        corpus_sha256=file_sha256(train),
        model_dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
    )
    return cache_activations(model, train, cache_dir, settings, batch_size=32)


def fit_stage(model, cache_dir: str | Path, cfg: SaeTrainConfig, out_dir: str | Path) -> Path:
    """Train (or finish training) the SAE from the cache."""
    from saelora_core.sae.train_cached import train_sae_from_cache

    return train_sae_from_cache(
        cache_dir, cfg, out_dir, exclude_ids=special_token_ids(model.tokenizer)
    )


def eval_stage(
    model,
    sae_dirs: dict[str, str | Path],
    texts: str | Path,
    out: str | Path,
    group_key: str = "kind",
    max_tokens: int | None = None,
) -> dict:
    """Splice metrics of each SAE per ``group_key`` on ``texts``, written to ``out`` (JSON) and
    beside it as Markdown."""
    from saelora_core.sae.evaluate import as_json, evaluate_by_group, metrics_table, read_rows
    from saelora_core.sae.loading import load_sae

    rows = read_rows(texts)
    results = {}
    for name, path in sae_dirs.items():
        sae, _ = load_sae(path=path)
        hook = sae.cfg.metadata.hook_name or "blocks.12.hook_resid_post"
        results[name] = evaluate_by_group(
            model, sae, hook, rows, group_key=group_key, max_tokens_per_group=max_tokens
        )
        logger.info("%s: %s", name, results[name]["overall"])
    record = {
        "texts": str(texts),
        "group_key": group_key,
        "max_tokens_per_group": max_tokens,
        "results": as_json(results),
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(out), record)
    Path(out).with_suffix(".md").write_text(metrics_table(results) + "\n", encoding="utf-8")
    return record


HELDOUT_CACHE_TOKENS = 2_000_000
"""More than the corpus's held-out split holds (~0.9M tokens), so it is cached whole."""


def heldout_stage(model, sae_dir: str | Path, corpus_dir: str | Path, cache_dir: str | Path):
    """Cache the corpus's held-out split (once; resumes) and measure the SAE on every token of
    it: explained variance, L0 and the latents that never fire (:mod:`cache_metrics`)."""
    from dataclasses import asdict

    from saelora_core.sae.cache_metrics import cache_metrics
    from saelora_core.sae.loading import load_sae
    from saelora_core.sae.train import SaeTrainConfig

    sae, _ = load_sae(path=sae_dir)
    hook = sae.cfg.metadata.hook_name or "blocks.12.hook_resid_post"
    cfg = SaeTrainConfig(layer=int(hook.split(".")[1]), d_sae=2, k=1)
    cache_stage(model, corpus_dir, cache_dir, HELDOUT_CACHE_TOKENS, cfg, split="heldout")
    return asdict(cache_metrics(sae, cache_dir, exclude_ids=special_token_ids(model.tokenizer)))


def write_metrics(
    sae_dir: str | Path, record: dict, name: str, heldout: dict | None = None
) -> None:
    """``metrics.json`` beside an SAE: its general-text splice metrics, per genre and overall,
    and, when measured, its reconstruction on the corpus's whole held-out split."""
    res = record["results"][name]
    out = {"general_text": res, "texts": record["texts"], "group_key": record["group_key"]}
    if heldout is not None:
        out["corpus_heldout"] = heldout
    atomic_write_json(Path(sae_dir) / "metrics.json", out)
    logger.info("wrote %s", json.dumps(res["overall"]))
