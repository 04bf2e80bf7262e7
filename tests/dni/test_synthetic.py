"""M, the synthetic-gradient model: linear or an MLP, and zero at initialisation (so DNI starts as TBPTT)."""

from __future__ import annotations

import torch
from helpers import B
from torch import nn

from seqdni.dni import SyntheticGradient


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
