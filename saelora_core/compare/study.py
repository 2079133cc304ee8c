"""The comparison on a preset, as ``saelora compare`` runs it: load, train the missing
baselines (with ``train=True``), run every row, write the table.

The baselines are trained on the demo dataset of the behaviour (``demo.build_demo_dataset``:
the same 100 + 100 rows the shipped adapters saw), with the same first 4 answer tokens, batch
size, epochs and ``max_len``:

- ``steer``: ``steer.train_steer`` at the rank whose parameter count matches a rank-1 latent
  adapter (``steer.rank_for_params(d_model, 2·d_sae + 1)``);
- ``peft-r{1,8}-{after,all}``: ``peft_lora.train_peft_lora`` at rank 1 and 8, on the blocks
  after the hook or on all blocks (``BASELINES``).

Each is resumable and skipped when already finished.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from saelora_core.compare.edits import RowSpec
from saelora_core.compare.peft_lora import PeftLoraConfig, read_metadata, train_peft_lora
from saelora_core.compare.run import (
    BEHAVIOURS,
    DEFAULT_OUT,
    DEFAULT_RUNS,
    CompareSettings,
    default_rows,
    run_compare,
)
from saelora_core.io.paths import repo_relative

logger = logging.getLogger(__name__)

BASELINES: dict[str, PeftLoraConfig] = {
    f"peft-r{r}-{layers}": PeftLoraConfig(rank=r, layers=layers, name=f"peft-r{r}-{layers}")  # type: ignore[arg-type]
    for r in (1, 8)
    for layers in ("after", "all")
}
"""The peft rows ``train=True`` can make, by directory name."""


def train_baselines(mas, tag: str, specs: list[RowSpec], *, progress: bool = True) -> list[str]:
    """Train every steer and peft row of ``specs`` whose directory holds no finished run; the
    peft rows' directory names must be keys of :data:`BASELINES`. Returns what was trained."""
    from saelora_core.demo.behaviours import build_demo_dataset
    from saelora_core.models.hf import load_hf_causal_lm
    from saelora_core.training.steer import SteerConfig, rank_for_params, train_steer

    b = BEHAVIOURS[tag]
    todo = [s for s in specs if s.kind in ("steer", "peft") and not finished(s)]
    if not todo:
        return []
    data = build_demo_dataset(b).dataset
    meta = {"dataset": b.name, "guideline": b.guideline, "detector": b.detector}
    done = []
    for s in todo:
        path = Path(s.path or "")
        if s.kind == "steer":
            budget = 2 * mas.sae.cfg.d_sae + 1
            train_steer(
                mas, data, SteerConfig(rank=rank_for_params(mas.model.cfg.d_model, budget)),
                out_dir=path, progress=progress,
            )  # fmt: skip
        else:
            if path.name not in BASELINES:
                raise ValueError(
                    f"row {s.name!r}: {path} holds no finished peft LoRA, and its name is not one "
                    f"--train knows ({', '.join(BASELINES)}); train it with "
                    "compare.peft_lora.train_peft_lora"
                )
            hf, tok = load_hf_causal_lm(mas.preset)
            train_peft_lora(
                hf, tok, data, BASELINES[path.name], out_dir=path, layer=mas.layer,
                chat_format=mas.chat_format, preset=mas.preset, extra_metadata=meta,
                progress=progress,
            )  # fmt: skip
        done.append(repo_relative(path))
    return done


def finished(spec: RowSpec) -> bool:
    p = Path(spec.path or "")
    if spec.kind == "steer":
        return (p / "steer.pt").exists()
    if spec.kind == "peft":
        return bool(read_metadata(p).get("complete"))
    return True


def missing_rows(specs: list[RowSpec]) -> list[str]:
    return [
        f"{s.name} ({s.path})"
        for s in specs
        if s.kind in ("latent", "steer", "peft") and not (finished(s) and Path(s.path).exists())  # type: ignore[arg-type]
    ]


def compare_study(
    tag: str,
    *,
    rows: list[str] | None = None,
    out: str | Path | None = None,
    runs: str | Path = DEFAULT_RUNS,
    cache_dir: str | Path | None = None,
    train: bool = False,
    settings: CompareSettings | None = None,
    judge_model: str | None = None,
    judge_base_url: str | None = None,
    judge_api_key_env: str | None = None,
    preset: str = "gemma-3-270m",
    mas=None,
    progress: bool = True,
) -> dict[str, Any]:
    """Compare the rows (specs ``NAME=KIND[:PATH]``; default :func:`run.default_rows`) on
    behaviour ``tag`` ("french" or "upper") and write the table to ``out`` (default
    ``results/compare/<tag>``). Rows whose adapter is missing are an error unless ``train``
    makes them (steer and peft baselines only)."""
    from saelora_core.compare.judge import judge_from_env
    from saelora_core.compare.table import write_outputs

    if tag not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {tag!r}; use one of {sorted(BEHAVIOURS)}")
    specs = [RowSpec.parse(r) for r in rows] if rows else default_rows(tag, runs)
    missing = missing_rows(specs)
    if missing and not train:
        raise FileNotFoundError(
            "no finished adapter for the rows: " + "; ".join(missing) + ". Train the steer and "
            "peft baselines with --train, or leave those rows out with --row."
        )
    out_dir = Path(out) if out else DEFAULT_OUT / tag
    cache = Path(cache_dir) if cache_dir else DEFAULT_RUNS / "cache"
    if mas is None:
        from saelora_core.models.presets import load_model_and_sae

        mas = load_model_and_sae(preset)
    trained = train_baselines(mas, tag, specs, progress=progress) if train else []
    still = missing_rows(specs)
    if still:
        raise FileNotFoundError("no finished adapter for the rows: " + "; ".join(still))
    judge = judge_from_env(
        cache / "judge", model=judge_model, base_url=judge_base_url, api_key_env=judge_api_key_env
    )
    res = run_compare(
        mas, specs, BEHAVIOURS[tag], cache_dir=cache, settings=settings, judge=judge,
        progress=progress,
    )  # fmt: skip
    res.settings["command"] = f"saelora compare --behaviour {tag}"
    files = write_outputs(res, out_dir)
    return {
        "out": repo_relative(out_dir),
        "files": [repo_relative(f) for f in files],
        "trained": trained,
        "generated_answers": res.settings["generated_answers"],
        "table": pd.DataFrame(
            res.table[
                ["method", "trainable_params", "in_topic", "effect", "near_miss", "off_topic", "kl"]
            ]
        ).to_dict(orient="records"),
    }
