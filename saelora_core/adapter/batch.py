"""Rows → tokenized turns → right-padded micro-batches on the model's device.

An :class:`Example` is one tokenized turn. A micro-batch of examples runs as one forward pass:
the turns are **right-padded** to the longest one. The model is causal and Gemma's positions
are the token indices, so a real position never sees a pad that follows it and keeps its
index: the logits at real positions are those of the example run alone (up to float
rounding; ``tests/training/test_loop.py`` checks it). No attention mask is needed, and the pads are
never read: only the positions that predict an assistant token are unembedded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from saelora_core.models.chat import ChatTokens, format_turn
from saelora_core.models.presets import ModelAndSae


@dataclass
class Example:
    chat: ChatTokens
    resid: Tensor | None = None
    """Cached hook-point residual, (1, pos, d_model), when precomputing."""
    latents: Tensor | None = None
    """Cached SAE latents of ``resid``, (pos, d_sae), sparse COO (``forward.padded_latents``)."""
    latents_of: tuple | None = field(default=None, repr=False)
    """Which SAE, in which state, encoded ``latents`` (``forward.sae_state``)."""
    on_device: tuple[Tensor, Tensor, Tensor] | None = field(default=None, repr=False)
    """tokens, target positions and next tokens on the model's device, copied there once."""

    def device_tensors(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        if self.on_device is None or self.on_device[0].device != device:
            pos, nxt = targets(self.chat)
            self.on_device = (self.chat.tokens.to(device), pos.to(device), nxt.to(device))
        return self.on_device


def tokenize_rows(
    mas: ModelAndSae, rows: Iterable[dict], max_len: int, response_tokens: int | None = None
) -> tuple[list[Example], list[str]]:
    """Format rows (``prompt``, ``response``) as turns; malformed rows are skipped and named.
    ``response_tokens``: keep only the first that many response tokens (see ``format_turn``)."""
    out, skipped = [], []
    for i, row in enumerate(rows):
        try:
            out.append(
                Example(
                    format_turn(
                        mas.tokenizer,
                        row.get("prompt"),  # type: ignore[arg-type]  # format_turn validates
                        row.get("response"),  # type: ignore[arg-type]
                        mas.chat_format,
                        max_len,
                        response_tokens,
                    )
                )
            )
        except (ValueError, AttributeError, TypeError) as e:
            skipped.append(f"row {row.get('id', i) if isinstance(row, dict) else i}: {e}")
    return out, skipped


def targets(chat: ChatTokens) -> tuple[Tensor, Tensor]:
    """Positions whose next token is an assistant token, and those next tokens."""
    pos = torch.nonzero(chat.assistant_mask[1:]).flatten()
    return pos, chat.tokens[1:][pos]


def chunks(items: list, size: int) -> Iterator[list]:
    """``items`` in consecutive runs of at most ``size``."""
    for i in range(0, len(items), max(size, 1)):
        yield items[i : i + max(size, 1)]


def device_of(mas: ModelAndSae) -> torch.device:
    return mas.model.W_U.device


@dataclass
class Batch:
    """A right-padded micro-batch and where its loss positions are."""

    examples: list[Example]
    tokens: Tensor
    """(batch, n) token ids, right-padded."""
    lengths: list[int]
    rows: Tensor
    """(T,) batch row of each target position, example by example."""
    cols: Tensor
    """(T,) position (index into the sequence) of each target position."""
    labels: Tensor
    """(T,) the next token at each target position."""

    @property
    def counts(self) -> Tensor:
        """Target positions per example."""
        return torch.bincount(self.rows, minlength=len(self.examples))


def make_batch(mas: ModelAndSae, examples: list[Example]) -> Batch:
    """Right-pad ``examples`` into one batch, on the model's device. Each example's tensors are
    copied to the device once and kept, so a training step makes no host-to-device copy."""
    if not examples:
        raise ValueError("an empty batch")
    dev = device_of(mas)
    parts = [ex.device_tensors(dev) for ex in examples]
    lengths = [len(ex.chat.tokens) for ex in examples]
    tokens = torch.zeros(len(examples), max(lengths), dtype=torch.long, device=dev)
    for i, (toks, _, _) in enumerate(parts):
        tokens[i, : lengths[i]] = toks
    rows = torch.cat([torch.full_like(pos, i) for i, (_, pos, _) in enumerate(parts)])
    return Batch(
        examples,
        tokens,
        lengths,
        rows,
        torch.cat([pos for _, pos, _ in parts]),
        torch.cat([nxt for _, _, nxt in parts]),
    )
