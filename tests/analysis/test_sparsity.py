"""Sparsity statistics: planted supports and the random-unit-vector baseline's closed forms."""

import math

import pytest
import torch

from saelora_core import SaeLora
from saelora_core.analysis import (
    adapter_sparsity,
    noise_baseline_closed_form,
    random_unit_vectors,
    sorted_weight_curves,
    vector_sparsity,
)


def _planted(d_sae: int = 64) -> SaeLora:
    lora = SaeLora(d_sae, 1)
    with torch.no_grad():
        lora.a.zero_()
        lora.a[[3, 10, 20], 0] = torch.tensor([0.8, -0.5, 0.3])
        lora.b.zero_()
        lora.b[0, [1, 2, 5]] = torch.tensor([1.0, 1.0, 1.0])
        lora.b[0, 7] = 1e-5  # nonzero but below the 1e-3 relative threshold
    return lora


def test_vector_sparsity_exact_values():
    v = torch.zeros(16)
    v[0] = 1.0
    s = vector_sparsity(v)
    assert s["l0"] == 1 and s["l0@1e-03"] == 1 and s["hoyer"] == pytest.approx(1.0)
    assert s["gini"] == pytest.approx(15 / 16) and s["top1_mass"] == pytest.approx(1.0)
    flat = vector_sparsity(torch.ones(16))
    assert flat["l0"] == 16 and flat["hoyer"] == pytest.approx(0.0, abs=1e-12)
    assert flat["gini"] == pytest.approx(0.0, abs=1e-12)
    assert flat["top4_mass"] == pytest.approx(0.25)


def test_planted_sparse_adapter_true_l0():
    df = adapter_sparsity(_planted())
    read = df[(df["side"] == "read") & (df["kind"] == "adapter")].iloc[0]
    write = df[(df["side"] == "write") & (df["kind"] == "adapter")].iloc[0]
    assert read["l0"] == 3 and read["l0@1e-02"] == 3
    assert write["l0"] == 4 and write["l0@1e-03"] == 3
    assert read["top4_mass"] == pytest.approx(1.0)
    noise = df[df["kind"] == "noise"]
    assert len(noise) == 2 and set(noise["side"]) == {"noise"}
    assert set(noise["baseline_for"]) == {"read", "write"} and (noise["l0"] == 64).all()


def test_noise_baseline_matches_closed_form():
    d = 4096
    cf = noise_baseline_closed_form(d)
    stats = [vector_sparsity(v) for v in random_unit_vectors(8, d, seed=0)]
    assert all(s["l0"] == d for s in stats) and cf["l0"] == d
    hoyer = sum(s["hoyer"] for s in stats) / len(stats)
    gini = sum(s["gini"] for s in stats) / len(stats)
    assert cf["gini"] == pytest.approx(math.sqrt(2) - 1)
    assert hoyer == pytest.approx(cf["hoyer"], abs=0.005)
    assert gini == pytest.approx(cf["gini"], abs=0.005)
    # the same through adapter_sparsity's noise rows (an adapter with d_sae = 4096)
    rows = adapter_sparsity(SaeLora(d, 2), seed=1)
    noise = rows[rows["kind"] == "noise"]
    assert len(noise) == 4
    assert noise["hoyer"].mean() == pytest.approx(cf["hoyer"], abs=0.01)
    assert noise["gini"].mean() == pytest.approx(cf["gini"], abs=0.01)


def test_sorted_weight_curves():
    df = sorted_weight_curves(_planted(), seed=0)
    assert list(df.columns) == ["component", "side", "rank", "abs_weight"]
    assert df.groupby("side").size().to_dict() == {"noise": 64, "read": 64, "write": 64}
    read = df[df["side"] == "read"]["abs_weight"].to_numpy()
    assert (read[:-1] >= read[1:]).all() and (read[3:] == 0).all()
    assert read[0] == pytest.approx(0.8 / math.sqrt(0.98))
