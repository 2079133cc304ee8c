"""The fresh evaluation prompts (``data/heldout/``): math and general prompts that no dataset
split contains, general text for top-activation snippets, and how many tokens an evaluation
generates. The demo, ``saelora describe``, the notebooks and the studies all read them here."""

from __future__ import annotations

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
