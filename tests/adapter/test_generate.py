"""Greedy generation: KV-cached, left-padded batches equal uncached full-sequence decoding."""

import pytest
import torch

from saelora_core import SaeLora, attach_lora
from saelora_core.adapter.generate import generate, generate_tokens, stop_token_ids
from saelora_core.models.chat import prompt_tokens, strip_response

PROMPTS = ["What is 2+2?", "hi", "Tell me about French cooking"]
N_NEW = 10


def _adapter(scale: float) -> SaeLora:
    lora = SaeLora(64, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        lora.s.fill_(scale)
    return lora


@torch.no_grad()
def _uncached(mas, tokens, lora, mode):
    """Reference: re-run the whole sequence each step under attach_lora (skips only BOS)."""
    seq, out = tokens[None], []
    for _ in range(N_NEW):
        with attach_lora(mas, lora, mode):
            nxt = int(mas.model(seq)[0, -1].argmax())
        out.append(nxt)
        if nxt == mas.tokenizer.eos_token_id:
            break
        seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
    return out


@pytest.mark.parametrize("mode", ["resid_add", "sae_replace"])
def test_cached_batched_equals_uncached(tiny_mas, mode):
    lora = _adapter(3.0)
    toks = [prompt_tokens(tiny_mas.tokenizer, p, "qa") for p in PROMPTS]
    got = generate_tokens(tiny_mas, toks, lora, mode=mode, max_new_tokens=N_NEW)
    base = generate_tokens(tiny_mas, toks, None, max_new_tokens=N_NEW)
    for t, g in zip(toks, got, strict=True):
        assert g == _uncached(tiny_mas, t, lora, mode)
    assert got != base  # the adapter does change the output


def test_zero_scale_equals_no_adapter(tiny_mas):
    lora = _adapter(0.0)
    with_lora = generate(tiny_mas, PROMPTS, lora, max_new_tokens=N_NEW, batch_size=2)
    without = generate(tiny_mas, PROMPTS, None, max_new_tokens=N_NEW, batch_size=3)
    assert with_lora == without
    assert len(with_lora) == len(PROMPTS) and all(isinstance(t, str) for t in with_lora)
    # sae_replace: s = 0 is the bare SAE splice
    assert generate(
        tiny_mas, PROMPTS[:2], lora, mode="sae_replace", max_new_tokens=N_NEW
    ) == generate(tiny_mas, PROMPTS[:2], None, mode="sae_replace", max_new_tokens=N_NEW)


def test_rows_that_end_leave_the_batch_without_changing_the_others(tiny_mas):
    from saelora_core.adapter.generate import SYNC_EVERY

    lora = _adapter(3.0)
    toks = [prompt_tokens(tiny_mas.tokenizer, p, "qa") for p in PROMPTS]
    full = generate_tokens(tiny_mas, toks, lora, max_new_tokens=3 * SYNC_EVERY)
    # End the first prompt's row early; the other rows must decode exactly as before.
    target = full[0][:2]
    early = generate_tokens(
        tiny_mas,
        toks,
        lora,
        max_new_tokens=3 * SYNC_EVERY,
        stop_when=lambda ids: ids[:2] == target and len(ids) >= 2,
    )
    ended = [i for i, f in enumerate(full) if f[:2] == target]
    for i, (e, f) in enumerate(zip(early, full, strict=True)):
        if i in ended:
            assert len(e) == SYNC_EVERY and e == f[: len(e)]  # dropped at the first look
        else:
            assert e == f
    # generate() stops rows at the end of their turn; the answers are what they were without.
    assert generate(tiny_mas, PROMPTS, lora, max_new_tokens=12) == [
        strip_response(tiny_mas.tokenizer.decode(f[:-1] if f and f[-1] in stops else f), "qa")
        for f, stops in zip(
            generate_tokens(tiny_mas, toks, lora, max_new_tokens=12),
            [stop_token_ids(tiny_mas.tokenizer)] * len(PROMPTS),
            strict=True,
        )
    ]


def test_greedy_token_is_argmax_ties_included():
    from saelora_core.adapter.generate import greedy_token

    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        logits = torch.randn(6, 5000, generator=g).to(dtype)
        logits[:, [7, 4000]] = logits.max() + 1  # two maximal values per row: the first wins
        logits[3] = 0.0  # a row that is all ties
        assert torch.equal(greedy_token(logits), logits.argmax(-1))
        assert greedy_token(logits).tolist() == [7, 7, 7, 0, 7, 7]
