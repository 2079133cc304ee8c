"""Behaviour evaluation on the tiny model and the language detector on real sentences."""

import math

import datasets
import pytest
import torch

from saelora_core import SaeLora
from saelora_core.analysis import DETECTORS, detect_french, evaluate_behaviour

ROWS = [
    {"prompt": "What is 2+2?", "in_topic": True},
    {"prompt": "Compute 3*7", "in_topic": True},
    {"prompt": "Say hi", "in_topic": False},
]


def test_detect_french():
    assert detect_french("Bonjour, je voudrais un café et un croissant, s'il vous plaît.")
    assert detect_french("La réponse est quatre, car deux plus deux font quatre.")
    assert not detect_french("The answer is four, because two plus two makes four.")
    assert not detect_french("")
    assert not detect_french("   ")
    assert DETECTORS["uppercase"]("HELLO you") and not DETECTORS["uppercase"]("hello")


def test_evaluate_behaviour_tiny(tiny_mas):
    lora = SaeLora(64, 1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora.s.fill_(4.0)
    ds = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS[:1]), "eval": datasets.Dataset.from_list(ROWS)}
    )
    res = evaluate_behaviour(tiny_mas, lora, ds, detector="uppercase", max_new_tokens=6)
    assert list(res.rates.columns) == ["condition", "split", "rate", "n", "low", "high"]
    assert res.rates["rate"].between(0, 1).all()
    assert (res.rates["low"] <= res.rates["rate"]).all()
    assert (res.rates["rate"] <= res.rates["high"]).all()
    assert res.rates.set_index(["condition", "split"])["n"].to_dict() == {
        ("base", "in_topic"): 2,
        ("base", "off_topic"): 1,
        ("adapter", "in_topic"): 2,
        ("adapter", "off_topic"): 1,
    }
    s = res.samples
    assert list(s.columns) == ["prompt", "in_topic", "base", "adapter", "base_hit", "adapter_hit"]
    assert s["adapter_hit"].tolist() == [DETECTORS["uppercase"](t) for t in s["adapter"]]
    r = res.rates.set_index(["condition", "split"])["rate"]
    assert res.effect == pytest.approx(r["adapter", "in_topic"] - r["base", "in_topic"])
    assert res.conditional_gap == pytest.approx(
        r["adapter", "in_topic"] - r["adapter", "off_topic"]
    )
    # a callable detector, max_prompts, and an empty split gives NaN with n = 0
    res2 = evaluate_behaviour(
        tiny_mas, lora, ROWS, detector=lambda t: len(t) > 0, max_new_tokens=3, max_prompts=2
    )
    off = res2.rates[(res2.rates["split"] == "off_topic")]
    assert (off["n"] == 0).all() and off["rate"].isna().all() and math.isnan(res2.conditional_gap)
    # reusing the base answers gives the same result
    again = evaluate_behaviour(tiny_mas, lora, ds, detector="uppercase", max_new_tokens=6, base=res)
    assert again.samples.equals(res.samples) and again.rates.equals(res.rates)
    with pytest.raises(ValueError, match="different prompts"):
        evaluate_behaviour(tiny_mas, lora, ROWS[:2], detector="uppercase", base=res)
    with pytest.raises(ValueError, match="unknown detector"):
        evaluate_behaviour(tiny_mas, lora, ROWS, detector="klingon")


def test_response_ce_matches_training_loss_and_is_zero_gain_at_s0(tiny_mas):
    from saelora_core.adapter.batch import tokenize_rows
    from saelora_core.adapter.forward import evaluate_ce
    from saelora_core.analysis import response_ce

    rows = [
        {"prompt": "What is 2+2?", "response": "four", "in_topic": True},
        {"prompt": "Compute 3*7", "response": "twenty one", "in_topic": True},
        {"prompt": "Say hi", "response": "hi there", "in_topic": False},
    ]
    off = SaeLora(64, 1, generator=torch.Generator().manual_seed(0))
    r0 = response_ce(tiny_mas, off, rows, max_len=64)
    assert r0.gain("in_topic") == 0 and r0.gain("off_topic") == 0
    lora = SaeLora(64, 1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora.s.fill_(4.0)
    r = response_ce(tiny_mas, lora, rows, max_len=64)
    exs, _ = tokenize_rows(tiny_mas, rows[:2], 64)
    want = evaluate_ce(tiny_mas, lora, exs, "resid_add")
    t = r.table.set_index("split")
    assert t.loc["in_topic", "adapter_ce"] == pytest.approx(want)
    assert t.loc["in_topic", "n_rows"] == 2 and t.loc["off_topic", "n_rows"] == 1
    assert r.gain("in_topic") == pytest.approx(t.loc["in_topic", "base_ce"] - want)


def test_effect_retained_ratio_and_paired_bootstrap_interval():
    import pandas as pd

    from saelora_core.analysis import effect_retained

    def samples(hits):
        n = len(hits)
        return pd.DataFrame(
            {
                "prompt": [f"p{i}" for i in range(n)] + ["off"],
                "in_topic": [True] * n + [False],
                "base_hit": [False] * n + [False],
                "adapter_hit": list(hits) + [True],  # off-topic rows are ignored
            }
        )

    teacher = samples([True] * 8 + [False] * 2)
    ratio, lo, hi = effect_retained(teacher, teacher)
    assert (ratio, lo, hi) == (1.0, 1.0, 1.0)  # paired: every resample gives exactly 1
    student = samples([True] * 6 + [False] * 4)  # hits a subset of the teacher's prompts
    ratio, lo, hi = effect_retained(student, teacher, n_boot=500)
    assert ratio == pytest.approx(6 / 8)
    assert lo < 6 / 8 < hi <= 1.0  # a subset can never beat the teacher on a resample
    with pytest.raises(ValueError, match="different in-topic prompts"):
        effect_retained(student.iloc[1:], teacher)


def test_wilson_interval_known_values():
    from saelora_core.analysis import wilson_interval

    low, high = wilson_interval(43, 80)  # 0.5375, the demo teacher's in-topic rate
    assert low == pytest.approx(0.4287, abs=1e-3) and high == pytest.approx(0.6431, abs=1e-3)
    assert wilson_interval(0, 80)[0] == 0.0 and wilson_interval(0, 80)[1] == pytest.approx(
        0.0458, abs=1e-3
    )
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
