"""The LSTM networks: the step-by-step core (what DNI + Aux reads) is the fused core."""

from __future__ import annotations

import pytest
import torch
from helpers import B, T, char_lstm, random_ids

import seqdni.nets.lstm as lstm_module
from seqdni.nets.resetting import resetting_lstm


def test_core_steps_equals_the_fused_core_and_returns_every_state():
    net = char_lstm()
    x, _ = random_ids(T)
    s0 = tuple(torch.randn_like(t) for t in net.init_state(B))
    out, s_end = net.core(x, s0)
    out_s, s_end_s, (h, c) = net.core_steps(x, s0)
    torch.testing.assert_close(out_s, out, rtol=1e-12, atol=1e-14)
    for a, b in zip(s_end_s, s_end):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for j in range(T):  # rows j·B .. (j+1)·B are the state after j + 1 steps
        h_j, c_j = net.core(x[:, : j + 1], s0)[1]
        torch.testing.assert_close(h[:, j * B : (j + 1) * B], h_j, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(c[:, j * B : (j + 1) * B], c_j, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("layers", [1, 2])
def test_step_states_from_the_fused_outputs_are_core_steps_states(layers):
    """What DNI + Aux reads of the current unroll: every step's (h, c), from the fused core's outputs."""
    net = char_lstm(layers=layers)
    x, _ = random_ids(T)
    s0 = tuple(torch.randn_like(t) for t in net.init_state(B))
    out, _ = net.core(x, s0)
    h, c = net.step_states(x, s0, out)
    want_h, want_c = net.core_steps(x, s0)[2]
    torch.testing.assert_close(h, want_h, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(c, want_c, rtol=1e-12, atol=1e-14)
    assert not h.requires_grad and not c.requires_grad


@pytest.mark.parametrize("layers", [1, 2])
def test_step_states_with_graph_give_core_steps_gradients(layers):
    """`graph=True` (DNI + Aux with `aux_keep_graph`): a loss on every step's (h, c) reaches the
    parameters and the start state as it does through the step-by-step core."""
    net = char_lstm(layers=layers)
    x, _ = random_ids(T)
    s0 = tuple(torch.randn_like(t).requires_grad_() for t in net.init_state(B))
    wh, wc = torch.randn(layers, T * B, 6, dtype=torch.double), torch.randn(layers, T * B, 6, dtype=torch.double)
    leaves = list(net.parameters()) + list(s0)

    def loss_grads(states):
        h, c = states
        return torch.autograd.grad((h * wh).sum() + (c * wc).sum(), leaves, allow_unused=True)

    got = loss_grads(net.step_states(x, s0, net.core(x, s0)[0], graph=True))
    want = loss_grads(net.core_steps(x, s0)[2])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    assert max(g.abs().max() for g in got if g is not None) > 1e-3


@pytest.mark.parametrize("layers", [1, 2])
def test_a_core_with_frozen_weights_gives_nn_lstms_outputs_and_state_gradients(layers, monkeypatch):
    """Gradients with respect to states alone (weights frozen, as for an n-step target): a one-layer
    core of `CLOSED_FORM_STEPS` steps or more runs the closed-form recurrence, with nn.LSTM's outputs,
    final state and state gradients; a deeper core, or one whose weights train, keeps nn.LSTM."""
    calls = []
    monkeypatch.setattr(lstm_module, "resetting_lstm", lambda *a: calls.append(1) or resetting_lstm(*a))
    net = char_lstm(layers=layers)
    x, _ = random_ids(lstm_module.CLOSED_FORM_STEPS + 3)
    s0 = tuple(torch.randn_like(t) for t in net.init_state(B))
    w = torch.randn(B, x.size(1), net.hidden_size, dtype=torch.float64)

    def run():
        leaves = tuple(t.clone().requires_grad_() for t in s0)
        out, (h, c) = net.core(x, leaves)
        grads = torch.autograd.grad((out * w).sum() + h.pow(2).sum() + c.sum(), leaves)
        return out.detach(), h.detach(), c.detach(), *grads

    want = run()
    assert not calls  # weights that train: nn.LSTM
    for p in net.parameters():
        p.requires_grad_(False)
    got = run()
    assert len(calls) == (layers == 1)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    calls.clear()
    net.core(x[:, : lstm_module.CLOSED_FORM_STEPS - 1], s0)  # too short to pay: nn.LSTM
    assert not calls
