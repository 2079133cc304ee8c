"""The two hook modes, checked against hand computations on the tiny model."""

import pytest
import torch

from saelora_core import SaeLora, attach_lora, lora_resid_add_hook, sae_replace_hook
from saelora_core.adapter.hooks import write_matrix

TEXT = "Question: What is 2+2?\nAnswer: Four."


def nonzero_lora(d_sae, rank=2, seed=0):
    lora = SaeLora(d_sae, rank, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        lora.s.copy_(torch.tensor([3.0, -2.0][:rank]))
    return lora


def test_new_adapter_is_exact_noop_in_both_modes(tiny_mas):
    tokens = tiny_mas.model.to_tokens(TEXT)
    lora = SaeLora(tiny_mas.sae.cfg.d_sae, 2)
    assert torch.equal(lora.s, torch.zeros(2))
    base = tiny_mas.model(tokens)
    with attach_lora(tiny_mas, lora, "resid_add"):
        assert torch.equal(tiny_mas.model(tokens), base)
    with attach_lora(tiny_mas, None, "sae_replace"):
        spliced = tiny_mas.model(tokens)
    with attach_lora(tiny_mas, lora, "sae_replace"):
        assert torch.equal(tiny_mas.model(tokens), spliced)
    assert not torch.allclose(spliced, base)  # the SAE splice itself does change the output


def _resid(tiny_mas, tokens, lora=None, mode="resid_add"):
    store = {}

    def grab(act, hook):
        store["r"] = act.detach().clone()

    hook = f"blocks.{tiny_mas.layer}.hook_resid_post"
    if lora is None:
        tiny_mas.model.run_with_hooks(tokens, fwd_hooks=[(hook, grab)])
    else:
        with attach_lora(tiny_mas, lora, mode):
            tiny_mas.model.run_with_hooks(tokens, fwd_hooks=[(hook, grab)])
    return store["r"]


def test_resid_add_changes_residual_by_exactly_delta_w_dec(tiny_mas):
    tokens = tiny_mas.model.to_tokens(TEXT)
    lora = nonzero_lora(tiny_mas.sae.cfg.d_sae)
    clean = _resid(tiny_mas, tokens)
    edited = _resid(tiny_mas, tokens, lora)
    # Hand computation, no library code: z from the clean residual, normalized vectors, W_dec.
    z = tiny_mas.sae.encode(clean)
    a_hat = lora.a / lora.a.norm(dim=0)
    b_hat = lora.b / lora.b.norm(dim=1, keepdim=True)
    dz = ((z @ a_hat) * lora.s) @ b_hat
    expected = clean + dz @ tiny_mas.sae.W_dec
    expected[:, 0] = clean[:, 0]  # BOS is left alone
    torch.testing.assert_close(edited, expected, rtol=1e-5, atol=1e-5)
    assert (edited - clean)[:, 1:].abs().max() > 1e-3  # the edit is not cancelled


def test_sae_replace_gives_decode_of_z_plus_delta(tiny_mas):
    tokens = tiny_mas.model.to_tokens(TEXT)
    lora = nonzero_lora(tiny_mas.sae.cfg.d_sae)
    clean = _resid(tiny_mas, tokens)
    edited = _resid(tiny_mas, tokens, lora, "sae_replace")
    sae = tiny_mas.sae
    z = sae.encode(clean)
    expected = (z + lora.delta(z)) @ sae.W_dec + sae.b_dec
    expected[:, 0] = clean[:, 0]
    torch.testing.assert_close(edited, expected, rtol=1e-5, atol=1e-5)


def test_hook_functions_match_seed_names(tiny_mas):
    lora = nonzero_lora(tiny_mas.sae.cfg.d_sae)
    resid = torch.randn(1, 5, tiny_mas.model.cfg.d_model)
    out = lora_resid_add_hook(resid, hook=None, sae=tiny_mas.sae, lora=lora, skip_bos=False)
    torch.testing.assert_close(
        out, resid + lora.delta(tiny_mas.sae.encode(resid)) @ write_matrix(tiny_mas.sae)
    )
    out = sae_replace_hook(resid, hook=None, sae=tiny_mas.sae, lora=lora, skip_bos=False)
    z = tiny_mas.sae.encode(resid)
    torch.testing.assert_close(out, tiny_mas.sae.decode(z + lora.delta(z)))


def test_hooks_are_removed_even_on_error(tiny_mas):
    lora = nonzero_lora(tiny_mas.sae.cfg.d_sae)
    tokens = tiny_mas.model.to_tokens(TEXT)
    base = tiny_mas.model(tokens)
    with pytest.raises(RuntimeError), attach_lora(tiny_mas, lora):
        raise RuntimeError("boom")
    assert torch.equal(tiny_mas.model(tokens), base)
    with pytest.raises(ValueError, match="unknown hook mode"), attach_lora(tiny_mas, lora, "nope"):
        pass


def test_read_and_write_vectors_are_unit_and_s_carries_magnitude():
    lora = SaeLora(50, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(lora.read_dirs().norm(dim=0), torch.ones(3))
    torch.testing.assert_close(lora.write_dirs().norm(dim=1), torch.ones(3))
    z = torch.randn(4, 50)
    d1 = lora.delta(z)
    with torch.no_grad():
        lora.a.mul_(7.0)
        lora.b.mul_(0.1)
    torch.testing.assert_close(lora.delta(z), d1)  # scale of a/b is irrelevant
    assert torch.equal(d1, torch.zeros_like(d1))  # s = 0
