"""The batched edited forward: padding is invisible at real positions, and micro-batched training
computes the one-at-a-time loss and gradients."""

import pytest
import torch

from saelora_core import LoraTrainingConfig, SaeLora, train_lora
from saelora_core.adapter.batch import make_batch, tokenize_rows
from saelora_core.adapter.forward import batch_losses, example_loss, response_logits

ROWS = [
    {"prompt": "Say yes", "response": "yes"},
    {"prompt": "What is two plus two, written out in words?", "response": "Four, of course."},
    {"prompt": "hi", "response": "hello there, how are you doing today my friend"},
    {"prompt": "Name a colour", "response": "blue"},
]


def _adapter(d_sae: int, rank: int = 2) -> SaeLora:
    lora = SaeLora(d_sae, rank, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora.s.copy_(torch.linspace(1.0, 2.0, rank))
    return lora


@pytest.mark.parametrize("precompute", [True, False])
@pytest.mark.parametrize("mode", ["resid_add", "sae_replace"])
def test_padding_changes_no_logit_at_real_positions(tiny_mas, mode, precompute):
    exs, _ = tokenize_rows(tiny_mas, ROWS, 64)
    assert len({len(e.chat.tokens) for e in exs}) >= 3  # rows of different lengths: padded
    lora = _adapter(tiny_mas.sae.cfg.d_sae)
    together = response_logits(tiny_mas, lora, make_batch(tiny_mas, exs), mode, precompute)
    alone = torch.cat(
        [response_logits(tiny_mas, lora, make_batch(tiny_mas, [e]), mode, precompute) for e in exs]
    )
    assert together.shape == alone.shape and together.shape[0] == sum(
        int(e.chat.assistant_mask[1:].sum()) for e in exs
    )
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def _grads(mas, lora, exs, micro, teacher=None):
    lora.zero_grad(set_to_none=True)
    total = torch.zeros(())
    for i in range(0, len(exs), micro):
        loss = batch_losses(
            mas, lora, make_batch(mas, exs[i : i + micro]), "resid_add", teacher=teacher
        ).sum() / len(exs)
        loss.backward()
        total += loss.detach()
    return total, [p.grad.clone() for p in (lora.a, lora.b, lora.s)]


@pytest.mark.parametrize("distill", [False, True])
def test_batched_loss_and_gradients_equal_one_at_a_time(tiny_mas, distill):
    exs, _ = tokenize_rows(tiny_mas, ROWS, 64)
    lora = _adapter(tiny_mas.sae.cfg.d_sae)
    teacher = _adapter(tiny_mas.sae.cfg.d_sae, 1) if distill else None
    one_loss, one_grads = _grads(tiny_mas, lora, exs, 1, teacher)
    # the reference semantics: the mean over examples of each example's own mean loss
    want = sum(example_loss(tiny_mas, lora, e, "resid_add", teacher=teacher) for e in exs) / 4
    torch.testing.assert_close(one_loss, want.detach())
    for micro in (2, 4):
        loss, grads = _grads(tiny_mas, lora, exs, micro, teacher)
        torch.testing.assert_close(loss, one_loss, rtol=1e-5, atol=1e-6)
        for g, g1 in zip(grads, one_grads, strict=True):
            assert g1.abs().sum() > 0
            torch.testing.assert_close(g, g1, rtol=1e-4, atol=1e-6)


def test_train_lora_micro_batch_does_not_change_the_run(tiny_mas, tmp_path):
    rows = [
        {"id": str(i), "prompt": f"Say yes {i}" + " ok" * (i % 4), "response": "yes yes"}
        for i in range(12)
    ]
    base = dict(
        lr=0.05,
        s_lr=0.5,
        sparsity_weight=0.0,
        batch_size=4,
        epochs=2,
        max_len=64,
        sparsity="none",
        eval_fraction=0.25,
        name="t",
    )
    runs = [
        train_lora(
            tiny_mas,
            rows,
            LoraTrainingConfig(**base, micro_batch=m),
            out_dir=tmp_path / str(m),
            progress=False,
        )
        for m in (1, 4)
    ]
    one, four = runs
    assert one.lora.s.abs().max() > 0.1  # it trained
    for p1, p4 in zip(one.lora.parameters(), four.lora.parameters(), strict=True):
        torch.testing.assert_close(p4, p1, rtol=1e-4, atol=1e-5)
    assert one.history[-1]["eval_ce"] == pytest.approx(four.history[-1]["eval_ce"], rel=1e-5)
    # micro_batch changes speed, not the run: a checkpoint resumes under another micro_batch
    from saelora_core.training.resume import resumable

    assert resumable(tmp_path / "1", LoraTrainingConfig(**base, micro_batch=8), tiny_mas) is True


def test_relayout_gives_bitwise_the_same_logits(tiny_mas):
    from saelora_core.models.weight_layout import relayout_, standard_layout_

    toks = torch.randint(0, tiny_mas.model.cfg.d_vocab, (3, 17), generator=torch.Generator())
    with torch.no_grad():
        fast = tiny_mas.model(toks)  # ModelAndSae re-lays its model when it is built
        standard_layout_(tiny_mas.model)
        assert all(p.is_contiguous() for p in tiny_mas.model.parameters())
        slow = tiny_mas.model(toks)
        assert relayout_(tiny_mas.model) > 0
        again = tiny_mas.model(toks)
    assert torch.equal(fast, slow) and torch.equal(fast, again)


def test_delta_mapped_equals_the_dense_delta_times_w():
    g = torch.Generator().manual_seed(3)
    lora = _adapter(48, rank=3)
    z, w = torch.randn(2, 5, 48, generator=g).relu(), torch.randn(48, 7, generator=g)
    torch.testing.assert_close(lora.delta_mapped(z, w), lora.delta(z) @ w, rtol=1e-5, atol=1e-5)


def test_cached_latents_are_the_encoding_of_the_cached_residual(tiny_mas):
    from saelora_core.adapter.forward import padded_latents, padded_resid

    exs, _ = tokenize_rows(tiny_mas, ROWS, 64)
    b = make_batch(tiny_mas, exs)
    z = padded_latents(tiny_mas, b)
    assert all(ex.latents is not None and ex.latents.is_sparse for ex in exs)
    want = tiny_mas.sae.encode(padded_resid(tiny_mas, b))
    for i, n in enumerate(b.lengths):
        torch.testing.assert_close(z[i, :n], want[i, :n], rtol=1e-5, atol=1e-6)
        assert not z[i, n:].any()  # pads hold no latents
    # a second batch in another order reads the cache: the same rows, bit for bit
    again = padded_latents(tiny_mas, make_batch(tiny_mas, exs[::-1]))
    assert torch.equal(again[len(exs) - 1, : b.lengths[0]], z[0, : b.lengths[0]])


def test_cached_latents_follow_an_sae_trained_in_place(tiny_mas):
    from saelora_core.adapter.forward import padded_latents

    exs, _ = tokenize_rows(tiny_mas, ROWS[:2], 64)
    b = make_batch(tiny_mas, exs)
    before = padded_latents(tiny_mas, b)
    b_enc = tiny_mas.sae.b_enc
    saved = b_enc.detach().clone()
    try:
        with torch.no_grad():
            b_enc.add_(0.5)  # an in-place update, as an optimizer step makes
        after = padded_latents(tiny_mas, b)
        assert not torch.equal(after, before)
        torch.testing.assert_close(after[0, : b.lengths[0]], tiny_mas.sae.encode(exs[0].resid)[0])
    finally:
        with torch.no_grad():
            b_enc.copy_(saved)
