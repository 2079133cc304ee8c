"""One writer per dataset directory: an advisory lock held for the whole build.

Two runs with the same output name would otherwise both save `hf/` and race on the final
rename (`OSError: Directory not empty`), leaving temporary folders behind. The lock is an
`flock` on `<dir>/.lock`, so the operating system releases it when its holder exits, even after
a crash or `kill -9`: a stale lock cannot block the next run. The file holds the holder's pid,
host and start time, which the error names. (POSIX only, like the rest of the pipeline's tests.)
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from saelora_core.data.config import OutputLockedError

LOCK_FILE = ".lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another run"
    return f"another run (pid {info.get('pid')} on {info.get('host')}, since {info.get('started')})"


@contextmanager
def output_lock(directory: str | Path) -> Iterator[Path]:
    """Hold the lock of `directory` (created if missing) for the `with` block; yields the
    directory. Raises `OutputLockedError` at once, naming the holder, when another run holds it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputLockedError(
                f"{_holder(path)} is writing {directory}; wait for it to finish, or choose "
                "another --name (the answer cache is shared, so nothing paid for is lost)"
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield directory
    finally:
        os.close(fd)  # closing the descriptor releases the flock
