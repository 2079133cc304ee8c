"""The pruning sweep: variants built as the notebook and the study expect, base answers shared."""

import torch

from saelora_core import SaeLora, prune_topk, random_support_control
from saelora_core.analysis.prune_sweep import FULL, prune_variants, score_variants


def _lora() -> SaeLora:
    lora = SaeLora(64, 1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora.s.fill_(1.5)
    return lora


def test_variants_are_topk_and_same_l0_controls():
    lora = _lora()
    variants = prune_variants(lora, [4, 1], lambda k: torch.Generator().manual_seed(k))
    assert [(v.kind, v.k) for v in variants] == [
        (FULL, 64),
        ("top-k", 1),
        ("random control", 1),
        ("top-k", 4),
        ("random control", 4),
    ]
    assert variants[0].lora is lora
    for v in variants[1:]:
        assert v.lora.l0() == ([v.k], [v.k])
    assert torch.equal(variants[3].lora.a, prune_topk(lora, 4).lora.a)
    want = random_support_control(lora, 4, torch.Generator().manual_seed(4))
    assert torch.equal(variants[4].lora.a, want.a)


def test_one_shared_generator_draws_every_control_in_order():
    lora = _lora()
    g = torch.Generator().manual_seed(7)
    variants = prune_variants(lora, [1, 2], lambda k: g, include_full=False)
    g2 = torch.Generator().manual_seed(7)
    first = random_support_control(lora, 1, g2)
    second = random_support_control(lora, 2, g2)
    assert torch.equal(variants[1].lora.a, first.a) and torch.equal(variants[3].lora.a, second.a)


def test_scores_share_the_base_answers(tiny_mas):
    rows = [{"prompt": "What is 2 plus 2?", "in_topic": True}, {"prompt": "Hi", "in_topic": False}]
    variants = prune_variants(_lora(), [1], lambda k: torch.Generator().manual_seed(k))
    seen = []
    table = score_variants(
        tiny_mas,
        variants,
        rows,
        extra=lambda v, res: seen.append(res) or {"n": len(res.samples)},
        detector="uppercase",
        max_new_tokens=3,
    )
    assert table["kind"].tolist() == [FULL, "top-k", "random control"]
    assert table["k"].tolist() == [64, 1, 1] and table["n"].tolist() == [2, 2, 2]
    base = [r.samples["base"].tolist() for r in seen]
    assert base[0] == base[1] == base[2]
