"""A disk cache of the comparison's expensive results, keyed by what determines them.

Two tables in one sqlite file (``<cache_dir>/compare.sqlite``, WAL journal, one commit per
entry, so an interrupted run keeps what it finished):

- ``generations``: one greedy answer per (edit weights hash, prompt, generation settings);
- ``results``: any JSON result (e.g. a capability-cost table) per key.

Adding a row to the table generates only that row's answers; re-running the table generates
nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from saelora_core.io.sqlite import open_wal

CACHE_FILE = "compare.sqlite"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, weights TEXT NOT NULL, "
    "prompt TEXT NOT NULL, answer TEXT NOT NULL, created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
    "created REAL NOT NULL)",
)


def key_of(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class CompareCache:
    """Use as a context manager; ``generated`` counts the answers generated (not cached)."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / CACHE_FILE
        self._db = open_wal(self.path)
        for s in _SCHEMA:
            self._db.execute(s)
        self.generated = 0

    def answers(
        self,
        weights: str,
        prompts: list[str],
        settings: dict[str, Any],
        make: Callable[[list[str]], list[str]],
        chunk: int = 40,
    ) -> list[str]:
        """The answers to ``prompts``: cached ones read back, the rest made by ``make`` (in
        chunks of ``chunk`` prompts, each chunk committed as it finishes)."""
        keys = [key_of(weights, p, settings) for p in prompts]
        out: dict[int, str] = {}
        for i, k in enumerate(keys):
            row = self._db.execute("SELECT answer FROM generations WHERE key=?", (k,)).fetchone()
            if row is not None:
                out[i] = row[0]
        todo = [i for i in range(len(prompts)) if i not in out]
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            new = make([prompts[i] for i in part])
            if len(new) != len(part):
                raise RuntimeError(f"asked for {len(part)} answers, got {len(new)}")
            for i, a in zip(part, new, strict=True):
                self._db.execute(
                    "INSERT OR REPLACE INTO generations VALUES (?,?,?,?,?)",
                    (keys[i], weights, prompts[i], a, time.time()),
                )
                out[i] = a
            self.generated += len(part)
        return [out[i] for i in range(len(prompts))]

    def result(self, key: str, make: Callable[[], Any]) -> Any:
        """The JSON result stored under ``key``, or ``make()`` stored there."""
        row = self._db.execute("SELECT value FROM results WHERE key=?", (key,)).fetchone()
        if row is not None:
            return json.loads(row[0])
        value = make()
        self._db.execute(
            "INSERT OR REPLACE INTO results VALUES (?,?,?)",
            (key, json.dumps(value, default=str), time.time()),
        )
        return value

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> CompareCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
