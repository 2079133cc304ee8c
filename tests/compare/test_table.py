"""The comparison end to end on the tiny Gemma-3 twin: every kind of row, the numbers in the
table recomputed from the kept answers, the cache (a re-run generates nothing, a new row only
its own answers), the files, the capability cost, and the Pareto figure."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from saelora_core import SaeLora
from saelora_core.compare.capability import capability_cost, general_texts
from saelora_core.compare.edits import Edit, RowSpec, load_edit
from saelora_core.compare.peft_lora import PeftLoraConfig, train_peft_lora
from saelora_core.compare.run import CompareSettings, effect_interval, run_compare
from saelora_core.compare.table import pareto_figure, read_outputs, write_outputs
from saelora_core.demo.behaviours import UPPERCASE
from saelora_core.testing import save_planted_adapter
from saelora_core.training.steer import ResidSteer, save_steer
from tests.compare.compare_helpers import ROWS, tiny_pair

EVAL = [
    {"prompt": "What is 2+2?", "split": "in_topic", "category": "in_topic", "in_topic": True},
    {"prompt": "Solve x+3=5", "split": "in_topic", "category": "in_topic", "in_topic": True},
    {"prompt": "WHY DO CATS PURR?", "split": "near_miss", "category": "uppercase_non_math"},
    {"prompt": "Price of 3 apples?", "split": "near_miss", "category": "money"},
    {"prompt": "Name a dog", "split": "off_topic", "category": "off_topic", "in_topic": False},
    {"prompt": "Pick a colour", "split": "off_topic", "category": "off_topic"},
]
TEXTS = [
    {"text": "The river runs to the sea.", "genre": "prose"},
    {"text": "SELECT name FROM users;", "genre": "sql"},
    {"text": "Le chat dort sur le lit.", "genre": "french"},
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    hf, tok, mas = tiny_pair()
    lora_dir = tmp / "latent"
    save_planted_adapter(mas, lora_dir)
    steer = ResidSteer(mas.model.cfg.d_model, 2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        steer.V.normal_(0, 0.5)
        steer.c.fill_(1.0)
    save_steer(steer, tmp / "steer", {"config": {}, "complete": True})
    train_peft_lora(
        hf, tok, {"train": ROWS}, PeftLoraConfig(rank=1, epochs=1, lr=0.05),
        out_dir=tmp / "peft", layer=mas.layer, progress=False,
    )  # fmt: skip
    specs = [
        RowSpec("base", "base"),
        RowSpec("prompt baseline", "prompt"),
        RowSpec("latent", "latent", str(lora_dir)),
        RowSpec("steer", "steer", str(tmp / "steer")),
        RowSpec("peft r1", "peft", str(tmp / "peft")),
    ]
    return tmp, mas, specs


def test_compare_end_to_end(setup):
    tmp, mas, specs = setup
    st = CompareSettings(max_new_tokens=6, n_boot=200)
    kw = dict(cache_dir=tmp / "cache", settings=st, rows=EVAL, texts=TEXTS)
    res = run_compare(mas, specs[:4], UPPERCASE, **kw)
    assert res.settings["generated_answers"] == 4 * len(EVAL)
    t = res.table.set_index("method")
    assert list(t.index) == ["base", "prompt baseline", "latent", "steer"]
    assert t.loc["latent", "trainable_params"] == 2 * 64 + 1
    assert t.loc["latent", "nonzero_params"] == 2 + 2 + 1
    assert t.loc["latent", "distinct_latents"] == "2 + 2"
    assert t.loc["steer", "trainable_params"] == 2 * (2 * 32 + 1)
    assert t.loc["base", "effect"] == 0 and t.loc["base", "effect_high"] == 0
    assert t.loc["prompt baseline", "delta_ce"] == 0 and t.loc["prompt baseline", "kl"] == 0
    assert t.loc["steer", "kl"] > 0
    assert (t["judge"] == "not judged").all()
    # The table's numbers are the kept answers' numbers.
    a = res.answers
    for m in t.index:
        mine = a[a["method"] == m]
        for split in ("in_topic", "near_miss", "off_topic"):
            hits = mine[mine["split"] == split]["hit"]
            assert t.loc[m, split] == pytest.approx(hits.mean())
        base_in = a[(a["method"] == "base") & (a["split"] == "in_topic")]["hit"].to_numpy()
        own_in = mine[mine["split"] == "in_topic"]["hit"].to_numpy()
        assert t.loc[m, "effect"] == pytest.approx(own_in.mean() - base_in.mean())
        assert t.loc[m, "repetition"] == pytest.approx(
            mine[mine["split"] == "in_topic"]["loops"].mean()
        )
    # The prompt baseline answered the instructed prompts, the others the plain ones.
    assert (a["prompt"].str.contains("If this question").sum()) == 0
    nm = res.near_miss
    assert set(nm["category"]) == {"uppercase_non_math", "money"}
    cap = res.capability
    assert set(cap[cap["method"] == "steer"]["genre"]) == {"prose", "sql", "french", "all"}

    # A re-run generates nothing; a new row generates only its own answers.
    again = run_compare(mas, specs[:4], UPPERCASE, **kw)
    assert again.settings["generated_answers"] == 0
    pd.testing.assert_frame_equal(again.table, res.table)
    more = run_compare(mas, specs, UPPERCASE, **kw)
    assert more.settings["generated_answers"] == len(EVAL)
    t = more.table.set_index("method")
    assert t.loc["peft r1", "trainable_params"] == 688
    assert t.loc["peft r1", "distinct_latents"] == "–"

    files = write_outputs(more, tmp / "out")
    names = {f.name for f in files}
    assert {"table.csv", "table.md", "table.html", "answers.csv.gz", "compare.json"} <= names
    md = (tmp / "out" / "table.md").read_text()
    assert "| peft r1 | 688 |" in md and "not judged" in md
    html = (tmp / "out" / "table.html").read_text()
    assert "<script" not in html and "Every hit" in html
    back = read_outputs(tmp / "out")
    assert list(back.table["method"]) == list(more.table["method"])
    assert back.table["effect"].tolist() == pytest.approx(more.table["effect"].tolist())
    assert len(back.answers) == len(more.answers) and back.settings == json.loads(
        json.dumps(more.settings, default=str)
    )
    with pytest.raises(FileNotFoundError, match="saelora compare"):
        read_outputs(tmp / "nothing-here")
    fig = pareto_figure(more.table)
    assert list(fig.data[0].text) == ["latent", "steer", "peft r1"]
    fig = pareto_figure(more.table, x="n_latents")
    assert list(fig.data[0].text) == ["latent"]


def test_capability_cost_is_zero_for_a_no_op_and_matches_a_direct_computation(setup):
    _, mas, specs = setup
    noop = Edit("s=0", "latent", adapter=SaeLora(mas.sae.cfg.d_sae, 1))
    cap = capability_cost(mas, noop, TEXTS).set_index("genre")
    assert (cap["kl"] == 0).all() and (cap["delta_ce"] == 0).all()
    edit = load_edit(specs[3], mas)
    cap = capability_cost(mas, edit, TEXTS[:1]).set_index("genre")
    toks = mas.model.to_tokens(TEXTS[0]["text"])
    with torch.no_grad():
        lp = torch.log_softmax(mas.model(toks)[0], -1)
        with edit.attached(mas):
            lq = torch.log_softmax(mas.model(toks)[0], -1)
    y = toks[0, 2:]
    ce_b = -lp[1:-1].gather(-1, y[:, None]).mean()
    ce_e = -lq[1:-1].gather(-1, y[:, None]).mean()
    kl = (lp[1:-1].exp() * (lp[1:-1] - lq[1:-1])).sum(-1).mean()
    assert cap.loc["prose", "n_tokens"] == toks.shape[1] - 2
    assert cap.loc["prose", "delta_ce"] == pytest.approx(float(ce_e - ce_b), abs=1e-5)
    assert cap.loc["all", "kl"] == pytest.approx(float(kl), abs=1e-5)
    rows = general_texts(max_per_genre=1)
    assert len(rows) == 10 and len({r["genre"] for r in rows}) == 10


def test_corpus_sample_is_spread_through_the_file(tmp_path):
    corpus = tmp_path / "heldout.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(10)))
    rows = general_texts(corpus_heldout=corpus, max_per_genre=4)
    picked = [r["text"] for r in rows if r["genre"] == "corpus"]
    assert picked == ["doc 0", "doc 2", "doc 5", "doc 7"]
    assert len([r for r in rows if r["genre"] != "corpus"]) == 4 * 10


def test_effect_interval_and_row_specs(tmp_path):
    import numpy as np

    e, lo, hi = effect_interval(np.array([1, 1, 0, 1]), np.array([0, 1, 0, 0]), n_boot=500)
    assert e == 0.5 and 0 <= lo <= 0.5 <= hi <= 1
    assert RowSpec.parse("peft LoRA r1=peft:runs/x") == RowSpec("peft LoRA r1", "peft", "runs/x")
    assert RowSpec.parse("base=base") == RowSpec("base", "base")
    assert RowSpec.parse("k=16 student=latent:a:b") == RowSpec("k=16 student", "latent", "a:b")
    with pytest.raises(ValueError, match="NAME=KIND"):
        RowSpec.parse("nonsense")
    with pytest.raises(ValueError, match="unknown kind"):
        RowSpec.parse("x=lora:y")
    with pytest.raises(ValueError, match="needs a path"):
        RowSpec.parse("x=peft")
