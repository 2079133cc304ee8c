"""The near-miss rate (analysis/near_miss.py): the rates are the detector's verdicts on the
answers, an adapter that edits nothing matches the base model, and the card leads with a flagged
rate but appends an unflagged one."""

import pytest
import torch

from saelora_core import SaeLora
from saelora_core.analysis.near_miss import FLAG_ABOVE, NearMissRate, near_miss_rate

ROWS = [
    {"prompt": "How fast does a ball fall after 2 seconds?", "category": "physics"},
    {"prompt": "What does a loan at 5 % cost per year?", "category": "money"},
    {"prompt": "WHERE IS THE NEAREST TRAIN STATION?", "category": "uppercase_non_math"},
]


def test_rates_follow_the_detector_and_a_no_op_adapter_matches_the_base(tiny_mas):
    lora = SaeLora(tiny_mas.sae.cfg.d_sae, rank=1, generator=torch.Generator().manual_seed(0))
    every = near_miss_rate(tiny_mas, lora, ROWS, detector=lambda a: True, max_new_tokens=4)
    assert (every.rate, every.base_rate, every.n) == (1.0, 1.0, 3)
    assert every.by_category == {"money": 1.0, "physics": 1.0, "uppercase_non_math": 1.0}
    assert every.flagged and every.low < 1.0 == every.high
    with torch.no_grad():
        lora.s.zero_()  # the adapter edits nothing: its answers are the base model's
    same = near_miss_rate(tiny_mas, lora, ROWS, detector="uppercase", max_new_tokens=4)
    assert same.rate == same.base_rate
    with pytest.raises(ValueError, match="no near-miss prompts"):
        near_miss_rate(tiny_mas, lora, [], detector="uppercase")


def test_flag_threshold_and_sentence():
    low = NearMissRate(rate=0.05, low=0.02, high=0.12, n=96, base_rate=0.01)
    assert not low.flagged and low.sentence.startswith("Near-miss prompts: 0.05")
    high = NearMissRate(
        rate=0.31,
        low=0.22,
        high=0.41,
        n=96,
        base_rate=0.02,
        by_category={"money": 0.9, "cooking": 0.1, "sport": 0.5, "french_non_math": 0.0},
    )
    assert high.flagged and FLAG_ABOVE < 0.31
    assert high.sentence.startswith("Fires off-topic") and "money 0.90, sport 0.50, cooking" in (
        high.sentence
    )
    assert NearMissRate.from_dict(high.to_dict()) == high
