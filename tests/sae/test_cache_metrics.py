"""Reconstruction metrics read from an activation cache equal the same metrics computed on the
model's activations directly."""

import json

import pytest
import torch

from saelora_core.sae.activation_cache import (
    cache_activations,
    corpus_texts,
    stream_activations,
    token_windows,
)
from saelora_core.sae.cache_metrics import cache_metrics
from saelora_core.sae.cached_batches import special_token_ids
from tests.sae.test_activation_cache import TEXTS, settings_for


def test_cache_metrics_match_a_direct_computation(tiny_mas, tmp_path):
    corpus = tmp_path / "heldout.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    cache = cache_activations(
        tiny_mas.model, corpus, tmp_path / "c", settings_for(tiny_mas, corpus), progress=False
    )
    ids = special_token_ids(tiny_mas.tokenizer)
    got = cache_metrics(tiny_mas.sae, cache, exclude_ids=ids, batch_tokens=64)

    tok = tiny_mas.tokenizer
    wins = list(token_windows(corpus_texts(corpus), tok, 32, tok.bos_token_id))[:64]
    acts = torch.cat(
        [a for _, a in stream_activations(tiny_mas.model, iter(wins), tiny_mas.hook_name, 1, 16)]
    )
    keep = ~torch.isin(torch.tensor(wins).reshape(-1), torch.tensor(sorted(ids)))
    x = acts.reshape(-1, acts.shape[-1])[keep]
    x = x[: (x.shape[0] // 64) * 64]  # the last partial batch is not read
    with torch.no_grad():
        z = tiny_mas.sae.encode(x)
        x_hat = tiny_mas.sae.decode(z)
    ev = 1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert got.tokens == x.shape[0]
    assert got.explained_variance == pytest.approx(ev.item(), abs=1e-4)
    assert got.mean_l0 == pytest.approx((z > 0).sum(1).float().mean().item(), rel=1e-6)
    assert got.dead_fraction == pytest.approx(((z > 0).sum(0) == 0).float().mean().item())
    assert got.fire_count_quantiles["50%"] == pytest.approx(
        torch.quantile((z > 0).sum(0).double(), 0.5).item()
    )
