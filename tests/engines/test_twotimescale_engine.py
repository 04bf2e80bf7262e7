"""The two-timescale engine's message interface: M at zero is the cut regime, an oracle M is end to
end, and M's targets are B's true gradients on the messages."""

from __future__ import annotations

import copy

import torch
from helpers import Oracle, grads, randomize

from seqdni.data.digits import digit_stream, digit_targets
from seqdni.engines import MessageOptions, TwoTimescaleEngine
from seqdni.engines.base import Carry, Steps
from seqdni.nets import TwoNets

T, B = 3, 4


def engine(regime: str, dni: MessageOptions | None = None, seed: int = 0) -> TwoTimescaleEngine:
    torch.manual_seed(seed)
    return TwoTimescaleEngine(TwoNets(T, 5, 7, 6, 4), regime, dni).double()


def window(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    d = digit_stream(B, 2 * T * T, seed).long()
    y = digit_targets(d, T)
    return d[:, T * T :], y[:, T * T :]  # a window that starts mid-stream: B's targets span T² steps


def decoupled(e: TwoTimescaleEngine, x, y, state):
    """A's T updates (no optimiser step: A's gradients accumulate over them), then B's."""
    s_a, messages = state[:2], []
    for j in range(T):
        _, s_a, m, _, _ = e.a_update(x[:, j * T : (j + 1) * T], y[:, j * T : (j + 1) * T], s_a)
        messages.append(m)
    e.b_update(messages, y, state[2:])
    return messages


def test_zero_sg_equals_cut_exactly():
    x, y = window()
    cut, dni = engine("cut"), engine("dni", MessageOptions(scale=1.0))  # M starts at zero
    state = tuple(t.double() + 0.1 for t in cut.net.init_state(B))
    decoupled(cut, x, y, state)
    decoupled(dni, x, y, state)
    for a, b in zip(grads(cut.net.parameters()), grads(dni.net.parameters())):
        assert torch.equal(a, b)
    assert any(g.abs().sum() > 0 for g in grads(cut.net.b_parameters()))


def test_oracle_sg_equals_end_to_end_and_targets_are_true_gradients():
    x, y = window()
    ref = engine("bptt")
    randomize(ref.net, seed=7, std=0.3)
    state = tuple(torch.randn(t.shape, dtype=torch.float64) * 0.5 for t in ref.net.init_state(B))
    dni = TwoTimescaleEngine(copy.deepcopy(ref.net), "dni", MessageOptions(scale=1.0)).double()

    ref.joint_update(x, y, state[:2], state[2:])
    g_ref = grads(ref.net.parameters())
    # the true gradient of B's loss w.r.t. each message, independently of the engine
    nets, s_a, messages = ref.net, state[:2], []
    for j in range(T):
        h, s_a = nets.a_segment(x[:, j * T : (j + 1) * T], tuple(t.detach() for t in s_a))
        messages.append(nets.a_message(h).detach().requires_grad_())
    out, _ = nets.b(torch.stack(messages, 1), state[2:])
    true = torch.autograd.grad(nets.b_loss(out, y[:, T - 1 :: T, 1]), messages)
    assert all(g.abs().sum() > 0 for g in true)

    # per-sequence units: the loss is a mean over the batch, so M's answer is B × the gradient
    dni.interface.sg = Oracle([(m.detach(), B * g) for m, g in zip(messages, true)])
    leaves = decoupled(dni, x, y, state)
    for a, b in zip(g_ref, grads(dni.net.parameters())):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    _, _, target = dni.interface.learn_leaves(leaves, n_recv=B, batch_dim=0)
    torch.testing.assert_close(target, B * torch.cat(true), rtol=1e-10, atol=1e-12)



def test_sender_state_m_reads_a_state_when_it_predicts_and_when_it_learns():
    """`sender_state`: M's row is (message, h_A, c_A) at the segment end, the same row when M's
    prediction is injected into A and when M learns from B's gradient, in one `update`."""
    x, y = window()
    e = engine("dni", MessageOptions(scale=1.0, sender_state=True))
    randomize(e.interface, seed=5, std=0.3)  # M away from zero, so what it reads shows in its output
    state = tuple(torch.randn(t.shape, dtype=torch.float64) * 0.5 for t in e.net.init_state(B))
    seen = []
    e.interface.sg.register_forward_pre_hook(lambda _, args: seen.append(torch.cat(args, 1).detach()))
    s_a, expected = state[:2], []
    for j in range(T):  # what A sends, computed apart
        h, s_a = e.net.a_segment(x[:, j * T : (j + 1) * T], s_a)
        expected.append(torch.cat([e.net.a_message(h), s_a[0][-1], s_a[1][-1]], 1).detach())

    groups = e.param_groups()  # lr 0: A does not move between its segments, so the rows stay comparable
    e.update(x, y, Carry(state), Steps(groups, [torch.optim.SGD(g.params, lr=0.0) for g in groups]))
    assert len(seen) == T + 1  # T predictions (one per segment), then one regression on all T messages
    for j in range(T):
        torch.testing.assert_close(seen[j], expected[j])
    torch.testing.assert_close(seen[T], torch.cat(expected))
    m, s = expected[0][:, :4], expected[0][:, 4:]  # the same message with another state: another gradient
    assert not torch.allclose(e.interface.predict(m, s, batch_dim=0), e.interface.predict(m, s + 1, batch_dim=0))
