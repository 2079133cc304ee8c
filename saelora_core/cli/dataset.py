"""`saelora dataset make ...`: build a behaviour dataset from the command line.

`add_dataset_parser(subparsers)` registers the `dataset` command on the main `saelora` parser;
the parsed namespace carries `func=run`, so the main CLI calls `args.func(args)`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from saelora_core.data.build import build_dataset
from saelora_core.data.config import BACKENDS, DatasetConfig, DatasetError

logger = logging.getLogger(__name__)


def _ratio(text: str) -> float | None:
    return None if text.strip().lower() in {"none", "off"} else float(text)


# (flag, DatasetConfig field, type, help); defaults come from DatasetConfig so they live in one place.
_OPTIONS: list[tuple[str, str, Any, str]] = [
    ("--source", "source", str, "seed | helpsteer | PATH (.jsonl, .csv or a datasets folder)"),
    ("--topic", "topic", str, "prompts about this topic get rewritten responses"),
    ("--guideline", "guideline", str, 'how to rewrite them, e.g. "respond in French"'),
    ("--n", "n", int, "train rows per side (n modified + n unmodified)"),
    ("--eval-n", "eval_n", int, "held-out eval rows per side"),
    ("--model", "model", str, "chat model for --backend llm"),
    ("--base-url", "base_url", str, "OpenAI-compatible endpoint (OpenRouter, OpenAI, local)"),
    ("--api-key-env", "api_key_env", str, "env var holding the API key"),
    ("--concurrency", "concurrency", int, "most requests in flight"),
    ("--name", "name", str, "dataset directory name (default: <source>-<topic>-<guideline>)"),
    ("--seed", "seed", int, "seed for shuffling and selection"),
    ("--out", "out", str, "parent directory of datasets"),
    ("--cache-dir", "cache_dir", str, "answer cache directory"),
    ("--seed-dir", "seed_dir", str, "seed set directory (default: the repository's data/seed)"),
    ("--split", "source_split", str, "split of HelpSteer or of a saved DatasetDict"),
    ("--prompt-column", "prompt_column", str, "prompt column of a local source"),
    ("--response-column", "response_column", str, "response column of a local source"),
    ("--id-column", "id_column", str, "id column of a local source"),
    ("--topic-column", "topic_column", str, "topic-label column of a local source"),
    ("--max-rows", "max_rows", int, "consider at most this many (shuffled) source rows"),
    ("--timeout", "timeout", float, "seconds per HTTP request before it is retried"),
    ("--max-retries", "max_retries", int, "retries after 429/5xx/timeouts"),
    ("--invalid-retries", "invalid_retries", int, "retries after malformed/off-schema answers"),
    ("--backoff-base", "backoff_base", float, "first backoff delay in seconds"),
    ("--temperature", "temperature", float, "sampling temperature"),
    ("--max-rewrite-ratio", "max_rewrite_ratio", _ratio, "reject rewrites longer than this "
     "many times the original (always allowing 200 characters) as malformed; 'none': no limit"),
]  # fmt: skip


def add_dataset_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `dataset make` on `subparsers` (from `parser.add_subparsers()`); returns the
    `dataset` parser."""
    dataset = subparsers.add_parser("dataset", help="build behaviour datasets")
    commands = dataset.add_subparsers(dest="dataset_command", metavar="COMMAND", required=True)
    make = commands.add_parser(
        "make",
        help="classify, rewrite, balance and save a dataset",
        description="Build <out>/<name>/{hf,manifest.json}. The API key is read from the env.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    defaults = DatasetConfig()
    for flag, field, kind, help_text in _OPTIONS:
        make.add_argument(
            flag, dest=field, type=kind, default=getattr(defaults, field), help=help_text
        )
    make.add_argument(
        "--backend", choices=BACKENDS, default=defaults.backend, help="llm or offline"
    )
    make.add_argument("--no-json-mode", dest="json_mode", action="store_false",
                      help="do not send response_format (for servers that reject it)")  # fmt: skip
    make.add_argument("--no-retry-failed", dest="retry_failed", action="store_false",
                      help="keep cached failures instead of asking again")  # fmt: skip
    make.add_argument("--no-progress", dest="progress", action="store_false",
                      help="hide progress bars")  # fmt: skip
    make.set_defaults(func=run)
    return dataset


def config_from_args(args: argparse.Namespace) -> DatasetConfig:
    """The `DatasetConfig` that parsed `dataset make` arguments describe."""
    fields = [field for _, field, _, _ in _OPTIONS]
    fields += ["backend", "json_mode", "retry_failed", "progress"]
    return DatasetConfig.from_dict({field: getattr(args, field) for field in fields})


def run(args: argparse.Namespace) -> int:
    """Run `dataset make`; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The HTTP client logs every request at INFO; the progress bar already shows them. A user who
    # sets OPENAI_LOG asked for the SDK's own logs, so they stay as the SDK configured them.
    if not os.environ.get("OPENAI_LOG"):
        for name in ("httpx", "httpx2", "openai"):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        cfg = config_from_args(args)
        result = build_dataset(cfg)
    except (DatasetError, ValueError) as err:
        logger.error("%s", err)
        return 2
    except KeyboardInterrupt:
        logger.error("interrupted; answers so far are cached, re-run the command to resume")
        return 130
    counts = result.manifest["counts"]
    summary = {
        "out_dir": str(result.out_dir),
        "train": counts["train"],
        "eval": counts["eval"],
        "failed": len(result.failed),
        "token_usage": result.manifest["token_usage"]["this_run"],
    }
    # CLI output proper (not a log line): scripts can parse this JSON summary from stdout.
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0
