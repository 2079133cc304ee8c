"""Run a bench on an earlier revision and on the working tree, one after the other, and print the
ratio of every throughput it reports: a speed-up measured side by side on one machine in one run.

The earlier revision is checked out with ``git worktree`` into a temporary directory and its own
copy of the bench runs against its own ``saelora_core`` (checked: the import must resolve inside
the worktree), with the same arguments. Then the working tree's bench runs. Both write JSON
(``--json``); rows are matched on their text and boolean fields (``dtype``, ``path``, ...), and
every numeric field whose name ends in ``per_s`` gets ``new / old``.

Usage:
    python bench/against.py REV [--json out.json] -- bench/train_throughput.py --paths batched
    python bench/against.py d60b6bb --repeat 3 -- bench/train_throughput.py --dtypes bfloat16

The runs never overlap (two torch processes at once slow each other down many times). A shared
machine's speed drifts by about 10 % from minute to minute; ``--repeat N`` alternates old and new
N times and reports the median of the N pairs' ratios, with each pair's ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from saelora_core.io.atomic import atomic_write_json
from saelora_core.io.paths import REPO_ROOT

RUNNER = """
import runpy, sys
root, script, *args = sys.argv[1:]
sys.path.insert(0, root)
import saelora_core
if not saelora_core.__file__.startswith(root):
    raise SystemExit(f"saelora_core resolved to {saelora_core.__file__}, outside {root}")
sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
"""


def run_bench(root: Path, script: str, args: list[str], out: Path) -> dict:
    """The bench ``script`` of the tree at ``root`` with ``args --json out``; its JSON."""
    cmd = [sys.executable, "-c", RUNNER, str(root), str(root / script), *args, "--json", str(out)]
    print(f"== {root}: {script} {' '.join(args)}", flush=True)
    subprocess.run(cmd, cwd=root, check=True, env={**os.environ, "PYTHONPATH": str(root)})
    return json.loads(out.read_text())


def row_key(row: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in row.items() if isinstance(v, (str, bool))))


def compare(old: dict, new: dict) -> list[dict]:
    """One entry per row of ``new`` that ``old`` also has: its key fields, and ``new / old``
    for each ``*per_s`` field."""
    before = {row_key(r): r for r in old.get("rows", [])}
    out = []
    for r in new.get("rows", []):
        o = before.get(row_key(r))
        if o is None:
            continue
        entry = dict(row_key(r))
        for k, v in r.items():
            if k.endswith("per_s") and isinstance(v, (int, float)) and o.get(k):
                entry[f"{k}_old"], entry[f"{k}_new"] = o[k], v
                entry[f"{k}_ratio"] = v / o[k]
        out.append(entry)
    return out


def median_rows(runs: list[list[dict]]) -> list[dict]:
    """The rows of several :func:`compare` runs merged: each ``*_old``, ``*_new`` and
    ``*_ratio`` the median over the runs (the ratio is the median of the pairs' ratios, which
    ``*_ratios`` lists)."""
    merged: dict[tuple, dict] = {}
    for rows in runs:
        for r in rows:
            m = merged.setdefault(row_key(r), {k: v for k, v in r.items() if not is_num(v)})
            for k, v in r.items():
                if is_num(v):
                    m.setdefault(k + "_all", []).append(v)
    out = []
    for m in merged.values():
        for k in [k for k in m if k.endswith("_all")]:
            vals = m.pop(k)
            m[k[: -len("_all")]] = statistics.median(vals)
            if k.endswith("_ratio_all"):
                m[k[: -len("_all")] + "s"] = vals
        out.append(m)
    return out


def is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def main() -> None:
    argv = sys.argv[1:]
    if "--" not in argv:
        raise SystemExit("usage: bench/against.py REV [--json out.json] -- SCRIPT [ARGS...]")
    cut = argv.index("--")
    ap = argparse.ArgumentParser()
    ap.add_argument("rev", help="the earlier revision (a commit, tag or branch)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="old and new alternate this many times; the median of the pairs' ratios is printed",
    )
    args = ap.parse_args(argv[:cut])
    script, *bench_args = argv[cut + 1 :]
    if "--json" in bench_args:
        raise SystemExit("give --json before '--': this script passes one to each bench run")
    sha = subprocess.run(
        ["git", "rev-parse", "--verify", f"{args.rev}^{{commit}}"],
        cwd=REPO_ROOT, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        wt = Path(tmp) / "old"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(wt), sha], cwd=REPO_ROOT, check=True
        )
        try:
            if not (wt / script).exists():
                raise SystemExit(f"{script} does not exist at {args.rev}")
            for i in range(args.repeat):  # old, new, old, new, ...: drift hits both alike
                old = run_bench(wt, script, bench_args, Path(tmp) / f"old{i}.json")
                new = run_bench(REPO_ROOT, script, bench_args, Path(tmp) / f"new{i}.json")
                pairs.append({"old": old, "new": new, "rows": compare(old, new)})
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(wt)], cwd=REPO_ROOT)
    rows = median_rows([p["rows"] for p in pairs])
    many = args.repeat > 1
    print(
        f"\n{script}: working tree against {args.rev} ({sha[:10]}), measured one after the other"
        + (f"; {args.repeat} pairs, medians (each pair's ratio in brackets)" if many else "")
    )
    for r in rows:
        keys = ", ".join(f"{k}={v}" for k, v in r.items() if isinstance(v, (str, bool)))
        for k in [k[: -len("_ratio")] for k in r if k.endswith("_ratio")]:
            each = ", ".join(f"{x:.2f}" for x in r[k + "_ratios"])
            print(
                f"  {keys}: {k} {r[k + '_old']:.1f} -> {r[k + '_new']:.1f} "
                f"({r[k + '_ratio']:.2f}x)" + (f" [{each}]" if many else "")
            )
    if args.json:
        atomic_write_json(
            args.json,
            {"script": script, "args": bench_args, "rev": args.rev, "commit": sha,
             "repeat": args.repeat, "rows": rows, "pairs": pairs},
        )  # fmt: skip


if __name__ == "__main__":
    main()
