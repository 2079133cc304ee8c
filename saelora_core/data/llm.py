"""An OpenAI-compatible chat client for JSON answers, with its own retries.

The SDK's built-in retries are off (`max_retries=0`) so that this module alone decides when to
retry and how long to wait: 408/409/429/5xx, timeouts and connection errors are retried with
exponential backoff, and a `Retry-After` (or `retry-after-ms`) header replaces the computed delay.
Answers that are not JSON or not in the task's schema are asked again a bounded number of times,
then returned as a failed `LlmResult`. A refused key (401/403) or an unknown model (404) stops
the run, since every later request would fail the same way.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import openai

from saelora_core.data.config import (
    DEFAULT_API_KEY_ENV,
    FALLBACK_API_KEY_ENV,
    ApiKeyError,
    BackendError,
    DatasetConfig,
)
from saelora_core.data.prompts import Messages, SchemaError, extract_json

logger = logging.getLogger(__name__)

#: Longest server-requested wait we accept, in seconds (a larger Retry-After is clipped to it).
MAX_RETRY_AFTER = 600.0
_RETRY_STATUS = {408, 409, 429}


@dataclass
class UsageStats:
    """What the API calls of one run cost: HTTP requests (retries included) and tokens."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    """Requests repeated after 429/5xx/timeout/connection errors."""
    invalid_answers: int = 0
    """Answers that were malformed or off-schema."""
    retry_reasons: dict[str, int] = field(default_factory=dict)
    """`retries` by cause: "HTTP 429", "HTTP 503", "timeout", "connection error", ..."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.total_tokens}


@dataclass
class LlmResult:
    """One request's outcome: the parsed value, or the reason it failed; tokens it used."""

    ok: bool
    value: Any = None
    reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0


def resolve_api_key(env_name: str = DEFAULT_API_KEY_ENV) -> str:
    """Read the API key from `env_name` (falling back to OPENAI_API_KEY when `env_name` is the
    default OPENROUTER_API_KEY). Raises `ApiKeyError` naming the variable to set."""
    names = [env_name]
    if env_name == DEFAULT_API_KEY_ENV:
        names.append(FALLBACK_API_KEY_ENV)
    for name in names:
        key = os.environ.get(name, "").strip()
        if key:
            return key
    raise ApiKeyError(
        f"no API key: set the environment variable {' or '.join(names)} "
        "(or choose another variable with --api-key-env, or use --backend offline)"
    )


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The wait a response asks for: `retry-after-ms`, `retry-after` in seconds or as an
    HTTP date; None when absent or unreadable."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            pass
    date = headers.get("retry-after")
    parsed = email.utils.parsedate_tz(date) if date else None
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - time.time())


def connection_error_detail(err: openai.APIConnectionError) -> str:
    """A short cause of a connection error, e.g. "connection refused" or "ConnectError: name or
    service not known": the innermost OS error when there is one, else the exception's text."""
    cause: BaseException | None = err.__cause__
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    inner = err.__cause__
    if inner is None:
        return type(err).__name__
    text = str(inner).strip()
    if "connection refused" in text.lower():
        return "connection refused"
    return f"{type(inner).__name__}: {text[:120]}" if text else type(inner).__name__


class LlmClient:
    """Asks an OpenAI-compatible chat API for JSON answers, at most `concurrency` at a time."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = "https://openrouter.ai/api/v1",
        model: str = "gpt-4o-mini",
        concurrency: int = 16,
        timeout: float = 60.0,
        max_retries: int = 6,
        invalid_retries: int = 2,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        temperature: float = 0.0,
        json_mode: bool = True,
        api_key_env: str = DEFAULT_API_KEY_ENV,
    ) -> None:
        self.base_url, self.model = base_url, model
        self.max_retries, self.invalid_retries = max_retries, invalid_retries
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.temperature, self.json_mode = temperature, json_mode
        self._api_key_env = api_key_env
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0
        )
        self._semaphore = asyncio.Semaphore(concurrency)
        self._in_flight = 0
        self.usage = UsageStats()
        self.on_retry: Callable[[str], None] | None = None
        """Called with the cause each time a request is retried (the progress bar counts them)."""

    @classmethod
    def from_config(cls, cfg: DatasetConfig) -> LlmClient:
        """A client with `cfg`'s endpoint, model and retry settings; the key comes from the env."""
        return cls(
            api_key=resolve_api_key(cfg.api_key_env),
            base_url=cfg.base_url,
            model=cfg.model,
            concurrency=cfg.concurrency,
            timeout=cfg.timeout,
            max_retries=cfg.max_retries,
            invalid_retries=cfg.invalid_retries,
            backoff_base=cfg.backoff_base,
            backoff_max=cfg.backoff_max,
            temperature=cfg.temperature,
            json_mode=cfg.json_mode,
            api_key_env=cfg.api_key_env,
        )

    @property
    def in_flight(self) -> int:
        """Requests currently waiting on the server."""
        return self._in_flight

    def _backoff(self, retry: int, headers: Mapping[str, str] | None) -> float:
        requested = retry_after_seconds(headers)
        if requested is not None:
            return min(requested, MAX_RETRY_AFTER)
        # Jitter spreads out clients that were throttled together.
        delay = min(self.backoff_max, self.backoff_base * 2.0**retry)
        return delay * random.uniform(0.75, 1.0)

    async def _send(self, messages: Messages) -> Any:
        kwargs: dict[str, Any] = {}
        if self.json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        async with self._semaphore:
            self._in_flight += 1
            self.usage.requests += 1
            try:
                return await self._client.chat.completions.create(
                    model=self.model,
                    messages=list(messages),  # type: ignore[arg-type]
                    temperature=self.temperature,
                    **kwargs,
                )
            finally:
                self._in_flight -= 1

    def _fatal(self, err: openai.APIStatusError) -> Exception | None:
        # The error text is left out on purpose: some servers echo part of the key in it.
        if err.status_code in (401, 403):
            return ApiKeyError(
                f"{self.base_url} refused the API key from ${self._api_key_env} "
                f"(HTTP {err.status_code})"
            )
        if err.status_code == 404:
            return BackendError(
                f"{self.base_url} answered 404 for model {self.model!r}: check --model and "
                "--base-url (OpenRouter model ids look like 'openai/gpt-4o-mini')"
            )
        return None

    async def complete_json(self, messages: Messages, parse: Callable[[Any], Any]) -> LlmResult:
        """Send `messages`, parse the answer's JSON with `parse` (which raises `SchemaError` on
        off-schema answers) and return the value; retry as described in the module docstring.

        Never raises for a single bad answer; raises `ApiKeyError`/`BackendError` when the server
        refuses the key or the model, which would fail every request.
        """
        result = LlmResult(ok=False)
        retries = invalid = 0
        while True:
            result.attempts += 1
            headers: Mapping[str, str] | None = None
            try:
                completion = await self._send(messages)
            except openai.APIStatusError as err:
                fatal = self._fatal(err)
                if fatal is not None:
                    raise fatal from None
                if err.status_code not in _RETRY_STATUS and err.status_code < 500:
                    result.reason = f"HTTP {err.status_code}"
                    return result
                reason, headers = f"HTTP {err.status_code}", err.response.headers
            except openai.APITimeoutError:
                reason = "timeout"
            except openai.APIConnectionError as err:
                reason = f"connection error ({connection_error_detail(err)})"
            except json.JSONDecodeError as err:  # an HTTP 200 whose JSON body does not parse
                reason = f"an HTTP 200 reply that is not JSON ({type(err).__name__})"
            else:
                if not hasattr(completion, "choices"):
                    # e.g. a text/html 200 from a proxy: the SDK hands back the body as a str
                    invalid += 1
                    self.usage.invalid_answers += 1
                    if invalid > self.invalid_retries:
                        result.reason = (
                            f"invalid answer after {invalid} attempts: an HTTP 200 reply that "
                            f"is not a chat completion ({type(completion).__name__})"
                        )
                        return result
                    continue
                usage = getattr(completion, "usage", None)
                tokens_in = getattr(usage, "prompt_tokens", 0) or 0
                tokens_out = getattr(usage, "completion_tokens", 0) or 0
                result.prompt_tokens += tokens_in
                result.completion_tokens += tokens_out
                self.usage.prompt_tokens += tokens_in
                self.usage.completion_tokens += tokens_out
                try:
                    choices = completion.choices or []
                    content = choices[0].message.content if choices else None
                    result.value = parse(extract_json(content))
                except SchemaError as err:
                    invalid += 1
                    self.usage.invalid_answers += 1
                    if invalid > self.invalid_retries:
                        result.reason = f"invalid answer after {invalid} attempts: {err}"
                        return result
                    continue
                result.ok = True
                return result
            if retries >= self.max_retries:
                result.reason = f"{reason}, gave up after {retries + 1} attempts"
                return result
            delay = self._backoff(retries, headers)
            retries += 1
            self.usage.retries += 1
            cause = reason.split(" (", 1)[0]
            self.usage.retry_reasons[cause] = self.usage.retry_reasons.get(cause, 0) + 1
            # INFO, so `saelora -v` shows every 429, 5xx, timeout and connection error.
            logger.info(
                "retry %d/%d in %.2f s after %s from %s", retries, self.max_retries, delay,
                reason, self.base_url,
            )  # fmt: skip
            if self.on_retry is not None:
                self.on_retry(cause)
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.close()
