"""`BitLSTM` with `resets`: every episode starts from the zero state, and nothing crosses an episode end."""

from __future__ import annotations

import pytest
import torch

from seqdni.data import CopyDataModule, RepeatCopyDataModule
from seqdni.nets import build_network
from seqdni.nets.lstm import CLOSED_FORM_STEPS
from seqdni.nets.resetting import resetting_lstm


def streams(module=CopyDataModule, rows: int = 3, span: int = 30, level: int = 2):
    dm = module(level=level, resets=True, seed=3, shorter=0.5)
    x, y = dm.val_dataloader().grid(rows, span)
    torch.manual_seed(0)
    return dm, build_network(dm.task, 5, 7).double(), x.double(), y.double()


@pytest.mark.parametrize("module", [CopyDataModule, RepeatCopyDataModule])
def test_the_data_marks_each_episode_start_after_the_inputs_the_network_reads(module):
    dm, net, x, y = streams(module)
    assert dm.x_dim == dm.task.input_size + 1 and net.input_size == dm.task.input_size
    starts, ends = x[..., -1], y[..., -1]
    assert starts[:, 0].eq(1).all()  # validation rows begin with an episode
    assert torch.equal(starts[:, 1:], ends[:, :-1])  # an episode starts right after the last one ended


def test_each_episode_runs_from_the_zero_state_whatever_came_before():
    """The fused core over a whole stream equals the core over each episode alone from the zero state,
    and the step-by-step core and the every-step states agree with it."""
    _, net, x, y = streams()
    s0 = tuple(torch.randn_like(t) for t in net.init_state(x.size(0)))  # a non-zero start: reset at step 0
    out, _ = net.core(x, s0)
    for r in range(x.size(0)):
        starts = x[r, :, -1].nonzero()[:, 0].tolist() + [x.size(1)]
        for a, b in zip(starts[:-1], starts[1:]):
            alone, _ = net.core(x[r : r + 1, a:b], net.init_state(1))
            torch.testing.assert_close(out[r : r + 1, a:b], alone, rtol=1e-12, atol=1e-14)
    steps_out, _, (h, c) = net.core_steps(x, s0)
    torch.testing.assert_close(steps_out, out, rtol=1e-12, atol=1e-14)
    h2, c2 = net.step_states(x, s0, out)
    torch.testing.assert_close(h2, h, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(c2, c, rtol=1e-12, atol=1e-14)


def test_no_gradient_crosses_an_episode_start():
    """The loss after a stream's next episode start does not depend on the state before it; a stream
    without a start in the window does depend on it."""
    _, net, x, y = streams(span=12, level=3)
    x = x[:, 1:]  # no stream starts at step 0 any more
    x[0, :, -1] = 0.0
    x[0, 4, -1] = 1.0  # stream 0: one episode start, at step 4
    x[1, :, -1] = 0.0  # stream 1: none
    s0 = tuple(torch.randn_like(t).requires_grad_() for t in net.init_state(x.size(0)))
    out, _ = net.core(x, s0)
    g_h, g_c = torch.autograd.grad(out[:, 4:].pow(2).sum(), s0)
    assert g_h[:, 0].abs().max() == 0 and g_c[:, 0].abs().max() == 0
    assert g_h[:, 1].abs().max() > 1e-6


@pytest.mark.parametrize("span", [CLOSED_FORM_STEPS - 1, 20])  # autograd's backward, then the closed form
def test_the_written_out_recurrence_is_the_lstm_split_at_the_resets(span):
    """One layer with resets runs a written-out recurrence; it equals nn.LSTM run between the resets,
    outputs, state and gradients."""
    _, net, x, y = streams(span=span, level=2)
    s0 = tuple(torch.randn_like(t).requires_grad_() for t in net.init_state(x.size(0)))
    xs, resets = net.split_resets(x)
    out, (h, c) = net.core(x, s0)
    e, state, outs, start = net.encode(xs), s0, [], 0
    for t in resets.any(0).nonzero()[:, 0].tolist() + [x.size(1)]:
        if t > start:
            o, state = net.lstm(e[:, start:t], state)
            outs.append(o)
        if t < x.size(1):
            keep = (~resets[:, t]).double().reshape(1, -1, 1)
            state = (state[0] * keep, state[1] * keep)
        start = t
    want = torch.cat(outs, dim=1)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(c, state[1], rtol=1e-12, atol=1e-14)
    leaves = list(net.parameters()) + list(s0)
    got = torch.autograd.grad(out.sum() + c.sum(), leaves, allow_unused=True)
    ref = torch.autograd.grad(want.sum() + state[1].sum(), leaves, allow_unused=True)
    for g, r in zip(got, ref):
        assert (g is None) == (r is None)
        if g is not None:
            torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def test_the_resetting_recurrence_backward_is_the_gradient_of_its_forward():
    """`resetting_lstm`'s closed-form backward against finite differences (float64), with every output
    used: the outputs, the last h and the last c, resets in the middle and before the first step."""
    g = torch.Generator().manual_seed(0)
    b, t, n = 3, 5, 4
    pre, h0, c0 = (torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
                   for shape in ((b, t, 4 * n), (b, n), (b, n)))
    w = (0.5 * torch.randn(4 * n, n, generator=g, dtype=torch.float64)).requires_grad_()
    keep = torch.ones(b, t, 1, dtype=torch.float64)
    keep[0, 2], keep[1, 0], keep[2, 4] = 0.0, 0.0, 0.0
    assert torch.autograd.gradcheck(lambda *a: resetting_lstm(*a[:3], keep, a[3]), (pre, h0, c0, w))
    # a reset cuts the gradient to the state before it: stream 1 resets before its first step
    dh0, dc0 = torch.autograd.grad(sum(o.sum() for o in resetting_lstm(pre, h0, c0, keep, w)), (h0, c0))
    assert dh0[1].abs().max() == 0 and dc0[1].abs().max() == 0 and dh0[0].abs().max() > 1e-6


def test_the_closed_form_backward_runs_outside_bf16_autocast():
    """With bf16 autocast around the forward alone and the backward outside it, the closed-form
    recurrence runs, and its gradients are float32's to bf16 precision."""
    _, net, x, y = streams(span=CLOSED_FORM_STEPS + 5)
    net, x = net.float(), x[:, 1:].float()  # from step 1: the start state reaches the outputs
    s0 = tuple((0.5 * torch.randn_like(t)).requires_grad_() for t in net.init_state(x.size(0)))
    leaves = [*net.lstm.parameters(), *net.embed.parameters(), *s0]

    def gradients(dtype):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            out, (h, c) = net.core(x, s0)
            loss = out.float().pow(2).sum() + h.float().sum() + c.float().sum()
        assert out.dtype == dtype
        return torch.autograd.grad(loss, leaves)

    for got, want in zip(gradients(torch.bfloat16), gradients(torch.float32)):
        assert got.dtype == torch.float32
        assert want.norm() > 0 and (got - want).norm() <= 0.05 * want.norm()
