"""The one formatting helper: numbers to at most 4 significant digits, lists as text, NaN as
"—"; and the tables built with it (the demo's) hold no list repr and no long float."""

import math
import re

import numpy as np
import pandas as pd

from saelora_core.io.format import (
    MISSING,
    fmt_interval,
    fmt_list,
    fmt_num,
    fmt_pct,
    fmt_value,
    format_frame,
    text_table,
)


def test_numbers():
    assert fmt_num(1.523008942604065) == "1.523"
    assert fmt_num(1063.25) == "1063"
    assert fmt_num(-0.0) == "0" and fmt_num(-1e-9, 2) == "-1e-09"
    assert fmt_num(12) == "12" and fmt_num(np.int64(5)) == "5"
    assert fmt_num(np.float32(2.9312)) == "2.931"
    assert fmt_num(math.nan) == MISSING and fmt_num(None) == MISSING
    assert fmt_num(math.inf) == MISSING
    assert fmt_num(True) == "yes"


def test_percentages_and_intervals():
    assert fmt_pct(0.553) == "55 %" and fmt_pct(-0.001) == "0 %" and fmt_pct(0.5, 1) == "50.0 %"
    assert fmt_pct(math.nan) == MISSING
    assert fmt_interval(0.55, 0.44, 0.66) == "0.55 [0.44, 0.66]"
    assert fmt_interval(0.01, None, None) == "0.01"
    assert fmt_interval(0.5, math.nan, 0.7) == "0.50 [—, 0.70]"


def test_lists_and_values():
    assert fmt_list([679]) == "679"
    assert fmt_list([679, 1303]) == "679, 1303"
    assert fmt_list(range(12), max_items=3) == "0, 1, 2, … (+9 more)"
    assert fmt_list([]) == MISSING
    assert fmt_value({"read": [679], "write": [1303]}) == "read 679, write 1303"
    assert fmt_value(np.array([0.123456, 2.0])) == "0.1235, 2"
    assert fmt_value("text") == "text"


def no_raw_values(text: str) -> None:
    # A bracket opening a list of numbers or strings; "0.55 [0.44, 0.66]" is an interval.
    assert not re.search(r"(?<!\d )\[\s*['\"\-\d]", text), "a Python list repr"
    assert "nan" not in text.lower()
    for number in re.findall(r"\d+\.\d+(?:e[+-]?\d+)?", text):
        mantissa = number.split("e")[0]
        assert len(mantissa.replace(".", "").lstrip("0")) <= 4, number


def test_a_formatted_table_has_no_list_repr_and_no_long_float():
    df = pd.DataFrame(
        {
            "step": [0, 2],
            "l0_read": [[679], [680, 12]],
            "eval_ce": [1.523008942604065, math.nan],
            "s": [np.array([2.93123]), np.array([1.0, 0.5])],
        }
    )
    cells = format_frame(df)
    assert cells["l0_read"].tolist() == ["679", "680, 12"]
    assert cells["eval_ce"].tolist() == ["1.523", "—"]
    text = text_table(df)
    no_raw_values(text)
    assert text.splitlines()[0].split() == ["step", "l0_read", "eval_ce", "s"]


def test_the_demo_table_is_short_and_readable():
    from saelora_core.demo.run import demo_table

    def rates(a_in):
        return [
            {"condition": c, "split": s, "rate": r, "n": 80, "low": r / 2, "high": r + 0.1}
            for c, s, r in [
                ("base", "in_topic", 0.0125),
                ("adapter", "in_topic", a_in),
                ("base", "off_topic", 0.0),
                ("adapter", "off_topic", 0.0125),
            ]
        ]

    summary = {
        "behaviours": [
            {"name": "demo-math-french", "guideline": "respond in French", "detector": "french",
             "rates": rates(0.55123456789), "report": "runs/demo/x/report.html"},
        ],
        "total_s": 63.2345678,
    }  # fmt: skip
    df = demo_table(summary)
    row = df.iloc[0]
    assert row["in-topic base → adapter"] == "0.01 → 0.55 [0.28, 0.65]"
    assert row["off-topic base → adapter"] == "0.00 → 0.01 [0.01, 0.11]"
    assert row["prompts"] == "80 + 80"
    no_raw_values(text_table(df, max_width=60))
