"""The hierarchical engine's interface between the levels: M at zero is the cut interface, oracle
synthetic gradients are end-to-end BPTT over the upper unroll."""

from __future__ import annotations

import copy

import torch
from helpers import B, Oracle, grads, hier_lstm, random_ids, random_state, unroll_all

from seqdni.dni import BoundaryOptions, flatten_state
from seqdni.engines import HierEngine


def test_zero_sg_on_the_message_equals_the_cut_interface_exactly():
    net = hier_lstm()
    x, y = random_ids(16)
    cut = HierEngine(copy.deepcopy(net), unroll=4, upper_unroll=4, message="cut")
    dni = HierEngine(copy.deepcopy(net), unroll=4, upper_unroll=4, message="dni",
                     dni=BoundaryOptions(scale=1.0)).double()  # M starts at zero
    out_cut = unroll_all(cut, x, y, 4, random_state(net))
    out_dni = unroll_all(dni, x, y, 4, random_state(net))
    assert [o.loss.item() for o in out_cut] == [o.loss.item() for o in out_dni]
    for a, b in zip(grads(cut.net.parameters()), grads(dni.net.parameters())):
        assert torch.equal(a, b)
    assert all(g.abs().sum() > 0 for g in grads(cut.net.upper_parameters()))


def test_oracle_sg_equals_end_to_end_bptt_over_the_upper_unroll():
    """Period of 8 characters = 2 lower unrolls of 4 (tick 2). With oracles on the messages and at
    the lower boundary, the lower grads summed over the two unrolls equal P = 2 times end-to-end
    BPTT's over the period (the lower loss is a mean over one unroll, the period's over two), and
    the upper grads equal BPTT's."""
    net = hier_lstm()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    x, y = random_ids(8)
    state = random_state(net)
    n_upper = B * 8

    ref = HierEngine(copy.deepcopy(net), unroll=8, upper_unroll=4, message="bptt")
    unroll_all(ref, x, y, 8, state)
    g_ref = grads(ref.net.parameters())
    # the true gradients at the lower boundary and the messages, independently of the engines
    m_ = ref.net
    out1, s4 = m_.lower_core(x[:, :4], state[:2])
    s4 = tuple(t.detach().requires_grad_() for t in s4)
    out2, _ = m_.lower_core(x[:, 4:], s4)
    out = torch.cat([out1, out2], 1)
    ticks = m_.ticks(8)
    msg = m_.send(out, ticks)
    u_seq, _ = m_.upper(msg, state[2:])
    loss = m_.loss(m_.read(out, state[2][-1], u_seq, ticks), y)
    *d_s4, d_msg = torch.autograd.grad(loss, (*s4, msg))
    assert d_msg.abs().sum() > 0 and sum(t.abs().sum() for t in d_s4) > 0

    dni = HierEngine(copy.deepcopy(net), unroll=4, upper_unroll=4, message="dni", dni=BoundaryOptions(scale=1.0),
                     boundaries=True).double()
    dni.msg_sg.sg = Oracle([(msg[:, :2].detach().reshape(-1, 3), n_upper * d_msg[:, :2].reshape(-1, 3)),
                            (msg[:, 2:].detach().reshape(-1, 3), n_upper * d_msg[:, 2:].reshape(-1, 3))])
    dni.lower_sg.sg = Oracle([(flatten_state(s4).detach(), n_upper * flatten_state(tuple(d_s4)))])
    dni.upper_sg.sg = Oracle([])  # nothing beyond the period: zero
    outs = unroll_all(dni, x, y, 4, state)
    g_dni = grads(dni.net.parameters())
    lower = {id(p) for p in dni.net.lower_parameters()}
    for p, a, b in zip(dni.net.parameters(), g_ref, g_dni):
        factor = 2.0 if id(p) in lower else 1.0
        torch.testing.assert_close(b, factor * a, rtol=1e-9, atol=1e-12)
    assert outs[1].sg_loss is not None and "sg/message/cosine" in outs[1].stats
