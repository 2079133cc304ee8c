"""From a labelled pool to balanced splits: drop repeated prompts and shuffle the source
(:func:`pool_rows`), then pick n modified in-topic and n unmodified off-topic rows for train and
`eval_n` of each for eval (:func:`select_splits`), refusing a too-small pool with
`NotEnoughExamplesError`."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from saelora_core.data.config import DatasetConfig, NotEnoughExamplesError
from saelora_core.data.failures import FailedRow
from saelora_core.data.sources import SourceData, SourceRow


@dataclass
class Labels:
    """Classification and rewrite results so far, in pool order."""

    in_topic: list[SourceRow]
    off_topic: list[SourceRow]
    rewritten: dict[str, str]
    attempted: int = 0
    """How many of `in_topic` were sent for rewriting."""
    classified: int = 0
    """How many pool rows were sent for classification."""
    failed: list[FailedRow] = field(default_factory=list)
    succeeded: int = 0
    """Requests (of either task) answered successfully, cached or not."""
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def pool_rows(source: SourceData, cfg: DatasetConfig) -> tuple[list[SourceRow], int]:
    seen: set[str] = set()
    rows: list[SourceRow] = []
    for row in source.rows:
        # A prompt repeated in the source (HelpSteer has several responses per prompt) could
        # land in train and eval at once; keep its first occurrence only.
        if row.prompt.strip() not in seen:
            seen.add(row.prompt.strip())
            rows.append(row)
    random.Random(cfg.seed).shuffle(rows)
    return rows[: cfg.max_rows], len(source.rows) - len(rows)


def record(row: SourceRow, response: str | None, in_topic: bool) -> dict[str, Any]:
    return {
        "id": row.id,
        "prompt": row.prompt,
        "response": response if response is not None else row.response,
        "original_response": row.response,
        "modified": response is not None,
        "in_topic": in_topic,
        "topic": row.topic,
    }


def select_splits(cfg: DatasetConfig, labels: Labels, source_name: str) -> dict[str, list[dict]]:
    n, eval_n, need = cfg.n, cfg.eval_n, cfg.n + cfg.eval_n
    if not labels.in_topic:
        raise NotEnoughExamplesError(
            f"topic {cfg.topic!r} matched no prompt among the "
            f"{len(labels.off_topic)} prompts classified from {source_name}; try another topic "
            "or source"
        )
    tried = labels.in_topic[: labels.attempted]
    ok = [row for row in tried if row.id in labels.rewritten]
    if len(ok) < n or len(labels.in_topic) < need:
        raise NotEnoughExamplesError(
            f"topic {cfg.topic!r}: {len(labels.in_topic)} in-topic prompts found, "
            f"{len(ok)} rewritten successfully; need {n} rewritten for train (n) and "
            f"{need} in-topic in all (n + eval_n). Lower --n/--eval-n or use a larger source"
        )
    if len(labels.off_topic) < need:
        raise NotEnoughExamplesError(
            f"only {len(labels.off_topic)} off-topic prompts for topic {cfg.topic!r}; need "
            f"{need} (n + eval_n). Lower --n/--eval-n or use a larger source"
        )
    # Eval prefers rewritten in-topic rows; failed rewrites fill in as unmodified targets.
    spare = ok[n:] + [row for row in labels.in_topic if row.id not in labels.rewritten]
    rng = random.Random(cfg.seed)
    train = [record(row, labels.rewritten[row.id], True) for row in ok[:n]]
    train += [record(row, None, False) for row in labels.off_topic[:n]]
    evals = [record(row, labels.rewritten.get(row.id), True) for row in spare[:eval_n]]
    evals += [record(row, None, False) for row in labels.off_topic[n:need]]
    rng.shuffle(train)
    rng.shuffle(evals)
    return {"train": train, "eval": evals}


def split_counts(rows: list[dict]) -> dict[str, int]:
    modified = sum(r["modified"] for r in rows)
    in_topic = sum(r["in_topic"] for r in rows)
    return {
        "total": len(rows),
        "modified": modified,
        "unmodified": len(rows) - modified,
        "in_topic": in_topic,
        "off_topic": len(rows) - in_topic,
    }


def label_counts(labels: Labels) -> dict[str, dict[str, int]]:
    return {
        "classified": {
            "asked": labels.classified,
            "in_topic": len(labels.in_topic),
            "off_topic": len(labels.off_topic),
            "failed": sum(f.task == "classify" for f in labels.failed),
        },
        "rewritten": {
            "ok": len(labels.rewritten),
            "failed": sum(f.task == "rewrite" for f in labels.failed),
        },
    }
