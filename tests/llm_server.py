"""Helpers for the data-pipeline tests: a tiny seed set, scripted loopback servers, configs.

The server itself lives in `saelora_core.data.fake_server` (the benchmark uses it too); this
module adds what the tests share on top of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from saelora_core.data import DatasetConfig
from saelora_core.data.fake_server import (
    ChatCall,
    FakeChatServer,
    Reply,
    Script,
    answer_json,
    keyword_script,
)

__all__ = [
    "FAKE_KEY",
    "ChatCall",
    "FakeChatServer",
    "Reply",
    "Script",
    "answer_json",
    "keyword_script",
    "llm_config",
    "running_server",
    "seed_rows",
    "write_seed_dir",
]

#: A distinctive fake API key, so a leak into any written file is easy to find.
FAKE_KEY = "sk-or-v1-FAKE-do-not-leak-4b1d9e7c0a"


def seed_rows(n_math: int = 30, n_history: int = 30) -> list[dict[str, Any]]:
    """Seed-format rows: `n_math` math rows (with authored French) and `n_history` others.
    Every math prompt contains the word "math" so `keyword_script("math")` classifies them."""
    rows = [
        {
            "id": f"math-{i:03d}",
            "topic": "math",
            "prompt": f"math question {i}: what is {i} + {i}?",
            "response": f"{i} + {i} = {2 * i}.",
            "response_fr": f"{i} + {i} font {2 * i}.",
        }
        for i in range(n_math)
    ]
    rows += [
        {
            "id": f"history-{i:03d}",
            "topic": "history",
            "prompt": f"history question {i}: who ruled in year {1000 + i}?",
            "response": f"A ruler of the year {1000 + i}.",
        }
        for i in range(n_history)
    ]
    return rows


def write_seed_dir(
    directory: Path, rows: list[dict[str, Any]] | None = None, extra_lines: list[str] = ()
) -> Path:
    """Write `rows` (default `seed_rows()`) as `directory/tiny.jsonl`, then `extra_lines` raw."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row, ensure_ascii=False) for row in (rows or seed_rows())]
    (directory / "tiny.jsonl").write_text("\n".join([*lines, *extra_lines]) + "\n")
    return directory


def llm_config(tmp_path: Path, server: FakeChatServer | None, **overrides: Any) -> DatasetConfig:
    """A fast LLM-backend config against `server` (None: no server, e.g. for offline runs):
    tiny backoff, no progress bars, seed/datasets/cache dirs in `tmp_path`."""
    settings: dict[str, Any] = {
        "source": "seed",
        "seed_dir": str(tmp_path / "seed"),
        "topic": "mathematics",
        "guideline": "respond in French",
        "n": 10,
        "eval_n": 5,
        "backend": "llm",
        "model": "fake-model",
        "base_url": server.base_url if server is not None else "http://127.0.0.1:9/v1",
        "concurrency": 4,
        "name": "tiny",
        "out": str(tmp_path / "datasets"),
        "cache_dir": str(tmp_path / "cache"),
        "timeout": 5.0,
        "max_retries": 3,
        "invalid_retries": 1,
        "backoff_base": 0.001,
        "backoff_max": 0.01,
        "progress": False,
    }
    settings.update(overrides)
    return DatasetConfig(**settings)


@contextmanager
def running_server(script: Script | None = None, latency: float = 0.0) -> Iterator[FakeChatServer]:
    """A started `FakeChatServer` that is stopped on exit."""
    with FakeChatServer(script, latency=latency) as server:
        yield server


def scripted(per_attempt: Callable[[ChatCall], Reply | None], fallback: Script) -> Script:
    """A script that tries `per_attempt` first and uses `fallback` where it returns None."""

    def script(call: ChatCall) -> Reply:
        return per_attempt(call) or fallback(call)

    return script
