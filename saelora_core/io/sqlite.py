"""An sqlite database file opened the way every cache here uses it."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_wal(path: str | Path) -> sqlite3.Connection:
    """Connect to ``path`` (its folder made if missing) in autocommit mode with a write-ahead log.

    ``isolation_level=None`` lets each statement commit on its own ("commit per answer");
    ``synchronous=NORMAL`` in WAL mode survives a process crash (only an OS crash can drop the
    last commits)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db
