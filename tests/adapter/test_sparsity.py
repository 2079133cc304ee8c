"""Sparsity penalties and projections on the adapter."""

import pytest
import torch

from saelora_core import SaeLora, penalty, project_, prune_topk, random_support_control
from saelora_core.adapter.sparsity import split_rank


def test_l1_raw_is_degenerate_but_l1_normalized_is_scale_invariant():
    lora = SaeLora(100, 2, generator=torch.Generator().manual_seed(0))
    raw, norm = penalty(lora, "l1_raw").item(), penalty(lora, "l1_normalized").item()
    with torch.no_grad():
        lora.a.mul_(0.01)
        lora.b.mul_(0.01)
    assert penalty(lora, "l1_raw").item() < raw * 0.02  # lowered with no change in function
    assert abs(penalty(lora, "l1_normalized").item() - norm) < 1e-4


def test_topk_projection_keeps_exactly_k():
    lora = SaeLora(100, 3, generator=torch.Generator().manual_seed(0))
    project_(lora, "topk", k=7)
    assert lora.l0() == ([7, 7, 7], [7, 7, 7])
    torch.testing.assert_close(lora.read_dirs().norm(dim=0), torch.ones(3))


def test_proximal_l1_gives_exact_zeros_and_keeps_big_entries():
    lora = SaeLora(10, 1)
    with torch.no_grad():
        lora.a.copy_(torch.tensor([[0.9, 0.4, 0.05, -0.02, 0, 0, 0, 0, 0.1, 0]]).T)
        lora.b.copy_(torch.tensor([[0.01] * 9 + [0.02]]))
    project_(lora, "proximal_l1", tau=0.08)
    nz = torch.nonzero(lora.a[:, 0]).flatten().tolist()
    assert nz == [0, 1, 8]  # unit entries 0.91, 0.40, 0.10 survive; 0.05 and 0.02 become exact 0
    assert lora.l0()[1] == [10]  # b's unit entries are ~0.3, above tau
    project_(lora, "proximal_l1", tau=0.9)
    # every entry of b is below tau: the largest survives, so the vector never vanishes
    assert torch.nonzero(lora.b[0]).flatten().tolist() == [9]
    torch.testing.assert_close(lora.write_dirs().norm(dim=1), torch.ones(1))


def test_prune_and_random_control_same_l0():
    lora = SaeLora(200, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora.s.fill_(2.0)
    pr = prune_topk(lora, 5)
    assert pr.lora.l0() == ([5, 5], [5, 5])
    top = lora.read_dirs()[:, 0].abs().topk(5).indices.sort().values.tolist()
    assert pr.kept_read[0] == top
    ctrl = random_support_control(lora, 5, generator=torch.Generator().manual_seed(1))
    assert ctrl.l0() == ([5, 5], [5, 5])
    assert torch.equal(ctrl.s, lora.s)
    assert set(torch.nonzero(ctrl.a[:, 0]).flatten().tolist()) != set(top)


def test_hard_concrete_gates_are_deterministic_at_test_time():
    from saelora_core.adapter.sae_lora import HC_BETA, HC_GAMMA, HC_ZETA

    torch.manual_seed(0)
    lora = SaeLora(50, 2, generator=torch.Generator().manual_seed(0), gates=True)
    with torch.no_grad():
        lora.log_alpha_a[:30] = -6.0  # closed gates
        lora.log_alpha_b[:, 10:] = -6.0
    lora.eval()
    first = lora.read_dirs().clone()
    assert torch.equal(first, lora.read_dirs())  # no sampling in eval mode
    assert lora.l0() == ([20, 20], [10, 10])
    assert (first[:30] == 0).all()
    lora.train()
    assert not torch.equal(lora.read_dirs(), lora.read_dirs())  # sampled gates in training
    # expected L0 has the closed form Σ sigmoid(log_alpha - β log(-γ/ζ))
    shift = HC_BETA * torch.log(torch.tensor(-HC_GAMMA / HC_ZETA))
    want = sum(torch.sigmoid(x - shift).sum() for x in (lora.log_alpha_a, lora.log_alpha_b))
    torch.testing.assert_close(penalty(lora, "hard_concrete"), want)
    # folding gives a plain adapter that computes the eval-mode function, with exact zeros
    plain = lora.folded()
    assert not plain.gates and plain.l0() == ([20, 20], [10, 10])
    z = torch.rand(3, 50)
    with torch.no_grad():
        lora.s.fill_(1.5)
        plain.s.fill_(1.5)
    lora.eval()
    torch.testing.assert_close(plain.delta(z), lora.delta(z))
    pr = prune_topk(lora, 4)
    assert pr.lora.l0() == ([4, 4], [4, 4])
    assert set(pr.kept_read[0]) <= set(range(30, 50))


def test_prune_then_save_and_reload_round_trips(tmp_path):
    from saelora_core import load_lora, save_lora

    lora = SaeLora(300, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        lora.s.copy_(torch.tensor([1.0, -2.0]))
    pr = prune_topk(lora, 8)
    save_lora(pr.lora, tmp_path / "p", {"note": "pruned"})
    back = load_lora(tmp_path / "p").lora
    assert back.l0() == ([8, 8], [8, 8])
    for k, v in pr.lora.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)


def test_split_rank_preserves_the_function_and_deals_entries_round_robin():
    torch.manual_seed(0)
    lora = SaeLora(64, 1)
    with torch.no_grad():
        lora.s.fill_(1.7)
    z = torch.randn(5, 64).relu()
    for rank, (p, q), parts in ((2, (1, 2), None), (4, (2, 2), None), (4, (1, 4), 1)):
        split = split_rank(lora, rank, read_parts=parts)
        assert split.rank == rank
        torch.testing.assert_close(split.delta(z), lora.delta(z), rtol=1e-5, atol=1e-5)
        # Top-2 per component keeps the 2p largest read and the 2q largest write entries.
        project_(split, "topk", k=2)
        reads = torch.nonzero(split.a.T)[:, 1].unique().tolist()
        writes = torch.nonzero(split.b)[:, 1].unique().tolist()
        assert sorted(reads) == sorted(lora.a[:, 0].abs().topk(2 * p).indices.tolist())
        assert sorted(writes) == sorted(lora.b[0].abs().topk(2 * q).indices.tolist())
    with pytest.raises(ValueError, match="multiple"):
        split_rank(SaeLora(64, 2), 3)
    with pytest.raises(ValueError, match="does not divide"):
        split_rank(lora, 4, read_parts=3)


def test_group_topk_keeps_k_distinct_latents_over_all_components():
    torch.manual_seed(0)
    lora = SaeLora(40, rank=4)
    a_hat, b_hat = lora.read_dirs().detach().clone(), lora.write_dirs().detach().clone()
    want_read = set(a_hat.norm(dim=1).topk(5).indices.tolist())
    want_write = set(b_hat.norm(dim=0).topk(5).indices.tolist())
    project_(lora, "group_topk", k=5)
    read, write = lora.distinct_latents()
    assert set(read) == want_read and set(write) == want_write
    # Within the kept support each unit vector keeps its direction.
    for j in range(4):
        idx = sorted(want_read)
        kept = a_hat[idx, j] / a_hat[idx, j].norm()
        assert torch.allclose(lora.read_dirs()[idx, j], kept, atol=1e-6)
    assert lora.l0() == ([5] * 4, [5] * 4)


def test_group_topk_at_rank_1_is_topk():
    torch.manual_seed(1)
    x, y = SaeLora(50, rank=1), SaeLora(50, rank=1)
    y.load_state_dict(x.state_dict())
    project_(x, "topk", k=7)
    project_(y, "group_topk", k=7)
    assert torch.equal(x.a, y.a) and torch.equal(x.b, y.b)
    assert [len(v) for v in x.distinct_latents()] == [7, 7]


def test_restrict_latents_keeps_exactly_the_contribution_of_the_given_latents():
    from saelora_core.adapter.sparsity import restrict_latents

    torch.manual_seed(2)
    lora = SaeLora(30, rank=3)
    lora.s.data = torch.tensor([0.5, -1.0, 2.0])
    z = torch.rand(5, 30)
    read, write = [1, 4, 7, 20], [0, 3, 29]
    kept = restrict_latents(lora, read, write)
    m_r = torch.zeros(30)
    m_r[read] = 1
    m_w = torch.zeros(30)
    m_w[write] = 1
    want = (((z * m_r) @ lora.read_dirs()) * lora.s) @ lora.write_dirs() * m_w
    assert torch.allclose(kept.delta(z), want, atol=1e-5)
    assert kept.distinct_latents() == (read, write)
    # Kept and dropped parts of one side add up to the whole.
    r_keep, r_drop = restrict_latents(lora, read), restrict_latents(lora, read, drop=True)
    assert torch.allclose(r_keep.delta(z) + r_drop.delta(z), lora.delta(z), atol=1e-5)
