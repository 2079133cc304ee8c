"""The near-miss prompts: enough of them, every category, no duplicates, and in no dataset split
(the seed files, the held-out prompts, and both demo datasets built from the seed)."""

from __future__ import annotations

import json
from collections import Counter

from saelora_core.compare.prompts import eval_sets, normalize_prompt, overlaps
from saelora_core.data.heldout import NEAR_MISS_CATEGORIES, near_miss_prompts, read_jsonl
from saelora_core.demo.behaviours import DEMO_BEHAVIOURS, build_demo_dataset
from saelora_core.io.paths import REPO_ROOT


def test_near_miss_set_shape():
    rows = near_miss_prompts()
    assert len(rows) >= 80
    counts = Counter(r["category"] for r in rows)
    assert set(counts) == set(NEAR_MISS_CATEGORIES)
    assert min(counts.values()) >= 8
    assert len({normalize_prompt(r["prompt"]) for r in rows}) == len(rows)
    raw = read_jsonl(REPO_ROOT / "data" / "heldout" / "near_miss.jsonl")
    assert len({r["id"] for r in raw}) == len(raw)
    upper = [r["prompt"] for r in rows if r["category"] == "uppercase_non_math"]
    assert all(p == p.upper() for p in upper)


def test_near_miss_set_is_disjoint_from_every_split(tmp_path):
    near = [r["prompt"] for r in near_miss_prompts()]
    others: dict[str, list[str]] = {}
    for f in sorted((REPO_ROOT / "data" / "seed").glob("*.jsonl")):
        others[f"seed/{f.name}"] = [r["prompt"] for r in read_jsonl(f)]
    held = read_jsonl(REPO_ROOT / "data" / "heldout" / "prompts.jsonl")
    others["heldout/prompts.jsonl"] = [r["prompt"] for r in held]
    for b in DEMO_BEHAVIOURS:
        built = build_demo_dataset(b, out=tmp_path)
        for split, ds in built.dataset.items():
            others[f"{b.name}/{split}"] = list(ds["prompt"])
    assert sum(len(v) for v in others.values()) > 500
    assert overlaps(near, others) == {}
    # The check itself finds a planted clash, whatever its case and punctuation.
    planted = others | {"planted": ["who painted the mona lisa"]}
    assert overlaps(near, planted) == {"planted": ["WHO PAINTED THE MONA LISA?"]}


def test_eval_sets_order_and_round_robin():
    rows = eval_sets(max_prompts=9)
    splits = [r["split"] for r in rows]
    assert splits == ["in_topic"] * 9 + ["near_miss"] * 9 + ["off_topic"] * 9
    near = [r for r in rows if r["split"] == "near_miss"]
    assert {r["category"] for r in near} == set(NEAR_MISS_CATEGORIES)
    full = eval_sets()
    assert Counter(r["split"] for r in full) == {"in_topic": 80, "near_miss": 96, "off_topic": 80}
    json.dumps(full)  # plain JSON rows
