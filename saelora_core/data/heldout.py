"""The fresh evaluation prompts (``data/heldout/``): math and general prompts that no dataset
split contains, general text for top-activation snippets, and how many tokens an evaluation
generates, and the near-miss prompts (not mathematics, but close to it). The demo,
``saelora describe``, ``saelora compare``, the notebooks and the studies all read them here."""

from __future__ import annotations

import json
from pathlib import Path

from saelora_core.io.paths import REPO_ROOT

EVAL_NEW_TOKENS = 32
"""Tokens generated per prompt when an evaluation measures a behaviour."""


HELDOUT_PROMPTS = REPO_ROOT / "data" / "heldout" / "prompts.jsonl"
"""80 math and 80 general prompts that no seed row (so no dataset split) contains: a larger
held-out set for effect estimates that the 20 eval prompts leave at ±0.1. Prompts only, so
they live outside ``data/seed`` (the seed loader reads every file there)."""


GENERAL_TEXT = REPO_ROOT / "data" / "heldout" / "general_text.jsonl"
"""Held-out general text (top-activation snippets, the repair study's general-text KL)."""


def heldout_prompts(topic: str = "math", path: Path = HELDOUT_PROMPTS) -> list[dict]:
    """The extra held-out prompts as eval rows (``prompt``, ``in_topic``; in-topic first)."""
    from datasets import load_dataset

    rows = [
        {"prompt": r["prompt"], "in_topic": r["topic"] == topic}
        for r in load_dataset("json", data_files=str(path), split="train").to_list()
    ]
    return sorted(rows, key=lambda r: not r["in_topic"])


NEAR_MISS = REPO_ROOT / "data" / "heldout" / "near_miss.jsonl"
"""Prompts that are not mathematics but look close to it (physics and chemistry with numbers,
money, cooking quantities, sport statistics, programming loops and indexes, biographies of
mathematicians, math words as metaphors, non-math questions in French or in upper case). A
"math" trigger that fires here has learned the surface (numbers, a language, a case), not the
topic. In no dataset split."""

NEAR_MISS_CATEGORIES = (
    "physics_chemistry",
    "money",
    "cooking",
    "sport",
    "programming",
    "mathematician_biography",
    "math_metaphor",
    "french_non_math",
    "uppercase_non_math",
)


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a JSON-lines file; a missing file or a bad line is an error naming it."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} is missing")
    rows = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}:{i} is not JSON: {e}") from e
    return rows


def near_miss_prompts(path: str | Path = NEAR_MISS) -> list[dict]:
    """The near-miss rows (``prompt``, ``category``, ``split="near_miss"``, ``in_topic=False``)."""
    rows = read_jsonl(path)
    bad = [r.get("id", i) for i, r in enumerate(rows) if not str(r.get("prompt", "")).strip()]
    if bad:
        raise ValueError(f"{path}: rows {bad[:5]} have no prompt")
    return [
        {
            "prompt": r["prompt"],
            "category": r.get("category", "near_miss"),
            "split": "near_miss",
            "in_topic": False,
        }
        for r in rows
    ]
