"""``saelora compare``: every method on the same fresh prompts, one row each.

For each row (``edits.RowSpec``) and the behaviour's detector:

1. greedy answers (``max_new_tokens``, 32 as in the demo) to the in-topic, near-miss and far
   off-topic prompts (``prompts.eval_sets``), cached by (weights hash, prompt, settings);
2. the detector's rate on each set with its 95 % Wilson interval; the **effect** (in-topic rate
   − the base model's) with a 95 % paired bootstrap interval over the in-topic prompts;
3. general-text **ΔCE and KL** to the unedited model (``capability``), cached the same way;
4. **answer quality** on the in-topic answers (``quality``): the share that loops, distinct-2,
   and among the hits the mean share of sentences that show the behaviour;
5. the **judge**'s scores on the in-topic answers when one is configured (``judge``), else
   "not judged".

Every answer is kept (``answers.csv.gz``, with its hit flag), so each hit can be audited.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from saelora_core.adapter.generate import GENERATE_BATCH
from saelora_core.analysis.behaviour import DETECTORS, wilson_interval
from saelora_core.compare.cache import CompareCache, key_of
from saelora_core.compare.capability import capability_cost, general_texts
from saelora_core.compare.edits import RowSpec, load_edit
from saelora_core.compare.judge import LlmJudge
from saelora_core.compare.prompts import SPLITS, eval_sets
from saelora_core.compare.quality import answer_quality
from saelora_core.data.heldout import EVAL_NEW_TOKENS
from saelora_core.demo.behaviours import FRENCH, UPPERCASE, DemoBehaviour
from saelora_core.io.paths import REPO_ROOT, repo_relative
from saelora_core.models.presets import ModelAndSae

logger = logging.getLogger(__name__)

BEHAVIOURS: dict[str, DemoBehaviour] = {"french": FRENCH, "upper": UPPERCASE}
CONCEPTS = {
    "french": "the answer is written in French",
    "uppercase": "the answer is written in upper case (capital letters)",
}
"""What the judge's concept score asks, per detector."""
DEFAULT_OUT = REPO_ROOT / "results" / "compare"
DEFAULT_RUNS = REPO_ROOT / "runs" / "compare"
NOT_JUDGED = "not judged"


def default_rows(tag: str, runs: str | Path = DEFAULT_RUNS) -> list[RowSpec]:
    """The issue's rows for behaviour ``tag`` ("french" or "upper"): base, prompt baseline, the
    shipped dense and k = 16 adapters, and the baselines ``saelora compare --train`` puts under
    ``runs/compare/<behaviour>/``."""
    b = BEHAVIOURS[tag]
    r = Path(runs) / b.name
    loras = REPO_ROOT / "loras"
    return [
        RowSpec("base", "base"),
        RowSpec("prompt baseline", "prompt"),
        RowSpec("dense latent adapter", "latent", str(loras / b.name)),
        RowSpec("k=16 student", "latent", str(loras / f"{b.name}-k16")),
        RowSpec("dense residual steer", "steer", str(r / "steer")),
        RowSpec("peft LoRA r1 (after hook)", "peft", str(r / "peft-r1-after")),
        RowSpec("peft LoRA r8 (after hook)", "peft", str(r / "peft-r8-after")),
        RowSpec("peft LoRA r1 (all layers)", "peft", str(r / "peft-r1-all")),
        RowSpec("peft LoRA r8 (all layers)", "peft", str(r / "peft-r8-all")),
    ]


@dataclass
class CompareSettings:
    max_new_tokens: int = EVAL_NEW_TOKENS
    max_prompts: int | None = None
    """The first N prompts of each set (None: all: 80 in-topic, 96 near-miss, 80 off-topic)."""
    general_max_tokens: int = 128
    general_per_genre: int | None = None
    """Texts per genre for the capability cost (None: all 126 of the general text)."""
    corpus_heldout: str | None = None
    """The SAE corpus's held-out JSONL (genre ``corpus``), when present."""
    n_boot: int = 2000
    seed: int = 0
    batch_size: int = GENERATE_BATCH


@dataclass
class CompareResult:
    table: pd.DataFrame
    answers: pd.DataFrame
    near_miss: pd.DataFrame
    """method, category, rate, n, base_rate."""
    capability: pd.DataFrame
    """method, genre, n_texts, n_tokens, base_ce, edited_ce, delta_ce, kl."""
    settings: dict[str, Any]
    files: list[Path] = field(default_factory=list)


def effect_interval(
    hits: np.ndarray, base_hits: np.ndarray, *, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """mean(hits − base_hits) over paired prompts, with its 95 % bootstrap interval."""
    d = hits.astype(float) - base_hits.astype(float)
    if not len(d):
        return math.nan, math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, len(d), (n_boot, len(d)))
    lo, hi = np.quantile(d[idx].mean(1), [0.025, 0.975])
    return float(d.mean()), float(lo), float(hi)


def mean_of(values: Any) -> float:
    """The mean of a column or array as a float (nan when empty)."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()) if a.size else math.nan


def rate_cols(name: str, hits: Any) -> dict[str, float]:
    a = np.asarray(hits, dtype=float)
    lo, hi = wilson_interval(int(a.sum()), int(a.size))
    return {
        name: mean_of(a),
        f"{name}_low": lo,
        f"{name}_high": hi,
    }


def run_compare(
    mas: ModelAndSae,
    specs: list[RowSpec],
    behaviour: DemoBehaviour,
    *,
    cache_dir: str | Path,
    settings: CompareSettings | None = None,
    judge: LlmJudge | None = None,
    rows: list[dict] | None = None,
    texts: list[dict] | None = None,
    progress: bool = False,
) -> CompareResult:
    """The comparison of ``specs`` on ``behaviour`` (see the module doc). ``rows``/``texts``
    replace the default prompt sets / general text (tests use a few)."""
    st = settings or CompareSettings()
    detector: Callable[[str], bool] = DETECTORS[behaviour.detector]
    rows = rows if rows is not None else eval_sets(max_prompts=st.max_prompts)
    texts = (
        texts
        if texts is not None
        else general_texts(corpus_heldout=st.corpus_heldout, max_per_genre=st.general_per_genre)
    )
    prompts = [r["prompt"] for r in rows]
    gen_settings = {
        "preset": mas.preset,
        "sae": mas.sae_identity.get("hash"),
        "chat_format": mas.chat_format,
        "max_new_tokens": st.max_new_tokens,
        "dtype": str(mas.model.cfg.dtype),
    }
    cap_settings = {
        **gen_settings,
        "max_tokens": st.general_max_tokens,
        "texts": key_of([(t["genre"], t["text"]) for t in texts]),
    }
    specs = list(specs)
    if not any(s.kind == "base" for s in specs):
        specs.insert(0, RowSpec("base", "base"))
    specs.sort(key=lambda s: s.kind != "base")  # the base answers are every effect's reference
    concept = CONCEPTS.get(behaviour.detector, behaviour.guideline)
    table, answers, near, caps = [], [], [], []
    base_hits: np.ndarray | None = None
    base_near: pd.DataFrame | None = None
    with CompareCache(cache_dir) as cache:
        for spec in specs:
            edit = load_edit(spec, mas, guideline=behaviour.guideline)
            logger.info("%s: %s", spec.name, edit.source or edit.kind)
            w = edit.weights_hash()
            ans = cache.answers(
                w,
                prompts,
                gen_settings,
                lambda ps, edit=edit: edit.generate(
                    mas,
                    ps,
                    max_new_tokens=st.max_new_tokens,
                    batch_size=st.batch_size,
                    progress=progress and f"generate ({edit.name})",
                ),  # fmt: skip
                chunk=st.batch_size,
            )
            df = pd.DataFrame(rows)[["split", "category", "prompt"]].copy()
            df.insert(0, "method", spec.name)
            df["answer"] = ans
            df["hit"] = [bool(detector(a)) for a in ans]
            df = pd.concat([df, answer_quality(ans, detector)], axis=1)
            ins = pd.DataFrame(df[df["split"] == "in_topic"])
            if spec.kind == "base":
                base_hits = ins["hit"].to_numpy()
                base_near = pd.DataFrame(df[df["split"] == "near_miss"])
            assert base_hits is not None and base_near is not None
            eff, lo, hi = effect_interval(
                ins["hit"].to_numpy(), base_hits, n_boot=st.n_boot, seed=st.seed
            )
            scores = judge_rows(judge, concept, ins) if judge is not None else None
            for k in ("concept", "instruction", "fluency", "combined"):
                df[f"judge_{k}"] = math.nan
            df["judge_status"] = NOT_JUDGED
            if scores is not None:
                for k in ("concept", "instruction", "fluency", "combined"):
                    df.loc[ins.index, f"judge_{k}"] = [getattr(s, k) for s in scores]
                df.loc[ins.index, "judge_status"] = [s.status for s in scores]
            if edit.changes_weights:
                cap = pd.DataFrame(
                    cache.result(
                        key_of("capability", w, cap_settings),
                        lambda edit=edit: capability_cost(
                            mas, edit, texts, max_tokens=st.general_max_tokens
                        ).to_dict(orient="records"),
                    )
                )
            else:
                cap = pd.DataFrame([{"genre": "all", "delta_ce": 0.0, "kl": 0.0}])
            cap.insert(0, "method", spec.name)
            caps.append(cap)
            allrow = pd.DataFrame(cap[cap["genre"] == "all"])
            hits_in = pd.DataFrame(ins[ins["hit"]])
            judged = df.loc[ins.index]
            jrow: dict[str, Any] = {}
            for k in ("concept", "instruction", "fluency", "combined"):
                v = judged[f"judge_{k}"].dropna()
                jrow[f"judge_{k}"] = mean_of(v) if len(v) else NOT_JUDGED
            table.append(
                {
                    "method": spec.name,
                    "kind": edit.kind,
                    "source": edit.source or "",
                    "trainable_params": edit.trainable_params,
                    "nonzero_params": edit.nonzero_params,
                    "distinct_latents": (
                        f"{edit.distinct_latents[0]} + {edit.distinct_latents[1]}"
                        if edit.distinct_latents
                        else "–"
                    ),
                    "n_latents": sum(edit.distinct_latents) if edit.distinct_latents else math.nan,
                    **rate_cols("in_topic", ins["hit"]),
                    "effect": eff,
                    "effect_low": lo,
                    "effect_high": hi,
                    **rate_cols("near_miss", df.loc[df["split"] == "near_miss", "hit"]),
                    **rate_cols("off_topic", df.loc[df["split"] == "off_topic", "hit"]),
                    "delta_ce": mean_of(allrow["delta_ce"]),
                    "kl": mean_of(allrow["kl"]),
                    "repetition": mean_of(ins["loops"]),
                    "distinct_2": float(np.nanmean(ins["distinct_2"])) if len(ins) else math.nan,
                    "hit_repetition": mean_of(hits_in["loops"]),
                    "hit_target_fraction": (
                        float(np.nanmean(hits_in["target_fraction"])) if len(hits_in) else math.nan
                    ),
                    **jrow,
                    "judge": judge.name if judge is not None else NOT_JUDGED,
                }
            )
            nm = df[df["split"] == "near_miss"]
            for cat, g in nm.groupby("category", sort=False):
                b = base_near[base_near["category"] == cat]["hit"]
                near.append(
                    {
                        "method": spec.name,
                        "category": cat,
                        "rate": mean_of(g["hit"]),
                        "n": len(g),
                        "base_rate": mean_of(b),
                    }
                )
            answers.append(df)
        generated = cache.generated
    settings_out = asdict(st) | {
        "behaviour": behaviour.name,
        "guideline": behaviour.guideline,
        "detector": behaviour.detector,
        "preset": mas.preset,
        "prompts": {s: sum(r["split"] == s for r in rows) for s in SPLITS},
        "general_texts": len(texts),
        "judge": judge.name if judge is not None else NOT_JUDGED,
        "generated_answers": generated,
        "cache": repo_relative(Path(cache_dir)),
    }
    return CompareResult(
        pd.DataFrame(table),
        pd.concat(answers, ignore_index=True),
        pd.DataFrame(near, columns=["method", "category", "rate", "n", "base_rate"]),
        pd.concat(caps, ignore_index=True),
        settings_out,
    )


def judge_rows(judge: LlmJudge, concept: str, ins: pd.DataFrame):
    return judge.score(concept, list(zip(ins["prompt"], ins["answer"], strict=True)))
