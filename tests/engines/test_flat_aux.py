"""DNI + Aux in the flat engine (docs/dni-rnn.md, check 7): every step of an unroll is trained towards
M one unroll later, and `aux_weight: 0` is plain DNI."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import B, Oracle, T, V, char_lstm, flat_engine, grads, group_params, random_ids, randomize, unroll_all
from torch import nn

from seqdni.dni import boundary_injection, detach_state, flatten_state, regression_loss
from seqdni.engines import DNIOptions


@pytest.mark.parametrize("layers,rank", [(1, 0), (2, 0), (1, 3)])  # one layer: states from the fused core
@pytest.mark.parametrize("conditional", [False, True])
def test_check7_aux_loss_trains_every_step_towards_m_one_unroll_later(conditional, layers, rank):
    """DNI + Aux: in unroll 3 the auxiliary loss is Σ_τ ||Â(s_τ) - M(s_{τ+T})||² over every step τ
    of unroll 2 (mean over steps and sequences), and its gradient reaches the core through all
    of unroll 2's steps, which start from the state unroll 1 left: both checked against an
    independent autograd computation."""
    net = char_lstm(layers=layers)
    x, y = random_ids(3 * T)
    w = 0.7
    e = flat_engine(net, DNIOptions(aux_weight=w, conditional=conditional, rank=rank))
    randomize(e.boundary.sg)
    randomize(e.aux, seed=6)
    outs = unroll_all(e, x, y, T, zero_between=True)
    g_aux = grads(e.net.parameters())
    plain = flat_engine(net, DNIOptions(conditional=conditional, rank=rank))
    randomize(plain.boundary.sg)
    unroll_all(plain, x, y, T, zero_between=True)
    g_dni = grads(plain.net.parameters())

    m = e.net
    with torch.no_grad():
        s_T = m.core(x[:, :T], m.init_state(B))[1]  # where unroll 2 starts
        s_2T = m.core(x[:, T : 2 * T], s_T)[1]
        s_3 = [flatten_state(m.core(x[:, 2 * T : 2 * T + j + 1], s_2T)[1]) for j in range(T)]  # s_{τ+T}
        cond = [F.one_hot(y[:, 2 * T + j], V).double() if conditional else None for j in range(T)]
        target = torch.cat([e.boundary.sg(s, c) for s, c in zip(s_3, cond)])
    s_2 = [flatten_state(m.core(x[:, T : T + j + 1], s_T)[1]) for j in range(T)]  # unroll 2, with graph
    aux_loss = regression_loss(e.aux(torch.cat(s_2)), target)
    params = list(m.parameters()) + list(e.aux.parameters())
    g_ref = torch.autograd.grad(w * aux_loss, params, allow_unused=True)

    assert "sg/aux_loss" not in outs[0].stats  # unroll 1's targets are not known yet
    torch.testing.assert_close(outs[2].stats["sg/aux_loss"], aux_loss.detach(), rtol=1e-10, atol=1e-14)
    for got, dni, ref in zip(g_aux, g_dni, g_ref):  # core: DNI's gradient plus the Aux term
        torch.testing.assert_close(got - dni, ref if ref is not None else torch.zeros_like(got), rtol=1e-7, atol=1e-11)
    for p, ref in zip(e.aux.parameters(), g_ref[len(g_aux):]):
        torch.testing.assert_close(p.grad, ref, rtol=1e-10, atol=1e-13)
    d = e.net.state_size  # `rank`: Â is the same kind of map as M, d -> rank -> d
    assert sum(p.numel() for p in e.aux.parameters()) == (2 * d * rank + d if rank else d * d + d)
    # the early steps matter: the loss is not the boundary step's alone
    boundary_only = regression_loss(e.aux(s_2[-1]), target[-B:]).detach()
    assert not torch.allclose(boundary_only, aux_loss.detach())
    assert max(r.abs().max() for r in g_ref[: len(g_aux)] if r is not None) > 1e-6


def dni_by_hand(net, sg: nn.Module, scale: float, x, y) -> list[torch.Tensor]:
    """DNI without the engine: each unroll's mean loss plus < scale · M(s_{t+T}) / (B·T), s_{t+T} >,
    backpropagated unroll by unroll from the detached carried state; the gradients summed."""
    net, s = copy.deepcopy(net), net.init_state(B)
    for i in range(x.size(1) // T):
        cols = slice(i * T, (i + 1) * T)
        logits, s = net(x[:, cols], detach_state(s))
        loss = F.cross_entropy(logits.reshape(-1, V), y[:, cols].reshape(-1))
        with torch.no_grad():
            m = sg(flatten_state(s))
        (loss + boundary_injection(s, m, scale / (B * T))).backward()
    return grads(net.parameters())


def test_check7_aux_weight_zero_builds_no_aux_head_and_is_dni():
    """`aux_weight: 0`: no Â, nothing kept for a recomputation, no auxiliary loss, and the core's
    gradients are DNI's as computed by hand."""
    net = char_lstm()
    x, y = random_ids(3 * T)
    e = flat_engine(net, DNIOptions(aux_weight=0.0))
    randomize(e.boundary.sg)
    outs = unroll_all(e, x, y, T)
    assert e.aux is None
    assert group_params(e, "core") == list(e.net.parameters())
    assert all(o.carry.kept is None and "sg/aux_loss" not in o.stats for o in outs)
    got = grads(e.net.parameters())
    for g, want in zip(got, dni_by_hand(net, e.boundary.sg, e.dni.scale, x, y)):
        torch.testing.assert_close(g, want, rtol=1e-10, atol=1e-13)
    tbptt = dni_by_hand(net, Oracle([]), e.dni.scale, x, y)  # M ≡ 0: the injection is really there
    assert max((g - b).abs().max() for g, b in zip(got, tbptt)) > 1e-8


def test_check7_aux_weight_above_zero_builds_an_aux_head_and_changes_the_gradients():
    """The control for the test above: with `aux_weight > 0` the same comparison fails, because Â is
    built, trained with the core, and its loss reaches the core."""
    net = char_lstm()
    x, y = random_ids(3 * T)
    e = flat_engine(net, DNIOptions(aux_weight=0.7))
    randomize(e.boundary.sg)
    outs = unroll_all(e, x, y, T)
    assert isinstance(e.aux, nn.Linear)
    core = group_params(e, "core")
    assert all(any(p is q for q in core) for p in e.aux.parameters())
    assert all(o.carry.kept is not None for o in outs) and "sg/aux_loss" in outs[2].stats
    by_hand = dni_by_hand(net, e.boundary.sg, e.dni.scale, x, y)
    assert max((got - want).abs().max() for got, want in zip(grads(e.net.parameters()), by_hand)) > 1e-6


def keep_and_redo(layers: int, w: float = 0.7):
    """DNI + Aux with `aux_keep_graph` and without it, on one network, with the same M and Â."""
    net = char_lstm(layers=layers)
    keep = flat_engine(net, DNIOptions(aux_weight=w, aux_keep_graph=True))
    redo = flat_engine(net, DNIOptions(aux_weight=w))
    randomize(keep.boundary.sg)
    randomize(keep.aux, seed=6)
    redo.load_state_dict(keep.state_dict())
    return keep, redo


def third_unroll_grads(e, x, y, change=None) -> list[torch.Tensor]:
    """The core's gradients of unroll 3 alone; `change` edits the weights in place after unroll 2 (as
    an optimiser step would)."""
    carry = e.initial_carry(B, x.device)
    for i in range(3):
        if i == 2 and change is not None:
            change(e.net)
        e.zero_grad(set_to_none=True)
        carry = e.unroll(x[:, i * T : (i + 1) * T], y[:, i * T : (i + 1) * T], carry).carry
    return grads(e.net.parameters())


def nudge(net) -> None:
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("layers", [1, 2])
def test_aux_keep_graph_without_an_update_between_unrolls_is_the_recomputation(layers):
    """With the weights unchanged between unrolls, training the previous unroll's states through the
    kept graph gives the recomputation's gradients exactly."""
    keep, redo = keep_and_redo(layers)
    x, y = random_ids(3 * T)
    for got, want in zip(third_unroll_grads(keep, x, y), third_unroll_grads(redo, x, y)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-13)


def test_aux_keep_graph_takes_the_aux_gradient_at_the_weights_that_made_the_states():
    """After an update between unrolls 2 and 3, the kept graph's auxiliary gradient is the one at the
    weights unroll 2 ran with (the recomputation's is at the new weights); the unroll's own loss,
    the injection and the Aux targets are the same in both."""
    keep, redo = keep_and_redo(layers=1)
    x, y = random_ids(3 * T)
    old = copy.deepcopy(keep.net)
    got_keep = third_unroll_grads(keep, x, y, change=nudge)
    got_redo = third_unroll_grads(redo, x, y, change=nudge)
    new = keep.net

    with torch.no_grad():
        s_T = old.core(x[:, :T], old.init_state(B))[1]
        s_2T = old.core(x[:, T : 2 * T], s_T)[1]
        target = torch.cat([keep.boundary.sg(flatten_state(new.core(x[:, 2 * T : 2 * T + j + 1], s_2T)[1]))
                            for j in range(T)])

    def aux_grads(m):
        s_2 = torch.cat([flatten_state(m.core(x[:, T : T + j + 1], s_T)[1]) for j in range(T)])
        got = torch.autograd.grad(0.7 * regression_loss(keep.aux(s_2), target), list(m.parameters()), allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(m.parameters(), got)]  # the head: none

    at_old, at_new = aux_grads(old), aux_grads(new)
    for k, r, o, n in zip(got_keep, got_redo, at_old, at_new):
        torch.testing.assert_close(k - r, o - n, rtol=1e-7, atol=1e-11)
    assert max((o - n).abs().max() for o, n in zip(at_old, at_new)) > 1e-6


def test_aux_keep_graph_needs_aux():
    with pytest.raises(ValueError, match="model.dni.aux_keep_graph"):
        DNIOptions(aux_keep_graph=True)
