"""The repetition measure and the per-sentence behaviour share on hand-made answers."""

from __future__ import annotations

import math

import pytest

from saelora_core.analysis.behaviour import detect_french, detect_uppercase
from saelora_core.compare.quality import (
    answer_quality,
    distinct_n,
    loops,
    sentences,
    target_fraction,
)

LOOPING = [
    "La dérivée de la dérivée d'un nombre dérivé est la dérivée de la dérivée d'un nombre",
    "7 x 8 = 56. 7 x 8 = 56. 7 x 8 = 56.",
    "THE ANSWER IS THE ANSWER IS THE ANSWER IS",
    "1 1 1 1 1 1",
]
CLEAN = [
    "Seven times eight is 56; you can check it by adding seven eight times.",
    "Pour additionner deux fractions, on cherche d'abord un dénominateur commun.",
    "THE CAPITAL OF CANADA IS OTTAWA.",
    "",
]


def test_loops_and_distinct_n_on_hand_made_answers():
    assert [loops(t) for t in LOOPING] == [True] * 4
    assert [loops(t) for t in CLEAN] == [False] * 4
    assert distinct_n("a b a b", 1) == pytest.approx(0.5)
    assert distinct_n("a b a b", 2) == pytest.approx(2 / 3)  # (a b), (b a), (a b)
    assert distinct_n(CLEAN[0], 2) == 1.0
    assert math.isnan(distinct_n("word", 2))
    q = answer_quality(LOOPING + CLEAN)
    assert q["loops"].tolist() == [True] * 4 + [False] * 4
    assert q["loops"].mean() == 0.5
    assert q["distinct_2"].iloc[3] == pytest.approx(1 / 5)  # "1 1" five times


def test_target_fraction_counts_sentences():
    mixed = "La réponse est cinquante-six. But the rest of this answer is in English. Thank you."
    assert sentences(mixed) == [
        "La réponse est cinquante-six.",
        "But the rest of this answer is in English.",
        "Thank you.",
    ]
    assert target_fraction(mixed, detect_french) == pytest.approx(1 / 3)
    assert target_fraction("ALL CAPS HERE. and lower here.", detect_uppercase) == 0.5
    assert math.isnan(target_fraction("42 !", detect_uppercase))
    q = answer_quality(["TOUT EN MAJUSCULES.", "mixed. CASE."], detect_uppercase)
    assert q["target_fraction"].tolist() == [1.0, 0.5]
