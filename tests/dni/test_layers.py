"""The layer mathematics (`seqdni.dni.layers`): true gradients at the cuts, the bootstrapped target,
and that injecting the true gradient gives a block backpropagation's own update."""

from __future__ import annotations

import torch
from torch import nn

from seqdni.dni import Interface, SGOptions, bootstrap_target, true_layer_gradients


def blocks():
    torch.manual_seed(0)
    return [nn.Sequential(nn.Linear(5, 4), nn.Tanh()), nn.Sequential(nn.Linear(4, 3), nn.Tanh()), nn.Linear(3, 2)]


def cut(fs, x):
    leaves, outs, h = [], [], x
    for i, f in enumerate(fs):
        leaves.append(h.detach().requires_grad_(i > 0))
        outs.append(f(leaves[-1]))
        h = outs[-1]
    return leaves, outs


def test_true_layer_gradients_are_backprop_at_every_cut():
    fs, x = blocks(), torch.randn(6, 5)
    hs, h = [], x
    for f in fs:
        h = f(h)
        hs.append(h)
    loss = hs[-1].pow(2).sum() / 6
    expected = torch.autograd.grad(loss, hs[:-1])
    leaves, outs = cut(fs, x)
    (outs[-1].pow(2).sum() / 6).backward()
    deltas = true_layer_gradients(outs, leaves, leaves[-1].grad * 6)
    for d, e in zip(deltas, expected):
        torch.testing.assert_close(d, e * 6)  # per-example units: B · ∂L/∂h


def test_injecting_the_true_gradient_gives_backprops_update_and_the_bootstrapped_target():
    fs, x = blocks(), torch.randn(6, 5)
    loss = fs[2](fs[1](fs[0](x))).pow(2).sum() / 6
    want = torch.autograd.grad(loss, list(fs[1].parameters()))
    leaves, outs = cut(fs, x)
    (outs[-1].pow(2).sum() / 6).backward()
    sg = Interface(3, SGOptions(scale=0.5))
    delta = leaves[2].grad * 6
    sg.inject(outs[1], delta / 0.5, 6, batch_dim=0).backward()  # what an oracle M at cut 1 would predict
    for p, w in zip(fs[1].parameters(), want):
        torch.testing.assert_close(p.grad, w)
    h0 = leaves[1].detach().requires_grad_(True)
    (expected,) = torch.autograd.grad(fs[1](h0), h0, delta / 0.5)
    torch.testing.assert_close(bootstrap_target(leaves[1], 6, 0.5), expected)
