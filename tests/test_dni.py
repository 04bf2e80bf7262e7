"""The mathematics of docs/dni-rnn.md, checked against independent autograd computations."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seqdni.dni import (
    DNIOptions,
    SyntheticGradient,
    bootstrapped_target,
    boundary_injection,
    cosine,
    detach_state,
    diagnostics,
    flatten_state,
    regression_loss,
    true_future_gradient,
    unflatten_state,
)
from seqdni.model import CharLSTM
from seqdni.tbptt import Unroller

V, B, T = 7, 3, 4


def make_model(layers: int = 2, seed: int = 0) -> CharLSTM:
    torch.manual_seed(seed)
    return CharLSTM(V, embed_dim=5, hidden_size=6, num_layers=layers).double()


def batch(steps: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, steps + 1), generator=g)
    return ids[:, :-1], ids[:, 1:]


def randomize(module: nn.Module, seed: int = 5, std: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def engine(model: CharLSTM, dni: DNIOptions | None) -> Unroller:
    return Unroller(copy.deepcopy(model), dni).double()


def grads(params) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def run(e: Unroller, x, y, unrolls: int, zero_between: bool = False):
    """Unrolls over x (no optimiser steps); returns the outputs and the core grads (summed)."""
    carry = e.initial_carry(x.size(0), x.device)
    outs = []
    for i in range(unrolls):
        if zero_between:
            e.zero_grad(set_to_none=True)
        out = e.unroll(x[:, i * T : (i + 1) * T], y[:, i * T : (i + 1) * T], carry)
        carry = out.carry
        outs.append(out)
    return outs, grads(e.model.parameters())


def test_state_flattening_round_trips_for_tuples_and_tensors():
    h, c = torch.randn(2, B, 3), torch.randn(2, B, 3)
    flat = flatten_state((h, c))
    assert flat.shape == (B, 12)
    assert torch.equal(flat[1], torch.cat([h[:, 1].reshape(-1), c[:, 1].reshape(-1)]))
    h2, c2 = unflatten_state(flat, (h, c))
    assert torch.equal(h2, h) and torch.equal(c2, c)
    g = torch.randn(B, 5)  # a GRU-like single tensor with batch first
    assert torch.equal(unflatten_state(flatten_state(g, 0), g, 0), g)


def test_sg_model_starts_at_zero_linear_and_mlp():
    s = torch.randn(B, 8)
    for hidden in (0, 16):
        m = SyntheticGradient(8, hidden)
        assert torch.equal(m(s), torch.zeros(B, 8))
    assert sum(isinstance(m, nn.Linear) for m in SyntheticGradient(8, 16).modules()) == 2


def test_check1_zero_sg_equals_truncated_bptt_exactly():
    model = make_model()
    x, y = batch(3 * T)
    outs_bptt, g_bptt = run(engine(model, None), x, y, 3)
    outs_dni, g_dni = run(engine(model, DNIOptions(scale=1.0)), x, y, 3)  # M ≡ 0 at initialisation
    for a, b in zip(g_bptt, g_dni):
        assert torch.equal(a, b)
    assert [o.loss.item() for o in outs_bptt] == [o.loss.item() for o in outs_dni]


class Oracle(nn.Module):
    """Stands in for M: returns given gradients in call order, zeros after."""

    def __init__(self, answers: list[torch.Tensor]):
        super().__init__()
        self.answers = list(answers)

    def forward(self, flat, cond=None):
        return self.answers.pop(0) if self.answers else torch.zeros_like(flat)


def test_check2_oracle_sg_recovers_bptt_over_two_unrolls():
    model = make_model()
    x, y = batch(2 * T)
    ref = copy.deepcopy(model)
    s0 = ref.init_state(B)
    logits1, s1 = ref(x[:, :T], s0)
    logits2, _ = ref(x[:, T:], s1)
    ce = lambda lg, t: F.cross_entropy(lg.reshape(-1, V), t.reshape(-1))  # noqa: E731
    (ce(logits1, y[:, :T]) + ce(logits2, y[:, T:])).backward()
    g_ref = grads(ref.parameters())

    def mean_loss(state, chunk):
        logits, state = model(chunk[0], state)
        return ce(logits, chunk[1]), state

    with torch.no_grad():
        _, s_first = model(x[:, :T], model.init_state(B))
    delta = true_future_gradient(mean_loss, s_first, [(x[:, T:], y[:, T:])])
    e = engine(model, DNIOptions(scale=1.0))
    e.sg = Oracle([delta * B * T])  # per-sequence units; the true future gradient at the first boundary, zero at the second
    _, g_dni = run(e, x, y, 2)
    for a, b in zip(g_ref, g_dni):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_the_dni_functions_drive_a_plain_gru_outside_the_unroller():
    """seqdni.dni on a core whose state is one tensor (nn.GRU's h), in a hand-written loop:
    with the true future gradient injected at the first boundary, two unrolls give BPTT's
    gradients over 2T, and the bootstrapped target read at that boundary is that gradient."""
    torch.manual_seed(0)
    gru, head = nn.GRU(3, 5, batch_first=True).double(), nn.Linear(5, 2).double()
    params = list(gru.parameters()) + list(head.parameters())
    x, y = torch.randn(B, 2 * T, 3, dtype=torch.float64), torch.randn(B, 2 * T, 2, dtype=torch.float64)
    h0 = torch.zeros(1, B, 5, dtype=torch.float64)

    def unroll(h, chunk):
        out, h = gru(chunk[0], h)
        return (head(out) - chunk[1]).pow(2).mean(), h

    first, second = (x[:, :T], y[:, :T]), (x[:, T:], y[:, T:])
    l1, h1 = unroll(h0, first)
    (l1 + unroll(h1, second)[0]).backward()
    g_bptt = grads(params)

    delta = true_future_gradient(unroll, h1, [second])
    assert delta.shape == (B, 5) and delta.abs().max() > 0
    for p in params:
        p.grad = None
    l1, h1 = unroll(detach_state(h0), first)
    (l1 + boundary_injection(h1, delta)).backward()
    s = detach_state(h1, requires_grad=True)
    l2, h2 = unroll(s, second)
    (l2 + boundary_injection(h2, torch.zeros_like(delta))).backward()
    for a, b in zip(g_bptt, grads(params)):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(bootstrapped_target(s), delta, rtol=1e-10, atol=1e-13)

    sg = SyntheticGradient(5).double()
    regression_loss(sg(flatten_state(s).detach()), bootstrapped_target(s)).backward()
    assert sg.net[0].weight.grad.abs().max() > 0  # M learns from the target


@pytest.mark.parametrize("scale,scale_target", [(1.0, True), (0.1, True), (0.1, False)])
def test_check3_target_is_local_gradient_plus_jacobian_transpose_times_sg(scale, scale_target):
    model = make_model()
    x, y = batch(2 * T)
    e = engine(model, DNIOptions(scale=scale, scale_target=scale_target))
    randomize(e.sg)
    outs, _ = run(e, x, y, 2)
    target = outs[1].target

    s_t = detach_state(outs[0].carry.state, requires_grad=True)
    logits, s_end = e.model(x[:, T:], s_t)
    loss = F.cross_entropy(logits.reshape(-1, V), y[:, T:].reshape(-1))
    local = flatten_state(torch.autograd.grad(loss, s_t, retain_graph=True))
    m = e.sg(flatten_state(s_end)).detach()
    jt_m = flatten_state(torch.autograd.grad(s_end, s_t, grad_outputs=unflatten_state(m, s_end)))
    # M works in per-sequence units: the unroll's mean loss is over B·T characters
    expected = B * T * local + (scale if scale_target else 1.0) * jt_m
    torch.testing.assert_close(target, expected, rtol=1e-10, atol=1e-12)
    assert jt_m.abs().max() > 1e-6  # the future term is really there


def test_check4_linear_sg_learns_the_true_gradient_of_a_linear_rnn():
    """s_τ = A s_{τ-1} + u_τ, ℓ_τ = ½|s_τ|² (mean over the batch). The expected future gradient is
    E[δ_τ | s_τ] = P s_τ / B with P = Σ_{k≥1} (A^k)^T A^k; a linear M trained only on
    bootstrapped targets must point the same way."""
    torch.manual_seed(0)
    d, batch_size, steps = 4, 64, 3
    q, _ = torch.linalg.qr(torch.randn(d, d))
    A = 0.8 * q @ torch.diag(torch.tensor([1.0, 0.9, 0.7, 0.5]))
    P = sum(torch.linalg.matrix_power(A, k).T @ torch.linalg.matrix_power(A, k) for k in range(1, 200))
    M = SyntheticGradient(d)
    opt = torch.optim.Adam(M.parameters(), lr=3e-3)
    s = torch.zeros(batch_size, d)
    for _ in range(1500):
        s_t = detach_state(s, requires_grad=True)
        h, loss = s_t, 0.0
        for _ in range(steps):
            h = h @ A.T + 0.3 * torch.randn(batch_size, d)
            loss = loss + 0.5 * h.pow(2).sum(1).mean()
        (loss + boundary_injection(h, M(h), 1.0, batch_dim=0)).backward()
        target = bootstrapped_target(s_t, batch_dim=0)
        opt.zero_grad()
        regression_loss(M(s_t.detach()), target).backward()
        opt.step()
        s = h.detach()
    probe = torch.randn(256, d)
    with torch.no_grad():
        assert cosine(M(probe), probe @ P.T / batch_size) > 0.9


def test_regression_loss_sums_features_and_averages_the_batch():
    pred, tgt = torch.zeros(2, 3), torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 2.0]])
    assert regression_loss(pred, tgt).item() == pytest.approx((3.0 + 4.0) / 2)
    p = torch.zeros(2, 3, requires_grad=True)
    regression_loss(p, tgt.requires_grad_()).backward()
    assert tgt.grad is None  # the target is a constant


def test_option_scale_is_linear_in_the_injected_gradient():
    model = make_model()
    x, y = batch(2 * T)
    _, g0 = run(engine(model, None), x, y, 2)
    diffs = []
    for scale in (0.1, 0.2):
        e = engine(model, DNIOptions(scale=scale))
        randomize(e.sg)
        _, g = run(e, x, y, 2)
        diffs.append([a - b for a, b in zip(g, g0)])
    for d1, d2 in zip(*diffs):
        torch.testing.assert_close(d2, 2 * d1, rtol=1e-6, atol=1e-13)
    assert max(d.abs().max() for d in diffs[0]) > 0


def test_option_scale_target_changes_the_target_only():
    model = make_model()
    x, y = batch(2 * T)
    res = {}
    for st in (True, False):
        e = engine(model, DNIOptions(scale=0.1, scale_target=st))
        randomize(e.sg)
        res[st] = run(e, x, y, 2)
    for a, b in zip(res[True][1], res[False][1]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(res[True][0][1].target, res[False][0][1].target)


@pytest.mark.parametrize("aux_weight", [0.0, 0.5])
def test_option_train_core_sends_the_sg_loss_into_the_kept_core_step_only(aux_weight):
    model = make_model()
    x, y = batch(2 * T)
    out = {}
    for tc in (False, True):
        torch.manual_seed(3)  # the same aux head
        e = engine(model, DNIOptions(train_core=tc, aux_weight=aux_weight))
        randomize(e.sg)
        outs, g_lm = run(e, x, y, 2)
        e.zero_grad(set_to_none=True)
        outs[1].sg_loss.backward()
        out[tc] = (g_lm, grads(e.model.parameters()), grads(e.sg.parameters()), e, outs[1].target)
    for a, b in zip(out[False][0], out[True][0]):  # the language-model gradients do not change
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert all(g.abs().max() == 0 for g in out[False][1])  # off: the SG loss never touches the core
    assert max(g.abs().max() for g in out[True][2]) > 0
    # on: the SG loss trains exactly the kept core step, s_t = core(x_T, s_{T-1}) with s_{T-1} fixed
    e, target = out[True][3], out[True][4]
    with torch.no_grad():
        s_before = e.model.core(x[:, : T - 1], e.model.init_state(B))[1]
    s_t = e.model.core(x[:, T - 1 : T], s_before)[1]
    ref = torch.autograd.grad(regression_loss(e.sg(flatten_state(s_t)), target), list(e.model.parameters()),
                              allow_unused=True)
    for got, r in zip(out[True][1], ref):
        torch.testing.assert_close(got, r if r is not None else torch.zeros_like(got), rtol=1e-10, atol=1e-13)
    assert max(g.abs().max() for g in out[True][1]) > 0


def test_option_conditional_feeds_the_next_input_to_the_sg_model():
    model = make_model()
    x, y = batch(2 * T)
    e = engine(model, DNIOptions(conditional=True))
    randomize(e.sg)
    seen = []
    e.sg.register_forward_hook(lambda mod, args, res: seen.append(args[1].argmax(1)))
    run(e, x, y, 2)
    assert torch.equal(seen[0], y[:, T - 1])  # boundary 1: the character after it is y[:, T-1]
    assert torch.equal(seen[1], y[:, 2 * T - 1]) and torch.equal(seen[2], x[:, T])  # M(s_{t+T}), then M(s_t)
    assert e.sg.net[0].in_features == 2 * 2 * 6 + V


def test_option_hidden_makes_an_mlp_that_still_starts_as_bptt():
    model = make_model()
    x, y = batch(2 * T)
    _, g0 = run(engine(model, None), x, y, 2)
    e = engine(model, DNIOptions(hidden=9))
    assert e.sg.net[0].out_features == 9
    _, g = run(e, x, y, 2)
    for a, b in zip(g0, g):
        assert torch.equal(a, b)


def test_core_steps_equals_the_fused_core_and_returns_every_state():
    model = make_model()
    x, _ = batch(T)
    s0 = tuple(torch.randn_like(t) for t in model.init_state(B))
    out, s_end = model.core(x, s0)
    out_s, s_end_s, (h, c) = model.core_steps(x, s0)
    torch.testing.assert_close(out_s, out, rtol=1e-12, atol=1e-14)
    for a, b in zip(s_end_s, s_end):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for j in range(T):  # rows j·B .. (j+1)·B are the state after j + 1 steps
        h_j, c_j = model.core(x[:, : j + 1], s0)[1]
        torch.testing.assert_close(h[:, j * B : (j + 1) * B], h_j, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(c[:, j * B : (j + 1) * B], c_j, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("conditional", [False, True])
def test_check7_aux_loss_trains_every_step_towards_m_one_unroll_later(conditional):
    """DNI + Aux: in unroll 3 the auxiliary loss is Σ_τ ||Â(s_τ) - M(s_{τ+T})||² over every step τ
    of unroll 2 (mean over steps and sequences), and its gradient reaches the core through all
    of unroll 2's steps, which start from the state unroll 1 left: both checked against an
    independent autograd computation."""
    model = make_model()
    x, y = batch(3 * T)
    w = 0.7
    e = engine(model, DNIOptions(aux_weight=w, conditional=conditional))
    randomize(e.sg)
    outs, g_aux = run(e, x, y, 3, zero_between=True)
    plain = engine(model, DNIOptions(conditional=conditional))
    randomize(plain.sg)
    _, g_dni = run(plain, x, y, 3, zero_between=True)

    m = e.model
    with torch.no_grad():
        s_T = m.core(x[:, :T], m.init_state(B))[1]  # where unroll 2 starts
        s_2T = m.core(x[:, T : 2 * T], s_T)[1]
        s_3 = [flatten_state(m.core(x[:, 2 * T : 2 * T + j + 1], s_2T)[1]) for j in range(T)]  # s_{τ+T}
        cond = [F.one_hot(y[:, 2 * T + j], V).double() if conditional else None for j in range(T)]
        target = torch.cat([e.sg(s, c) for s, c in zip(s_3, cond)])
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
    # the early steps matter: the loss is not the boundary step's alone
    boundary_only = regression_loss(e.aux(s_2[-1]), target[-B:]).detach()
    assert not torch.allclose(boundary_only, aux_loss.detach())
    assert max(r.abs().max() for r in g_ref[: len(g_aux)] if r is not None) > 1e-6


def test_check7_aux_weight_zero_is_dni():
    model = make_model()
    x, y = batch(3 * T)
    e0 = engine(model, DNIOptions(aux_weight=0.0))
    randomize(e0.sg)
    outs, g0 = run(e0, x, y, 3)
    e_plain = engine(model, DNIOptions())
    randomize(e_plain.sg)
    _, g_dni = run(e_plain, x, y, 3)
    assert e0.aux is None and all("sg/aux_loss" not in o.stats for o in outs)
    for a, b in zip(g0, g_dni):
        assert torch.equal(a, b)


def test_diagnostics_over_a_window_are_the_mean_over_its_boundaries():
    g = torch.Generator().manual_seed(0)
    preds = [torch.randn(B, 10, generator=g, dtype=torch.float64) for _ in range(3)]
    targets = [p + torch.randn(B, 10, generator=g, dtype=torch.float64) for p in preds]
    window = diagnostics(torch.cat(preds), torch.cat(targets))
    each = [diagnostics(p, t) for p, t in zip(preds, targets)]
    assert set(window) == {"sg/pred_norm", "sg/target_norm", "sg/cosine"}
    for key, value in window.items():
        torch.testing.assert_close(value, torch.stack([d[key] for d in each]).mean())
    assert 0 < window["sg/cosine"] < 1
    assert diagnostics(preds[0], -2 * preds[0], "sg/x")["sg/x/cosine"].item() == pytest.approx(-1.0)


@pytest.mark.parametrize("scale_target", [False, True])
def test_probe_matches_an_oracle_sg_perfectly(scale_target):
    """The probe's true gradient is what M learns: undiscounted, or with scale_target the
    second unroll's loss counted scale times (the target's future term is scaled once)."""
    model = make_model()
    x, y = batch(3 * T)
    opts = DNIOptions(scale=0.3, scale_target=scale_target)
    e = engine(model, opts)
    with torch.no_grad():
        _, s = e.model(x[:, :T], e.model.init_state(B))
    weight = iter([1.0, opts.scale if scale_target else 1.0])

    def mean_loss(state, chunk):
        logits, state = e.model(chunk[0], state)
        return next(weight) * F.cross_entropy(logits.reshape(-1, V), chunk[1].reshape(-1)), state

    true = true_future_gradient(mean_loss, s, [(x[:, T:2 * T], y[:, T:2 * T]), (x[:, 2 * T:], y[:, 2 * T:])])
    e.sg = Oracle([true * B * T])
    res = e.probe(x, y, T, warmup=T)
    assert res["sg/probe_cosine"].item() == pytest.approx(1.0)
    assert res["sg/probe_norm_ratio"].item() == pytest.approx(1.0)


def test_options_are_validated_with_the_key_named():
    with pytest.raises(ValueError, match="model.dni.scale"):
        DNIOptions(scale=0.0)
    with pytest.raises(ValueError, match="model.dni.aux_weight"):
        DNIOptions(aux_weight=-1.0)
