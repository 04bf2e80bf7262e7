"""`rank`: M as a linear map of low rank, d -> r -> d (2·d·r weights instead of d²)."""

from __future__ import annotations

import pytest
import torch

from seqdni.dni import SGOptions, SyntheticGradient, regression_loss
from seqdni.errors import UserError


def test_a_low_rank_m_starts_at_zero_has_rank_r_and_learns_a_rank_r_map():
    torch.manual_seed(0)
    d, r = 16, 3
    m = SyntheticGradient(d, rank=r)
    assert sum(p.numel() for p in m.parameters()) == 2 * d * r + d  # no bias between the factors
    s = torch.randn(256, d)
    assert m(s).abs().max() == 0  # DNI starts as truncated BPTT
    true = torch.randn(d, r) @ torch.randn(r, d) / d  # a rank-r target map
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(600):
        loss = regression_loss(m(s), s @ true.T)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred, want = m(s), s @ true.T
        assert torch.linalg.matrix_rank(pred) <= r
        assert torch.nn.functional.cosine_similarity(pred.flatten(), want.flatten(), dim=0) > 0.999


def test_rank_and_hidden_exclude_each_other():
    with pytest.raises(UserError, match="model.dni.hidden .* and model.dni.rank .* exclude each other"):
        SGOptions(hidden=8, rank=4)
    with pytest.raises(UserError, match="must be >= 0"):
        SGOptions(rank=-1)
