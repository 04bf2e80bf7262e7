"""The mathematics of docs/dni-rnn.md as functions (injection, bootstrapped target, regression loss,
true future gradient, diagnostics), checked against independent autograd computations on cores
that are not seqdni's."""

from __future__ import annotations

import pytest
import torch
from helpers import B, T, grads
from torch import nn

from seqdni.dni import (
    SyntheticGradient,
    bootstrapped_target,
    boundary_injection,
    cosine,
    detach_state,
    diagnostics,
    flatten_state,
    pending_targets,
    regression_loss,
    true_future_gradient,
)


def test_the_dni_functions_drive_a_plain_gru_outside_the_engines():
    """seqdni.dni on a core whose state is one tensor (nn.GRU's h), in a hand-written loop:
    with the true future gradient injected at the first boundary, two unrolls give BPTT's
    gradients over 2T, and the bootstrapped target read at that boundary is that gradient."""
    torch.manual_seed(0)
    gru, head = nn.GRU(3, 5, batch_first=True).double(), nn.Linear(5, 2).double()
    params = list(gru.parameters()) + list(head.parameters())
    x, y = torch.randn(B, 2 * T, 3, dtype=torch.float64), torch.randn(B, 2 * T, 2, dtype=torch.float64)
    h0 = torch.zeros(1, B, 5, dtype=torch.float64)

    def unroll(h, chunk):
        out, h = gru(chunk[0], h)
        return (head(out) - chunk[1]).pow(2).mean(), h

    first, second = (x[:, :T], y[:, :T]), (x[:, T:], y[:, T:])
    l1, h1 = unroll(h0, first)
    (l1 + unroll(h1, second)[0]).backward()
    g_bptt = grads(params)

    delta = true_future_gradient(unroll, h1, [second])
    assert delta.shape == (B, 5) and delta.abs().max() > 0
    for p in params:
        p.grad = None
    l1, h1 = unroll(detach_state(h0), first)
    (l1 + boundary_injection(h1, delta)).backward()
    s = detach_state(h1, requires_grad=True)
    l2, h2 = unroll(s, second)
    (l2 + boundary_injection(h2, torch.zeros_like(delta))).backward()
    for a, b in zip(g_bptt, grads(params)):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(bootstrapped_target(s), delta, rtol=1e-10, atol=1e-13)

    sg = SyntheticGradient(5).double()
    regression_loss(sg(flatten_state(s).detach()), bootstrapped_target(s)).backward()
    assert sg.net[0].weight.grad.abs().max() > 0  # M learns from the target


def test_check4_linear_sg_learns_the_true_gradient_of_a_linear_rnn():
    """s_τ = A s_{τ-1} + u_τ, ℓ_τ = ½|s_τ|² (mean over the batch). The expected future gradient is
    E[δ_τ | s_τ] = P s_τ / B with P = Σ_{k≥1} (A^k)^T A^k; a linear M trained only on
    bootstrapped targets must point the same way."""
    torch.manual_seed(0)
    d, batch_size, steps = 4, 64, 3
    q, _ = torch.linalg.qr(torch.randn(d, d))
    A = 0.8 * q @ torch.diag(torch.tensor([1.0, 0.9, 0.7, 0.5]))
    P = sum(torch.linalg.matrix_power(A, k).T @ torch.linalg.matrix_power(A, k) for k in range(1, 200))
    M = SyntheticGradient(d)
    opt = torch.optim.Adam(M.parameters(), lr=3e-3)
    s = torch.zeros(batch_size, d)
    for _ in range(1500):
        s_t = detach_state(s, requires_grad=True)
        h, loss = s_t, 0.0
        for _ in range(steps):
            h = h @ A.T + 0.3 * torch.randn(batch_size, d)
            loss = loss + 0.5 * h.pow(2).sum(1).mean()
        (loss + boundary_injection(h, M(h), 1.0, batch_dim=0)).backward()
        target = bootstrapped_target(s_t, batch_dim=0)
        opt.zero_grad()
        regression_loss(M(s_t.detach()), target).backward()
        opt.step()
        s = h.detach()
    probe = torch.randn(256, d)
    with torch.no_grad():
        assert cosine(M(probe), probe @ P.T / batch_size) > 0.9


def test_regression_loss_sums_features_and_averages_the_batch():
    pred, tgt = torch.zeros(2, 3), torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 2.0]])
    assert regression_loss(pred, tgt).item() == pytest.approx((3.0 + 4.0) / 2)
    p = torch.zeros(2, 3, requires_grad=True)
    regression_loss(p, tgt.requires_grad_()).backward()
    assert tgt.grad is None  # the target is a constant


def test_diagnostics_over_a_window_are_the_mean_over_its_boundaries():
    g = torch.Generator().manual_seed(0)
    preds = [torch.randn(B, 10, generator=g, dtype=torch.float64) for _ in range(3)]
    targets = [p + torch.randn(B, 10, generator=g, dtype=torch.float64) for p in preds]
    window = diagnostics(torch.cat(preds), torch.cat(targets))
    each = [diagnostics(p, t) for p, t in zip(preds, targets)]
    assert set(window) == {"sg/pred_norm", "sg/target_norm", "sg/cosine"}
    for key, value in window.items():
        torch.testing.assert_close(value, torch.stack([d[key] for d in each]).mean())
    assert 0 < window["sg/cosine"] < 1
    assert diagnostics(preds[0], -2 * preds[0], "sg/x")["sg/x/cosine"].item() == pytest.approx(-1.0)


@pytest.mark.parametrize("gamma", [1.0, 0.5])
def test_pending_targets_are_each_start_states_discounted_future_gradient(gamma):
    """One backward gives every chunk's start state the gradient of its own discounted future:
    δ_i = ∂(Σ_{j>=i} γ^(j-i) loss_j)/∂s_i + γ^(n-i) J_iᵀ g, checked against one autograd call per state."""
    torch.manual_seed(0)
    rnn = nn.RNNCell(3, 4).double()
    w = torch.randn(4, dtype=torch.float64)
    xs = [torch.randn(B, T, 3, dtype=torch.float64) for _ in range(3)]
    g = torch.randn(B, 4, dtype=torch.float64)

    def unroll(s, x):
        h, loss = s, 0.0
        for t in range(x.size(1)):
            h = rnn(x[:, t], h)
            loss = loss + (h * w).sum().pow(2)
        return loss, h

    s0 = torch.randn(B, 4, dtype=torch.float64)
    states, targets = pending_targets(unroll, s0, xs, g, gamma, batch_dim=0)
    assert states.shape == targets.shape == (3 * B, 4)
    for i in range(3):
        leaf = states[i * B : (i + 1) * B].clone().requires_grad_(True)
        total, s = 0.0, leaf
        for j in range(i, 3):
            loss, s = unroll(s, xs[j])
            total = total + gamma ** (j - i) * loss
        total = total + gamma ** (3 - i) * (g * s).sum()
        want = torch.autograd.grad(total, leaf)[0]
        torch.testing.assert_close(targets[i * B : (i + 1) * B], want, rtol=1e-10, atol=1e-12)
