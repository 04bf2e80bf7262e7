"""The flat engine: one truncated-BPTT unroll of a recurrent network, with or without DNI.

`FlatEngine.update` runs the fused core over T steps from the carried state, backpropagates
J_k (the unroll's mean loss, plus the boundary injection under DNI), clips the core, then
trains M on the bootstrapped target of the previous boundary (`seqdni.dni.Interface`), so
the core's clip never sees SG-loss gradients.

Units: the core minimises the *mean* loss over the unroll's n = B·T positions, while M
predicts in per-sequence units (the gradient of the *sum* of one sequence's future losses),
so that its targets do not shrink with the batch size or the unroll length: the injection
divides M by n and the target is multiplied by n.

Memory under DNI: with `train_core` the previous unroll's last core step is recomputed
from its stored input (s_{t-1}, x_t) with the current parameters, so T + 1 core steps are
held; otherwise M(s_t) is evaluated on the detached boundary state and only T steps are
held. DNI + Aux trains every step τ of the previous unroll towards M(s_{τ+T}), whose
states are this unroll's: it recomputes that whole unroll step by step from its stored start
state and inputs (2T steps held; its states train the core through the auxiliary loss, and the
fused nn.LSTM returns the full state (h, c) at the unroll's end only). The current unroll runs
fused; its every-step states are needed only as values (M's inputs for the targets) and come
from `step_states` without a graph. With `aux_keep_graph` nothing is recomputed: the unroll runs
on copies of the core's weights, its every-step states keep their graph until the next unroll
trains them, and the auxiliary gradient is the one at the weights of one update before.
With n-step targets (`target_unrolls`), the last n - 1 unrolls' start states, inputs and
targets are carried (and checkpointed) until the oldest state's target is complete; with
`pending_targets`, M also learns every one of them at every update, on the horizon it has so far
(`seqdni.engines.n_step`). A frozen M (`lr: 0`, without `train_core` or least squares) learns
nothing, so no target is computed (`targets_for_frozen_m` computes them for analysis). With
`injection: shuffled` (a control) the core receives another stream's M(s_{t+T})
(`seqdni.engines.control`), with `injection: none` nothing, and M's target is corrected for it.
With `lookahead` L (a conditional M on the targets ahead), `update` gets the unroll's T targets
and L more: M(s_t) reads targets 0..L-1 of them, M(s_{t+T}) targets T..T+L-1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from seqdni.dni import (
    Interface,
    cosine,
    detach_state,
    flatten_state,
    regression_loss,
)
from seqdni.engines.aux import StatesOfUnroll, aux_head
from seqdni.engines.base import (
    Carry,
    Kept,
    ParamGroup,
    RecurrentEval,
    Unrolling,
    UnrollOut,
)
from seqdni.engines.control import StreamRotation
from seqdni.engines.n_step import NStepTargets
from seqdni.engines.options import DNIOptions
from seqdni.errors import UserError


@dataclass
class Forward:
    out: Tensor  # the core's outputs (B, T, H)
    end: tuple[Tensor, ...]  # s_{t+T}, with its graph
    states: Tensor | None  # DNI + Aux: every step's flattened state, (T·B, d) time-major, no graph
    kept: Kept | None  # what recomputes the kept steps one unroll later
    graph: Tensor | None = None  # `aux_keep_graph`: `states` with their graph, trained one unroll later


class FlatEngine(NStepTargets, Unrolling, RecurrentEval, nn.Module):
    """A recurrent network, its boundary interface (M) and, for DNI + Aux, its aux head Â.

    Args:
        net: A `seqdni.nets.RecurrentNetwork` (`CharLSTM`, `BitLSTM`).
        unroll: T, steps per unroll (one update each).
        dni: Synthetic gradients at the boundaries; None for plain truncated BPTT.
        lr, weight_decay, clip: The core's Adam and gradient clip (M has its own, in `dni`).
    """

    def __init__(self, net: nn.Module, unroll: int, dni: DNIOptions | None = None, lr: float = 2e-3,
                 weight_decay: float = 0.0, clip: float = 1.0):
        super().__init__()
        if dni is not None and dni.conditional and not hasattr(net, "next_input"):
            raise UserError(f"model.dni.conditional needs the input after each unroll, which a {type(net).__name__} "
                             "task does not provide; set model.dni.conditional to false")
        if dni is not None and dni.lookahead and not hasattr(net, "condition_targets"):
            raise UserError(f"model.dni.lookahead needs a task whose targets M can read ahead (Copy, Repeat Copy); "
                            f"a {type(net).__name__} task has none, so set model.dni.lookahead to 0")
        if dni is not None and dni.episodic and not hasattr(net, "episode_ends"):
            raise UserError(f"model.dni.episodic needs a task with episodes (Copy, Repeat Copy); a "
                             f"{type(net).__name__} task has none, so set model.dni.episodic to false")
        if dni is not None and dni.pending_targets and dni.episodic and not getattr(net, "resets", False):
            raise UserError("model.dni.pending_targets with model.dni.episodic needs streams that reset the state at "
                            "each episode start (data.resets: true), so that no target crosses an episode end; "
                            "set data.resets to true or unset model.dni.pending_targets")
        self.net, self.span, self.dni = net, unroll, dni
        self.lr, self.weight_decay, self.clip = lr, weight_decay, clip
        d = net.state_size  # flattened (h, c) per example
        self.lookahead = 0 if dni is None else dni.lookahead  # target steps beyond the unroll that `update` needs
        cond = (net.target_features * self.lookahead if self.lookahead  # what M reads beside the state
                else net.cond_size if dni is not None and dni.conditional else 0)
        fit = (dni.least_squares, dni.ridge, dni.solve_every) if dni is not None and dni.least_squares else None
        self.boundary = None if dni is None else Interface(d, dni, cond_dim=cond, fit=fit)
        self.aux = aux_head(d, dni.rank) if dni is not None and dni.aux_weight > 0 else None
        self.rotation = StreamRotation() if dni is not None and dni.shuffled else None  # the control injection
        self.targets_for_frozen_m = False  # True: M's targets even when M learns nothing (analysis scripts)

    def param_groups(self) -> list[ParamGroup]:
        core = list(self.net.parameters()) + (list(self.aux.parameters()) if self.aux is not None else [])
        groups = [ParamGroup("core", core, self.lr, self.clip, self.weight_decay)]
        if self.boundary is not None and self.boundary.by_gradient:
            groups.append(ParamGroup("sg", list(self.boundary.parameters()), self.dni.lr, self.dni.clip))
        return groups

    def initial_carry(self, batch_size: int, device: torch.device) -> Carry:
        return Carry(self.net.init_state(batch_size, device))

    # ---- one unroll ---------------------------------------------------------------------------
    def unroll(self, x: Tensor, y: Tensor, carry: Carry, backward=Tensor.backward) -> UnrollOut:
        """Forward and backward of one unroll of T = x.size(1) steps; M's loss is returned, not applied.
        With `lookahead`, `y` holds the unroll's targets and `lookahead` more."""
        cond_t, cond_end = self._conditions(x, y)
        y = y[:, : x.size(1)]
        learns = self.boundary is not None and (self.boundary.learns or self.dni.train_core
                                                or self.targets_for_frozen_m)  # else M needs no targets
        n_step = learns and self.dni.target_unrolls > 1
        want_target = learns and carry.boundary and not n_step
        s_t = detach_state(carry.state, requires_grad=want_target)  # leaf: collects ∂J_k/∂s_t
        redo = self._aux_states(carry) if self.aux is not None else None
        fwd = self._forward(x, s_t)
        loss = self.net.loss(fwd.out, y)
        objective, stats, g, live, sent = loss, {}, None, None, None
        if self.boundary is not None:
            terms, g, live, sent = self._dni_terms(x, y, fwd, redo, stats, cond_end)
            for term in terms:
                objective = objective + term
        keep = fwd.graph is not None  # the graph outlives this backward: the next unroll trains its states
        backward(objective, retain_graph=keep or (want_target and self.dni.second_pass))
        sg_loss = target = prediction = None
        history = self._history(carry, s_t, x, y, cond_t) if n_step else ()
        if want_target:
            sg_loss, prediction, target = self._learn(y, carry, s_t, fwd, g, sent, cond_t)
        elif n_step and self.dni.pending_targets and history:
            sg_loss, prediction, target = self._learn_pending(history, g)
            b = y.size(0)  # the newest state, which M has not learned yet (the others it has, at earlier updates)
            stats["sg/cosine_new"] = cosine(prediction[-b:], target[-b:])
        elif n_step and len(history) == self.dni.target_unrolls:
            sg_loss, prediction, target = self._learn_n_step(history, g)
        if n_step and len(history) == self.dni.target_unrolls:
            history = history[1:]
        if sg_loss is not None:
            stats["sg/loss"] = sg_loss.detach()
            sg_loss = sg_loss if self.boundary.by_gradient else None  # least squares: M is fitted already
        new = Carry(detach_state(fwd.end), fwd.kept, boundary=True, prediction=live, graph=fwd.graph, history=history)
        return UnrollOut(loss.detach(), sg_loss, new, stats, target, prediction)

    def _forward(self, x: Tensor, s_t: tuple[Tensor, ...]) -> Forward:
        """The core over the unroll, keeping what the next unroll recomputes."""
        if self.aux is not None and self.dni.aux_keep_graph:  # on copies of the weights, kept for the next unroll
            weights = {f"net.{k}": p.clone() for k, p in self.net.named_parameters()}
            out, end, states = functional_call(StatesOfUnroll(self.net), weights, (x, s_t))
            states = flatten_state(states)
            return Forward(out, end, states.detach(), Kept(detach_state(s_t), x), states)
        if self.aux is not None:  # Aux keeps the whole unroll: each step gets a target next unroll
            out, end = self.net.core(x, s_t)  # fused; every step's state only as values, for M's targets
            return Forward(out, end, flatten_state(self.net.step_states(x, s_t, out)), Kept(detach_state(s_t), x))
        if self.dni is not None and self.dni.train_core:  # split off the last step and keep its input
            s_prev, outs = s_t, []
            if x.size(1) > 1:
                out_a, s_prev = self.net.core(x[:, :-1], s_t)
                outs.append(out_a)
            out_b, end = self.net.core(x[:, -1:], s_prev)
            return Forward(torch.cat(outs + [out_b], dim=1), end, None, Kept(detach_state(s_prev), x[:, -1:]))
        out, end = self.net.core(x, s_t)
        return Forward(out, end, None, None)

    def _dni_terms(self, x: Tensor, y: Tensor, fwd: Forward, redo: Tensor | None, stats: dict,
                   cond: Tensor | None) -> tuple[list[Tensor], Tensor, Tensor | None, Tensor]:
        """The injection of M(s_{t+T}) (and, for DNI + Aux, the auxiliary loss); returns M(s_{t+T}),
        with `reuse` the same prediction with its graph (M's next regression input), and what
        the core received (`injection`: M(s_{t+T}), another stream's, or zero)."""
        batch, n, live = y.size(0), y.size(0) * y.size(1), None  # n: positions the mean loss runs over
        if fwd.states is None:
            flat_end = flatten_state(fwd.end)
            if self.dni.reuse:
                live = self.boundary.sg(flat_end.detach(), cond)
                g = live.detach()
            else:
                g = self.boundary.predict(flat_end, cond, batch_dim=0)
        else:  # M(s_τ) at every step of this unroll: the Aux targets of the previous one
            flat_end = flatten_state(fwd.end)
            g_steps = self.boundary.predict(fwd.states, self._cond_steps(x, y), batch_dim=0)
            g = g_steps[-batch:]
        terms = []
        if self.dni.injection == "none":  # the control: the core receives nothing
            sent = torch.zeros_like(g)
        else:
            sent = self.rotation(g) if self.dni.shuffled else g
            terms.append(self.boundary.inject(flat_end, sent, n, batch_dim=0))
        if self.aux is not None and redo is not None:  # Â(s_τ) ≈ M(s_{τ+T}) for the previous unroll's steps
            m = min(redo.size(0), g_steps.size(0))
            aux_pred, aux_target = self.aux(redo[-m:]), g_steps[-m:]
            aux_loss = regression_loss(aux_pred, aux_target)
            terms.append(self.dni.aux_weight * aux_loss)
            stats["sg/aux_loss"] = aux_loss.detach()
            stats["sg/aux_cosine"] = cosine(aux_pred.detach(), aux_target)
        return terms, g, live, sent

    def _learn(self, y: Tensor, carry: Carry, s_t: tuple[Tensor, ...], fwd: Forward, g: Tensor, sent: Tensor,
               cond: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """M(s_t) against its bootstrapped target: the loss, the prediction and the target."""
        n = y.size(0) * y.size(1)
        target = self.boundary.target([s_t], n)
        if self.dni.second_pass:  # γ ≠ α, an episode ended, or a control injection: add Jᵀ (γ g - α sent)
            target = target + self.boundary.remainder(fwd.end, g, s_t, discount=self._discounts(y, g),
                                                      retain_graph=fwd.graph is not None,
                                                      sent=sent if self.dni.controlled else None)
        if carry.prediction is not None:  # `reuse`: M(s_t) as made for the previous unroll's injection
            loss = regression_loss(carry.prediction, target)
            return loss, carry.prediction.detach(), target.detach()
        if self.dni.train_core and carry.kept is not None:  # M reads the kept core step's s_t
            flat_in = self._kept_step(carry)
        else:
            flat_in = flatten_state(s_t).detach()
        loss, prediction = self.boundary.learn(flat_in, target, cond)
        return loss, prediction, target.detach()

    # ---- conditioning and kept steps ------------------------------------------------------------
    def condition_at(self, x: Tensor, y: Tensor, at: int) -> Tensor | None:
        """What a conditional M reads beside the state before step `at` of (x, y): the next input
        (`conditional`), or the targets of the `lookahead` steps from there (zero past y's end)."""
        if self.dni is None or not (self.dni.conditional or self.lookahead):
            return None
        if self.lookahead:
            return self.net.condition_targets(y[:, at : at + self.lookahead], self.lookahead)
        return self.net.condition(x[:, at])

    def _conditions(self, x: Tensor, y: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """What a conditional M reads beside s_t and beside s_{t+T} (BitLSTM has no next input)."""
        if self.dni is None or not self.dni.conditional:
            return self.condition_at(x, y, 0), self.condition_at(x, y, x.size(1))
        return self.net.condition(x[:, 0]), self.net.condition(self.net.next_input(y[:, : x.size(1)]))

    def _cond_steps(self, x: Tensor, y: Tensor) -> Tensor | None:
        """Conditional DNI at every step: the input after each step, rows in time-major order."""
        if not (self.dni is not None and self.dni.conditional):
            return None
        after = self.net.condition(torch.cat([x[:, 1:], self.net.next_input(y).unsqueeze(1)], dim=1))
        return after.transpose(0, 1).reshape(-1, after.size(-1))

    def _aux_states(self, carry: Carry) -> Tensor | None:
        """DNI + Aux: the previous unroll's every-step states with a graph to the core, as kept from
        its own forward pass (`aux_keep_graph`) or recomputed now."""
        return carry.graph if carry.graph is not None else self._recompute_kept(carry)

    def _recompute_kept(self, carry: Carry) -> Tensor | None:
        """DNI + Aux: the previous unroll's kept steps, recomputed with the current parameters
        from their stored input: flattened states, (K·B, d) in time-major order, the last s_t."""
        if carry.kept is None or not carry.boundary:
            return None
        return flatten_state(self.net.core_steps(carry.kept.inputs, carry.kept.state)[2])

    def _kept_step(self, carry: Carry) -> Tensor:
        """`train_core`: s_t recomputed by the kept core step alone, from the (detached) state
        before it, so the regression loss trains that one step."""
        s_before, xs = carry.kept.state, carry.kept.inputs
        if xs.size(1) > 1:  # Aux kept the whole unroll: first reach the state before its last step
            with torch.no_grad():
                s_before = self.net.core(xs[:, :-1], s_before)[1]
        return flatten_state(self.net.core(xs[:, -1:], detach_state(s_before))[1])
