"""Each option of the flat engine's DNI (`DNIOptions`) does what it says, and only that."""

from __future__ import annotations

import pytest
import torch
from helpers import B, T, V, char_lstm, flat_engine, grads, random_ids, randomize, unroll_all

from seqdni.dni import flatten_state, regression_loss
from seqdni.engines import DNIOptions


def test_option_scale_is_linear_in_the_injected_gradient():
    net = char_lstm()
    x, y = random_ids(2 * T)
    bptt = flat_engine(net, None)
    unroll_all(bptt, x, y, T)
    g0 = grads(bptt.net.parameters())
    diffs = []
    for scale in (0.1, 0.2):
        e = flat_engine(net, DNIOptions(scale=scale))
        randomize(e.boundary.sg)
        unroll_all(e, x, y, T)
        diffs.append([a - b for a, b in zip(grads(e.net.parameters()), g0)])
    for d1, d2 in zip(*diffs):
        torch.testing.assert_close(d2, 2 * d1, rtol=1e-6, atol=1e-13)
    assert max(d.abs().max() for d in diffs[0]) > 0


def test_option_scale_target_changes_the_target_only():
    net = char_lstm()
    x, y = random_ids(2 * T)
    res = {}
    for st in (True, False):
        e = flat_engine(net, DNIOptions(scale=0.1, scale_target=st))
        randomize(e.boundary.sg)
        res[st] = (unroll_all(e, x, y, T), grads(e.net.parameters()))
    for a, b in zip(res[True][1], res[False][1]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(res[True][0][1].target, res[False][0][1].target)


@pytest.mark.parametrize("aux_weight", [0.0, 0.5])
def test_option_train_core_sends_the_sg_loss_into_the_kept_core_step_only(aux_weight):
    net = char_lstm()
    x, y = random_ids(2 * T)
    out = {}
    for tc in (False, True):
        torch.manual_seed(3)  # the same aux head
        e = flat_engine(net, DNIOptions(train_core=tc, aux_weight=aux_weight))
        randomize(e.boundary.sg)
        outs = unroll_all(e, x, y, T)
        g_lm = grads(e.net.parameters())
        e.zero_grad(set_to_none=True)
        outs[1].sg_loss.backward()
        out[tc] = (g_lm, grads(e.net.parameters()), grads(e.boundary.sg.parameters()), e, outs[1].target)
    for a, b in zip(out[False][0], out[True][0]):  # the language-model gradients do not change
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert all(g.abs().max() == 0 for g in out[False][1])  # off: the SG loss never touches the core
    assert max(g.abs().max() for g in out[True][2]) > 0
    # on: the SG loss trains exactly the kept core step, s_t = core(x_T, s_{T-1}) with s_{T-1} fixed
    e, target = out[True][3], out[True][4]
    with torch.no_grad():
        s_before = e.net.core(x[:, : T - 1], e.net.init_state(B))[1]
    s_t = e.net.core(x[:, T - 1 : T], s_before)[1]
    ref = torch.autograd.grad(regression_loss(e.boundary.sg(flatten_state(s_t)), target), list(e.net.parameters()),
                              allow_unused=True)
    for got, r in zip(out[True][1], ref):
        torch.testing.assert_close(got, r if r is not None else torch.zeros_like(got), rtol=1e-10, atol=1e-13)
    assert max(g.abs().max() for g in out[True][1]) > 0


def test_option_conditional_feeds_the_next_input_to_the_sg_model():
    net = char_lstm()
    x, y = random_ids(2 * T)
    e = flat_engine(net, DNIOptions(conditional=True))
    randomize(e.boundary.sg)
    seen = []
    e.boundary.sg.register_forward_hook(lambda mod, args, res: seen.append(args[1].argmax(1)))
    unroll_all(e, x, y, T)
    assert torch.equal(seen[0], y[:, T - 1])  # boundary 1: the character after it is y[:, T-1]
    assert torch.equal(seen[1], y[:, 2 * T - 1]) and torch.equal(seen[2], x[:, T])  # M(s_{t+T}), then M(s_t)
    assert e.boundary.sg.net[0].in_features == 2 * 2 * 6 + V


def test_option_hidden_makes_an_mlp_that_still_starts_as_bptt():
    net = char_lstm()
    x, y = random_ids(2 * T)
    bptt = flat_engine(net, None)
    unroll_all(bptt, x, y, T)
    e = flat_engine(net, DNIOptions(hidden=9))
    assert e.boundary.sg.net[0].out_features == 9
    unroll_all(e, x, y, T)
    for a, b in zip(grads(bptt.net.parameters()), grads(e.net.parameters())):
        assert torch.equal(a, b)


def test_options_are_validated_with_the_key_named():
    with pytest.raises(ValueError, match="model.dni.scale"):
        DNIOptions(scale=0.0)
    with pytest.raises(ValueError, match="model.dni.aux_weight"):
        DNIOptions(aux_weight=-1.0)
