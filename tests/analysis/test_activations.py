"""Latent activations, max-activating examples and dashboards on the tiny model."""

import pytest
import torch

from saelora_core.analysis import (
    latent_activations,
    latent_dashboard,
    load_texts,
    max_activating_examples,
)

ROWS = [
    {"prompt": "What is 2+2?", "response": "Four.", "in_topic": True},
    {"prompt": "Say hi", "response": "Hi there!", "in_topic": False},
    {"prompt": "", "response": "skipped", "in_topic": False},
]


def test_load_texts(tiny_mas):
    texts = load_texts(tiny_mas, ROWS)
    assert texts == [
        "Question: What is 2+2?\nAnswer: Four.<eos>",
        "Question: Say hi\nAnswer: Hi there!<eos>",
    ]
    assert load_texts(tiny_mas, ROWS, n=1) == texts[:1]


@torch.no_grad()
def test_latent_activations_match_sae(tiny_mas):
    texts = load_texts(tiny_mas, ROWS)
    acts = latent_activations(tiny_mas, texts, latents=[3, 17])
    ids = tiny_mas.model.to_tokens(texts[1])[0]
    _, cache = tiny_mas.model.run_with_cache(ids[None], names_filter=tiny_mas.hook_name)
    z = tiny_mas.sae.encode(cache[tiny_mas.hook_name][0])
    assert acts[1].tokens[-1] == "<eos>" and len(acts[1].tokens) == len(ids) - 1
    assert torch.allclose(acts[1].acts, z[1:, [3, 17]], atol=1e-5)
    assert torch.equal(acts[1].column(17), acts[1].acts[:, 1])


def test_max_activating_examples(tiny_mas):
    texts = load_texts(tiny_mas, ROWS)
    all_acts = latent_activations(tiny_mas, texts)
    latent = int(torch.cat([a.acts for a in all_acts]).amax(0).argmax())
    df = max_activating_examples(tiny_mas, latent, texts, k=5, window=3)
    assert list(df.columns) == [
        "text_idx",
        "pos",
        "activation",
        "token",
        "context_html",
        "context_text",
    ]
    assert 1 <= len(df) <= 2 and df["activation"].is_monotonic_decreasing
    top = df.iloc[0]
    col = all_acts[top["text_idx"]].column(latent)
    assert top["activation"] == pytest.approx(float(col.max()))
    assert all_acts[top["text_idx"]].tokens[top["pos"] - 1] == top["token"]
    assert "<mark>" in top["context_html"] and f"«{top['token']}»" in top["context_text"]
    many = max_activating_examples(tiny_mas, latent, texts, k=50, one_per_text=False)
    assert len(many) == sum(int((a.column(latent) > 0).sum()) for a in all_acts)


def test_latent_dashboard(tiny_mas):
    texts = load_texts(tiny_mas, ROWS)
    d = latent_dashboard(tiny_mas, 5, texts, k=3)
    assert d.latent == 5 and len(d.top_logits) == 10 and len(d.bottom_logits) == 10
    assert d.top_logits["score"].is_monotonic_decreasing
    assert d.histogram.layout.title.text.startswith("Latent 5")
    assert 'data-latent="5"' in d.html and "Latent 5" in d.html and "<script" not in d.html
    assert 0 <= d.density <= 1


def test_sae_latents_are_cached_per_token_sequence(tiny_mas):
    """Another adapter's feature table on the same texts runs no forward pass: the frozen
    model's latents are kept per token sequence (and equal a fresh computation)."""
    from saelora_core.analysis.activations import sae_latents

    ids = torch.tensor([1, 10, 11, 12, 13])
    first = sae_latents(tiny_mas, ids)
    calls = []
    handle = tiny_mas.model.blocks[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        again = sae_latents(tiny_mas, ids)
    finally:
        handle.remove()
    assert calls == [] and torch.equal(first, again)
    resid = tiny_mas.model(ids[None], stop_at_layer=tiny_mas.layer + 1)
    torch.testing.assert_close(again, tiny_mas.sae.encode(resid)[0])
