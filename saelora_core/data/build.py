"""The behaviour-dataset pipeline: classify, rewrite, balance, save, and write a manifest.

Steps: load the source; drop repeated prompts; shuffle with `seed` (and cap at `max_rows`);
classify prompts chunk by chunk against the topic until there are `n + eval_n` in-topic prompts
with a successful rewrite and `n + eval_n` off-topic prompts (so a large source is not labelled
in full); then pick the balanced splits. Too few in-topic or off-topic prompts is an error
(`NotEnoughExamplesError`), never a silently smaller dataset.

On-disk layout of `<out>/<name>/`:
    hf/             `datasets.DatasetDict({"train", "eval"})` saved with `save_to_disk`
    manifest.json   what was built from what, counts, token usage, failed rows (written last)
    failure.json    only after a run that could not build the dataset: the error, counts and
                    every failed request (removed by the next successful run)
    .lock           held by the run writing this directory (see `lock.py`)
Read it back with `load_behaviour_dataset(<out>/<name>)`.

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
import json
import logging
import os
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
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
    DatasetError,
    NotEnoughExamplesError,
    RequestsFailedError,
    SourceError,
)
from saelora_core.data.failures import FailedRow, failure_note, failure_reasons
from saelora_core.data.llm import UsageStats
from saelora_core.data.lock import output_lock
from saelora_core.data.sources import SourceData, SourceRow, load_source
from saelora_core.io.atomic import atomic_write_json

logger = logging.getLogger(__name__)

FORMAT = "saelora-behaviour-dataset/1"
HF_DIR = "hf"
MANIFEST = "manifest.json"
FAILURE = "failure.json"
FAILURE_FORMAT = "saelora-behaviour-dataset-failure/1"
FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "prompt": datasets.Value("string"),
        "response": datasets.Value("string"),
        "original_response": datasets.Value("string"),
        "modified": datasets.Value("bool"),
        "in_topic": datasets.Value("bool"),
        "topic": datasets.Value("string"),
    }
)


@dataclass
class BuildResult:
    """What `build_dataset` made and where."""

    out_dir: Path
    dataset: datasets.DatasetDict
    manifest: dict[str, Any]
    usage: UsageStats
    failed: list[FailedRow]


@dataclass
class _Labels:
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


def _pool(source: SourceData, cfg: DatasetConfig) -> tuple[list[SourceRow], int]:
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


async def _label(
    cfg: DatasetConfig, pool: list[SourceRow], backend: Backend, cache: AnswerCache, labels: _Labels
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


def _record(row: SourceRow, response: str | None, in_topic: bool) -> dict[str, Any]:
    return {
        "id": row.id,
        "prompt": row.prompt,
        "response": response if response is not None else row.response,
        "original_response": row.response,
        "modified": response is not None,
        "in_topic": in_topic,
        "topic": row.topic,
    }


def _select(cfg: DatasetConfig, labels: _Labels, source_name: str) -> dict[str, list[dict]]:
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
    train = [_record(row, labels.rewritten[row.id], True) for row in ok[:n]]
    train += [_record(row, None, False) for row in labels.off_topic[:n]]
    evals = [_record(row, labels.rewritten.get(row.id), True) for row in spare[:eval_n]]
    evals += [_record(row, None, False) for row in labels.off_topic[n:need]]
    rng.shuffle(train)
    rng.shuffle(evals)
    return {"train": train, "eval": evals}


def _counts(rows: list[dict]) -> dict[str, int]:
    modified = sum(r["modified"] for r in rows)
    in_topic = sum(r["in_topic"] for r in rows)
    return {
        "total": len(rows),
        "modified": modified,
        "unmodified": len(rows) - modified,
        "in_topic": in_topic,
        "off_topic": len(rows) - in_topic,
    }


def _label_counts(labels: _Labels) -> dict[str, dict[str, int]]:
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


def _write_failure(
    cfg: DatasetConfig, backend: Backend, labels: _Labels, source_name: str, err: Exception
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
        "counts": _label_counts(labels),
        "failure_reasons": dict(failure_reasons(labels.failed).most_common()),
        "token_usage": {"this_run": backend.usage.to_dict()},
        "cache": {"path": str(Path(cfg.cache_dir).resolve()), "hits": labels.cached},
        "failed": [asdict(f) for f in labels.failed],
        "config": cfg.to_dict(),
    }
    atomic_write_json(cfg.out_dir / FAILURE, report)


def _save(out_dir: Path, dataset: datasets.DatasetDict, progress: bool) -> None:
    """Save `dataset` as `out_dir/hf`; the caller holds `out_dir`'s lock."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # The old manifest goes first: a manifest only ever describes the hf/ folder beside it.
    (out_dir / MANIFEST).unlink(missing_ok=True)
    # Leftovers of runs killed mid-save; under the lock no other run can be using them.
    for stale in out_dir.glob(f".{HF_DIR}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out_dir / f".{HF_DIR}.{os.getpid()}.tmp"
    bars_were_on = datasets.is_progress_bar_enabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        # One shard per split: the data is small, and `datasets` cannot reload an empty split
        # saved with zero shards (eval_n=0).
        dataset.save_to_disk(str(tmp), num_shards={str(name): 1 for name in dataset})
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    # Swap by renames: the old folder moves aside before the new one moves in, so `hf/` is
    # missing only between two renames, never half-deleted.
    old = out_dir / f".{HF_DIR}.{os.getpid()}.old"
    if (out_dir / HF_DIR).exists():
        os.replace(out_dir / HF_DIR, old)
    os.replace(tmp, out_dir / HF_DIR)
    shutil.rmtree(old, ignore_errors=True)


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
    pool, duplicates = _pool(source, cfg)
    labels = _Labels([], [], {})
    try:
        with AnswerCache(cfg.cache_dir) as cache:
            await _label(cfg, pool, backend, cache, labels)
        splits = _select(cfg, labels, source.name)
    except (RequestsFailedError, NotEnoughExamplesError) as err:
        where = backend.base_url or f"the {backend.kind} backend"
        note = failure_note(labels.failed, labels.succeeded, where, cfg.out_dir / FAILURE)
        explained = type(err)(note if isinstance(err, RequestsFailedError) else f"{err}. {note}")
        _write_failure(cfg, backend, labels, source.name, explained)
        raise explained from None
    # Column-wise, so an empty eval split (eval_n=0) still gets every column.
    dataset = datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict(
                {column: [row[column] for row in rows] for column in FEATURES}, features=FEATURES
            )
            for name, rows in splits.items()
        }
    )
    out_dir = cfg.out_dir
    _save(out_dir, dataset, cfg.progress)
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
            "train": _counts(splits["train"]),
            "eval": _counts(splits["eval"]),
            **_label_counts(labels),
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


def load_behaviour_dataset(path: str | Path) -> datasets.DatasetDict:
    """Load a built dataset: `path` is the dataset directory (holding `hf/`) or `hf/` itself."""
    path = Path(path)
    target = path / HF_DIR if (path / HF_DIR).is_dir() else path
    if not target.is_dir():
        raise DatasetError(
            f"no behaviour dataset at {path} (build one with `saelora dataset make`)"
        )
    loaded = datasets.load_from_disk(str(target))
    if not isinstance(loaded, datasets.DatasetDict) or {"train", "eval"} - set(loaded):
        raise DatasetError(f"{target} is not a behaviour dataset (needs 'train' and 'eval')")
    return loaded


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read `manifest.json` of the dataset directory `path`."""
    return json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))
