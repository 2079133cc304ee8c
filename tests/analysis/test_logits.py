"""Logit attribution on a tiny model with planted decoder directions."""

import pytest
import torch

from saelora_core import SaeLora
from saelora_core.analysis import edit_logit_attribution, latent_logits, top_toks_table
from saelora_core.testing import tiny_model_and_sae

LAT_UP, LAT_DOWN = 5, 9


@pytest.fixture(scope="module")
def planted():
    """A private tiny model hooked at the last block (so the edit's effect on the logits is
    direct), with a non-uniform final-norm scale and two planted latent directions:
    W_dec[LAT_UP] ⊙ w_ln = W_U[:, t_up] and W_dec[LAT_DOWN] ⊙ w_ln = −W_U[:, t_down]."""
    mas = tiny_model_and_sae(layer=2)
    tok = mas.tokenizer
    t_up, t_down = tok.convert_tokens_to_ids("F"), tok.convert_tokens_to_ids("z")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        w_u = mas.model.unembed.W_U
        # The two planted columns get the largest norms, so by Cauchy-Schwarz no other token can
        # outscore them along their own direction.
        w_u[:, [t_up, t_down]] *= 3 * w_u.norm(dim=0).max() / w_u[:, [t_up, t_down]].norm(dim=0)
        mas.model.ln_final.w.copy_(0.5 + torch.rand(mas.model.cfg.d_model, generator=g))
        w = mas.model.ln_final.w
        mas.sae.W_dec[LAT_UP] = w_u[:, t_up] / w
        mas.sae.W_dec[LAT_DOWN] = -w_u[:, t_down] / w
    return mas, t_up, t_down


def _one_hot_writer(d_sae: int, latent: int, s: float) -> SaeLora:
    lora = SaeLora(d_sae, 1, init="uniform_small")
    with torch.no_grad():
        lora.b.zero_()
        lora.b[0, latent] = 1.0
        lora.s.fill_(s)
    return lora


def test_latent_logits_name_planted_tokens(planted):
    mas, t_up, t_down = planted
    top, _ = latent_logits(mas, LAT_UP, k=5)
    assert top["token_id"].iloc[0] == t_up and top["token"].iloc[0] == "F"
    _, bottom = latent_logits(mas, LAT_DOWN, k=5)
    assert bottom["token_id"].iloc[0] == t_down
    # score = (W_dec[i] ⊙ w_ln) @ W_U exactly
    expected = float(mas.model.unembed.W_U[:, t_up].norm() ** 2)
    assert top["score"].iloc[0] == pytest.approx(expected, rel=1e-5)


def test_top_toks_table_latents_and_write_dirs(planted):
    mas, t_up, t_down = planted
    lora = _one_hot_writer(64, LAT_UP, s=2.0)
    df = top_toks_table(lora, mas, k_latents=3, k_tokens=4)
    assert list(df.columns) == [
        "source",
        "latent",
        "direction",
        "rank",
        "token",
        "token_id",
        "score",
    ]
    assert set(df["source"]) == {f"latent {LAT_UP}", "write dir 0"}  # zeros are not listed
    lat = df[(df["source"] == f"latent {LAT_UP}") & (df["direction"] == "promoted")]
    assert lat["token_id"].tolist()[0] == t_up and lat["rank"].tolist() == [0, 1, 2, 3]
    sup = df[(df["source"] == f"latent {LAT_UP}") & (df["direction"] == "suppressed")]
    assert sup["score"].is_monotonic_increasing
    wd = df[(df["source"] == "write dir 0") & (df["direction"] == "promoted")]
    assert wd["token_id"].iloc[0] == t_up and (df.loc[wd.index, "latent"] == -1).all()
    # a negative scale flips the write direction: writing −W_dec[LAT_DOWN] promotes t_down
    neg = top_toks_table(_one_hot_writer(64, LAT_DOWN, s=-1.0), mas, k_latents=1, k_tokens=3)
    wd = neg[(neg["source"] == "write dir 0") & (neg["direction"] == "promoted")]
    assert wd["token_id"].iloc[0] == t_down


def test_edit_logit_attribution_raises_planted_token(planted):
    mas, t_up, _ = planted
    lora = _one_hot_writer(64, LAT_UP, s=50.0)  # reads the uniform direction: z ≥ 0 sums
    df = edit_logit_attribution(lora, mas, ["hello", "What is 2+2?"], k_tokens=5)
    assert list(df.columns) == ["token", "token_id", "mean_logit_diff"]
    assert df["token_id"].iloc[0] == t_up and df["mean_logit_diff"].iloc[0] > 0
    assert df["mean_logit_diff"].is_monotonic_decreasing
    zero = edit_logit_attribution(_one_hot_writer(64, LAT_UP, s=0.0), mas, ["hello"])
    assert (zero["mean_logit_diff"] == 0).all()
