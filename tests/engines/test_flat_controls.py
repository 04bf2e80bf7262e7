"""The control injections (`DNIOptions.injection`): with "shuffled" each stream's core receives another
stream's synthetic gradient, with "none" nothing, while M learns exactly what it learns under DNI."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import B, T, V, char_lstm, flat_engine, grads, random_ids, randomize, unroll_all

from seqdni.dni import flatten_state
from seqdni.engines import DNIOptions, Steps


def one_unroll_gradients(e, x, y, sent_rows) -> list[torch.Tensor]:
    """By autograd alone: the core's gradient of one unroll from the zero state, its mean loss plus
    <α · sent / (B·T), s_end>, where `sent_rows(g)` picks what each stream receives of M(s_end)'s rows."""
    net = e.net
    for p in net.parameters():
        p.grad = None
    out, s_end = net.core(x, net.init_state(B))
    loss = F.cross_entropy(net.logits(out).reshape(-1, V), y.reshape(-1))
    flat = flatten_state(s_end)
    g = e.boundary.sg(flat.detach()).detach()
    (loss + (e.dni.scale / (B * T) * sent_rows(g) * flat).sum()).backward()
    return grads(net.parameters())


def test_each_stream_receives_another_streams_prediction():
    x, y = random_ids(T)
    e = flat_engine(char_lstm(), DNIOptions(scale=0.5, injection="shuffled"))
    randomize(e.boundary.sg, std=0.3)
    replay = torch.Generator().set_state(e.rotation.generator.get_state())
    shift = int(torch.randint(1, B, (), generator=replay))  # the engine's draw, replayed
    rotated = one_unroll_gradients(e, x, y, lambda g: g.roll(-shift, dims=0))
    own = one_unroll_gradients(e, x, y, lambda g: g)
    e.zero_grad(set_to_none=True)
    unroll_all(e, x, y, T)
    got = grads(e.net.parameters())
    for a, b in zip(got, rotated):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert max((a - b).abs().max() for a, b in zip(got, own)) > 1e-6  # not what DNI would have injected
    assert 1 <= shift < B  # no stream gets its own prediction


def offsets(rotation, n: int, b: int = 5) -> list[int]:
    g = torch.arange(b, dtype=torch.float64).unsqueeze(1).expand(b, 4)
    return [int(rotation(g)[0, 0]) for _ in range(n)]  # row 0 receives row `shift`


def shuffled_engine(seed: int):
    net = char_lstm()  # seeds the global generator itself
    torch.manual_seed(seed)  # the run's seed, as seed_everything sets it
    return flat_engine(net, DNIOptions(injection="shuffled"))


def test_the_offset_is_drawn_afresh_at_every_boundary_from_the_runs_seed():
    drawn = offsets(shuffled_engine(0).rotation, 60)
    assert set(drawn) == {1, 2, 3, 4}  # every non-zero offset, never zero
    assert offsets(shuffled_engine(0).rotation, 60) == drawn
    assert offsets(shuffled_engine(1).rotation, 60) != drawn


def test_a_resumed_engine_draws_the_offsets_the_uninterrupted_one_would():
    """The generator's state is part of the engine's state_dict (what a checkpoint saves)."""
    e = shuffled_engine(0)
    offsets(e.rotation, 7)
    saved = e.state_dict()
    ahead = offsets(e.rotation, 20)
    back = shuffled_engine(3)  # another run's seed: the state must come from the checkpoint
    back.load_state_dict(saved)
    assert offsets(back.rotation, 20) == ahead
    assert "rotation._extra_state" in saved
    assert "rotation._extra_state" not in flat_engine(char_lstm(), DNIOptions()).state_dict()  # DNI's checkpoints unchanged


@pytest.mark.parametrize("injection", ["shuffled", "none"])
@pytest.mark.parametrize("kw", [
    {"scale": 0.3},  # one-step, γ = α: the target is corrected for what was injected
    {"scale": 0.3, "discount": 0.9},
    {"scale": 0.3, "discount": 1.0, "target_unrolls": 2, "pending_targets": True},
])
def test_m_learns_the_targets_it_learns_without_the_control(kw, injection):
    """Same weights, same data, no optimiser steps: the states are the same, so M's targets must be."""
    x, y = random_ids(4 * T)
    net = char_lstm()
    dni, control = flat_engine(net, DNIOptions(**kw)), flat_engine(net, DNIOptions(injection=injection, **kw))
    randomize(dni.boundary.sg, std=0.3)
    control.boundary.sg.load_state_dict(dni.boundary.sg.state_dict())
    outs, outs_c = unroll_all(dni, x, y, T), unroll_all(control, x, y, T)
    assert sum(o.target is not None for o in outs) >= 2
    for a, b in zip(outs, outs_c):
        assert (a.target is None) == (b.target is None)
        if a.target is not None:
            torch.testing.assert_close(b.target, a.target, rtol=1e-9, atol=1e-11)
            torch.testing.assert_close(b.sg_loss, a.sg_loss, rtol=1e-9, atol=1e-11)
    assert max((a - b).abs().max() for a, b in zip(grads(dni.net.parameters()), grads(control.net.parameters()))) > 1e-6


def test_a_bad_injection_or_a_single_stream_names_the_problem():
    with pytest.raises(ValueError, match=r"model.dni.injection .* \"none\" .* got 'noise'"):
        DNIOptions(injection="noise")
    for kw, key in (({"aux_weight": 0.1}, "aux_weight"), ({"train_core": True}, "train_core")):
        with pytest.raises(ValueError, match=rf"injection shuffled .* model.dni.{key} trains the core on it"):
            DNIOptions(injection="shuffled", **kw)
    with pytest.raises(ValueError, match=r"injection none .* model.dni.train_core trains the core on M's loss"):
        DNIOptions(injection="none", train_core=True)
    assert DNIOptions(injection="none", aux_weight=0.1).aux_weight == 0.1  # its purpose: Aux without the injection
    e = flat_engine(char_lstm(), DNIOptions(injection="shuffled"))
    x, y = random_ids(T)
    with pytest.raises(ValueError, match="a batch of one stream"):
        unroll_all(e, x[:1], y[:1], T)


def per_unroll_core_grads(e, x, y) -> list[list[torch.Tensor]]:
    """The core's gradient of each unroll on its own (no optimiser steps: the states are the same)."""
    carry, out = e.initial_carry(x.size(0), x.device), []
    for i in range(x.size(1) // T):
        e.zero_grad(set_to_none=True)
        carry = e.unroll(x[:, i * T : (i + 1) * T], y[:, i * T : (i + 1) * T], carry).carry
        out.append(grads(e.net.parameters()) + (grads(e.aux.parameters()) if e.aux is not None else []))
    return out


@pytest.mark.parametrize("kw", [{}, {"discount": 0.9}, {"target_unrolls": 2, "pending_targets": True}])
def test_with_no_injection_the_core_learns_as_bptt(kw):
    """`injection: none`: the core's gradient is BPTT-T's, unroll by unroll, though M predicts."""
    x, y = random_ids(3 * T)
    net = char_lstm()
    control, dni = (flat_engine(net, DNIOptions(scale=0.5, injection=i, **kw)) for i in ("none", "prediction"))
    for e in (control, dni):
        randomize(e.boundary.sg, std=0.3)
    got, want, dni_grads = (per_unroll_core_grads(e, x, y) for e in (control, flat_engine(net, None), dni))
    for unroll_got, unroll_want in zip(got, want):
        for a, b in zip(unroll_got, unroll_want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert max((a - b).abs().max() for a, b in zip(got[-1], dni_grads[-1])) > 1e-6  # DNI's is not


@pytest.mark.parametrize("kw", [{},  # one-step, γ = α; then the shipped dni8-aux-no-injection's targets
                                {"discount": 1.0, "squash": True, "target_unrolls": 2, "pending_targets": True}])
def test_with_no_injection_and_aux_the_core_gets_bptt_plus_dni_auxs_auxiliary_gradient(kw):
    """What Aux adds to the core's gradient (and Â's own gradient) is the same with and without the
    injection, unroll by unroll: the control removes the synthetic gradient and nothing else of DNI + Aux."""
    x, y = random_ids(4 * T)
    net = char_lstm()
    kinds = {"control": DNIOptions(scale=0.5, injection="none", aux_weight=0.7, **kw), "bptt": None,
             "dni_aux": DNIOptions(scale=0.5, aux_weight=0.7, **kw), "dni": DNIOptions(scale=0.5, **kw)}
    engines = {k: flat_engine(net, dni) for k, dni in kinds.items()}
    for e in engines.values():
        if e.boundary is not None:
            randomize(e.boundary.sg, std=0.3)
        if e.aux is not None:
            randomize(e.aux, seed=6)
    g = {k: per_unroll_core_grads(e, x, y) for k, e in engines.items()}
    n = len(list(net.parameters()))
    for c, b, da, d in zip(g["control"], g["bptt"], g["dni_aux"], g["dni"]):
        for pc, pb, pda, pd in zip(c[:n], b, da[:n], d):  # the core
            torch.testing.assert_close(pc - pb, pda - pd, rtol=1e-8, atol=1e-12)
        for pc, pda in zip(c[n:], da[n:]):  # Â
            torch.testing.assert_close(pc, pda, rtol=1e-10, atol=1e-14)
    assert max((c - b).abs().max() for c, b in zip(g["control"][-1], g["bptt"][-1])) > 1e-6  # Aux reaches the core
    assert max((c - d).abs().max() for c, d in zip(g["control"][-1], g["dni_aux"][-1])) > 1e-6  # so does the injection


def adam_updates(e, x, y) -> list:
    """The engine's updates over x with Adam steps, each group at its own learning rate (as in training)."""
    groups = e.param_groups()
    steps = Steps(groups, [torch.optim.Adam(g.params, lr=g.lr) for g in groups])
    carry, outs = e.initial_carry(x.size(0), x.device), []
    for i in range(x.size(1) // T):
        carry, out = e.update(x[:, i * T : (i + 1) * T], y[:, i * T : (i + 1) * T], carry, steps)
        outs.append(out)
    return outs


@pytest.mark.parametrize("kw", [{}, {"discount": 0.9}, {"target_unrolls": 3},
                                # the shipped dni8-aux-m-frozen's targets (8-step pending, γ = 1, squash), with Aux
                                {"discount": 1.0, "squash": True, "target_unrolls": 2, "pending_targets": True,
                                 "aux_weight": 0.7}])
def test_a_frozen_m_computes_no_targets_and_the_core_trains_exactly_as_if_it_did(kw):
    """`lr: 0` (the M-frozen control): M's targets, the costliest part of n-step and pending targets, are
    skipped; M still predicts and the core's weights after every update are bit for bit those of an engine
    that computes the targets and steps M by 0."""
    x, y = random_ids(6 * T)
    skipping = flat_engine(char_lstm(), DNIOptions(lr=0.0, scale=0.5, **kw))
    randomize(skipping.boundary.sg, std=0.3)  # frozen away from zero: the injection reaches the core
    computing, m = copy.deepcopy(skipping), copy.deepcopy(skipping.boundary.sg.state_dict())
    computing.targets_for_frozen_m = True
    outs, outs_c = adam_updates(skipping, x, y), adam_updates(computing, x, y)
    assert all(o.sg_loss is None and o.target is None for o in outs)
    assert sum(o.sg_loss is not None for o in outs_c) >= 3  # the reference did compute them
    for a, b in zip(skipping.parameters(), computing.parameters()):
        assert torch.equal(a, b)
    for k, v in m.items():
        assert torch.equal(skipping.boundary.sg.state_dict()[k], v)
    assert max((p - q).abs().max() for p, q in zip(skipping.net.parameters(), char_lstm().double().parameters())) > 1e-3


def test_with_train_core_a_frozen_m_still_trains_the_core_through_its_loss():
    x, y = random_ids(3 * T)
    e = flat_engine(char_lstm(), DNIOptions(lr=0.0, train_core=True))
    outs = adam_updates(e, x, y)
    assert sum(o.sg_loss is not None for o in outs) == 2  # every boundary's target
