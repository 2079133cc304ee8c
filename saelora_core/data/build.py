"""The behaviour-dataset pipeline: classify, rewrite, balance, save, and write a manifest.

Steps: load the source; drop repeated prompts; shuffle with `seed` (and cap at `max_rows`);
classify prompts chunk by chunk against the topic until there are `n + eval_n` in-topic prompts
with a successful rewrite and `n + eval_n` off-topic prompts (so a large source is not labelled
in full); then pick the balanced splits. Too few in-topic or off-topic prompts is an error
(`NotEnoughExamplesError`), never a silently smaller dataset.

The dataset's on-disk layout is in `store.py`; the balancing in `selection.py`.

A run that cannot build the dataset says why: when no request succeeds it stops after the first
chunk with `RequestsFailedError` ("64 of 64 requests failed at <base_url>: ..." and what to
check); too few examples is `NotEnoughExamplesError`, which also counts the failed requests.
Either way `failure.json` lists each failure, and every answer is already in the cache.

Row contract (both splits): id, prompt, response (the target: rewritten when `modified`, else the
original), original_response, modified, in_topic, topic (the source's label or ""). Train holds
n modified in-topic rows and n unmodified off-topic rows; eval holds `eval_n` in-topic rows
(rewritten when the rewrite succeeded) and `eval_n` off-topic rows, all with prompts unseen in train.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import datasets

from saelora_core.data.backends import (
    Backend,
    PhaseProgress,
    TaskOutcome,
    TaskRequest,
    answer_all,
    make_backend,
)
from saelora_core.data.cache import AnswerCache
from saelora_core.data.config import (
    DatasetConfig,
    NotEnoughExamplesError,
    RequestsFailedError,
    SourceError,
)
from saelora_core.data.failures import FailedRow, failure_note, failure_reasons
from saelora_core.data.llm import UsageStats
from saelora_core.data.lock import output_lock
from saelora_core.data.selection import Labels, label_counts, pool_rows, select_splits, split_counts
from saelora_core.data.sources import SourceRow, load_source
from saelora_core.data.store import (
    FAILURE,
    FAILURE_FORMAT,
    FORMAT,
    HF_DIR,
    MANIFEST,
    save_splits,
    to_dataset_dict,
)
from saelora_core.io.atomic import atomic_write_json

logger = logging.getLogger(__name__)


@dataclass
class BuildResult:
    """What `build_dataset` made and where."""

    out_dir: Path
    dataset: datasets.DatasetDict
    manifest: dict[str, Any]
    usage: UsageStats
    failed: list[FailedRow]


async def _label(
    cfg: DatasetConfig, pool: list[SourceRow], backend: Backend, cache: AnswerCache, labels: Labels
) -> None:
    """Fill `labels`; raises `RequestsFailedError` as soon as a whole chunk failed and no
    request has succeeded yet (a closed port must not be retried row by row through a big source)."""
    need = cfg.n + cfg.eval_n
    chunk = max(64, 8 * cfg.concurrency)
    classify_bar = PhaseProgress("classify", len(pool), backend, cfg.progress)
    rewrite_bar = PhaseProgress("rewrite", need, backend, cfg.progress)

    async def ask(task: str, param: str, rows: list[SourceRow], bar: PhaseProgress):
        backend.set_retry_listener(bar.note_retry)
        requests = [
            TaskRequest(task, param, row, cfg.max_rewrite_ratio)  # type: ignore[arg-type]
            for row in rows
        ]
        outcomes = await answer_all(backend, cache, requests, bar, retry_failed=cfg.retry_failed)
        for row, outcome in zip(rows, outcomes, strict=True):
            labels.cached += outcome.cached
            labels.prompt_tokens += outcome.prompt_tokens
            labels.completion_tokens += outcome.completion_tokens
            if outcome.ok:
                labels.succeeded += 1
            else:
                labels.failed.append(FailedRow(row.id, task, outcome.reason))
        if labels.failed and not labels.succeeded:
            raise RequestsFailedError("no request succeeded")
        return outcomes

    try:
        while True:
            missing = need - len(labels.rewritten)
            if missing > 0 and labels.attempted < len(labels.in_topic):
                batch = labels.in_topic[labels.attempted : labels.attempted + missing]
                labels.attempted += len(batch)
                outcomes: list[TaskOutcome] = await ask(
                    "rewrite", cfg.guideline, batch, rewrite_bar
                )
                labels.rewritten.update((r.id, o.value) for r, o in zip(batch, outcomes) if o.ok)
                continue
            if (missing <= 0 and len(labels.off_topic) >= need) or labels.classified >= len(pool):
                return
            batch = pool[labels.classified : labels.classified + chunk]
            labels.classified += len(batch)
            for row, outcome in zip(batch, await ask("classify", cfg.topic, batch, classify_bar)):
                if outcome.ok:
                    (labels.in_topic if outcome.value else labels.off_topic).append(row)
    finally:
        backend.set_retry_listener(None)
        classify_bar.close()
        rewrite_bar.close()


def _write_failure(
    cfg: DatasetConfig, backend: Backend, labels: Labels, source_name: str, err: Exception
) -> None:
    report = {
        "format": FAILURE_FORMAT,
        "name": cfg.dataset_name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "error": str(err),
        "error_type": type(err).__name__,
        "source": source_name,
        "backend": backend.kind,
        "model": backend.model,
        "base_url": backend.base_url,
        "counts": label_counts(labels),
        "failure_reasons": dict(failure_reasons(labels.failed).most_common()),
        "token_usage": {"this_run": backend.usage.to_dict()},
        "cache": {"path": str(Path(cfg.cache_dir).resolve()), "hits": labels.cached},
        "failed": [asdict(f) for f in labels.failed],
        "config": cfg.to_dict(),
    }
    atomic_write_json(cfg.out_dir / FAILURE, report)


async def build_dataset_async(cfg: DatasetConfig) -> BuildResult:
    """Build the dataset `cfg` describes and save it to `cfg.out_dir` (see the module docstring).

    Raises `OutputLockedError` at once when another run is writing `cfg.out_dir`."""
    backend = make_backend(cfg)  # first: a missing key or bad guideline fails before any work
    try:
        with output_lock(cfg.out_dir):
            return await _build_locked(cfg, backend)
    finally:
        await backend.aclose()


async def _build_locked(cfg: DatasetConfig, backend: Backend) -> BuildResult:
    source = load_source(cfg)
    if cfg.backend == "offline" and not any(row.topic for row in source.rows):
        raise SourceError(
            f"{source.name} has no topic labels; the offline backend classifies from the "
            f"{cfg.topic_column!r} column. Use --backend llm for unlabelled sources"
        )
    pool, duplicates = pool_rows(source, cfg)
    labels = Labels([], [], {})
    try:
        with AnswerCache(cfg.cache_dir) as cache:
            await _label(cfg, pool, backend, cache, labels)
        splits = select_splits(cfg, labels, source.name)
    except (RequestsFailedError, NotEnoughExamplesError) as err:
        where = backend.base_url or f"the {backend.kind} backend"
        note = failure_note(labels.failed, labels.succeeded, where, cfg.out_dir / FAILURE)
        explained = type(err)(note if isinstance(err, RequestsFailedError) else f"{err}. {note}")
        _write_failure(cfg, backend, labels, source.name, explained)
        raise explained from None
    dataset = to_dataset_dict(splits)
    out_dir = cfg.out_dir
    save_splits(out_dir, dataset, cfg.progress)
    failed = labels.failed
    manifest = {
        "format": FORMAT,
        "name": cfg.dataset_name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": {
            "spec": cfg.source,
            "name": source.name,
            "rows": len(source.rows),
            "skipped": len(source.skipped),
            "duplicate_prompts": duplicates,
            "pool": len(pool),
        },
        "topic": cfg.topic,
        "guideline": cfg.guideline,
        "backend": backend.kind,
        "model": backend.model,
        "base_url": backend.base_url,
        "seed": cfg.seed,
        "n": cfg.n,
        "eval_n": cfg.eval_n,
        "counts": {
            "train": split_counts(splits["train"]),
            "eval": split_counts(splits["eval"]),
            **label_counts(labels),
        },
        "token_usage": {
            "this_run": backend.usage.to_dict(),
            "answers_used": {
                "prompt_tokens": labels.prompt_tokens,
                "completion_tokens": labels.completion_tokens,
            },
        },
        "cache": {"path": str(Path(cfg.cache_dir).resolve()), "hits": labels.cached},
        "failed": [asdict(f) for f in failed],
        "skipped_rows": [asdict(s) for s in source.skipped[:1000]],
        "layout": {HF_DIR: "datasets.DatasetDict with splits 'train' and 'eval'"},
        "config": cfg.to_dict(),
    }
    atomic_write_json(out_dir / MANIFEST, manifest)
    (out_dir / FAILURE).unlink(missing_ok=True)  # an earlier failed run's report is now stale
    logger.info(
        "saved %s: train %d, eval %d; %d failed; %d cached answers; %d tokens this run",
        out_dir, len(splits["train"]), len(splits["eval"]), len(failed), labels.cached,
        backend.usage.total_tokens,
    )  # fmt: skip
    return BuildResult(out_dir, dataset, manifest, backend.usage, failed)


def build_dataset(cfg: DatasetConfig) -> BuildResult:
    """Blocking `build_dataset_async`; also callable where an event loop already runs
    (Jupyter, marimo), in which case it runs on a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(build_dataset_async(cfg))
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, build_dataset_async(cfg)).result()
