"""The dense residual-stream baseline (training/steer.py) on the tiny model."""

import datasets
import torch

from saelora_core.adapter.generate import generate
from saelora_core.adapter.hooks import attach_lora
from saelora_core.testing import TINY_ROWS
from saelora_core.training.steer import (
    ResidSteer,
    SteerConfig,
    load_steer,
    rank_for_params,
    train_steer,
)


def test_rank_matches_the_parameter_budget_of_a_rank_1_latent_adapter():
    assert rank_for_params(640, 2 * 4096 + 1) == 6  # 6 · 1281 = 7686 ≤ 8193 < 7 · 1281
    assert ResidSteer(640, 6).n_params() == 7686


def test_a_new_steer_is_a_no_op_and_the_hook_adds_its_delta(tiny_mas):
    steer = ResidSteer(32, 2, torch.Generator().manual_seed(0))
    prompts = ["What is 2+2?", "Say hi"]
    assert generate(tiny_mas, prompts, steer, max_new_tokens=4) == generate(
        tiny_mas, prompts, None, max_new_tokens=4
    )
    with torch.no_grad():
        steer.V.normal_()
        steer.c.fill_(5.0)
    tokens = torch.tensor([[1, 5, 6, 7]])
    resid = tiny_mas.model(tokens, stop_at_layer=tiny_mas.layer + 1)
    seen = {}

    def grab(x, *, hook):
        seen["x"] = x.clone()
        return x

    with (
        attach_lora(tiny_mas, steer),
        tiny_mas.model.hooks(fwd_hooks=[(f"blocks.{tiny_mas.layer + 1}.hook_resid_pre", grab)]),
    ):
        tiny_mas.model(tokens)
    want = resid + torch.relu(resid @ steer.R + steer.c) @ steer.V
    want[:, 0] = resid[:, 0]  # BOS untouched
    assert torch.allclose(seen["x"], want, atol=1e-5)


def test_train_steer_lowers_the_loss_and_round_trips(tiny_mas, tmp_path):
    ds = datasets.DatasetDict({"train": datasets.Dataset.from_list(TINY_ROWS * 4)})
    cfg = SteerConfig(rank=2, lr=0.05, epochs=6, batch_size=4, response_tokens=0, max_len=64)
    steer = train_steer(tiny_mas, ds, cfg, out_dir=tmp_path / "s", progress=False)
    import json

    meta = json.loads((tmp_path / "s" / "steer.json").read_text())
    hist = [h["train_ce"] for h in meta["history"]]
    assert hist[-1] < hist[0]
    again = load_steer(tmp_path / "s")
    assert all(
        torch.equal(a, b) for a, b in zip(steer.state_dict().values(), again.state_dict().values())
    )
    # A finished run with the same config is loaded, not retrained.
    assert train_steer(tiny_mas, ds, cfg, out_dir=tmp_path / "s", progress=False).V.equal(steer.V)
