"""Where things live: the repository root, repo-relative paths for files others read, and the
user cache directory."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """Where dequantized weights are cached (``$SAELORA_CACHE`` or ``~/.cache/saelora``)."""
    return Path(os.environ.get("SAELORA_CACHE", Path.home() / ".cache" / "saelora"))


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository root when it lies inside it, else as given: what
    files written for others to read (metadata, summaries, configs) store, never a machine
    path into a checkout."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(path)
