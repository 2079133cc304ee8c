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


PROMPTS = ["What is 2+2?", "hello", "Add 3 and 4", "Say hi"]
IN_TOPIC = [True, False, True, False]


def test_prompt_logit_attribution_per_prompt_and_topic(planted):
    """Per prompt: each row is that prompt's own logit change (equal to the single-prompt
    attribution); per topic: the mean over that topic's prompts (equal to the mean path)."""
    from saelora_core.analysis import (
        edit_logit_diff,
        edit_logit_diffs,
        prompt_logit_attribution,
        topic_logit_attribution,
    )

    mas, t_up, _ = planted
    lora = _one_hot_writer(64, LAT_UP, s=50.0)
    per = prompt_logit_attribution(lora, mas, PROMPTS, in_topic=IN_TOPIC, k_tokens=3)
    assert list(per.columns) == ["prompt", "topic", "token", "token_id", "logit_diff"]
    assert len(per) == 12 and per["prompt"].tolist()[::3] == PROMPTS
    assert per["topic"].tolist()[::3] == ["in-topic", "off-topic", "in-topic", "off-topic"]
    overall = edit_logit_attribution(lora, mas, PROMPTS, k_tokens=3)
    ids = overall["token_id"].tolist()
    assert ids[0] == t_up and per["token_id"].tolist() == ids * 4
    diffs = edit_logit_diffs(lora, mas, PROMPTS)
    assert diffs.shape == (4, mas.model.cfg.d_vocab)
    torch.testing.assert_close(diffs.mean(0), edit_logit_diff(lora, mas, PROMPTS))
    for n, prompt in enumerate(PROMPTS):
        one = edit_logit_diff(lora, mas, [prompt])[ids].tolist()
        assert per[per["prompt"] == prompt]["logit_diff"].tolist() == pytest.approx(one, abs=1e-6)
    topics = topic_logit_attribution(per)
    assert list(topics.columns) == [
        "token", "token_id", "in-topic", "off-topic", "in − off", "all"
    ]  # fmt: skip
    assert topics["token_id"].tolist() == ids and topics["token"].iloc[0] == "F"
    in_mean = edit_logit_diff(lora, mas, PROMPTS[0::2])[ids].tolist()
    off_mean = edit_logit_diff(lora, mas, PROMPTS[1::2])[ids].tolist()
    assert topics["in-topic"].tolist() == pytest.approx(in_mean, abs=1e-6)
    assert topics["off-topic"].tolist() == pytest.approx(off_mean, abs=1e-6)
    assert topics["in − off"].tolist() == pytest.approx(
        [a - b for a, b in zip(in_mean, off_mean, strict=True)], abs=1e-6
    )
    assert topics["all"].tolist() == pytest.approx(overall["mean_logit_diff"].tolist(), abs=1e-6)


def test_prompt_logit_attribution_without_topics_and_bad_input(planted):
    from saelora_core.analysis import prompt_logit_attribution, topic_logit_attribution

    mas, _, t_down = planted
    lora = _one_hot_writer(64, LAT_DOWN, s=50.0)  # writes −W_U[:, t_down]: lowers t_down
    per = prompt_logit_attribution(lora, mas, PROMPTS[:2], k_tokens=2, direction="lowered")
    assert set(per["topic"]) == {"all"} and per["token_id"].iloc[0] == t_down
    assert (per["logit_diff"] < 0).all()
    topics = topic_logit_attribution(per)
    assert topics["in-topic"].isna().all() and topics["off-topic"].isna().all()
    zero = prompt_logit_attribution(_one_hot_writer(64, LAT_UP, s=0.0), mas, ["hello"])
    assert (zero["logit_diff"] == 0).all()
    with pytest.raises(ValueError, match="one per prompt"):
        prompt_logit_attribution(lora, mas, PROMPTS, in_topic=[True])
    with pytest.raises(ValueError, match="at least one prompt"):
        prompt_logit_attribution(lora, mas, [])
    with pytest.raises(ValueError, match="'raised' or 'lowered'"):
        prompt_logit_attribution(lora, mas, ["hi"], direction="up")  # type: ignore[arg-type]
