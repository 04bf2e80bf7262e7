"""The flat engine's DNI against independent autograd computations (docs/dni-rnn.md, checks 1-3):
M at zero is truncated BPTT, an oracle M is BPTT, and the target is the local gradient plus Jᵀ M."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import B, Oracle, T, V, char_lstm, flat_engine, grads, local_and_future, random_ids, randomize, unroll_all

from seqdni.dni import flatten_state, true_future_gradient
from seqdni.engines import DNIOptions


def test_check1_zero_sg_equals_truncated_bptt_exactly():
    net = char_lstm()
    x, y = random_ids(3 * T)
    bptt, dni = flat_engine(net, None), flat_engine(net, DNIOptions(scale=1.0))  # M ≡ 0 at initialisation
    outs_bptt, outs_dni = unroll_all(bptt, x, y, T), unroll_all(dni, x, y, T)
    for a, b in zip(grads(bptt.net.parameters()), grads(dni.net.parameters())):
        assert torch.equal(a, b)
    assert [o.loss.item() for o in outs_bptt] == [o.loss.item() for o in outs_dni]


def test_check2_oracle_sg_recovers_bptt_over_two_unrolls():
    net = char_lstm()
    x, y = random_ids(2 * T)
    ref = copy.deepcopy(net)
    s0 = ref.init_state(B)
    logits1, s1 = ref(x[:, :T], s0)
    logits2, _ = ref(x[:, T:], s1)
    ce = lambda lg, t: F.cross_entropy(lg.reshape(-1, V), t.reshape(-1))  # noqa: E731
    (ce(logits1, y[:, :T]) + ce(logits2, y[:, T:])).backward()
    g_ref = grads(ref.parameters())

    def mean_loss(state, chunk):
        logits, state = net(chunk[0], state)
        return ce(logits, chunk[1]), state

    with torch.no_grad():
        _, s_first = net(x[:, :T], net.init_state(B))
    delta = true_future_gradient(mean_loss, s_first, [(x[:, T:], y[:, T:])])
    e = flat_engine(net, DNIOptions(scale=1.0))
    # per-sequence units; the true future gradient at the first boundary, zero at the second
    e.boundary.sg = Oracle([(flatten_state(s_first), delta * B * T)])
    unroll_all(e, x, y, T)
    for a, b in zip(g_ref, grads(e.net.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scale,scale_target", [(1.0, True), (0.1, True), (0.1, False)])
def test_check3_target_is_local_gradient_plus_jacobian_transpose_times_sg(scale, scale_target):
    net = char_lstm()
    x, y = random_ids(2 * T)
    e = flat_engine(net, DNIOptions(scale=scale, scale_target=scale_target))
    randomize(e.boundary.sg)
    outs = unroll_all(e, x, y, T)
    target = outs[1].target

    local, jt_m = local_and_future(e, outs, x, y)
    # M works in per-sequence units: the unroll's mean loss is over B·T characters
    expected = B * T * local + (scale if scale_target else 1.0) * jt_m
    torch.testing.assert_close(target, expected, rtol=1e-10, atol=1e-12)
    assert jt_m.abs().max() > 1e-6  # the future term is really there
