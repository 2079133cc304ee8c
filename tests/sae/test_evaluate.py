"""Splice metrics per genre: exact on a perfect reconstruction, pooled groups equal the whole."""

import math

import torch

from saelora_core.sae.evaluate import evaluate_by_group, windows

ROWS = [
    {"text": "The cat sat on the mat and looked at the door for a while.", "kind": "prose"},
    {"text": "def add(a, b):\n    return a + b  # sum of two numbers", "kind": "code"},
    {"text": "Le chat est sur le tapis et regarde la porte.", "kind": "french"},
    {"text": "SELECT name FROM users WHERE id = 42 ORDER BY name;", "kind": "code"},
]


class Identity:
    """A perfect 'SAE': latents are the activations themselves."""

    def encode(self, x):
        return x

    def decode(self, z):
        return z


def test_perfect_reconstruction_costs_nothing(tiny_mas):
    res = evaluate_by_group(tiny_mas.model, Identity(), tiny_mas.hook_name, ROWS, context_size=16)
    for m in res.values():
        assert m.explained_variance == 1.0
        assert m.ce_increase == 0.0
        assert m.ce_loss_recovered == 1.0


def test_groups_pool_to_the_overall_figures(tiny_mas):
    sae, hook = tiny_mas.sae, tiny_mas.hook_name
    res = evaluate_by_group(tiny_mas.model, sae, hook, ROWS, context_size=16)
    assert set(res) == {"code", "french", "prose", "overall"}
    assert res["overall"].tokens == sum(res[g].tokens for g in ("code", "french", "prose"))
    # the pooled EV, computed directly over every non-BOS activation
    xs, losses = [], []
    for row in ROWS:
        for w in windows(tiny_mas.model, row["text"], 16):
            _, cache = tiny_mas.model.run_with_cache(w, names_filter=hook)
            xs.append(cache[hook][0, 1:])
            per_token = tiny_mas.model(w, return_type="loss", loss_per_token=True)[0]
            losses.append(per_token[1:])  # the prediction made at BOS is not counted
    x = torch.cat(xs)
    x_hat = sae.decode(sae.encode(x))
    ev = 1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert math.isclose(res["overall"].explained_variance, ev.item(), rel_tol=1e-4)
    assert math.isclose(res["overall"].ce_clean, torch.cat(losses).mean().item(), rel_tol=1e-5)
    assert res["overall"].ce_with_sae != res["overall"].ce_clean  # the splice changes the model
    assert 0 <= res["overall"].dead_fraction < 1
