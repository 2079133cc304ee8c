"""Edge sufficiency and necessity on a planted two-edge adapter recover the planted edge: one
edge reads a latent the prompts fire and writes the behaviour, the other, of the same weight,
reads a latent they never fire."""

from __future__ import annotations

import pytest
import torch

from saelora_core import SaeLora
from saelora_core.analysis.edges import (
    Edge,
    check_edges,
    edges_markdown,
    single_edge,
    top_edges,
    without_edge,
)
from saelora_core.testing import tiny_model_and_sae

PROMPTS = ["What is 2+2?", "Solve x+1=3", "What is 7*8?", "Compute 9-4", "Is 13 prime?"]
ROWS = [{"prompt": p, "in_topic": True} for p in PROMPTS]


def planted() -> SaeLora:
    lora = SaeLora(64, 2, init="zeros")
    with torch.no_grad():
        lora.a[29, 0], lora.b[0, 20], lora.s[0] = 1.0, 1.0, 30.0  # fires on the prompts
        lora.a[18, 1], lora.b[1, 40], lora.s[1] = 1.0, 1.0, -30.0  # 18 never fires on them
    return lora


def test_edge_adapters_are_exact():
    lora = planted()
    z = torch.rand(3, 64)
    e = Edge(29, 20, 30.0)
    assert top_edges(lora) == [Edge(18, 40, -30.0), Edge(29, 20, 30.0)]
    dz_edge = torch.zeros_like(z)
    dz_edge[:, 20] = z[:, 29] * 30.0
    assert torch.allclose(single_edge(64, e).delta(z), dz_edge)
    assert torch.allclose(without_edge(lora, e).delta(z), lora.delta(z) - dz_edge, atol=1e-5)
    with pytest.raises(ValueError, match="at most 16"):
        check_edges(tiny_model_and_sae(), SaeLora(64, 1), ROWS)  # dense: 64 + 64 latents


def test_edge_checks_recover_the_planted_edge(tiny_mas):
    checks = check_edges(
        tiny_mas, planted(), ROWS, detector=lambda t: t.startswith("p"), max_new_tokens=4
    )
    assert checks.settings["full_effect"] == 1.0 and checks.settings["base_rate"] == 0.0
    t = checks.table.set_index(["read", "write"])
    live, dead = t.loc[(29, 20)], t.loc[(18, 40)]
    assert live["sufficiency"] == 1.0 and live["sufficiency_share"] == 1.0
    assert live["necessity_change"] == -1.0 and live["necessity_share"] == 1.0
    assert dead["sufficiency"] == 0.0 and dead["necessity_change"] == 0.0
    # Removing a random other edge (here: the dead one) costs nothing.
    assert live["random_necessity_change"] == 0.0
    md = edges_markdown(checks)
    assert "| 29 → 20 | +30 | +1.00 (100%)" in md


def test_the_card_shows_its_edges(tiny_mas):
    from saelora_core.analysis.card import build_card
    from saelora_core.analysis.card_render import card_html, card_markdown

    lora = planted()
    card = build_card(
        tiny_mas, lora, name="planted", in_prompts=PROMPTS, off_prompts=["Say hi"], texts=[]
    )
    assert "Edges" not in card_markdown(card)
    card.edges = check_edges(
        tiny_mas, lora, ROWS, detector=lambda t: t.startswith("p"), max_new_tokens=4, n_edges=1
    )
    assert "## Edges (read → write)" in card_markdown(card)
    assert "| 18 → 40 | -30 |" in card_markdown(card)
    assert "<h2>Edges (read → write)</h2>" in card_html(card)
    assert card.to_dict()["edges"]["table"][0]["read"] == 18
