"""Answer quality without a judge: does an answer loop, how varied is it, and how much of it
shows the behaviour sentence by sentence.

- **loops**: some word n-gram (``LOOP_N = 4`` words, lower-cased) occurs at least
  ``LOOP_REPEATS = 2`` times. Made for short greedy answers (the comparison generates 32
  tokens, about 20–25 words), where a repeated 4-word phrase is almost always a degenerate loop
  ("la dérivée de la dérivée d'un nombre dérivé, la dérivée de la dérivée…") rather than style.
- **distinct-n** (Li et al. 2016): distinct word n-grams over all n-grams of the answer; 1.0 is
  no repetition at all, nan for an answer with fewer than n words.
- **target fraction**: the share of the answer's sentences the behaviour's detector accepts
  (``analysis.DETECTORS``: py3langid for French, the letter case for upper case). The
  whole-answer detector says yes to an answer whose first sentence is French and whose rest is
  English; this says how much of it is.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable

import pandas as pd

LOOP_N = 4
LOOP_REPEATS = 2
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(text: str, n: int = 2) -> float:
    """Distinct word n-grams / all word n-grams (nan with fewer than ``n`` words)."""
    grams = ngrams(words(text), n)
    return len(set(grams)) / len(grams) if grams else math.nan


def loops(text: str, n: int = LOOP_N, repeats: int = LOOP_REPEATS) -> bool:
    """Whether some word ``n``-gram occurs at least ``repeats`` times."""
    counts = Counter(ngrams(words(text), n))
    return bool(counts) and max(counts.values()) >= repeats


def sentences(text: str) -> list[str]:
    """The answer's sentences that hold at least two letters."""
    parts = (s.strip() for s in _SENTENCE_END.split(text))
    return [s for s in parts if sum(c.isalpha() for c in s) >= 2]


def target_fraction(text: str, detector: Callable[[str], bool]) -> float:
    """The share of ``text``'s sentences ``detector`` accepts (nan when it has none)."""
    ss = sentences(text)
    return sum(bool(detector(s)) for s in ss) / len(ss) if ss else math.nan


def answer_quality(texts: list[str], detector: Callable[[str], bool] | None = None) -> pd.DataFrame:
    """One row per answer: ``loops``, ``distinct_1``, ``distinct_2`` and, with a detector,
    ``target_fraction``."""
    out = pd.DataFrame(
        {
            "loops": [loops(t) for t in texts],
            "distinct_1": [distinct_n(t, 1) for t in texts],
            "distinct_2": [distinct_n(t, 2) for t in texts],
        }
    )
    if detector is not None:
        out["target_fraction"] = [target_fraction(t, detector) for t in texts]
    return out
