"""Feature tables: planted read/write vectors, firing frequencies and per-token reads."""

import math

import pytest
import torch

from saelora_core import SaeLora
from saelora_core.adapter.hooks import write_matrix
from saelora_core.analysis import (
    latent_fire_freq,
    neuronpedia_id_for,
    per_token_reads_writes,
    top_feats_summary,
)
from saelora_core.models.chat import format_turn

ROWS = [
    {"prompt": "What is 2+2?", "response": "Four.", "in_topic": True},
    {"prompt": "Say hi", "response": "Hi!", "in_topic": False},
    {"prompt": "Compute 3*7", "response": "21.", "in_topic": True},
]


def _planted() -> SaeLora:
    lora = SaeLora(64, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora.a[:, 0] = 0.0
        lora.a[[7, 3, 40], 0] = torch.tensor([0.8, -0.5, 0.3])
        lora.b[0] = 0.0
        lora.b[0, [12, 50]] = torch.tensor([-2.0, 1.0])
        lora.s.copy_(torch.tensor([1.5, -0.7]))
    return lora


def test_top_feats_planted_order_and_mass():
    df = top_feats_summary(_planted(), k=5, neuronpedia_id="gemma-2-2b/12-gemmascope-res-16k")
    assert list(df.columns) == [
        "component",
        "side",
        "rank",
        "latent",
        "weight",
        "mass_share",
        "freq_in_topic",
        "freq_off_topic",
        "neuronpedia_url",
    ]
    read0 = df[(df["component"] == 0) & (df["side"] == "read")]
    assert read0["latent"].tolist() == [7, 3, 40] and read0["rank"].tolist() == [0, 1, 2]
    norm2 = 0.8**2 + 0.5**2 + 0.3**2
    assert read0["weight"].tolist() == pytest.approx(
        [0.8 / math.sqrt(norm2), -0.5 / math.sqrt(norm2), 0.3 / math.sqrt(norm2)]
    )
    assert read0["mass_share"].tolist() == pytest.approx([0.64 / norm2, 0.25 / norm2, 0.09 / norm2])
    write0 = df[(df["component"] == 0) & (df["side"] == "write")]
    assert write0["latent"].tolist() == [12, 50]
    assert write0["mass_share"].tolist() == pytest.approx([0.8, 0.2])
    assert len(df[df["component"] == 1]) == 10  # dense random component: k rows per side
    assert df["freq_in_topic"].isna().all()
    assert df["neuronpedia_url"].iloc[0] == (
        "https://www.neuronpedia.org/gemma-2-2b/12-gemmascope-res-16k/7"
    )


def test_top_feats_firing_frequencies(tiny_mas):
    df = top_feats_summary(_planted(), k=3, mas=tiny_mas, dataset=ROWS)
    assert df["freq_in_topic"].between(0, 1).all() and df["freq_off_topic"].between(0, 1).all()
    want = latent_fire_freq(tiny_mas, [ROWS[0]["prompt"], ROWS[2]["prompt"]], [7])[7]
    assert df.loc[df["latent"] == 7, "freq_in_topic"].iloc[0] == pytest.approx(want)
    assert (df["neuronpedia_url"] == "").all()


def test_neuronpedia_id_for(tiny_mas):
    assert neuronpedia_id_for(tiny_mas) is None  # loaded from a path
    fake = type(tiny_mas)(
        tiny_mas.model,
        tiny_mas.sae,
        12,
        "h",
        "p",
        sae_identity={
            "release": "gemma-scope-2b-pt-res-canonical",
            "sae_id": "layer_12/width_16k/canonical",
        },
    )
    assert neuronpedia_id_for(fake) == "gemma-2-2b/12-gemmascope-res-16k"


@torch.no_grad()
def test_per_token_reads_writes_matches_hand_computation(tiny_mas):
    lora = _planted()
    prompt, response = "What is 2+2?", "Four."
    df = per_token_reads_writes(lora, tiny_mas, prompt, response=response)
    turn = format_turn(tiny_mas.tokenizer, prompt, response, "qa")
    assert len(df) == len(turn.tokens) - 1 and df["pos"].tolist()[0] == 1
    assert df["assistant"].tolist() == turn.assistant_mask[1:].tolist()
    p = 6
    _, cache = tiny_mas.model.run_with_cache(turn.tokens[None], names_filter=tiny_mas.hook_name)
    z = tiny_mas.sae.encode(cache[tiny_mas.hook_name][0, p])
    a, b, s = lora.read_dirs(), lora.write_dirs(), lora.s
    row = df[df["pos"] == p].iloc[0]
    for j in range(2):
        assert row[f"read_{j}"] == pytest.approx(float(z @ a[:, j]), abs=1e-5)
    dz = ((z @ a) * s) @ b
    assert row["write_norm"] == pytest.approx(
        float((dz @ write_matrix(tiny_mas.sae)).norm()), rel=1e-5
    )
    contrib = (z[:, None] * a).abs().amax(1)
    assert row["top_read_latents"].startswith(f"{int(contrib.argmax())}:")
    assert row["token"] == tiny_mas.tokenizer.decode([int(turn.tokens[p])])
