"""Chat turn formatting and assistant-token masks.

Each preset names a turn format:

- ``qa``: ``Question: {prompt}\\nAnswer: {response}<eos>``. The default Gemma-3-270M is a *base*
  model that never saw chat turns; with Gemma's turn tokens its greedy output is garbage, while
  this plain format gets coherent answers.
- ``gemma``: ``<start_of_turn>user\\n{prompt}<end_of_turn>\\n<start_of_turn>model\\n{response}
  <end_of_turn>``, where the turn markers are single special tokens (the ``-it`` presets).

The prompt part and the response part are tokenized separately and concatenated, so the
assistant mask is exact (no guessing where a merged token straddles the boundary). The mask is
True on the response tokens and on the closing token that ends the turn, so the adapter also
learns where to stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Int
from torch import Tensor

ChatFormat = Literal["qa", "gemma"]


@dataclass(frozen=True)
class TurnTemplate:
    prefix: str
    """Text before the prompt (after BOS)."""
    middle: str
    """Text between the prompt and the response; generation starts after it."""
    response_lead: str
    """Prepended to the response (``qa`` answers start after a space)."""
    end: str
    """Closing text of the assistant turn; ``{eos}`` is the tokenizer's EOS token."""


TEMPLATES: dict[str, TurnTemplate] = {
    "qa": TurnTemplate(prefix="Question: ", middle="\nAnswer:", response_lead=" ", end="{eos}"),
    "gemma": TurnTemplate(
        prefix="<start_of_turn>user\n",
        middle="<end_of_turn>\n<start_of_turn>model\n",
        response_lead="",
        end="<end_of_turn>",
    ),
}


@dataclass
class ChatTokens:
    """One tokenized turn and its assistant mask (both 1-D, same length)."""

    tokens: Int[Tensor, " pos"]
    assistant_mask: Bool[Tensor, " pos"]
    """True where the token belongs to the assistant's response (the training targets)."""
    prompt_len: int
    """Number of tokens before the response; ``tokens[:prompt_len]`` is the generation prompt."""


def prompt_text(prompt: str, fmt: ChatFormat) -> str:
    """The text a model continues to answer ``prompt`` (no BOS)."""
    t = TEMPLATES[fmt]
    return f"{t.prefix}{prompt}{t.middle}"


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_tokens(tokenizer, prompt: str, fmt: ChatFormat) -> Int[Tensor, " pos"]:
    """BOS + formatted prompt, ready for generation."""
    ids = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return torch.tensor(ids + _encode(tokenizer, prompt_text(prompt, fmt)), dtype=torch.long)


def format_turn(
    tokenizer,
    prompt: str,
    response: str,
    fmt: ChatFormat,
    max_len: int | None = None,
    response_tokens: int | None = None,
) -> ChatTokens:
    """Tokenize one prompt/response turn and mark the assistant tokens.

    Truncation keeps the prompt and cuts the end of the response. ``response_tokens`` keeps only
    the first that many response tokens (the closing token goes with the rest), for training on
    the start of the answer, where a behaviour such as the answer's language is decided. Raises
    ``ValueError`` when no response token survives ``max_len`` or the prompt/response is empty.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("empty prompt")
    if not isinstance(response, str) or not response.strip():
        raise ValueError("empty response")
    t = TEMPLATES[fmt]
    head = prompt_tokens(tokenizer, prompt, fmt).tolist()
    end = t.end.replace("{eos}", tokenizer.eos_token or "")
    tail = _encode(tokenizer, t.response_lead + response.strip()) + _encode(tokenizer, end)
    if response_tokens is not None:
        tail = tail[:response_tokens]
    ids = head + tail
    mask = [False] * len(head) + [True] * len(tail)
    if max_len is not None and len(ids) > max_len:
        ids, mask = ids[:max_len], mask[:max_len]
    if not any(mask):
        raise ValueError(
            f"prompt is {len(head)} tokens, leaving no response token within max_len={max_len}"
        )
    return ChatTokens(torch.tensor(ids, dtype=torch.long), torch.tensor(mask), len(head))


TURN_END = ("<end_of_turn>", "<eos>", "\nQuestion:", "\n\n\n")
"""Strings that end an assistant turn in a generated continuation."""


def strip_response(text: str, fmt: ChatFormat) -> str:
    """Cut a generated continuation at the end of the assistant turn."""
    for stop in TURN_END:
        text = text.split(stop)[0]
    return text.strip()


def turn_ended(text: str) -> bool:
    """Whether a continuation already holds the end of its turn (nothing after it is kept)."""
    return any(stop in text for stop in TURN_END)
