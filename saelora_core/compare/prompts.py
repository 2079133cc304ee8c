"""The three prompt sets every row of the comparison answers, all fresh (in no dataset split).

- ``in_topic``: the 80 math prompts of ``data/heldout/prompts.jsonl`` (the effect);
- ``near_miss``: ``data/heldout/near_miss.jsonl``, prompts that are not mathematics but look
  close to it (``category``: physics and chemistry with numbers, money, cooking quantities,
  sport statistics, programming loops and indexes, biographies of mathematicians, math words as
  metaphors, non-math questions in French, non-math questions in upper case). A "math" trigger
  that fires here has learned the surface (numbers, a language, a case), not the topic;
- ``off_topic``: the 80 general prompts of ``data/heldout/prompts.jsonl`` (travel, pets, ...).

The French and upper-case near misses are also what the base model already answers in French or
upper case, so each row's near-miss rate sits next to the base model's, per category.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from saelora_core.data.heldout import HELDOUT_PROMPTS, NEAR_MISS, near_miss_prompts, read_jsonl

SPLITS = ("in_topic", "near_miss", "off_topic")


def eval_sets(
    topic: str = "math",
    *,
    max_prompts: int | None = None,
    heldout: str | Path = HELDOUT_PROMPTS,
    near_miss: str | Path = NEAR_MISS,
) -> list[dict]:
    """In-topic, near-miss and off-topic rows, in that order (``max_prompts``: the first that
    many of each, as many of every near-miss category as fit in turn)."""
    held = read_jsonl(heldout)
    ins = [r["prompt"] for r in held if r.get("topic") == topic]
    offs = [r["prompt"] for r in held if r.get("topic") != topic]
    near = near_miss_prompts(near_miss)
    if max_prompts is not None:
        ins, offs = ins[:max_prompts], offs[:max_prompts]
        near = round_robin(near, max_prompts)
    return (
        [{"prompt": p, "split": "in_topic", "category": "in_topic", "in_topic": True} for p in ins]
        + near
        + [
            {"prompt": p, "split": "off_topic", "category": "off_topic", "in_topic": False}
            for p in offs
        ]
    )


def round_robin(rows: list[dict], n: int) -> list[dict]:
    """Up to ``n`` rows taking one of each category in turn (so a short run covers them all)."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["category"], []).append(r)
    out: list[dict] = []
    while len(out) < n and any(by.values()):
        for cat in list(by):
            if by[cat] and len(out) < n:
                out.append(by[cat].pop(0))
    return out


def normalize_prompt(text: str) -> str:
    """Case-, accent-, punctuation- and space-insensitive form of a prompt, for overlap checks."""
    t = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", t).split())


def overlaps(prompts: list[str], others: dict[str, list[str]]) -> dict[str, list[str]]:
    """For each named prompt list in ``others``, the ``prompts`` it also holds (normalized)."""
    mine = {normalize_prompt(p): p for p in prompts}
    out = {}
    for name, ps in others.items():
        clash = sorted({mine[n] for p in ps if (n := normalize_prompt(p)) in mine})
        if clash:
            out[name] = clash
    return out
