"""n-step targets (`target_unrolls`): M(s_t) is trained n - 1 unrolls later on the true gradient of
the n unrolls after s_t plus the discounted bootstrap on M at their end,
target = ∂(Σ_j γ^j n_j ℓ_j)/∂s_t + γ^n J_nᵀ M(s_{t+nT}), while the core's update stays the same."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import T, V, char_lstm, flat_engine, grads, random_ids, randomize, unroll_all
from test_flat_episodic import BITS, bit_data
from test_flat_episodic import B as BB
from test_flat_episodic import T as BT

from seqdni.dni import detach_state, flatten_state
from seqdni.engines import DNIOptions, FlatEngine
from seqdni.engines.base import state_gradients_only
from seqdni.nets import BitLSTM
from seqdni.nets.lstm import CLOSED_FORM_STEPS


def expected_target(e: FlatEngine, s, xs, ys, gamma: float, loss) -> torch.Tensor:
    """By autograd alone, from s through the unrolls (xs, ys): Σ_j γ^j B·T ℓ_j plus γ^n <M(s_end), s_end>."""
    s = detach_state(s, requires_grad=True)
    total, state = 0.0, s
    for j, (x, y) in enumerate(zip(xs, ys)):
        out, state = e.net.core(x, state)
        total = total + gamma ** j * y.size(0) * y.size(1) * loss(out, y)
    m = e.boundary.sg(flatten_state(state)).detach()
    total = total + (gamma ** len(xs) * m * flatten_state(state)).sum()
    return flatten_state(torch.autograd.grad(total, s))


@pytest.mark.parametrize("n,gamma", [(3, 1.0), (2, 0.7)])
def test_target_is_the_true_gradient_over_n_unrolls_then_the_bootstrap(n, gamma):
    x, y = random_ids((n + 2) * T)
    e = flat_engine(char_lstm(), DNIOptions(scale=0.3, discount=gamma, target_unrolls=n))
    randomize(e.boundary.sg, std=0.3)
    outs = unroll_all(e, x, y, T)
    # the first unroll starts at no boundary; the second one's start state s_1 gets its target n unrolls on
    assert all(o.target is None and o.sg_loss is None for o in outs[:n])
    chunks = [slice((1 + j) * T, (2 + j) * T) for j in range(n)]

    def loss(out, yy):
        return F.cross_entropy(e.net.logits(out).reshape(-1, V), yy.reshape(-1))

    want = expected_target(e, outs[0].carry.state, [x[:, c] for c in chunks], [y[:, c] for c in chunks], gamma, loss)
    torch.testing.assert_close(outs[n].target, want, rtol=1e-10, atol=1e-12)
    assert outs[n + 1].target is not None  # and every unroll after it trains one more start state
    assert len(outs[-1].carry.history) == n - 1


@pytest.mark.parametrize("pending", [False, True])
def test_the_core_gets_the_same_gradient_whatever_n(pending):
    net = char_lstm()
    x, y = random_ids(5 * T)
    a = flat_engine(net, DNIOptions(scale=0.3, discount=1.0, target_unrolls=3, pending_targets=pending))
    b = flat_engine(net, DNIOptions(scale=0.3, discount=1.0))
    randomize(a.boundary.sg, std=0.3)
    b.load_state_dict(a.state_dict())
    unroll_all(a, x, y, T)
    unroll_all(b, x, y, T)
    for ga, gb in zip(grads(a.net.parameters()), grads(b.net.parameters())):
        torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-14)


def test_episodic_n_step_target_stops_at_each_streams_episode_end():
    """Over unrolls 1-2 (steps 3..8) streams 1 and 2 have no episode end: their targets bootstrap on
    M; streams 0 and 3 end one there, so their losses stop at that end and they keep no future term."""
    x, y = bit_data(steps=3 * BT)
    torch.manual_seed(0)
    e = FlatEngine(BitLSTM(BITS + 1, BITS, embed_dim=5, hidden_size=6), BT,
                   DNIOptions(scale=0.3, discount=1.0, episodic=True, target_unrolls=2)).double()
    randomize(e.boundary.sg, std=0.3)
    randomize(e.net, seed=3, std=0.3)
    outs = unroll_all(e, x, y, BT)
    s1, span = outs[0].carry.state, slice(BT, 3 * BT)
    masked = e.net.current_episode(y[:, span])
    xs, ys = [x[:, BT:2 * BT], x[:, 2 * BT:]], [masked[:, :BT], masked[:, BT:]]

    def loss(out, yy):
        return e.net.loss(out, yy)

    with_future = expected_target(e, s1, xs, ys, 1.0, loss)
    local_only = detach_state(s1, requires_grad=True)
    state, total = local_only, 0.0
    for j in range(2):
        out, state = e.net.core(xs[j], state)
        total = total + BB * BT * loss(out, ys[j])
    without = flatten_state(torch.autograd.grad(total, local_only))  # both unrolls' losses, no bootstrap
    keep = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64).unsqueeze(1)
    torch.testing.assert_close(outs[2].target, keep * with_future + (1 - keep) * without, rtol=1e-10, atol=1e-12)
    assert (with_future - without)[[0, 3]].abs().max() > 1e-6  # there was a future term to drop


def test_history_survives_a_checkpoint():
    x, y = random_ids(4 * T)
    e = flat_engine(char_lstm(), DNIOptions(target_unrolls=3))
    carry = unroll_all(e, x, y, T)[-1].carry
    saved = carry.state_dict(lambda t: [t.clone()])
    back = type(carry).from_state_dict(saved, 0)
    assert len(back.history) == 2
    for h, k in zip(back.history, carry.history):
        assert torch.equal(h.inputs, k.inputs) and torch.equal(h.targets, k.targets)
        assert all(torch.equal(a, b) for a, b in zip(h.state, k.state))


@pytest.mark.parametrize("kw,match", [
    ({"target_unrolls": 0}, "target_unrolls is n >= 1"),
    ({"target_unrolls": 2, "conditional": True}, "does not combine with model.dni.conditional"),
    ({"target_unrolls": 2, "reuse": True}, "does not combine with model.dni.reuse"),
])
def test_bad_target_unrolls_names_the_keys(kw, match):
    with pytest.raises(ValueError, match=match):
        DNIOptions(**kw)


# ---- pending_targets: every state awaiting its n-step target learns at every update ----------------
@pytest.mark.parametrize("gamma,layers,T", [
    (1.0, 2, T), (0.7, 2, T),
    (0.7, 1, CLOSED_FORM_STEPS),  # the recomputation runs the closed-form recurrence (weights frozen)
])
def test_pending_targets_give_every_waiting_state_its_target_so_far(gamma, layers, T):
    n = 3
    x, y = random_ids((n + 3) * T)
    dni = DNIOptions(scale=0.3, discount=gamma, target_unrolls=n, pending_targets=True)
    e = FlatEngine(char_lstm(layers=layers), T, dni).double()
    randomize(e.boundary.sg, std=0.3)
    outs = unroll_all(e, x, y, T)  # no optimiser steps: the recomputed states are the stored ones

    def loss(out, yy):
        return F.cross_entropy(e.net.logits(out).reshape(-1, V), yy.reshape(-1))

    def cols(i):
        return slice(i * T, (i + 1) * T)

    assert outs[0].target is None  # the first unroll starts at no boundary
    for u in (1, 2, n + 1, n + 2):  # unroll u trains the start states of unrolls max(1, u - n + 1) .. u
        first = max(1, u - n + 1)
        want = [expected_target(e, outs[i - 1].carry.state, [x[:, cols(k)] for k in range(i, u + 1)],
                                [y[:, cols(k)] for k in range(i, u + 1)], gamma, loss) for i in range(first, u + 1)]
        torch.testing.assert_close(outs[u].target, torch.cat(want), rtol=1e-9, atol=1e-11)
    assert len(outs[-1].carry.history) == n - 1


def test_pending_targets_log_m_on_the_state_it_has_not_learned_yet():
    """`sg/cosine` runs over every waiting state, which M has learned at earlier updates on nearly the
    same targets; `sg/cosine_new` is M against the newest state's target alone."""
    x, y = random_ids(5 * T)
    e = flat_engine(char_lstm(), DNIOptions(scale=0.3, discount=1.0, target_unrolls=3, pending_targets=True))
    randomize(e.boundary.sg, std=0.3)
    outs = unroll_all(e, x, y, T)
    assert "sg/cosine_new" not in outs[0].stats
    for o in outs[1:]:
        b = y.size(0)
        new = F.cosine_similarity(o.prediction[-b:], o.target[-b:], dim=1).mean()
        torch.testing.assert_close(o.stats["sg/cosine_new"], new)
    assert outs[-1].prediction.size(0) == 3 * y.size(0)  # three waiting states: the new one is a third of the rows
    _, stats = e.summarise(outs)
    assert "sg/cosine_new" in stats and "sg/cosine" in stats


def reset_bit_data(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`bit_data` with one more input channel: 1 on the step after each episode end (a reset)."""
    x, y = bit_data(steps=steps)
    resets = torch.zeros(x.shape[:2] + (1,), dtype=x.dtype)
    resets[:, 1:, 0] = y[:, :-1, -1]
    return torch.cat([x, resets], dim=-1), y


def test_pending_targets_with_resets_need_no_episode_masks():
    """With resets no gradient crosses an episode start, so the oldest state's pending target (read
    off one backward through unmasked losses) equals the n-step target (losses masked after each
    stream's first episode end): two computations of the same quantity."""
    n = 2
    x, y = reset_bit_data(3 * BT)
    made, made_engine = [], []
    for pending in (True, False):
        torch.manual_seed(0)
        e = FlatEngine(BitLSTM(BITS + 1, BITS, embed_dim=5, hidden_size=6, resets=True), BT,
                       DNIOptions(scale=0.3, discount=1.0, episodic=True, target_unrolls=n,
                                  pending_targets=pending)).double()
        randomize(e.boundary.sg, std=0.3)
        randomize(e.net, seed=3, std=0.3)
        made.append(unroll_all(e, x, y, BT))
        made_engine.append(e)
    pending, oldest_only = made
    assert pending[1].target.shape[0] == BB and oldest_only[1].target is None  # a 1-unroll target at once
    torch.testing.assert_close(pending[2].target[:BB], oldest_only[2].target, rtol=1e-10, atol=1e-12)
    assert (pending[2].target[:BB] - pending[1].target).abs().max() > 1e-6  # the longer horizon adds something

    # the newest state's row, by autograd alone: its unroll's losses (not those of the step that made
    # it: the written-out recurrence returns that step's output as the state) and γ Jᵀ M, kept only
    # where no episode ends in the unroll
    e, s2 = made_engine[0], detach_state(pending[1].carry.state, requires_grad=True)
    out, end = e.net.core(x[:, 2 * BT :], s2)
    going_on = (~e.net.episode_ends(y[:, 2 * BT :])).double().unsqueeze(1)
    total = BB * BT * e.net.loss(out, y[:, 2 * BT :]) + (going_on * e.boundary.sg(flatten_state(end)).detach()
                                                         * flatten_state(end)).sum()
    torch.testing.assert_close(pending[2].target[BB:], flatten_state(torch.autograd.grad(total, s2)),
                               rtol=1e-10, atol=1e-12)


def test_pending_targets_without_resets_are_refused_under_episodic():
    with pytest.raises(ValueError, match="needs streams that reset the state"):
        FlatEngine(BitLSTM(BITS + 1, BITS, embed_dim=5, hidden_size=6), BT,
                   DNIOptions(episodic=True, target_unrolls=2, pending_targets=True))


@pytest.mark.parametrize("kw,match", [
    ({"target_unrolls": 1, "pending_targets": True}, "set target_unrolls >= 2"),
    ({"target_unrolls": 2, "pending_targets": True, "discount": 0.0}, "needs model.dni.discount > 0"),
])
def test_bad_pending_targets_names_the_keys(kw, match):
    with pytest.raises(ValueError, match=match):
        DNIOptions(**kw)


def test_aux_with_pending_targets_adds_the_aux_term_and_leaves_m_as_without_aux():
    """DNI + Aux with pending n-step targets: M learns exactly the targets it learns without Aux, and
    the core's gradient is pending DNI's plus the Aux term that 1-step DNI + Aux adds (Aux's targets
    are M's outputs whichever targets M learns)."""
    net = char_lstm()
    x, y = random_ids(5 * T)
    pend = {"scale": 0.3, "discount": 1.0, "target_unrolls": 3, "pending_targets": True}
    engines = [flat_engine(net, DNIOptions(**kw)) for kw in
               ({**pend, "aux_weight": 0.7}, pend, {"scale": 0.3, "discount": 1.0, "aux_weight": 0.7},
                {"scale": 0.3, "discount": 1.0})]
    randomize(engines[0].boundary.sg, std=0.3)
    randomize(engines[0].aux, seed=6)
    for e in engines[1:]:
        e.load_state_dict(engines[0].state_dict(), strict=False)  # the same core, M (and Â)
    outs = [unroll_all(e, x, y, T) for e in engines]
    g = [grads(e.net.parameters()) for e in engines]
    for a, b in zip(outs[0], outs[1]):  # M: the same targets, predictions and losses
        assert (a.target is None) == (b.target is None)
        if a.target is not None:
            torch.testing.assert_close(a.target, b.target, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(a.sg_loss, b.sg_loss, rtol=1e-12, atol=1e-14)
    assert "sg/aux_loss" in outs[0][-1].stats
    for pa, p, oa, o in zip(*g):  # the core: the Aux term, and only it
        torch.testing.assert_close(pa - p, oa - o, rtol=1e-7, atol=1e-11)
    assert max((pa - p).abs().max() for pa, p in zip(g[0], g[1])) > 1e-6


def test_state_gradients_only_takes_the_weights_out_of_the_graph_and_puts_them_back():
    """The n-step learners differentiate with respect to states alone: inside, no parameter requires a
    gradient (no weight work recorded); afterwards every one does again, also after an error, so the
    core's next update still trains it."""
    net = char_lstm()
    with state_gradients_only(net):
        assert not any(p.requires_grad for p in net.parameters())
    with pytest.raises(RuntimeError), state_gradients_only(net):
        raise RuntimeError
    assert all(p.requires_grad for p in net.parameters())
    x, y = random_ids(5 * T)
    e = flat_engine(net, DNIOptions(scale=0.3, discount=1.0, target_unrolls=3, pending_targets=True))
    outs = unroll_all(e, x, y, T)
    assert outs[-1].target is not None and all(p.requires_grad for p in e.net.parameters())
    assert all(g.abs().max() > 0 for g in grads(e.net.parameters()))
