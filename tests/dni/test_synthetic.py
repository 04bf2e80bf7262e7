"""M, the synthetic-gradient model: linear or an MLP, and zero at initialisation (so DNI starts as TBPTT)."""

from __future__ import annotations

import pytest
import torch
from helpers import B
from torch import nn

from seqdni.dni import SGOptions, SyntheticGradient
from seqdni.errors import UserError


def test_sg_model_starts_at_zero_linear_and_mlp():
    s = torch.randn(B, 8)
    for hidden in (0, 16):
        m = SyntheticGradient(8, hidden)
        assert torch.equal(m(s), torch.zeros(B, 8))
    assert sum(isinstance(m, nn.Linear) for m in SyntheticGradient(8, 16).modules()) == 2


def test_squash_reads_tanh_of_the_state_and_stays_bounded():
    torch.manual_seed(0)
    plain, squashed = SyntheticGradient(6), SyntheticGradient(6, squash=True)
    for m in (plain, squashed):
        torch.nn.init.normal_(m.net[-1].weight)
    squashed.load_state_dict(plain.state_dict())
    s = torch.randn(3, 6)
    torch.testing.assert_close(squashed(s), plain(torch.tanh(s)))
    bound = squashed.net[-1].weight.abs().sum(1) + squashed.net[-1].bias.abs()  # |W tanh(s) + b| per output
    assert (squashed(s * 1e6).abs() <= bound + 1e-5).all()
    assert plain(s * 1e6).abs().max() > 1e4  # a plain linear M grows with its input


def test_skip_adds_a_linear_map_beside_the_mlp_and_starts_at_zero():
    torch.manual_seed(1)
    m, s = SyntheticGradient(6, 8, skip=True), torch.randn(3, 6)
    assert torch.equal(m(s), torch.zeros(3, 6))
    for layer in (m.net[-1], m.skip):
        torch.nn.init.normal_(layer.weight)
    torch.testing.assert_close(m(s), m.net(s) + m.skip(s))
    m.net[-1].weight.data.zero_()
    m.net[-1].bias.data.zero_()
    torch.testing.assert_close(m(s), s @ m.skip.weight.T + m.skip.bias)  # the MLP off: M is linear


def test_skip_needs_a_hidden_layer():
    with pytest.raises(UserError, match="hidden"):
        SyntheticGradient(6, skip=True)
    with pytest.raises(UserError, match="model.dni.hidden"):
        SGOptions(skip=True)


def test_experts_add_a_gated_mixture_of_low_rank_maps_that_starts_at_zero():
    torch.manual_seed(3)
    m, s = SyntheticGradient(6, experts=3, expert_rank=2), torch.randn(4, 6)
    torch.testing.assert_close(m(s), m.net(s))  # U = 0: the mixture adds nothing yet
    torch.nn.init.normal_(m.experts.up)
    gate = torch.softmax(m.experts.gate(s), dim=-1)  # (4, 3)
    V = m.experts.down.weight.view(3, 2, 6)  # expert k: V_kᵀ is rows k·r .. (k+1)·r - 1
    U = m.experts.up.view(3, 2, 6)
    want = m.net(s) + sum(gate[:, k : k + 1] * (s @ V[k].T @ U[k]) for k in range(3))
    torch.testing.assert_close(m(s), want)


def test_a_state_dependent_gate_fits_what_no_single_linear_map_can():
    """y = +x where x_0 > 0 and -x elsewhere: the best linear map explains nothing, two gated maps all of it."""
    torch.manual_seed(4)
    x = torch.randn(2048, 4)
    y = torch.where(x[:, :1] > 0, x, -x)
    losses = {}
    for experts in (0, 2):
        m = SyntheticGradient(4, experts=experts, expert_rank=4)
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        for _ in range(400):
            opt.zero_grad()
            loss = (m(x) - y).pow(2).sum(1).mean()
            loss.backward()
            opt.step()
        losses[experts] = loss.item() / y.pow(2).sum(1).mean().item()
    assert losses[0] > 0.8 and losses[2] < 0.2, losses
