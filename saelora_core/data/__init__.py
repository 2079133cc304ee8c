"""Behaviour datasets: prompts about a topic get responses rewritten per a guideline.

`build_dataset(DatasetConfig(...))` classifies a source's prompts by topic, rewrites the
in-topic responses (with an OpenAI-compatible LLM or offline), balances n modified and n
unmodified examples plus a held-out eval split, and saves `<out>/<name>/hf` and
`<out>/<name>/manifest.json`. `load_behaviour_dataset(<out>/<name>)` reads it back.
"""

from saelora_core.data.backends import (
    OFFLINE_GUIDELINES,
    Backend,
    LlmBackend,
    OfflineBackend,
    TaskOutcome,
    TaskRequest,
    answer_all,
    canonical_topic,
    make_backend,
)
from saelora_core.data.build import BuildResult, build_dataset, build_dataset_async
from saelora_core.data.cache import AnswerCache, CachedAnswer, CacheKey
from saelora_core.data.config import (
    ApiKeyError,
    BackendError,
    DatasetConfig,
    DatasetError,
    NotEnoughExamplesError,
    OutputLockedError,
    RequestsFailedError,
    SourceError,
    default_seed_dir,
)
from saelora_core.data.failures import FailedRow
from saelora_core.data.llm import LlmClient, LlmResult, UsageStats, resolve_api_key
from saelora_core.data.sources import (
    SkippedRow,
    SourceData,
    SourceRow,
    load_helpsteer,
    load_local,
    load_seed,
    load_source,
)
from saelora_core.data.store import FEATURES, load_behaviour_dataset, load_manifest

__all__ = [
    "FEATURES",
    "OFFLINE_GUIDELINES",
    "AnswerCache",
    "ApiKeyError",
    "Backend",
    "BackendError",
    "BuildResult",
    "CacheKey",
    "CachedAnswer",
    "DatasetConfig",
    "DatasetError",
    "FailedRow",
    "LlmBackend",
    "LlmClient",
    "LlmResult",
    "NotEnoughExamplesError",
    "OfflineBackend",
    "OutputLockedError",
    "RequestsFailedError",
    "SkippedRow",
    "SourceData",
    "SourceError",
    "SourceRow",
    "TaskOutcome",
    "TaskRequest",
    "UsageStats",
    "answer_all",
    "build_dataset",
    "build_dataset_async",
    "canonical_topic",
    "default_seed_dir",
    "load_behaviour_dataset",
    "load_helpsteer",
    "load_local",
    "load_manifest",
    "load_seed",
    "load_source",
    "make_backend",
    "resolve_api_key",
]
