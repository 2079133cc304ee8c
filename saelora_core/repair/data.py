"""Token windows of generic text for repair training and evaluation, with no hub.

Texts come from the SAE corpus (``sae/corpus.py``: ``train.jsonl`` to train on, ``heldout.jsonl``,
split by a hash of each document, to evaluate on) and from ``data/heldout/general_text.jsonl``:
prose, QA turns, French, German, Spanish, SQL, code, news and dialogue written for evaluation
only, which neither the SAE nor any repair trains on.

Documents are tokenized without special tokens, cut to ``max_doc_tokens``, joined by a blank line and cut into windows of
``context_size - 1`` tokens; each window then starts with BOS, as the SAE's training windows
did, and every window is full (no padding).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor

from saelora_core.data.heldout import GENERAL_TEXT
from saelora_core.io.paths import REPO_ROOT

CORPUS_DIR = REPO_ROOT / "data" / "corpus"


class CorpusError(ValueError):
    """The repair corpus is missing or holds no usable text."""


def read_texts(path: str | Path) -> list[str]:
    """The ``text`` field of every JSONL row (empty rows skipped)."""
    p = Path(path)
    if not p.exists():
        hint = (
            " Build the SAE corpus with `saelora sae corpus` (or `saelora repair ... --build-corpus`)."
            if p.parent.name == "corpus"
            else ""
        )
        raise CorpusError(f"no text file at {p}.{hint}")
    texts = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CorpusError(f"{p}:{i} is not a JSON object with a 'text' field ({e})") from e
        if str(text).strip():
            texts.append(str(text))
    return texts


def token_windows(
    texts: list[str],
    tokenizer,
    *,
    context_size: int,
    max_tokens: int,
    max_doc_tokens: int = 1024,
) -> Int[Tensor, "window pos"]:
    """Full windows ``[BOS, t_1 … t_{context_size-1}]`` holding at most ``max_tokens`` tokens
    (BOS counted), from ``texts`` in order. Each document contributes at most
    ``max_doc_tokens`` tokens, so one long docstring page cannot fill a small budget."""
    bos = tokenizer.bos_token_id
    if bos is None:
        raise CorpusError("the tokenizer has no BOS token; windows must start with one")
    sep = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    body = context_size - 1
    n_windows = max_tokens // context_size
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"][:max_doc_tokens] + sep
        if len(stream) >= n_windows * body:
            break
    n = min(n_windows, len(stream) // body)
    if n == 0:
        raise CorpusError(
            f"the corpus holds {len(stream)} tokens, less than one window of {context_size}; "
            "give more text or a smaller context_size"
        )
    rows = torch.tensor(stream[: n * body]).view(n, body)
    return torch.cat([torch.full((n, 1), bos), rows], dim=1)


def corpus_windows(
    split: str,
    tokenizer,
    *,
    context_size: int,
    max_tokens: int,
    corpus_dir: str | Path | None = None,
) -> Int[Tensor, "window pos"]:
    """Windows from a named text set: ``train`` / ``heldout`` (the SAE corpus) or ``general``."""
    if split == "general":
        path = GENERAL_TEXT
    elif split in ("train", "heldout"):
        path = Path(corpus_dir or CORPUS_DIR) / f"{split}.jsonl"
    else:
        raise ValueError(f"unknown text set {split!r}; use 'train', 'heldout' or 'general'")
    texts = read_texts(path)
    if not texts:
        raise CorpusError(f"{path} holds no text")
    return token_windows(texts, tokenizer, context_size=context_size, max_tokens=max_tokens)
