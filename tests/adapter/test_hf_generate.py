"""The transformers-backed decoder (adapter/hf_generate.py) against the TransformerLens one,
token for token, on a tiny Gemma-3 held both ways (the same weights)."""

import pytest
import torch

from saelora_core import SaeLora
from saelora_core.adapter.generate import decoder, generate, generate_tokens
from saelora_core.adapter.hf_generate import (
    RESCORE_TOP,
    hf_generate_tokens,
    hf_twin,
    rescored_argmax,
    set_hf_twin,
)
from saelora_core.models.chat import prompt_tokens
from saelora_core.testing import tiny_gemma3_model_and_sae

PROMPTS = ["What is 2+2?", "Say hi", "A much longer prompt here, with words", "x", "Bonjour?"]


@pytest.fixture(scope="module")
def gemma():
    mas, hf = tiny_gemma3_model_and_sae()
    set_hf_twin(mas, hf)
    return mas, hf


def _adapter(scale: float) -> SaeLora:
    lora = SaeLora(64, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora.s.copy_(torch.tensor([8.0, -6.0]) * scale)
    return lora


def _ids(mas):
    return [prompt_tokens(mas.tokenizer, p, mas.chat_format) for p in PROMPTS]


def test_the_twins_compute_the_same_logits(gemma):
    mas, hf = gemma
    x = torch.randint(10, 100, (2, 20), generator=torch.Generator().manual_seed(0))
    x[:, 0] = mas.tokenizer.bos_token_id
    torch.testing.assert_close(hf(x).logits, mas.model(x), rtol=0, atol=1e-4)


@pytest.mark.parametrize("mode", ["resid_add", "sae_replace"])
@pytest.mark.parametrize("with_adapter", [False, True])
def test_hf_decoder_equals_transformer_lens_token_for_token(gemma, mode, with_adapter):
    mas, hf = gemma
    lora = _adapter(1.0) if with_adapter else None
    want = generate_tokens(mas, _ids(mas), lora, mode=mode, max_new_tokens=14)
    got = hf_generate_tokens(mas, _ids(mas), lora, hf=hf, mode=mode, max_new_tokens=14)
    assert got == want
    assert len({tuple(r) for r in want}) > 1  # varied answers: the check has teeth


def test_the_adapter_changes_the_answers_and_zero_scale_does_not(gemma):
    mas, hf = gemma
    plain = hf_generate_tokens(mas, _ids(mas), None, hf=hf, max_new_tokens=12)
    assert hf_generate_tokens(mas, _ids(mas), _adapter(0.0), hf=hf, max_new_tokens=12) == plain
    assert hf_generate_tokens(mas, _ids(mas), _adapter(1.0), hf=hf, max_new_tokens=12) != plain


def test_rows_that_end_leave_the_batch_as_in_the_tl_decoder(gemma):
    mas, hf = gemma

    def stop_when(ids):  # rows stop at different steps: they leave the batch and its cache
        return len(ids) >= 2 + 3 * (ids[0] % 5)

    lora = _adapter(1.0)
    kw = dict(max_new_tokens=20, stop_when=stop_when)
    want = generate_tokens(mas, _ids(mas), lora, **kw)
    got = hf_generate_tokens(mas, _ids(mas), lora, hf=hf, **kw)
    assert got == want
    assert len({len(w) for w in want}) > 1 and min(len(w) for w in want) < 20


def test_generate_backends_agree_and_tl_is_the_default(gemma, tiny_mas):
    mas, _ = gemma
    lora = _adapter(1.0)
    tl = generate(mas, PROMPTS, lora, max_new_tokens=10, batch_size=2, backend="tl")
    assert generate(mas, PROMPTS, lora, max_new_tokens=10, batch_size=2) == tl
    assert generate(mas, PROMPTS, lora, max_new_tokens=10, batch_size=2, backend="hf") == tl
    # The twin is opt-in: the default decodes with TransformerLens even where a twin exists.
    assert decoder(mas) is generate_tokens
    assert decoder(mas, "hf") is hf_generate_tokens
    int8 = decoder(mas, "hf-int8")
    assert int8.keywords == {"rescore": RESCORE_TOP}  # type: ignore[attr-defined]
    # A model with no twin (and no preset to load one from): only TransformerLens.
    assert hf_twin(tiny_mas) is None and decoder(tiny_mas) is generate_tokens
    for backend in ("hf", "hf-int8"):
        with pytest.raises(ValueError, match="no transformers twin"):
            decoder(tiny_mas, backend)
    for backend in ("vllm", "auto"):
        with pytest.raises(ValueError, match="unknown generation backend"):
            decoder(mas, backend)


@pytest.mark.parametrize("mode", ["resid_add", "sae_replace"])
def test_int8_candidates_rescored_exactly_give_the_same_tokens(gemma, mode):
    mas, hf = gemma
    lora = _adapter(1.0)
    want = generate_tokens(mas, _ids(mas), lora, mode=mode, max_new_tokens=14)
    got = hf_generate_tokens(mas, _ids(mas), lora, hf=hf, mode=mode, max_new_tokens=14, rescore=8)
    assert got == want


def test_rescored_argmax_is_exact_among_its_candidates(gemma):
    _, hf = gemma
    head = hf.get_output_embeddings()
    h = torch.randn(6, head.in_features, generator=torch.Generator().manual_seed(1))
    exact = head(h).argmax(-1)
    assert torch.equal(rescored_argmax(head, h, k=head.out_features), exact)  # all candidates
    assert torch.equal(rescored_argmax(head, h, k=4), exact)
    # One candidate: the int8 argmax itself, which the rescoring cannot correct.
    assert rescored_argmax(head, h, k=1).shape == exact.shape
