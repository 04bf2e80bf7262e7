"""`lookahead`: a conditional M that also reads the targets of the next L steps (cDNI on a sequence).
M(s_t) reads the L targets from t on, M(s_{t+T}) the L from t + T on; the targets it learns are unchanged."""

from __future__ import annotations

import pytest
import torch
from helpers import char_lstm, randomize, unroll_all
from test_flat_episodic import BITS, B, T, bit_data
from test_flat_n_step import reset_bit_data

from seqdni.dni import flatten_state
from seqdni.engines import DNIOptions, FlatEngine
from seqdni.nets import BitLSTM

L = 4  # target steps M reads ahead (more than T = 3: the reads cross into the next unroll)


def bit_engine(lookahead: int, resets: bool = False, **kw) -> FlatEngine:
    torch.manual_seed(0)
    e = FlatEngine(BitLSTM(BITS + 1, BITS, embed_dim=5, hidden_size=6, resets=resets), T,
                   DNIOptions(scale=0.3, discount=1.0, lookahead=lookahead, **kw)).double()
    randomize(e.boundary.sg, std=0.3)
    randomize(e.net, seed=3, std=0.3)
    return e


def test_targets_ahead_read_as_signed_bits_and_mask_until_the_episode_end():
    net = BitLSTM(BITS + 1, BITS, embed_dim=5, hidden_size=6, resets=True)
    _, y = bit_data(steps=6)  # stream 0 ends an episode at step 4, stream 1 at step 1, stream 2 none
    y[2, 2, BITS] = 0.0  # an unscored step reads 0, bits and mask
    feats = net.condition_targets(y, 8).view(B, 8, BITS + 1)
    assert net.target_features == BITS + 1
    torch.testing.assert_close(feats[2, 0], torch.cat([2 * y[2, 0, :BITS] - 1, torch.ones(1, dtype=y.dtype)]))
    assert torch.all(feats[2, 2] == 0) and torch.all(feats[2, 3, BITS:] == 1)
    assert torch.all(feats[0, 4, BITS:] == 1) and torch.all(feats[0, 5:] == 0)  # after the episode end: 0
    assert torch.all(feats[1, 2:] == 0) and torch.all(feats[:, 6:] == 0)  # past y's end: 0
    without = BitLSTM(BITS + 1, BITS, embed_dim=5, hidden_size=6).condition_targets(y, 8).view(B, 8, BITS + 1)
    assert torch.all(without[0, 5, BITS:] == 1)  # the state runs on: the next episode's targets are read


def test_m_reads_the_targets_from_each_boundary_on():
    x, y = bit_data(steps=3 * T + L)
    e = bit_engine(L)
    outs = unroll_all(e, x, y, T, ahead=L)
    for k in (1, 2):  # unroll k learns M(s_t) at its start, s_t = the end of unroll k - 1 (step k·T)
        s_t = flatten_state(outs[k - 1].carry.state)
        want = e.boundary.sg(s_t, e.net.condition_targets(y[:, k * T : k * T + L], L))
        torch.testing.assert_close(outs[k].prediction, want.detach())


def core_grads(e: FlatEngine, x, y) -> list[torch.Tensor]:
    e.zero_grad(set_to_none=True)
    carry = e.initial_carry(x.size(0), x.device)
    carry.state = tuple(torch.randn(s.shape, generator=torch.Generator().manual_seed(7), dtype=s.dtype)
                        for s in carry.state)
    e.unroll(x[:, :T], y, carry)
    return [p.grad.clone() for p in e.net.parameters()]


def test_the_injection_depends_on_the_targets_ahead_and_on_no_others():
    """One unroll: the core's gradient changes with a target L steps past its end boundary's first
    step (M reads it) and not with the targets beyond."""
    x, y = bit_data(steps=T + L + 2)
    e = bit_engine(L)
    base = core_grads(e, x, y[:, : T + L])
    read, beyond = y.clone(), y.clone()
    read[:, T + L - 1, :BITS] = 1 - read[:, T + L - 1, :BITS]
    beyond[:, T + L :, :BITS] = 1 - beyond[:, T + L :, :BITS]
    changed = core_grads(e, x, read[:, : T + L])
    assert max((a - b).abs().max() for a, b in zip(base, changed)) > 1e-8
    same = core_grads(e, x, beyond)  # the engine reads T + L columns of whatever it is given
    for a, b in zip(base, same):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_without_cond_weights_the_targets_ahead_change_nothing():
    """M's weights on the targets ahead at zero: the core's gradient and M's targets are those of the
    unconditional M with the same state weights (the exact-gradient checks carry over)."""
    x, y = bit_data(steps=3 * T + L)
    cond, plain = bit_engine(L), bit_engine(0)
    with torch.no_grad():
        cond.boundary.sg.net[0].weight[:, plain.boundary.sg.net[0].weight.size(1):] = 0
        cond.boundary.sg.net[0].weight[:, : plain.boundary.sg.net[0].weight.size(1)] = plain.boundary.sg.net[0].weight
        cond.boundary.sg.net[0].bias.copy_(plain.boundary.sg.net[0].bias)
    a, b = unroll_all(cond, x, y, T, ahead=L), unroll_all(plain, x[:, : 3 * T], y[:, : 3 * T], T)
    for oa, ob in zip(a[1:], b[1:]):
        torch.testing.assert_close(oa.target, ob.target)
    for ga, gb in zip(cond.net.parameters(), plain.net.parameters()):
        torch.testing.assert_close(ga.grad, gb.grad)


def test_pending_states_are_learned_with_the_targets_ahead_of_each():
    n, (x, y) = 2, reset_bit_data(4 * T + 2 * T)
    e = FlatEngine(BitLSTM(BITS + 1, BITS, embed_dim=5, hidden_size=6, resets=True), T,
                   DNIOptions(scale=1.0, discount=1.0, episodic=True, target_unrolls=n, pending_targets=True,
                              lookahead=2 * T)).double()
    randomize(e.boundary.sg, std=0.3)
    outs = unroll_all(e, x, y, T, ahead=2 * T)  # no optimiser steps: the recomputed states are the stored ones
    u = 3  # trains the start states of unrolls 2 and 3, made at steps 2T and 3T
    states = torch.cat([flatten_state(outs[i - 1].carry.state) for i in (2, 3)])
    conds = torch.cat([e.net.condition_targets(y[:, i * T : (i + 2) * T], 2 * T) for i in (2, 3)])
    torch.testing.assert_close(outs[u].prediction, e.boundary.sg(states, conds).detach())
    saved = outs[u].carry.state_dict(lambda t: [t.clone()])  # what M reads beside each kept state is checkpointed
    back = type(outs[u].carry).from_state_dict(saved, 0)
    assert all(torch.equal(h.cond, k.cond) for h, k in zip(back.history, outs[u].carry.history))


def test_lookahead_needs_a_task_whose_targets_it_can_read():
    with pytest.raises(ValueError, match="needs a task whose targets M can read ahead"):
        FlatEngine(char_lstm(), T, DNIOptions(lookahead=4))


@pytest.mark.parametrize("kw,match", [
    ({"lookahead": -1}, "lookahead is a number of steps >= 0"),
    ({"lookahead": 4, "conditional": True}, "does not combine with model.dni.conditional"),
    ({"lookahead": 4, "aux_weight": 0.1}, "does not combine with model.dni.aux_weight"),
])
def test_bad_lookahead_names_the_keys(kw, match):
    with pytest.raises(ValueError, match=match):
        DNIOptions(**kw)

