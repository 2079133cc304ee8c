"""Cards a reader can use, from planted numbers: the first line names the behaviour and its
rates, always-on latents are marked and grouped apart, noise is labelled unclear, per-latent
effects come with their interval or not at all, and the page is full width."""

from __future__ import annotations

import re

import pandas as pd

from saelora_core.analysis.behaviour import wilson_interval
from saelora_core.analysis.card import AdapterCard, CardLatent, is_always_on, is_noise
from saelora_core.analysis.card_render import card_html, card_markdown
from saelora_core.analysis.faithfulness import Faithfulness

INFO = {
    "rank": 4, "s": [2.931234, 1.0], "distinct_read": 16, "distinct_write": 16,
    "preset": "gemma-3-270m", "sae": "data/saes/x", "layer": 12,
    "guideline": "respond in French", "detector": "french",
}  # fmt: skip


def latent(side, lat, weight, fire_in, fire_off, label, always_on=False):
    return CardLatent(side, lat, weight, 0.25, fire_in, fire_off, label, "rule",
                      ["la", "le"], ["the"], always_on=always_on)  # fmt: skip


def faithfulness(per_latent_prompts: int) -> Faithfulness:
    table = pd.DataFrame(
        [
            ["adapter", "described adapter", 16, 16, 0.55, 0.0125, 0.5375, "adapter", 1.0, 1.0, 1.0],
            ["random control", "same count", 16, 16, 0.0, float("nan"), 0.0, "adapter", 0.0, 0.0, 0.0],
        ],
        columns=["check", "adapter", "read", "write", "in_topic", "off_topic", "effect",
                 "compared_to", "retained", "ci_low", "ci_high"],
    )  # fmt: skip
    per = pd.DataFrame(
        [
            ["read", 101, 0.2, -0.35, -0.5, -0.2, 0.6363636],
            ["write", 778, 0.5, -0.05, -0.15, 0.05, 0.0909],
        ],
        columns=["side", "latent", "in_topic_without", "effect_change", "ci_low", "ci_high",
                 "share"],
    )  # fmt: skip
    settings = {
        "prompts_in_topic": 80, "prompts_off_topic": 80, "max_new_tokens": 32,
        "per_latent_prompts": per_latent_prompts, "per_latent_tokens": 16,
        "per_latent_full_effect": 0.55, "mode": "resid_add", "seed": 0,
    }  # fmt: skip
    return Faithfulness(table, per, settings)


def card(per_latent_prompts: int = 40) -> AdapterCard:
    reads = [
        latent("read", 101, 0.9, 0.30, 0.02, 'fires on "solve", "equation"'),
        latent("read", 7, 0.5, 0.95, 0.91, "unclear (always on)", always_on=True),
    ]
    writes = [
        latent("write", 778, 1.2, 0.22, 0.01, 'promotes "la", "le"'),
        latent("write", 12, -0.4, 0.1, 0.1, "unclear (fires on whitespace or punctuation only)"),
        latent("write", 9, 0.3, 0.88, 0.79, "unclear (always on)", always_on=True),
    ]
    return AdapterCard("demo", dict(INFO), reads, writes, faithfulness(per_latent_prompts))


def test_first_line_names_the_behaviour_and_its_rates():
    low, high = wilson_interval(44, 80)
    line = card().first_line
    assert line.startswith(
        f'Behaviour "respond in French" (detector french): in-topic 0.55 [{low:.2f}, {high:.2f}] '
        "vs base 0.01; off-topic 0.01 (n = 80 + 80 fresh prompts). "
    )
    assert "Faithful" in line or "NOT FAITHFUL" in line


def test_always_on_latents_are_marked_and_grouped_after_the_selective_ones():
    md = card_markdown(card())
    reads = md.split("## Read latents")[1].split("## Write latents")[0]
    assert reads.index("| 101 |") < reads.index("**Always on (1)") < reads.index("| 7 |")
    assert "unclear (always on) (rule) · always on" in reads
    html = card_html(card())
    assert html.index(">101<") < html.index("Always on (1)") < html.index(">7<")


def test_summary_is_sentences_grouped_by_reads_then_writes():
    s = card().summary
    assert s.startswith('It reads 1 selective latent: 101 (fires on "solve", "equation").')
    assert "1 read latent is always on" in s
    assert 'It raises 1: 778 (promotes "la", "le").' in s
    assert "1 write latent is unclear: 12." in s and "1 write latent is always on" in s
    assert s.index("reads") < s.index("raises") and s.endswith("Scale s = 2.93, 1.")


def test_per_latent_effects_carry_their_interval_and_share_only_when_it_excludes_zero():
    md = card_markdown(card())
    assert "| read | 101 | 0.20 | -0.35 [-0.5, -0.2] | 64 % |" in md
    assert "| write | 778 | 0.50 | -0.05 [-0.15, +0.05] | — |" in md  # CI spans 0: no share


def test_per_latent_effects_are_omitted_on_too_few_prompts():
    md = card_markdown(card(per_latent_prompts=10))
    assert "Per-latent effects are left out: they were measured on 10 in-topic prompts" in md
    assert "| read | 101 |" not in md


def test_old_results_without_intervals_show_no_share():
    c = card()
    assert c.faithfulness is not None
    c.faithfulness.per_latent = c.faithfulness.per_latent.drop(columns=["ci_low", "ci_high"])
    md = card_markdown(c)
    assert "| read | 101 | 0.20 | -0.35 [interval not measured] | — |" in md


def test_card_is_full_width_and_has_no_raw_values():
    html = card_html(card())
    assert "max-width" not in html and "width:100%" in html
    md = card_markdown(card())
    assert "[2.931234" not in md and "s = 2.931, 1" in md
    assert "nan" not in md.lower()
    for number in re.findall(r"\d+\.\d+", md):
        assert len(number.replace(".", "").lstrip("0")) <= 4, number


def test_always_on_and_noise_rules():
    assert is_always_on(0.78, 0.95) and not is_always_on(0.9, 0.2)
    assert not is_always_on(float("nan"), 0.9)
    assert is_noise([" ", ",", "\n"], always_on=False)
    assert is_noise(["solve"], always_on=True)
    assert not is_noise(["solve", " "], always_on=False)
    assert is_noise([], always_on=False)


def test_card_fragment_is_the_page_body(tmp_path):
    from saelora_core.analysis.card_render import card_fragment, write_card

    write_card(card(), tmp_path)
    frag = card_fragment(tmp_path)
    assert frag.startswith("<div class='saelora-card'>") and frag.endswith("</div>")
    assert "<body" not in frag and "Always on (1)" in frag
