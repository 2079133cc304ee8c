"""Values as a person reads them: the one formatting helper behind every table, card, export
and command-line summary.

- numbers to at most :data:`DIGITS` significant digits (``1.523008942604065`` → ``1.523``),
  integers as they are, ``-0`` as ``0``;
- NaN, None and infinities as :data:`MISSING` ("—");
- lists and tuples as comma-separated values, never a Python repr (``[679]`` → ``679``);
- rates with their interval (``0.55 [0.44, 0.66]``) and percentages (``55 %``).

It lives on the floor of the package (``io/``) so that ``analysis/`` (the card), ``reporting/``
(exports), ``ui/`` (notebook tables) and ``cli/`` can all use it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

DIGITS = 4
"""Significant digits of a number shown to a reader."""
MISSING = "—"
"""What a missing value (None, NaN, ±inf) reads as."""
MAX_ITEMS = 8
"""List items shown before the rest is counted (``… (+n more)``)."""


def is_missing(v: Any) -> bool:
    """None, or a real number that is NaN or infinite."""
    if v is None:
        return True
    if isinstance(v, numbers.Real) and not isinstance(v, bool | numbers.Integral):
        return not math.isfinite(float(v))
    return False


def fmt_num(v: Any, digits: int = DIGITS) -> str:
    """A number to at most ``digits`` significant digits; integers unchanged; missing: "—"."""
    if is_missing(v):
        return MISSING
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, numbers.Integral):
        return str(int(v))
    x = float(v)
    out = f"{x:.{digits}g}"
    return "0" if float(out) == 0 else out


def fmt_pct(v: Any, digits: int = 0) -> str:
    """A fraction as a percentage: ``0.553`` → ``55 %`` (``digits`` decimals); missing: "—"."""
    if is_missing(v):
        return MISSING
    out = f"{100 * float(v):.{digits}f}"
    if float(out) == 0:
        out = f"{0:.{digits}f}"
    return f"{out} %"


def fmt_interval(rate: Any, low: Any, high: Any, digits: int = 2) -> str:
    """``0.55 [0.44, 0.66]``: a rate and its interval, each to ``digits`` decimals."""

    def one(x: Any) -> str:
        return MISSING if is_missing(x) else f"{float(x):.{digits}f}"

    if is_missing(low) and is_missing(high):
        return one(rate)
    return f"{one(rate)} [{one(low)}, {one(high)}]"


def fmt_list(items: Iterable[Any], digits: int = DIGITS, max_items: int = MAX_ITEMS) -> str:
    """Items as ``a, b, c`` (numbers formatted), the tail beyond ``max_items`` counted."""
    items = list(items)
    if not items:
        return MISSING
    shown = ", ".join(fmt_value(x, digits) for x in items[:max_items])
    rest = len(items) - max_items
    return shown + (f", … (+{rest} more)" if rest > 0 else "")


def fmt_value(v: Any, digits: int = DIGITS) -> str:
    """Any cell value as text: numbers (:func:`fmt_num`), lists (:func:`fmt_list`), dicts as
    ``key value, …``, everything else as ``str``."""
    if is_missing(v):
        return MISSING
    if isinstance(v, numbers.Number) and not isinstance(v, complex):
        return fmt_num(v, digits)
    if hasattr(v, "tolist") and not isinstance(v, str):  # numpy / torch arrays and scalars
        return fmt_value(v.tolist(), digits)
    if isinstance(v, list | tuple | set | frozenset):
        return fmt_list(sorted(v) if isinstance(v, set | frozenset) else v, digits)
    if isinstance(v, Mapping):
        return ", ".join(f"{k} {fmt_value(x, digits)}" for k, x in v.items()) or MISSING
    return str(v)


def format_frame(df: pd.DataFrame, digits: int = DIGITS) -> pd.DataFrame:
    """``df`` with every cell as text (:func:`fmt_value`): what a table shows or exports."""
    return pd.DataFrame(
        {c: [fmt_value(v, digits) for v in df[c].tolist()] for c in df.columns}, index=df.index
    )


def text_table(df: pd.DataFrame, digits: int = DIGITS, max_width: int = 48) -> str:
    """``df`` as an aligned plain-text table (header, rule, rows), cells cut at ``max_width``
    characters: what the command line prints."""
    cells = format_frame(df, digits)
    cols = [str(c) for c in df.columns]

    def cut(s: str) -> str:
        s = s.replace("\n", "↵")
        return s if len(s) <= max_width else s[: max_width - 1] + "…"

    rows = [[cut(str(v)) for v in r] for r in cells.itertuples(index=False)]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line.rstrip(), rule] + [b.rstrip() for b in body])
