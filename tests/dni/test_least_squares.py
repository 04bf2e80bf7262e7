"""M fitted by least squares (`LeastSquares`): the running moments give the exponentially weighted
ridge fit of every row seen, and the fit is what the interface's M then predicts."""

from __future__ import annotations

import pytest
import torch
from helpers import weighted_ridge
from torch import nn

from seqdni.dni import BoundaryOptions, Interface, LeastSquares


def test_the_fit_is_the_exponentially_weighted_ridge_regression_of_all_rows():
    torch.manual_seed(0)
    fs = [torch.randn(6, 5, dtype=torch.float64) for _ in range(8)]
    gs = [torch.randn(6, 3, dtype=torch.float64) for _ in range(8)]
    ls, linear = LeastSquares(5, 3, memory=4, ridge=0.1, every=4), nn.Linear(5, 3).double()
    for f, g in zip(fs, gs):
        ls.update(f, g, linear)
    want = weighted_ridge(fs, gs, rho=0.75, ridge=0.1)
    torch.testing.assert_close(linear.weight.detach(), want[:-1].T)
    torch.testing.assert_close(linear.bias.detach(), want[-1])


def test_the_weights_change_only_every_solve_and_recover_a_linear_map():
    torch.manual_seed(1)
    W, b = torch.randn(3, 5), torch.randn(3)
    ls, linear = LeastSquares(5, 3, memory=100, ridge=1e-9, every=3), nn.Linear(5, 3)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    for k in range(1, 7):
        f = torch.randn(20, 5)
        ls.update(f, f @ W.T + b, linear)
        assert (linear.weight.abs().sum() > 0) == (k >= 3)  # zero (TBPTT) until the first solve
    torch.testing.assert_close(linear.weight.detach(), W, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(linear.bias.detach(), b, rtol=1e-4, atol=1e-4)


def test_the_update_count_travels_with_the_state_dict():
    a, b = LeastSquares(4, 4, memory=10, ridge=0.1, every=5), LeastSquares(4, 4, memory=10, ridge=0.1, every=5)
    for _ in range(3):
        a.update(torch.randn(2, 4), torch.randn(2, 4), nn.Linear(4, 4))
    b.load_state_dict(a.state_dict())
    assert b.updates == 3 and torch.equal(b.ff, a.ff) and torch.equal(b.fg, a.fg)


@pytest.mark.parametrize("squash", [False, True])
def test_the_interface_fits_m_on_the_features_it_reads(squash):
    torch.manual_seed(2)
    it = Interface(4, BoundaryOptions(squash=squash), fit=(1000, 1e-9, 2))
    assert not it.by_gradient and Interface(4, BoundaryOptions()).by_gradient
    W = torch.randn(4, 4)
    for _ in range(4):
        s = 3 * torch.randn(50, 4)
        feats = torch.tanh(s) if squash else s
        loss, pred = it.learn(s, feats @ W.T)
        assert not loss.requires_grad
    s = torch.randn(10, 4)
    torch.testing.assert_close(it.sg(s), (torch.tanh(s) if squash else s) @ W.T, rtol=1e-3, atol=1e-3)
