"""The discount γ of the bootstrapped target, apart from the injection scale α:
target_t = n·∂ℓ/∂s_t + γ·Jᵀ M(s_{t+T}) while the core receives α·M(s_{t+T})."""

from __future__ import annotations

import pytest
import torch
from helpers import B, T, char_lstm, flat_engine, grads, local_and_future, random_ids, randomize, unroll_all

from seqdni.dni import BoundaryOptions, Interface
from seqdni.engines import DNIOptions


@pytest.mark.parametrize("scale,discount", [(0.3, 0.0), (0.3, 0.3), (0.3, 0.9), (0.1, 1.0), (1.0, 0.5)])
def test_target_uses_the_discount_and_the_core_the_scale(scale, discount):
    net = char_lstm()
    x, y = random_ids(2 * T)
    e = flat_engine(net, DNIOptions(scale=scale, discount=discount))
    randomize(e.boundary.sg)
    outs = unroll_all(e, x, y, T)
    local, jt_m = local_and_future(e, outs, x, y)
    expected = B * T * local + discount * jt_m
    torch.testing.assert_close(outs[1].target, expected, rtol=1e-10, atol=1e-12)
    assert jt_m.abs().max() > 1e-6  # the future term is really there

    # The core's gradient does not depend on γ: it is the injection at scale α.
    same_scale = flat_engine(net, DNIOptions(scale=scale, discount=scale))
    same_scale.boundary.sg.load_state_dict(e.boundary.sg.state_dict())
    e.zero_grad(set_to_none=True)
    unroll_all(e, x, y, T)
    unroll_all(same_scale, x, y, T)
    for a, b in zip(grads(e.net.parameters()), grads(same_scale.net.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_discount_equal_to_scale_costs_no_extra_product(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a second vector-Jacobian product was computed")

    monkeypatch.setattr(Interface, "remainder", refuse)
    e = flat_engine(char_lstm(), DNIOptions(scale=0.3, discount=0.3))
    randomize(e.boundary.sg)
    unroll_all(e, *random_ids(3 * T), T)  # would raise
    with pytest.raises(AssertionError, match="second vector-Jacobian"):
        unroll_all(flat_engine(char_lstm(), DNIOptions(scale=0.3, discount=0.9)), *random_ids(3 * T), T)


@pytest.mark.parametrize("kw,gamma", [({}, 0.1), ({"scale_target": True}, 0.1), ({"scale_target": False}, 1.0),
                                      ({"discount": 0.9}, 0.9), ({"discount": 0.1, "scale_target": True}, 0.1),
                                      ({"discount": 1.0, "scale_target": False}, 1.0)])
def test_scale_target_maps_onto_the_discount(kw, gamma):
    assert BoundaryOptions(scale=0.1, **kw).gamma == gamma
    assert DNIOptions(scale=0.1, **kw).gamma == gamma


def test_conflicting_or_out_of_range_discount_names_the_keys():
    with pytest.raises(ValueError, match=r"scale_target false means discount 1.0.*discount is 0.9"):
        DNIOptions(scale=0.1, scale_target=False, discount=0.9)
    with pytest.raises(ValueError, match=r"model.dni.discount is γ in \[0, 1\], got 1.5"):
        DNIOptions(discount=1.5)
