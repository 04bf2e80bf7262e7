"""The true-gradient probe: its reference is the gradient M is trained towards."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import B, Oracle, T, V, char_lstm, flat_engine, random_ids

from seqdni.dni import flatten_state, true_future_gradient
from seqdni.engines import DNIOptions, probe


@pytest.mark.parametrize("scale_target", [False, True])
def test_probe_matches_an_oracle_sg_perfectly(scale_target):
    """The probe's true gradient is what M learns: undiscounted, or with scale_target the
    second unroll's loss counted scale times (the target's future term is scaled once)."""
    net = char_lstm()
    x, y = random_ids(3 * T)
    opts = DNIOptions(scale=0.3, scale_target=scale_target)
    e = flat_engine(net, opts)
    with torch.no_grad():
        _, s = e.net(x[:, :T], e.net.init_state(B))
    weight = iter([1.0, opts.scale if scale_target else 1.0])

    def mean_loss(state, chunk):
        logits, state = e.net(chunk[0], state)
        return next(weight) * F.cross_entropy(logits.reshape(-1, V), chunk[1].reshape(-1)), state

    true = true_future_gradient(mean_loss, s, [(x[:, T:2 * T], y[:, T:2 * T]), (x[:, 2 * T:], y[:, 2 * T:])])
    e.boundary.sg = Oracle([(flatten_state(s), true * B * T)])
    res = probe(e, x, y, warmup=T)
    assert res["sg/probe_cosine"].item() == pytest.approx(1.0)
    assert res["sg/probe_norm_ratio"].item() == pytest.approx(1.0)


def test_probe_reports_the_undiscounted_horizon_beside_the_discounted_one():
    """With γ < 1, an oracle of the undiscounted gradient over K unrolls scores 1 on
    `sg/probe_cosine_undiscounted` and less on `sg/probe_cosine`; with γ = 1 only one is reported."""
    net = char_lstm()
    K = 8
    x, y = random_ids((K + 1) * T)
    e = flat_engine(net, DNIOptions(scale=0.3, discount=0.5))
    with torch.no_grad():
        _, s = e.net(x[:, :T], e.net.init_state(B))

    def mean_loss(state, chunk):
        logits, state = e.net(chunk[0], state)
        return F.cross_entropy(logits.reshape(-1, V), chunk[1].reshape(-1)), state

    chunks = [(x[:, i : i + T], y[:, i : i + T]) for i in range(T, (K + 1) * T, T)]
    true = true_future_gradient(mean_loss, s, chunks)
    e.boundary.sg = Oracle([(flatten_state(s), true * B * T)])
    res = probe(e, x, y, warmup=T)
    assert res["sg/probe_cosine_undiscounted"].item() == pytest.approx(1.0)
    assert res["sg/probe_norm_ratio_undiscounted"].item() == pytest.approx(1.0)
    assert res["sg/probe_cosine"].item() < 0.9999
    assert "sg/probe_cosine_undiscounted" not in probe(flat_engine(net, DNIOptions(discount=1.0)), x, y, warmup=T)
