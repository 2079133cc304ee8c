"""Two backends behind one interface, and the cached runner that drives either of them.

A backend answers one `TaskRequest` (classify a prompt, or rewrite a response). The LLM backend
asks an OpenAI-compatible API; the offline backend reads the seed set's topic labels and authored
French responses (or applies a deterministic transform). Everything else (the cache, the progress
bar, the dataset and the manifest) is shared: `answer_all` looks each request up in the cache,
sends only the missing ones to the backend, and commits each answer as it arrives.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tqdm.auto import tqdm

from saelora_core.data.cache import AnswerCache, CachedAnswer, CacheKey, sha256_text
from saelora_core.data.config import BackendError, DatasetConfig
from saelora_core.data.llm import LlmClient, UsageStats
from saelora_core.data.prompts import (
    PARSERS,
    Messages,
    SchemaError,
    Task,
    check_rewrite_length,
    classify_messages,
    rewrite_messages,
)
from saelora_core.data.sources import SourceRow

OFFLINE_MODEL = "offline"

#: Topic names the offline backend treats as the same topic (keys are the seed set's labels).
TOPIC_ALIASES: dict[str, tuple[str, ...]] = {
    "math": ("maths", "mathematics", "arithmetic", "algebra", "geometry", "calculus"),
    "history": ("historical", "world history"),
    "science": ("sciences", "physics", "chemistry", "biology"),
    "cooking": ("cuisine", "food", "recipes", "baking"),
    "programming": ("coding", "code", "software", "computer programming"),
    "travel": ("traveling", "travelling", "tourism"),
    "health": ("medicine", "medical", "wellness", "fitness"),
}


@dataclass(frozen=True)
class TaskRequest:
    """One question for a backend: classify `row` against a topic, or rewrite its response."""

    task: Task
    param: str
    """The topic (classify) or the guideline (rewrite)."""
    row: SourceRow
    max_rewrite_ratio: float | None = None
    """A rewrite longer than this many times the original is malformed (see
    `check_rewrite_length`); not part of the cache key, so changing it re-checks cached answers."""

    @property
    def messages(self) -> Messages:
        """The chat messages an LLM gets for this request."""
        if self.task == "classify":
            return classify_messages(self.param, self.row.prompt)
        return rewrite_messages(self.param, self.row.prompt, self.row.response)

    def parse(self, answer: Any) -> Any:
        """The value of a JSON `answer` to this request; `SchemaError` when it is off-schema
        or (for a rewrite) far longer than the original."""
        value = PARSERS[self.task](answer)
        if self.task == "rewrite":
            check_rewrite_length(value, self.row.response, self.max_rewrite_ratio)
        return value

    def problem(self, value: Any) -> str | None:
        """Why an already parsed `value` (from the cache or the offline backend) is not an
        acceptable answer, or None when it is."""
        if self.task != "rewrite":
            return None
        try:
            check_rewrite_length(str(value), self.row.response, self.max_rewrite_ratio)
        except SchemaError as err:
            return f"invalid answer: {err}"
        return None


@dataclass
class TaskOutcome:
    """A request's answer: the value (bool for classify, str for rewrite) or the failure."""

    ok: bool
    value: Any = None
    reason: str = ""
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Backend(Protocol):
    """What the pipeline needs from a backend."""

    @property
    def kind(self) -> str:
        """ "llm" or "offline"."""
        ...

    @property
    def model(self) -> str:
        """Model name used in cache keys and the manifest."""
        ...

    @property
    def base_url(self) -> str | None: ...

    @property
    def usage(self) -> UsageStats: ...

    @property
    def in_flight(self) -> int: ...

    def fingerprint(self, request: TaskRequest) -> str:
        """Everything the answer depends on besides model/task/param, hashed into the cache key."""
        ...

    async def answer(self, request: TaskRequest) -> TaskOutcome: ...

    def set_retry_listener(self, listener: Callable[[str], None] | None) -> None:
        """Call `listener(cause)` whenever a request is retried (None: stop)."""
        ...

    async def aclose(self) -> None: ...


class LlmBackend:
    """Answers requests with an OpenAI-compatible chat API (see `LlmClient`)."""

    kind = "llm"

    def __init__(self, client: LlmClient) -> None:
        self.client = client
        self.model, self.base_url, self.usage = client.model, client.base_url, client.usage

    @property
    def in_flight(self) -> int:
        return self.client.in_flight

    def fingerprint(self, request: TaskRequest) -> str:
        return json.dumps(request.messages, ensure_ascii=False, sort_keys=True)

    async def answer(self, request: TaskRequest) -> TaskOutcome:
        result = await self.client.complete_json(request.messages, request.parse)
        return TaskOutcome(
            result.ok, result.value, result.reason, False, result.prompt_tokens,
            result.completion_tokens,
        )  # fmt: skip

    def set_retry_listener(self, listener: Callable[[str], None] | None) -> None:
        self.client.on_retry = listener

    async def aclose(self) -> None:
        await self.client.aclose()


def canonical_topic(topic: str) -> str:
    """Map a topic name to the seed set's label via `TOPIC_ALIASES` ("Mathematics" -> "math")."""
    name = " ".join(topic.lower().split())
    for label, aliases in TOPIC_ALIASES.items():
        if name == label or name in aliases:
            return label
    return name


OFFLINE_GUIDELINES = (
    "respond in French (uses the seed set's authored response_fr)",
    "respond in uppercase",
    "respond in lowercase",
)


def offline_rewriter(guideline: str) -> Callable[[SourceRow], str | None]:
    """The offline rewrite for `guideline`: authored French, or upper/lower case.

    Raises `BackendError` listing the supported guidelines when `guideline` is none of them.
    """
    text = guideline.lower()
    if any(word in text for word in ("french", "français", "francais")):
        return lambda row: row.response_fr
    if any(word in text for word in ("uppercase", "upper case", "all caps", "capital letters")):
        return lambda row: row.response.upper()
    if any(word in text for word in ("lowercase", "lower case")):
        return lambda row: row.response.lower()
    raise BackendError(
        f"the offline backend cannot follow the guideline {guideline!r}; supported: "
        f"{'; '.join(OFFLINE_GUIDELINES)}. Use --backend llm for any other guideline."
    )


class OfflineBackend:
    """Answers from the source's own topic labels and authored rewrites; no network."""

    kind = "offline"
    model = OFFLINE_MODEL
    base_url = None
    in_flight = 0

    def __init__(self, guideline: str) -> None:
        self._rewrite = offline_rewriter(guideline)  # fail before any work on a bad guideline
        self.usage = UsageStats()

    def fingerprint(self, request: TaskRequest) -> str:
        row = request.row
        payload = {"messages": request.messages, "topic": row.topic, "fr": row.response_fr}
        return json.dumps(payload, ensure_ascii=False, sort_keys=True)

    async def answer(self, request: TaskRequest) -> TaskOutcome:
        row = request.row
        if request.task == "classify":
            if not row.topic:
                return TaskOutcome(False, reason="row has no topic label (offline needs one)")
            return TaskOutcome(True, canonical_topic(row.topic) == canonical_topic(request.param))
        rewritten = self._rewrite(row)
        if not rewritten:
            return TaskOutcome(False, reason="row has no authored rewrite (response_fr)")
        problem = request.problem(rewritten)
        if problem is not None:
            return TaskOutcome(False, reason=problem)
        return TaskOutcome(True, rewritten)

    def set_retry_listener(self, listener: Callable[[str], None] | None) -> None:
        return None  # nothing to retry offline

    async def aclose(self) -> None:
        return None


def make_backend(cfg: DatasetConfig) -> Backend:
    """The backend `cfg.backend` names; the LLM backend reads its key from the env here."""
    if cfg.backend == "offline":
        return OfflineBackend(cfg.guideline)
    return LlmBackend(LlmClient.from_config(cfg))


class PhaseProgress:
    """A tqdm bar for one phase showing done, failed, cached, retried and in-flight counts."""

    def __init__(self, desc: str, total: int, backend: Backend, enabled: bool = True) -> None:
        self.backend, self.desc, self.total, self.enabled = backend, desc, total, enabled
        self.done = self.failed = self.cached = self.retries = 0
        self._bar: Any = None

    @property
    def bar(self) -> Any:
        # Created on first use, so a phase that starts late does not show a skewed rate.
        if self._bar is None:
            self._bar = tqdm(total=self.total, desc=self.desc, unit="req", disable=not self.enabled)
        return self._bar

    def _postfix(self) -> None:
        self.bar.set_postfix(
            done=self.done, failed=self.failed, cached=self.cached, retries=self.retries,
            in_flight=self.backend.in_flight, tokens=self.backend.usage.total_tokens,
            refresh=False,
        )  # fmt: skip

    def record(self, outcome: TaskOutcome) -> None:
        self.done += 1
        self.failed += not outcome.ok
        self.cached += outcome.cached
        self._postfix()
        self.bar.update(1)

    def note_retry(self, cause: str) -> None:
        """Count one retried request (429, 5xx, timeout, ...), shown at once: a run that is
        being throttled must not look stalled."""
        self.retries += 1
        self._postfix()
        self.bar.update(0)  # redraws, at most every tqdm `mininterval`

    def close(self) -> None:
        if self._bar is None:
            return
        # A phase may stop early once it has enough examples; make the bar end where it stopped.
        self.bar.total = self.done
        self.bar.refresh()
        self.bar.close()


async def answer_all(
    backend: Backend,
    cache: AnswerCache,
    requests: Sequence[TaskRequest],
    progress: PhaseProgress,
    *,
    retry_failed: bool = True,
) -> list[TaskOutcome]:
    """Answer `requests` in order: cached answers are reused, the rest go to `backend`
    concurrently and each answer is committed to `cache` as soon as it arrives."""
    outcomes: list[TaskOutcome | None] = [None] * len(requests)
    pending: list[tuple[int, CacheKey, TaskRequest]] = []
    for index, request in enumerate(requests):
        key = CacheKey(
            backend.model, request.task, request.param, sha256_text(backend.fingerprint(request))
        )
        hit = cache.get(key)
        problem = request.problem(hit.value) if hit is not None and hit.ok else None
        if hit is not None and problem is not None:
            # A cached answer that a stricter check now rejects (a lower max_rewrite_ratio)
            # counts as a cached failure.
            hit = CachedAnswer(
                False, None, problem, hit.prompt_tokens, hit.completion_tokens, hit.row_id
            )
        if hit is not None and (hit.ok or not retry_failed):
            outcome = TaskOutcome(
                hit.ok, hit.value, hit.reason, True, hit.prompt_tokens, hit.completion_tokens
            )
            outcomes[index] = outcome
            progress.record(outcome)
        else:
            pending.append((index, key, request))

    async def one(index: int, key: CacheKey, request: TaskRequest) -> None:
        outcome = await backend.answer(request)
        cache.put(
            key,
            CachedAnswer(
                outcome.ok, outcome.value, outcome.reason, outcome.prompt_tokens,
                outcome.completion_tokens, request.row.id,
            ),
        )  # fmt: skip
        outcomes[index] = outcome
        progress.record(outcome)

    # A TaskGroup cancels the siblings when one request raises a fatal error (refused key);
    # that error is re-raised alone so callers see an ApiKeyError, not an ExceptionGroup.
    try:
        async with asyncio.TaskGroup() as group:
            for item in pending:
                group.create_task(one(*item))
    except BaseExceptionGroup as errors:
        raise errors.exceptions[0] from None
    return [outcome for outcome in outcomes if outcome is not None]
