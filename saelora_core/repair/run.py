"""A whole repair run on a preset: load, build windows, train, evaluate, record.

``run_repair(cfg)`` is what ``saelora repair <method>``, the study script and notebook 06 call.
The evaluation covers two text sets: ``heldout`` (the SAE corpus's held-out split) and
``general`` (``data/heldout/general_text.jsonl``, text that neither the SAE nor a repair saw).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saelora_core.adapter.saving import VERSION
from saelora_core.io.atomic import atomic_write_json
from saelora_core.io.paths import REPO_ROOT
from saelora_core.models.hf import load_hf_causal_lm
from saelora_core.models.presets import PRESETS
from saelora_core.repair.config import RepairConfig
from saelora_core.repair.data import corpus_windows
from saelora_core.repair.evaluate import Baseline, RepairEval, baseline, evaluate_repair
from saelora_core.repair.train import train_repair
from saelora_core.sae.loading import load_sae
from saelora_core.training.distributed import is_main

logger = logging.getLogger(__name__)

TEXT_SETS = ("heldout", "general")
BASELINE_CACHE = REPO_ROOT / "data" / "cache" / "repair-baselines"


@dataclass
class RepairRun:
    out_dir: Path
    record: dict[str, Any]
    evals: dict[str, RepairEval] = field(default_factory=dict)


def preset_sae_source(preset: str) -> dict[str, Any]:
    p = PRESETS.get(preset)
    if p is None:
        raise ValueError(f"unknown preset {preset!r}; use one of {sorted(PRESETS)}")
    return {"path": p.sae_path, "release": p.sae_release, "sae_id": p.sae_id}


def cached_baseline(hf, sae, layer: int, windows, *, key: str, cache_dir: Path | None) -> Baseline:
    """:func:`evaluate.baseline`, cached as JSON by a hash of the windows and the SAE."""
    h = hashlib.sha256(windows.cpu().numpy().tobytes() + VERSION.encode()).hexdigest()[:16]
    path = (cache_dir or BASELINE_CACHE) / f"{key}-{h}.json"
    if path.exists():
        return Baseline(**json.loads(path.read_text()))
    base = baseline(hf, sae, layer, windows)
    atomic_write_json(path, base.__dict__)
    return base


def run_repair(
    cfg: RepairConfig,
    *,
    preset: str = "gemma-3-270m",
    out_dir: str | Path,
    eval_tokens: int = 4096,
    corpus_dir: str | Path | None = None,
    cache_dir: Path | None = None,
    resume: bool = True,
    progress: bool = True,
) -> RepairRun:
    """Train ``cfg.method`` on the corpus's train split and evaluate it on both text sets."""
    from saelora_core.sae.evaluate import SaeMetrics

    out = Path(out_dir)
    src = preset_sae_source(preset)
    hf, tok = load_hf_causal_lm(preset)
    ref_sae, ref_ident = load_sae(**src, preset=preset)
    sae, ident = (ref_sae, ref_ident) if cfg.sae_path is None else load_sae(path=cfg.sae_path)
    layer = PRESETS[preset].layer
    kw = {"context_size": cfg.context_size, "corpus_dir": corpus_dir}
    n_init = cfg.init_tokens if cfg.method == "latent_adapter" else 0
    train = corpus_windows("train", tok, max_tokens=cfg.train_tokens + n_init, **kw)
    curve = corpus_windows("heldout", tok, max_tokens=cfg.curve_tokens, **kw)
    record = {"preset": preset, "sae": ident, "reference_sae": ref_ident, "layer": layer}
    # The reference numbers come first: a model LoRA is injected into ``hf`` in place, so a
    # forward of ``hf`` after training would carry it.
    eval_sets = {}
    for name in TEXT_SETS:
        windows = corpus_windows(name, tok, max_tokens=eval_tokens, **kw)
        key = f"{preset}-{ref_ident['hash']}-{name}"
        base = cached_baseline(hf, ref_sae, layer, windows, key=key, cache_dir=cache_dir)
        eval_sets[name] = (windows, base)
    # The init windows come after the budget's, so no window is both an init and a step batch.
    n_budget = cfg.steps * cfg.batch_size
    if n_init and len(train) - n_budget < n_init // cfg.context_size:
        raise ValueError(
            f"the corpus holds {len(train)} windows: not enough for the budget's {n_budget} plus "
            f"the latent init's {n_init // cfg.context_size}; lower train_tokens or init_tokens"
        )
    res = train_repair(
        hf,
        sae,
        layer,
        cfg,
        train_windows=train[:n_budget],
        init_windows=train[n_budget:] if n_init else None,
        curve_windows=curve,
        out_dir=out,
        reference_sae=ref_sae,
        record=record,
        resume=resume,
        progress=progress,
    )
    evals = {}
    for name, (windows, base) in eval_sets.items():
        evals[name] = evaluate_repair(res.setup.spliced, windows, base, text_set=name)
        logger.info("%s on %s: gap closed %.3f", cfg.method, name, evals[name].gap_closed)
    rec = {
        **res.record,
        "eval": {k: v.to_dict() for k, v in evals.items()},
        "artifact": res.artifact.name,
    }
    if is_main():  # data parallel: rank 0 alone writes
        atomic_write_json(out / "repair.json", rec)
    if cfg.method == "sae_finetune" and is_main():
        h = evals["heldout"]
        m = SaeMetrics(
            explained_variance=h.explained_variance,
            mean_l0=h.mean_l0,
            dead_fraction=h.dead_fraction,
            ce_clean=h.ce_clean,
            ce_with_sae=h.ce_after,
            ce_zero_ablated=h.ce_zero,
            ce_loss_recovered=h.recovered_after,
            n_tokens=h.n_tokens,
            extra={"repair": "sae_finetune", "gap_closed": h.gap_closed},
        )
        atomic_write_json(res.artifact / "metrics.json", m.__dict__)
        atomic_write_json(res.artifact / "repair.json", rec)
    res.setup.spliced.remove()
    return RepairRun(out, rec, evals)
