"""Short labels for SAE latents, from their evidence: by rule offline, or by an LLM.

**Rule** (:func:`rule_label`, offline, deterministic): the tokens the latent fires on most often
among its top activating snippets, and the tokens its decoder direction promotes most, e.g.
``fires on "equation", "solve" · promotes "la", "le"``.

**LLM** (:class:`LlmLabeller`), Neuronpedia-style: an OpenAI-compatible model is shown the top
snippets with the activating tokens marked ``<<like this>>`` and their activations, plus the
promoted tokens, and answers ``{"label": "..."}`` in a few words. It uses the dataset pipeline's
client (``data.llm.LlmClient``: its retries on 429/5xx/timeouts and its re-asking on malformed
answers), its sqlite answer cache (``data.cache.AnswerCache``: a latent asked about once is
never asked again, failures included) and its key handling (the key is read from the
environment and written nowhere). A latent whose answer failed falls back to its rule label, and
the card says which source each label has.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saelora_core.data.cache import AnswerCache, CachedAnswer, CacheKey, sha256_text
from saelora_core.data.config import DEFAULT_API_KEY_ENV
from saelora_core.data.llm import LlmClient, resolve_api_key
from saelora_core.data.prompts import SchemaError

LABEL_TASK = "latent_label"
MAX_LABEL_CHARS = 80

LABEL_SYSTEM = (
    "You label features of a sparse autoencoder trained on a language model's residual "
    "stream. You are shown text snippets where the feature is active; the tokens where it "
    "fires are marked <<like this>> with the activation in brackets, and the tokens the "
    "feature's output direction promotes. Describe in at most eight words what the feature "
    'detects or does. Answer with JSON only: {"label": "..."}'
)


@dataclass
class LatentEvidence:
    """What a label is made from."""

    latent: int
    snippets: list[list[tuple[str, float]]] = field(default_factory=list)
    """Top activating snippets, each a list of (token string, activation)."""
    promoted: list[str] = field(default_factory=list)
    """Tokens the latent's decoder direction raises most (direct path)."""

    def activating_tokens(self) -> list[str]:
        """The token at each snippet's peak activation, most frequent first (ties: first seen)."""
        peaks = [max(s, key=lambda t: t[1])[0] for s in self.snippets if s]
        counts = Counter(t.strip() or t for t in peaks)
        return [t for t, _ in sorted(counts.items(), key=lambda kv: -kv[1])]


def _quote(tokens: list[str], n: int) -> str:
    shown = [t.strip() or repr(t) for t in tokens[:n]]
    return ", ".join(f'"{t}"' for t in shown)


def rule_label(ev: LatentEvidence, n: int = 3) -> str:
    """``fires on "a", "b" · promotes "c", "d"`` from the evidence (deterministic)."""
    parts = []
    if fires := ev.activating_tokens():
        parts.append(f"fires on {_quote(fires, n)}")
    if ev.promoted:
        parts.append(f"promotes {_quote(ev.promoted, n)}")
    return " · ".join(parts) or f"latent {ev.latent} (no activations found)"


def _mark(token: str, act: float) -> str:
    word = token.lstrip()
    return f"{token[: len(token) - len(word)]}<<{word}>>[{act:.1f}]"


def label_prompt(ev: LatentEvidence, max_snippets: int = 8) -> str:
    """The user message an LLM labeller gets for one latent."""
    lines = [f"Feature {ev.latent}.", "", "Top activating snippets:"]
    for i, snip in enumerate(ev.snippets[:max_snippets], 1):
        peak = max((a for _, a in snip), default=0.0)
        text = "".join(_mark(t, a) if peak > 0 and a >= 0.5 * peak else t for t, a in snip)
        lines.append(f"{i}. {text}")
    lines += ["", f"Promoted tokens: {_quote(ev.promoted, 10) or '(none)'}"]
    return "\n".join(lines)


def parse_label(answer: Any) -> str:
    """``answer["label"]`` if it is a non-empty string, cut to ``MAX_LABEL_CHARS``; else
    ``SchemaError`` (so the client asks again)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("label"), str):
        raise SchemaError(f'expected {{"label": str}}, got {str(answer)[:80]}')
    label = " ".join(answer["label"].split())
    if not label:
        raise SchemaError("empty label")
    return label[:MAX_LABEL_CHARS]


@dataclass
class Label:
    text: str
    source: str
    """"rule", "llm", or "rule (LLM failed: <reason>)"."""


@dataclass
class LlmLabeller:
    """Labels latents with an OpenAI-compatible chat model; answers are cached in
    ``<cache_dir>/answers.sqlite`` under the model, the SAE's identity and the prompt's hash."""

    base_url: str
    model: str
    cache_dir: str | Path
    sae_key: str
    """Identifies the SAE (e.g. its content hash): latent 12 of another SAE is another question."""
    api_key_env: str = DEFAULT_API_KEY_ENV
    concurrency: int = 8
    timeout: float = 60.0
    max_retries: int = 6
    invalid_retries: int = 2
    backoff_base: float = 1.0
    backoff_max: float = 60.0

    def label_all(self, evidence: list[LatentEvidence]) -> dict[int, Label]:
        """One label per latent: cached answers first, then one request per missing latent."""
        return asyncio.run(self._label_all(evidence))

    async def _label_all(self, evidence: list[LatentEvidence]) -> dict[int, Label]:
        out: dict[int, Label] = {}
        with AnswerCache(self.cache_dir) as cache:
            todo = []
            for ev in evidence:
                prompt = label_prompt(ev)
                key = CacheKey(self.model, LABEL_TASK, self.sae_key, sha256_text(prompt))
                hit = cache.get(key)
                if hit is not None:
                    out[ev.latent] = self._label(ev, hit)
                else:
                    todo.append((ev, prompt, key))
            if not todo:
                return out
            client = LlmClient(
                api_key=resolve_api_key(self.api_key_env),
                base_url=self.base_url,
                model=self.model,
                concurrency=self.concurrency,
                timeout=self.timeout,
                max_retries=self.max_retries,
                invalid_retries=self.invalid_retries,
                backoff_base=self.backoff_base,
                backoff_max=self.backoff_max,
                api_key_env=self.api_key_env,
            )
            try:

                async def one(ev: LatentEvidence, prompt: str, key: CacheKey) -> None:
                    messages = [
                        {"role": "system", "content": LABEL_SYSTEM},
                        {"role": "user", "content": prompt},
                    ]
                    r = await client.complete_json(messages, parse_label)  # type: ignore[arg-type]
                    answer = CachedAnswer(
                        r.ok,
                        r.value if r.ok else None,
                        r.reason,
                        r.prompt_tokens,
                        r.completion_tokens,
                        row_id=f"latent-{ev.latent}",
                    )
                    cache.put(key, answer)  # committed at once: a crash loses no paid answer
                    out[ev.latent] = self._label(ev, answer)

                await asyncio.gather(*(one(*t) for t in todo))
            finally:
                await client.aclose()
        return out

    @staticmethod
    def _label(ev: LatentEvidence, answer: CachedAnswer) -> Label:
        if answer.ok and isinstance(answer.value, str):
            return Label(answer.value, "llm")
        return Label(rule_label(ev), f"rule (LLM failed: {answer.reason})")


def label_latents(
    evidence: list[LatentEvidence], labeller: LlmLabeller | None = None
) -> dict[int, Label]:
    """Rule labels, or the LLM's where ``labeller`` is given (rule labels where it failed)."""
    if labeller is None:
        return {ev.latent: Label(rule_label(ev), "rule") for ev in evidence}
    return labeller.label_all(evidence)


def labeller_from_env(cache_dir: str | Path, sae_key: str) -> LlmLabeller | None:
    """An :class:`LlmLabeller` when ``SAELORA_LABEL_MODEL`` is set (with ``SAELORA_LABEL_BASE_URL``,
    default OpenRouter, and the key in ``SAELORA_LABEL_KEY_ENV``'s variable, default
    ``OPENROUTER_API_KEY``); None otherwise (rule labels)."""
    import os

    model = os.environ.get("SAELORA_LABEL_MODEL")
    if not model:
        return None
    return LlmLabeller(
        base_url=os.environ.get("SAELORA_LABEL_BASE_URL", "https://openrouter.ai/api/v1"),
        model=model,
        cache_dir=cache_dir,
        sae_key=sae_key,
        api_key_env=os.environ.get("SAELORA_LABEL_KEY_ENV", DEFAULT_API_KEY_ENV),
    )


def labels_json(labels: dict[int, Label]) -> str:
    return json.dumps({str(k): {"label": v.text, "source": v.source} for k, v in labels.items()})
