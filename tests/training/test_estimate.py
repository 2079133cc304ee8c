"""The training-time estimate against a real run on the tiny model, and the recipes."""

import time

import pytest
import torch

from saelora_core import LoraTrainingConfig, train_lora
from saelora_core.training.estimate import estimate_training, format_duration
from saelora_core.training.recipes import DEFAULT_RECIPE, RECIPES, recipe

ROWS = [
    {"id": str(i), "prompt": f"What is {i} plus {i}?", "response": f"It is {2 * i}. " * 4}
    for i in range(48)
]


def test_estimate_is_within_a_factor_of_the_real_run(tiny_mas, tmp_path):
    cfg = LoraTrainingConfig(
        lr=0.05, batch_size=8, epochs=3, max_len=96, sparsity="none", eval_fraction=0.25
    )
    est = estimate_training(tiny_mas, ROWS, cfg)
    assert (est.n_train, est.n_eval, est.steps) == (36, 12, 3 * 5)
    assert est.seconds > 0 and est.measured_on == cfg.micro_batch
    t0 = time.perf_counter()
    train_lora(tiny_mas, ROWS, cfg, out_dir=tmp_path / "run", progress=False)
    real = time.perf_counter() - t0
    # Rough by design (it tells a minute from half an hour); the tiny model's per-call
    # overheads make it the hardest case.
    assert real / 5 < est.seconds < real * 5, (est.seconds, real)
    assert "about" in est.describe() and "15 optimizer steps" in est.describe()


def test_format_duration():
    assert [format_duration(s) for s in (0.2, 42, 185, 3725)] == [
        "1 s",
        "42 s",
        "3 min 5 s",
        "1 h 2 min",
    ]


def test_recipes_are_valid_and_the_default_is_the_demos():
    from saelora_core.demo.behaviours import DEMO_BEHAVIOURS

    assert DEFAULT_RECIPE == "recommended"
    for name in RECIPES:
        recipe(name)  # each validates
    assert recipe("seed (baseline)") == LoraTrainingConfig()
    for b in DEMO_BEHAVIOURS:
        assert b.config == recipe("recommended", name=b.name)
    rec = recipe()
    assert (rec.response_tokens, rec.s_lr, rec.init, rec.sparsity) == (
        4,
        0.2,
        "contrastive",
        "proximal_l1",
    )
    assert recipe("recommended", lr=0.1).lr == 0.1
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe("nope")


@pytest.mark.parametrize("fast", [True, False])
def test_machine_overrides_only_change_what_this_machine_runs_badly(monkeypatch, fast):
    from saelora_core.training import estimate

    monkeypatch.setattr(estimate, "bf16_is_fast", lambda: fast)
    assert estimate.machine_overrides(recipe("seed (baseline)")) == {}  # float32 already
    want = {} if fast else {"logits_dtype": "float32"}
    assert estimate.machine_overrides(recipe()) == want


@pytest.mark.parametrize(
    ("cuda", "native", "fast"), [(False, False, False), (False, True, True), (True, False, True)]
)
def test_bf16_is_fast_follows_the_probes(monkeypatch, cuda, native, fast):
    from saelora_core.adapter import forward
    from saelora_core.training.estimate import bf16_is_fast

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(forward, "cpu_has_native_bf16", lambda: native)
    assert bf16_is_fast() is fast
