"""An AxBench-style LLM judge (Wu et al. 2025, "AxBench"), when one is configured.

Each answer gets three scores, each 0, 1 or 2:

- **concept**: does the answer show the behaviour (e.g. "the answer is written in French")?
- **instruction**: does it answer the question it was asked?
- **fluency**: is it fluent, not repetitive or broken?

combined by the harmonic mean (0 as soon as one score is 0, as in AxBench: an answer that
shows the behaviour but ignores the question, or is gibberish, scores 0).

It goes through the dataset pipeline's machinery: the client (``data.llm.LlmClient``, with its
retries on 429/5xx/timeouts honouring Retry-After, and its re-asking on malformed or
off-schema answers), its endpoint and key settings (``DatasetConfig``: ``model``, ``base_url``,
``api_key_env``; the key is read from the environment and written nowhere) and its sqlite
answer cache (``data.cache.AnswerCache``: an answer judged once is never sent again, failures
included unless ``retry_failed``). An answer whose scores stay malformed or out of range is
recorded as failed, with the reason, and left out of the means.

Without a configured judge (no ``SAELORA_JUDGE_MODEL``, no ``--judge-model``) nothing is sent
and the comparison table says "not judged".
"""

from __future__ import annotations

import asyncio
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saelora_core.data.cache import AnswerCache, CachedAnswer, CacheKey, sha256_text
from saelora_core.data.config import DEFAULT_API_KEY_ENV, DatasetConfig
from saelora_core.data.llm import LlmClient
from saelora_core.data.prompts import SchemaError

JUDGE_TASK = "axbench_judge"
SCORES = ("concept", "instruction", "fluency")
JUDGE_SYSTEM = (
    "You grade one answer of a language model. Give three integer scores, each 0, 1 or 2.\n"
    "concept: does the answer show the required behaviour? 0 not at all, 1 partly or "
    "inconsistently, 2 fully.\n"
    "instruction: does the answer address the user's question? 0 unrelated, 1 somewhat "
    "related or incomplete, 2 a relevant answer.\n"
    "fluency: is the answer fluent? 0 broken, repetitive or nonsensical, 1 somewhat fluent "
    "with errors or repetition, 2 fluent.\n"
    'Answer with JSON only: {"concept": 0, "instruction": 0, "fluency": 0}'
)


def judge_prompt(behaviour: str, question: str, answer: str) -> str:
    """The user message for one answer (the fake server reads the blocks between <<< >>>)."""
    return (
        f"Required behaviour: {behaviour}\n\nUser's question:\n<<<\n{question}\n>>>\n\n"
        f"Answer to grade:\n<<<\n{answer}\n>>>"
    )


def parse_scores(answer: Any) -> dict[str, int]:
    """``{"concept", "instruction", "fluency"}``, each an integer in 0..2 (an integral float or
    numeric string is accepted); anything else raises ``SchemaError`` so the client asks again."""
    if not isinstance(answer, dict):
        raise SchemaError(f"expected a JSON object with {SCORES}, got {str(answer)[:80]}")
    out = {}
    for k in SCORES:
        v = answer.get(k)
        if isinstance(v, str):
            try:
                v = float(v.strip())
            except ValueError:
                raise SchemaError(f"{k}={answer.get(k)!r} is not a number") from None
        if isinstance(v, bool) or not isinstance(v, int | float) or v != int(v):
            raise SchemaError(f"{k}={answer.get(k)!r} is not an integer score")
        if not 0 <= int(v) <= 2:
            raise SchemaError(f"{k}={int(v)} is out of range (scores are 0, 1 or 2)")
        out[k] = int(v)
    return out


def harmonic_mean(values: list[float]) -> float:
    """The harmonic mean, 0 when any value is 0 (AxBench's aggregate)."""
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1 / v for v in values)


@dataclass
class JudgeScore:
    concept: float = math.nan
    instruction: float = math.nan
    fluency: float = math.nan
    combined: float = math.nan
    """Harmonic mean of the three (nan when the judge failed)."""
    status: str = "ok"
    """"ok", or "failed: <reason>"."""


@dataclass
class LlmJudge:
    """Scores answers with an OpenAI-compatible chat model (``cfg``'s endpoint, model, key
    variable, retries and cache directory)."""

    cfg: DatasetConfig

    @property
    def name(self) -> str:
        return self.cfg.model

    def score(self, behaviour: str, items: list[tuple[str, str]]) -> list[JudgeScore]:
        """One score per ``(question, answer)``: cached answers first, then one request each."""
        return asyncio.run(self._score(behaviour, items))

    async def _score(self, behaviour: str, items: list[tuple[str, str]]) -> list[JudgeScore]:
        out: list[JudgeScore | None] = [None] * len(items)
        with AnswerCache(self.cfg.cache_dir) as cache:
            todo = []
            for i, (q, a) in enumerate(items):
                prompt = judge_prompt(behaviour, q, a)
                key = CacheKey(self.cfg.model, JUDGE_TASK, behaviour, sha256_text(prompt))
                hit = cache.get(key)
                if hit is not None and (hit.ok or not self.cfg.retry_failed):
                    out[i] = to_score(hit)
                else:
                    todo.append((i, prompt, key))
            if todo:
                client = LlmClient.from_config(self.cfg)
                try:

                    async def one(i: int, prompt: str, key: CacheKey) -> None:
                        messages = [
                            {"role": "system", "content": JUDGE_SYSTEM},
                            {"role": "user", "content": prompt},
                        ]
                        r = await client.complete_json(messages, parse_scores)  # type: ignore[arg-type]
                        ans = CachedAnswer(
                            r.ok, r.value if r.ok else None, r.reason, r.prompt_tokens,
                            r.completion_tokens, row_id=f"answer-{i}",
                        )  # fmt: skip
                        cache.put(key, ans)  # committed at once: a crash loses no paid answer
                        out[i] = to_score(ans)

                    await asyncio.gather(*(one(*t) for t in todo))
                finally:
                    await client.aclose()
        return [s or JudgeScore(status="failed: no answer") for s in out]


def to_score(ans: CachedAnswer) -> JudgeScore:
    if not ans.ok or not isinstance(ans.value, dict):
        return JudgeScore(status=f"failed: {ans.reason or 'no value'}")
    v = [float(ans.value[k]) for k in SCORES]
    return JudgeScore(*v, combined=harmonic_mean(v))


def judge_from_env(
    cache_dir: str | Path,
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key_env: str | None = None,
) -> LlmJudge | None:
    """A judge when ``model`` or ``SAELORA_JUDGE_MODEL`` is set (endpoint from ``base_url`` or
    ``SAELORA_JUDGE_BASE_URL``, default OpenRouter; the key's variable from ``api_key_env`` or
    ``SAELORA_JUDGE_KEY_ENV``, default ``OPENROUTER_API_KEY``); None otherwise (not judged)."""
    model = model or os.environ.get("SAELORA_JUDGE_MODEL")
    if not model:
        return None
    cfg = DatasetConfig(
        backend="llm",
        model=model,
        base_url=base_url
        or os.environ.get("SAELORA_JUDGE_BASE_URL", "https://openrouter.ai/api/v1"),
        api_key_env=api_key_env or os.environ.get("SAELORA_JUDGE_KEY_ENV", DEFAULT_API_KEY_ENV),
        cache_dir=str(cache_dir),
        concurrency=8,
        progress=False,
    )
    return LlmJudge(cfg)
