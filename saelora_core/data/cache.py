"""A persistent cache of every answer, in sqlite, so that no paid request is ever made twice.

Each answer is committed as soon as it arrives (WAL journal), so a crash or Ctrl-C loses at most
the requests still in flight; a re-run reads the rest back instead of asking again. Keys are
(model, task, param, input sha256), where `param` is the topic (classification) or the guideline
(rewriting) and the input hash covers the full request. Failed answers are stored too, marked
failed; a re-run asks them again unless `retry_failed` is off. The cache never holds an API key.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saelora_core.io.sqlite import open_wal

CACHE_FILE = "answers.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    model TEXT NOT NULL,
    task TEXT NOT NULL,
    param TEXT NOT NULL,
    input_sha256 TEXT NOT NULL,
    row_id TEXT NOT NULL,
    ok INTEGER NOT NULL,
    value TEXT,
    reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (model, task, param, input_sha256)
)
"""


def sha256_text(text: str) -> str:
    """Hex sha256 of `text` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """What identifies one answer."""

    model: str
    task: str
    param: str
    input_sha256: str


@dataclass
class CachedAnswer:
    """A stored answer: the parsed value (JSON-serialisable) or the failure reason."""

    ok: bool
    value: Any = None
    reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    row_id: str = ""
    """The source row the answer is for (for inspection; not part of the key)."""


@dataclass(frozen=True)
class CacheEntry:
    """One stored answer with its key."""

    key: CacheKey
    answer: CachedAnswer


class AnswerCache:
    """The sqlite answer cache at `<directory>/answers.sqlite`; use as a context manager."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / CACHE_FILE
        # The pipeline uses it from one event-loop thread, committing per answer.
        self._db = open_wal(self.path)
        self._db.execute(_SCHEMA)

    def get(self, key: CacheKey) -> CachedAnswer | None:
        """The stored answer for `key`, or None."""
        row = self._db.execute(
            "SELECT ok, value, reason, prompt_tokens, completion_tokens, row_id FROM answers "
            "WHERE model=? AND task=? AND param=? AND input_sha256=?",
            (key.model, key.task, key.param, key.input_sha256),
        ).fetchone()
        if row is None:
            return None
        ok, value, reason, tokens_in, tokens_out, row_id = row
        return CachedAnswer(
            bool(ok), json.loads(value) if value is not None else None, reason, tokens_in,
            tokens_out, row_id,
        )  # fmt: skip

    def put(self, key: CacheKey, answer: CachedAnswer) -> None:
        """Store (or replace) the answer for `key` and commit it."""
        self._db.execute(
            "INSERT OR REPLACE INTO answers VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                key.model,
                key.task,
                key.param,
                key.input_sha256,
                answer.row_id,
                int(answer.ok),
                json.dumps(answer.value, ensure_ascii=False) if answer.ok else None,
                answer.reason,
                answer.prompt_tokens,
                answer.completion_tokens,
                time.time(),
            ),
        )

    def entries(self) -> list[CacheEntry]:
        """Every stored answer (for inspection and tests)."""
        rows = self._db.execute(
            "SELECT model, task, param, input_sha256, ok, value, reason, prompt_tokens, "
            "completion_tokens, row_id FROM answers"
        ).fetchall()
        return [
            CacheEntry(
                CacheKey(model, task, param, sha),
                CachedAnswer(
                    bool(ok),
                    json.loads(value) if value is not None else None,
                    reason,
                    tin,
                    tout,
                    row_id,
                ),
            )  # fmt: skip
            for model, task, param, sha, ok, value, reason, tin, tout, row_id in rows
        ]

    def close(self) -> None:
        """Close the database (every answer is already committed)."""
        self._db.close()

    def __enter__(self) -> AnswerCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
