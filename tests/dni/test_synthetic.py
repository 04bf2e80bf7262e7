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
