"""`least_squares`: the flat engine's M is fitted in closed form to the targets it would regress on,
takes no optimiser steps, and leaves the core's update as it is."""

from __future__ import annotations

import pytest
import torch
from helpers import T, char_lstm, flat_engine, grads, random_ids, unroll_all, weighted_ridge

from seqdni.engines import DNIOptions
from seqdni.errors import UserError


@pytest.mark.parametrize("extra", [{}, {"target_unrolls": 3, "pending_targets": True}])
def test_m_is_the_ridge_fit_of_the_rows_and_targets_it_learned_from(extra):
    x, y = random_ids(8 * T)
    e = flat_engine(char_lstm(), DNIOptions(scale=0.5, discount=1.0, squash=True, least_squares=4, ridge=0.1,
                                            solve_every=3, **extra))
    assert [g.name for g in e.param_groups()] == ["core"]  # no optimiser for M
    seen, update = [], e.boundary.fit.update

    def spy(f, g, linear):
        seen.append((f.clone(), g.clone()))
        update(f, g, linear)
    e.boundary.fit.update = spy
    outs = unroll_all(e, x, y, T)
    assert len(seen) == 7 and all(o.sg_loss is None for o in outs)  # every boundary; nothing to step
    torch.testing.assert_close(seen[-1][1], outs[-1].target)
    want = weighted_ridge([f for f, _ in seen[:6]], [g for _, g in seen[:6]], rho=0.75, ridge=0.1)  # solved at 6
    torch.testing.assert_close(e.boundary.sg.net[-1].weight, want[:-1].T.to(torch.float64))
    torch.testing.assert_close(e.boundary.sg.net[-1].bias, want[-1])


def test_before_the_first_solve_the_core_gets_truncated_bptt_gradients():
    x, y = random_ids(3 * T)
    net = char_lstm()
    a = flat_engine(net, DNIOptions(scale=1.0, least_squares=10, solve_every=5))
    b = flat_engine(net, None)
    unroll_all(a, x, y, T)
    unroll_all(b, x, y, T)
    for ga, gb in zip(grads(a.net.parameters()), grads(b.net.parameters())):
        torch.testing.assert_close(ga, gb, rtol=0, atol=0)


@pytest.mark.parametrize("bad,key", [({"hidden": 8}, "hidden"), ({"rank": 4}, "rank"), ({"reuse": True}, "reuse"),
                                     ({"train_core": True}, "train_core")])
def test_least_squares_refuses_an_m_it_cannot_fit(bad, key):
    with pytest.raises(UserError, match=f"model.dni.{key}"):
        DNIOptions(least_squares=100, **bad)


def test_least_squares_refuses_negative_settings():
    with pytest.raises(UserError, match="solve_every"):
        DNIOptions(least_squares=100, solve_every=0)
