"""`DatasetConfig`, the one set of knobs for building a behaviour dataset, and the errors the
pipeline raises for input it cannot use."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from saelora_core.io.config import ConfigBase

BackendName = Literal["llm", "offline"]
BACKENDS: tuple[str, ...] = get_args(BackendName)

#: Where `saelora dataset make` puts datasets and its answer cache unless told otherwise.
DEFAULT_OUT = "data/datasets"
DEFAULT_CACHE_DIR = "data/cache"
#: The env var tried when the configured one is the default and is unset.
FALLBACK_API_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_API_KEY_ENV = "OPENROUTER_API_KEY"


class DatasetError(Exception):
    """Base class of every error the dataset pipeline raises for bad input or settings."""


class SourceError(DatasetError):
    """The source is missing, of an unknown kind, or yields no usable row."""


class ApiKeyError(DatasetError):
    """No API key is set, or the server refused it."""


class NotEnoughExamplesError(DatasetError):
    """The source has too few in-topic or off-topic examples for the requested sizes."""


class BackendError(DatasetError):
    """The backend cannot serve this run (unsupported guideline, unknown model, ...)."""


class RequestsFailedError(BackendError):
    """Every request so far failed (server down, wrong URL, rejected requests, ...)."""


class OutputLockedError(DatasetError):
    """Another run is writing the same dataset directory."""


def default_seed_dir() -> Path:
    """The repository's offline seed set, `data/seed/`, found relative to this file."""
    return Path(__file__).resolve().parents[2] / "data" / "seed"


def slugify(text: str) -> str:
    """Lower-case `text` and keep runs of letters/digits joined by '-' (for directory names)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass
class DatasetConfig(ConfigBase):
    """How to build one behaviour dataset: source, topic, guideline, sizes and the backend."""

    source: str = "seed"
    """"seed" (the offline seed set), "helpsteer" (`nvidia/HelpSteer` on the Hub), or a path to a
    JSONL file, a CSV file, or a `datasets` folder saved with `save_to_disk`."""
    topic: str = "mathematics"
    """Prompts about this topic get the rewritten (modified) responses."""
    guideline: str = "respond in French"
    """How in-topic responses are rewritten."""
    n: int = 100
    """Training rows per side: n modified (in-topic) plus n unmodified (off-topic)."""
    eval_n: int = 20
    """Held-out evaluation rows per side (in-topic and off-topic), never used for training."""
    backend: BackendName = "offline"
    """"llm": an OpenAI-compatible chat API; "offline": labels and authored rewrites of the seed set."""
    model: str = "gpt-4o-mini"
    """Chat model name sent to the API (on OpenRouter ids look like "openai/gpt-4o-mini")."""
    base_url: str = "https://openrouter.ai/api/v1"
    """OpenAI-compatible endpoint (OpenRouter, OpenAI, a local server such as vLLM or llama.cpp)."""
    api_key_env: str = DEFAULT_API_KEY_ENV
    """Env var holding the API key; when this is the default and unset, OPENAI_API_KEY is tried.
    The key itself is never stored in the config, cache, manifest or logs."""
    concurrency: int = 16
    """Most LLM requests in flight at once."""
    name: str | None = None
    """Dataset directory name under `out`; None derives "<source>-<topic>-<guideline>"."""
    seed: int = 0
    """Seed for shuffling the source and selecting the balanced splits."""
    out: str = DEFAULT_OUT
    """Parent directory of built datasets; the dataset goes to `<out>/<name>/`."""
    cache_dir: str = DEFAULT_CACHE_DIR
    """Directory of the persistent answer cache (`answers.sqlite`), shared by all datasets."""
    seed_dir: str | None = None
    """Directory of the seed set's `*.jsonl` files; None uses the repository's `data/seed/`."""
    source_split: str = "train"
    """Split to read from HelpSteer or from a saved `DatasetDict` folder."""
    prompt_column: str = "prompt"
    """Prompt column of a local source."""
    response_column: str = "response"
    """Response column of a local source."""
    id_column: str = "id"
    """Id column of a local source, used when present (else ids are "<file stem>-<row>")."""
    topic_column: str = "topic"
    """Topic-label column of a local source, used when present (the offline backend needs it)."""
    max_rows: int | None = None
    """Cap on the shuffled source rows considered (bounds the cost on big sources)."""
    timeout: float = 60.0
    """Seconds before one HTTP request counts as timed out (and is retried)."""
    max_retries: int = 6
    """Retries of a request after 429, 5xx, timeout or connection errors."""
    invalid_retries: int = 2
    """Extra attempts when the model answers malformed or off-schema JSON."""
    backoff_base: float = 1.0
    """First backoff delay in seconds; it doubles per retry (Retry-After overrides it)."""
    backoff_max: float = 60.0
    """Largest backoff delay in seconds."""
    temperature: float = 0.0
    """Sampling temperature of the LLM."""
    max_rewrite_ratio: float | None = 5.0
    """Reject a rewrite longer than this many times its original (but always allow 200
    characters) as a malformed answer: it is asked again, then recorded as failed. None: no limit."""
    json_mode: bool = True
    """Send `response_format={"type": "json_object"}` (turn off for servers that reject it)."""
    retry_failed: bool = True
    """Re-ask items whose cached answer is a failure (otherwise they stay failed)."""
    progress: bool = True
    """Show tqdm progress bars."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        for field in ("source", "topic", "guideline", "model", "api_key_env", "out", "cache_dir"):
            if not str(getattr(self, field)).strip():
                raise ValueError(f"{field} must not be empty")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.eval_n < 0:
            raise ValueError(f"eval_n must be >= 0, got {self.eval_n}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1 or None, got {self.max_rows}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout}")
        if self.max_retries < 0 or self.invalid_retries < 0:
            raise ValueError("max_retries and invalid_retries must be >= 0")
        if self.max_rewrite_ratio is not None and self.max_rewrite_ratio <= 0:
            raise ValueError(f"max_rewrite_ratio must be > 0 or None, got {self.max_rewrite_ratio}")
        if self.backoff_base < 0 or self.backoff_max < self.backoff_base:
            raise ValueError("need 0 <= backoff_base <= backoff_max")
        if not re.match(r"^https?://", self.base_url):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        if self.name is not None and (
            not self.name.strip() or self.name in {".", ".."} or re.search(r"[/\\]", self.name)
        ):
            raise ValueError(f"name must be a plain directory name, got {self.name!r}")

    @property
    def dataset_name(self) -> str:
        """`name`, or "<source>-<topic>-<guideline>" slugified when `name` is None."""
        if self.name is not None:
            return self.name
        src = self.source if self.source in {"seed", "helpsteer"} else Path(self.source).stem
        return "-".join(slugify(part) or "x" for part in (src, self.topic, self.guideline))

    @property
    def out_dir(self) -> Path:
        """The dataset directory, `<out>/<dataset_name>/`."""
        return Path(self.out) / self.dataset_name
