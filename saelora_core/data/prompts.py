"""The classification and rewriting prompts, and the JSON schema each answer must follow.

Both tasks ask for a JSON object so that answers can be checked: classification answers
`{"topic_match": true|false}`, rewriting answers `{"response": "<text>"}`. Changing a template
changes the hashed request, so cached answers of the old template are not reused.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

Task = Literal["classify", "rewrite"]
Messages = tuple[dict[str, str], ...]

CLASSIFY_SYSTEM = (
    "You label user prompts by topic. Decide whether the user's prompt is mainly about the "
    "given topic. Reply with only a JSON object of the form "
    '{"topic_match": true} or {"topic_match": false}.'
)

REWRITE_SYSTEM = (
    "You rewrite an assistant's response so that it follows a guideline. Keep the content, "
    "facts, level of detail and formatting of the original response; change only what the "
    "guideline requires. Reply with only a JSON object of the form "
    '{"response": "<the rewritten response>"}.'
)


class SchemaError(ValueError):
    """An answer is not valid JSON or does not follow the task's schema."""


def classify_messages(topic: str, prompt: str) -> Messages:
    """Chat messages asking whether `prompt` is about `topic`."""
    user = (
        f"Topic: {topic}\n\n"
        f"User prompt:\n<<<\n{prompt}\n>>>\n\n"
        'Is this prompt mainly about the topic? Answer {"topic_match": true} or '
        '{"topic_match": false}.'
    )
    return ({"role": "system", "content": CLASSIFY_SYSTEM}, {"role": "user", "content": user})


def rewrite_messages(guideline: str, prompt: str, response: str) -> Messages:
    """Chat messages asking to rewrite `response` (to `prompt`) so it follows `guideline`."""
    user = (
        f"Guideline: {guideline}\n\n"
        f"User prompt:\n<<<\n{prompt}\n>>>\n\n"
        f"Original response:\n<<<\n{response}\n>>>\n\n"
        'Rewrite the original response so that it follows the guideline. Answer {"response": "..."}.'
    )
    return ({"role": "system", "content": REWRITE_SYSTEM}, {"role": "user", "content": user})


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def extract_json(text: str | None) -> Any:
    """Parse a model's JSON answer, tolerating a ```json fence around it.

    Raises `SchemaError` when the text is empty or not JSON.
    """
    if text is None or not text.strip():
        raise SchemaError("empty answer")
    fenced = _FENCE.match(text)
    try:
        return json.loads(fenced.group(1) if fenced else text)
    except json.JSONDecodeError as err:
        raise SchemaError(f"malformed JSON ({err.msg} at char {err.pos})") from err


def parse_classification(answer: Any) -> bool:
    """`answer["topic_match"]` if `answer` is `{"topic_match": bool}`, else `SchemaError`."""
    if not isinstance(answer, dict) or not isinstance(answer.get("topic_match"), bool):
        raise SchemaError(f'expected {{"topic_match": bool}}, got {_short(answer)}')
    return answer["topic_match"]


def parse_rewrite(answer: Any) -> str:
    """`answer["response"]` if `answer` is `{"response": non-empty str}`, else `SchemaError`."""
    if not isinstance(answer, dict) or not isinstance(answer.get("response"), str):
        raise SchemaError(f'expected {{"response": str}}, got {_short(answer)}')
    if not answer["response"].strip():
        raise SchemaError("empty rewritten response")
    return answer["response"]


PARSERS = {"classify": parse_classification, "rewrite": parse_rewrite}

#: A rewrite may always be this many characters long, however short the original (a one-word
#: answer rewritten in another language or style can grow many times over).
REWRITE_MIN_LIMIT = 200


def rewrite_length_limit(original: str, max_ratio: float | None) -> int | None:
    """The longest rewrite accepted for `original`: `max(max_ratio * len(original),
    REWRITE_MIN_LIMIT)` characters; None (no limit) when `max_ratio` is None."""
    if max_ratio is None:
        return None
    return max(int(max_ratio * len(original)), REWRITE_MIN_LIMIT)


def check_rewrite_length(rewritten: str, original: str, max_ratio: float | None) -> str:
    """`rewritten` if it is at most `rewrite_length_limit(original, max_ratio)` characters long,
    else `SchemaError`: a rewrite far longer than its original is a malformed answer (a model
    that looped, or padded the answer), not a rewrite."""
    limit = rewrite_length_limit(original, max_ratio)
    if limit is not None and len(rewritten) > limit:
        raise SchemaError(
            f"rewrite of {len(rewritten)} characters is longer than the limit of {limit} "
            f"({max_ratio:g} x the original's {len(original)}; see max_rewrite_ratio)"
        )
    return rewritten


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."
