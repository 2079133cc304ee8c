"""Adapter cards and their faithfulness checks on the tiny model, with a planted adapter: the
card lists the planted latents, sufficiency and necessity recover them, a wrong listing is
flagged in the card's first line, and the distinct-latent count is what the card lists."""

from __future__ import annotations

import json

import pytest
import torch

from saelora_core import SaeLora
from saelora_core.adapter.generate import generate
from saelora_core.adapter.sparsity import restrict_latents
from saelora_core.analysis.card import build_card
from saelora_core.analysis.card_render import card_html, card_markdown, write_card
from saelora_core.analysis.faithfulness import check_faithfulness, random_latents_control

PROMPTS_IN = ["What is 2+2?", "Compute 3*7", "Solve x+1=3", "What is 10/2?", "Add 5 and 9"]
PROMPTS_OFF = ["Say hi", "Name a colour"]
ROWS = [{"prompt": p, "in_topic": True} for p in PROMPTS_IN] + [
    {"prompt": p, "in_topic": False} for p in PROMPTS_OFF
]
READ, WRITE = [5, 17], [3, 40]


@pytest.fixture(scope="module")
def planted(tiny_mas):
    """A dense adapter whose effect goes through READ -> WRITE; every other latent has a tiny
    weight. Its write makes the tiny model emit ``<unk>``, which the base model never does on
    these prompts, and random latents with the same weights do not: that is the detector."""
    g = torch.Generator().manual_seed(0)
    lora = SaeLora(64, 1, generator=g)
    with torch.no_grad():
        lora.a.copy_(torch.rand(64, 1, generator=g) * 1e-3)
        lora.b.copy_(torch.rand(1, 64, generator=g) * 1e-3)
        lora.a[READ, 0] = 1.0
        lora.b[0, WRITE] = torch.tensor([1.0, -0.8])
        lora.s.fill_(60.0)
    assert not any(
        "<unk>" in t for t in generate(tiny_mas, PROMPTS_IN + PROMPTS_OFF, None, max_new_tokens=4)
    )

    def unk(text: str) -> bool:
        return "<unk>" in text

    return lora, unk


def test_planted_latents_are_read_and_fire(tiny_mas):
    # The planted read latents must fire on the prompts for the plant to act at all.
    from saelora_core.analysis.features import latent_fire_freq

    freq = latent_fire_freq(tiny_mas, PROMPTS_IN, READ)
    assert all(f > 0 for f in freq.values()), freq


def test_sufficiency_and_necessity_recover_the_planted_latents(tiny_mas, planted):
    lora, changed = planted
    kw = dict(detector=changed, max_new_tokens=4, per_latent_prompts=5, per_latent_tokens=4)
    right = check_faithfulness(tiny_mas, lora, ROWS, read=READ, write=WRITE, **kw)
    t = right.table.set_index("check")
    assert t.loc["adapter", "effect"] >= 0.6  # the plant changes most in-topic answers
    assert t.loc["sufficiency", "retained"] >= 0.9
    assert t.loc["random control", "retained"] <= 0.2
    assert right.carries and right.headline.startswith("Faithful")
    # Removing a planted latent alone costs effect; each row names one listed latent.
    assert sorted(right.per_latent["latent"]) == sorted(READ + WRITE)
    assert right.per_latent["effect_change"].min() < 0

    # The sparse student (exactly the planted part) against the dense reference.
    student = restrict_latents(lora, READ, WRITE)
    assert student.distinct_latents() == (READ, WRITE)
    vs_ref = check_faithfulness(
        tiny_mas, student, ROWS, read=READ, write=WRITE, reference=lora, **kw
    )
    r = vs_ref.table.set_index("check")
    assert r.loc["sufficiency (reference)", "retained"] >= 0.9
    assert r.loc["necessity (reference)", "retained"] <= 0.1  # dropping them kills the effect
    assert vs_ref.carries

    # A wrong description is flagged in the first line.
    wrong = check_faithfulness(tiny_mas, lora, ROWS, read=[0, 1], write=[2, 4], **kw)
    assert not wrong.carries and wrong.headline.startswith("NOT FAITHFUL")


def test_card_lists_the_planted_latents_and_counts_distinct_latents(tiny_mas, planted, tmp_path):
    lora, _ = planted
    texts = PROMPTS_IN + PROMPTS_OFF
    card = build_card(
        tiny_mas,
        lora,
        name="planted",
        in_prompts=PROMPTS_IN,
        off_prompts=PROMPTS_OFF,
        texts=texts,
        max_latents=2,
    )
    assert sorted(card.listed[0]) == READ and sorted(card.listed[1]) == WRITE
    assert card.info["distinct_read"] == 64 and card.info["distinct_write"] == 64
    shares = [c.share for c in card.reads]
    assert shares == sorted(shares, reverse=True) and sum(shares) > 0.99

    student = restrict_latents(lora, READ, WRITE)
    scard = build_card(
        tiny_mas,
        student,
        name="student",
        in_prompts=PROMPTS_IN,
        off_prompts=PROMPTS_OFF,
        texts=texts,
    )
    # The count the card states is the number of latents it lists, and the adapter's own.
    assert (scard.info["distinct_read"], scard.info["distinct_write"]) == (2, 2)
    assert (len(scard.reads), len(scard.writes)) == (2, 2)
    md = card_markdown(scard)
    assert "**2 read, 2 write**" in md and md.startswith("**Unchecked")
    assert scard.summary.startswith("It reads 2 selective latents: ")
    assert "5 (" in scard.summary and "17 (" in scard.summary
    assert scard.summary.endswith("Scale s = 60.")  # formatted, not a Python list
    write_sign = {c.latent: c.weight for c in scard.writes}
    assert write_sign[3] * write_sign[40] < 0  # one amplified, one suppressed
    html = card_html(scard)
    assert "<script" not in html and "http" not in html.replace("https://www.neuronpedia", "")
    paths = write_card(scard, tmp_path / "card")
    assert sorted(p.name for p in paths) == ["card.html", "card.json", "card.md"]
    # Deterministic: the same card twice renders the same Markdown.
    again = build_card(
        tiny_mas,
        student,
        name="student",
        in_prompts=PROMPTS_IN,
        off_prompts=PROMPTS_OFF,
        texts=texts,
    )
    assert card_markdown(again) == md


def test_random_latents_control_moves_every_latent_and_keeps_the_weights():
    lora = restrict_latents(SaeLora(64, 2, generator=torch.Generator().manual_seed(1)), READ, WRITE)
    ctrl = random_latents_control(lora, torch.Generator().manual_seed(3))
    r, w = ctrl.distinct_latents()
    assert len(r) == 2 and len(w) == 2
    assert sorted(ctrl.a[ctrl.a.ne(0).any(1)].abs().flatten().tolist()) == pytest.approx(
        sorted(lora.a[lora.a.ne(0).any(1)].abs().flatten().tolist())
    )
    assert torch.equal(ctrl.s, lora.s)


def test_describe_writes_the_card_and_reuses_its_faithfulness(tiny_mas, tmp_path, monkeypatch):
    from saelora_core.analysis.describe import describe
    from saelora_core.cli.app import build_parser
    from saelora_core.testing import save_planted_adapter

    monkeypatch.delenv("SAELORA_LABEL_MODEL", raising=False)
    save_planted_adapter(tiny_mas, tmp_path / "ad")
    kw = dict(
        mas=tiny_mas,
        detector="uppercase",
        max_prompts=2,
        per_latent_prompts=2,
        per_latent_tokens=2,
        progress=False,
    )
    res = describe(tmp_path / "ad", **kw)
    assert sorted(p.name for p in res.files) == ["card.html", "card.json", "card.md"]
    assert res.out_dir == tmp_path / "ad" / "card"
    md = (res.out_dir / "card.md").read_text()
    assert md.startswith(f"**{res.first_line}**") and "**2 read, 2 write**" in md
    assert "## Faithfulness" in md and res.summary in md
    cached = (res.out_dir / "faithfulness.json").stat().st_mtime_ns
    again = describe(tmp_path / "ad", **kw)
    assert again.first_line == res.first_line
    assert (res.out_dir / "faithfulness.json").stat().st_mtime_ns == cached  # not re-run
    # The near-miss rate is measured once, cached, and named in the first line.
    near = json.loads((res.out_dir / "near_miss.json").read_text())["result"]
    assert near["n"] == 96 and set(near["by_category"]) >= {"money", "uppercase_non_math"}
    assert ("Near-miss prompts" in res.first_line) != ("Fires off-topic" in res.first_line)
    assert json.loads((res.out_dir / "card.json").read_text())["near_miss"] == near
    with pytest.raises(ValueError, match="detector"):
        describe(tmp_path / "ad", **(kw | {"detector": None}))
    args = build_parser().parse_args(["describe", "x", "--max-prompts", "3"])
    assert args.func.__name__ == "cmd_describe" and args.max_prompts == 3
