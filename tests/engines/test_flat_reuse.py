"""`DNIOptions.reuse`: M evaluated once per boundary. The prediction made for the injection is the one
M is trained on one unroll later, so its regression gradient is taken at M's parameters one update
old; with M frozen that is exactly the two-evaluation engine."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import T, char_lstm, flat_engine, grads, random_ids, randomize

from seqdni.dni import flatten_state, regression_loss
from seqdni.engines import DNIOptions, Steps
from seqdni.errors import UserError


def train(engine, x, y, sg_lr: float, before_sg_step=None):
    """Three updates with real optimiser steps (SGD, so a step's effect is plain to compute)."""
    groups = engine.param_groups()
    opts = [torch.optim.SGD(g.params, lr=g.lr if g.name == "core" else sg_lr) for g in groups]
    steps = Steps(groups, opts)
    if before_sg_step is not None:
        plain_step = steps.step

        def step(group):
            if group == "sg":
                before_sg_step(engine)
            plain_step(group)

        steps.step = step
    carry, outs = engine.initial_carry(x.size(0), x.device), []
    for i in range(x.size(1) // T):
        carry, out = engine.update(x[:, i * T : (i + 1) * T], y[:, i * T : (i + 1) * T], carry, steps)
        outs.append(out)
    return outs


def test_with_m_frozen_reuse_is_exactly_the_two_evaluation_engine():
    net, (x, y) = char_lstm(), random_ids(3 * T)
    a, b = flat_engine(net, DNIOptions(reuse=True)), flat_engine(net, DNIOptions())
    randomize(a.boundary.sg)
    b.boundary.sg.load_state_dict(a.boundary.sg.state_dict())
    outs_a, outs_b = train(a, x, y, sg_lr=0.0), train(b, x, y, sg_lr=0.0)
    for oa, ob in zip(outs_a[1:], outs_b[1:]):
        torch.testing.assert_close(oa.sg_loss, ob.sg_loss, rtol=0, atol=0)
    for ga, gb in zip(grads(a.parameters()), grads(b.parameters())):
        torch.testing.assert_close(ga, gb, rtol=0, atol=0)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_the_regression_gradient_is_taken_at_the_parameters_one_update_old():
    """At the third boundary M is trained on M_θ2(s), made for the second unroll's injection before
    M's second update (θ2 → θ3): its gradient is that of ||M_θ2(s) - target||² at θ2."""
    net, (x, y) = char_lstm(), random_ids(4 * T)
    e = flat_engine(net, DNIOptions(reuse=True, clip=0.0))  # no clip: the step applies the raw gradient
    randomize(e.boundary.sg)
    seen = []  # M's parameters and gradients before each of its steps
    outs = train(e, x, y, sg_lr=0.5, before_sg_step=lambda eng: seen.append(
        ([p.detach().clone() for p in eng.boundary.sg.parameters()],
         [p.grad.detach().clone() for p in eng.boundary.sg.parameters()])))
    assert len(seen) == 3  # boundaries 2, 3, 4: the first unroll has no target
    theta2, _ = seen[0]  # M before its first update, with which unroll 2 predicted M(s_{2T})
    theta_at_3, grads_at_3 = seen[1]
    old = copy.deepcopy(e.boundary.sg)
    with torch.no_grad():
        for p, v in zip(old.parameters(), theta2):
            p.copy_(v)
    s_2T = outs[1].carry.state  # the state after unroll 2, where unroll 3 starts (detached)
    loss = regression_loss(old(flatten_state(s_2T)), outs[2].target)
    expected = torch.autograd.grad(loss, list(old.parameters()))
    for g, want in zip(grads_at_3, expected):
        torch.testing.assert_close(g, want, rtol=1e-10, atol=1e-12)
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(theta2, theta_at_3))  # M had moved: the gradient is stale


@pytest.mark.parametrize("key", ["hidden", "rank", "aux_weight", "train_core"])
def test_reuse_is_refused_where_the_kept_graph_cannot_survive_m_update(key):
    value = {"hidden": 8, "rank": 4, "aux_weight": 0.1, "train_core": True}[key]
    with pytest.raises(UserError, match=f"unset model.dni.{key} or model.dni.reuse"):
        DNIOptions(reuse=True, **{key: value})
