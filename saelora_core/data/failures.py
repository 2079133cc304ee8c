"""Failed requests: what each was, and one sentence that says what happened and what to check.

A run that cannot build its dataset ends with a message such as
"64 of 64 requests failed at http://127.0.0.1:9/v1: 64 x connection error (connection refused).
Is the server running, and is --base-url right? Each failure is listed in <dir>/failure.json."
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FailedRow:
    """A row whose classification or rewrite failed, and why."""

    id: str
    task: str
    reason: str


_ATTEMPTS = re.compile(r",? (gave up )?after \d+ attempts")

#: What to check, by the start of the most common failure reason.
HINTS: tuple[tuple[str, str], ...] = (
    ("connection error", "Is the server running, and is --base-url right?"),
    ("timeout", "The server is slow: raise --timeout or lower --concurrency."),
    ("HTTP 429", "The server is rate-limiting: lower --concurrency, or wait and re-run."),
    ("HTTP 400", "The server rejected the request: check --model, and try --no-json-mode if "
     "the server does not support response_format."),
    ("HTTP 5", "The server is failing: re-run later (answers so far are cached)."),
    ("invalid answer", "The model does not answer in the expected JSON: try another --model "
     "or --no-json-mode."),
)  # fmt: skip


def failure_reasons(failed: list[FailedRow]) -> Counter[str]:
    """Failures counted by reason, without the per-request attempt counts
    ("HTTP 500, gave up after 4 attempts" counts as "HTTP 500")."""
    return Counter(_ATTEMPTS.sub("", f.reason) for f in failed)


def failure_note(failed: list[FailedRow], succeeded: int, where: str, report: Path) -> str:
    """ "<failed> of <asked> requests failed at <where>: <count> x <reason>; .... <hint> Each
    failure is listed in <report>." (at most three reasons, the most common first); only the
    pointer to `report` when nothing failed."""
    if not failed:
        return f"Counts are in {report}."
    reasons = failure_reasons(failed).most_common()
    listed = "; ".join(f"{count} x {reason}" for reason, count in reasons[:3])
    if len(reasons) > 3:
        listed += f"; {len(reasons) - 3} other reasons"
    hint = next((h for prefix, h in HINTS if reasons[0][0].startswith(prefix)), "")
    text = f"{len(failed)} of {len(failed) + succeeded} requests failed at {where}: {listed}."
    return f"{text} {hint} Each failure is listed in {report}.".replace("  ", " ")
