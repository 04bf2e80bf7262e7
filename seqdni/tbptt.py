"""One truncated-BPTT unroll, with or without synthetic gradients, in plain PyTorch.

`Unroller.unroll` runs the fused core over T steps from the carried state, backpropagates
J_k (the unroll's mean loss, plus the boundary injection under DNI), and returns the
regression loss of the synthetic-gradient model *without* backpropagating it: the caller
clips the core's gradients first, so the core's clip never sees SG-loss gradients.

Units: the core minimises the *mean* loss over the unroll's B·T characters, while M
predicts in per-sequence units, the gradient of the *sum* of one sequence's future
losses, so that its targets do not shrink with the batch size or the unroll length.
The injection divides M by n = B·T and the target is multiplied by n.

Memory under DNI: with `train_core` the previous unroll's last core step is recomputed
from its stored input (s_{t-1}, x_t) with the current parameters, so T + 1 core steps are
held; otherwise M(s_t) is evaluated on the detached boundary state and only T steps are
held. DNI + Aux trains every step τ of the previous unroll towards M(s_{τ+T}), whose
states are this unroll's: it recomputes that whole unroll from its stored start state and
inputs (2T steps held), and runs both unrolls step by step, because the fused nn.LSTM
returns the full state (h, c) at the unroll's end only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

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
)
from seqdni.model import BitLSTM, CharLSTM

LSTMState = tuple[Tensor, Tensor]


@dataclass
class Carry:
    """What crosses a truncation boundary."""

    state: LSTMState  # s_t, detached
    kept: tuple[LSTMState, Tensor] | None = None  # (state, inputs) that recompute the kept steps
    boundary: bool = False  # s_t ended an unroll, so a prediction M(s_t) awaits its target

    def to(self, device: torch.device) -> Carry:
        kept = None if self.kept is None else (tuple(t.to(device) for t in self.kept[0]), self.kept[1].to(device))
        return Carry(tuple(t.to(device) for t in self.state), kept, self.boundary)  # type: ignore[arg-type]


@dataclass
class UnrollOut:
    loss: Tensor  # mean cross-entropy of the unroll, nats, detached
    sg_loss: Tensor | None  # regression loss with its graph (None without a prediction to train)
    carry: Carry
    stats: dict[str, Tensor] = field(default_factory=dict)  # detached diagnostics
    target: Tensor | None = None  # bootstrapped target for M(s_t), flattened, detached
    prediction: Tensor | None = None  # M(s_t), detached: `seqdni.dni.diagnostics` compares the two


def window_diagnostics(outs: list[UnrollOut]) -> dict[str, Tensor]:
    """M against its targets over all boundaries of a batch window at once (none: empty)."""
    pairs = [(o.prediction, o.target) for o in outs if o.prediction is not None]
    if not pairs:
        return {}
    preds, targets = zip(*pairs)
    return diagnostics(torch.cat(preds), torch.cat(targets))


def _backward(t: Tensor, retain_graph: bool = False) -> None:
    t.backward(retain_graph=retain_graph)


class Unroller(nn.Module):
    """A language model, its synthetic-gradient model M and (DNI + Aux) its aux head."""

    def __init__(self, model: CharLSTM | BitLSTM, dni: DNIOptions | None = None):
        super().__init__()
        if dni is not None and dni.conditional and not hasattr(model, "next_input"):
            raise ValueError(f"model.dni.conditional needs the input after each unroll, which a {type(model).__name__} "
                             "task does not provide; set model.dni.conditional to false")
        self.model, self.dni = model, dni
        d = model.state_size  # flattened (h, c) per example
        self.sg = None if dni is None else SyntheticGradient(d, dni.hidden, model.cond_size if dni.conditional else 0)
        self.aux = nn.Linear(d, d) if dni is not None and dni.aux_weight > 0 else None

    def core_parameters(self) -> list[nn.Parameter]:
        aux = list(self.aux.parameters()) if self.aux is not None else []
        return list(self.model.parameters()) + aux

    def sg_parameters(self) -> list[nn.Parameter]:
        return list(self.sg.parameters()) if self.sg is not None else []

    def initial_carry(self, batch_size: int, device: torch.device) -> Carry:
        return Carry(self.model.init_state(batch_size, device))

    def _cond(self, x_step: Tensor) -> Tensor | None:
        """Conditional DNI: the next input, as the network presents it (one-hot ids, vectors)."""
        return self.model.condition(x_step) if self.dni is not None and self.dni.conditional else None

    def _cond_steps(self, x: Tensor, y: Tensor) -> Tensor | None:
        """Conditional DNI at every step: the input after each step, rows in time-major order."""
        if not (self.dni is not None and self.dni.conditional):
            return None
        after = self.model.condition(torch.cat([x[:, 1:], self.model.next_input(y).unsqueeze(1)], dim=1))
        return after.transpose(0, 1).reshape(-1, after.size(-1))

    def _recompute_kept(self, carry: Carry) -> Tensor | None:
        """DNI + Aux: the previous unroll's kept steps, recomputed with the current parameters
        from their stored input: flattened states, (K·B, d) in time-major order, the last s_t."""
        if carry.kept is None or not carry.boundary:
            return None
        s_start, xs = carry.kept
        return flatten_state(self.model.core_steps(xs, s_start)[2])

    def _kept_step(self, carry: Carry) -> Tensor:
        """`train_core`: s_t recomputed by the kept core step alone, from the (detached) state
        before it, so the regression loss trains that one step."""
        s_before, xs = carry.kept
        if xs.size(1) > 1:  # Aux kept the whole unroll: first reach the state before its last step
            with torch.no_grad():
                s_before = self.model.core(xs[:, :-1], s_before)[1]
        return flatten_state(self.model.core(xs[:, -1:], detach_state(s_before))[1])

    def unroll(self, x: Tensor, y: Tensor, carry: Carry, backward=_backward) -> UnrollOut:
        """Forward and backward of one unroll of T = x.size(1) steps."""
        opts, sg, aux = self.dni, self.sg, self.aux
        want_target = sg is not None and carry.boundary
        s_t = detach_state(carry.state, requires_grad=want_target)  # leaf: collects ∂J_k/∂s_t
        batch, steps = y.size(0), y.size(1)
        redo = self._recompute_kept(carry) if aux is not None else None

        states = None  # every step's flattened state: DNI + Aux predicts M at each of them
        if aux is not None:  # Aux keeps the whole unroll: each step gets a target next unroll
            out, s_end, per_step = self.model.core_steps(x, s_t)
            states = flatten_state(per_step)
            kept = (detach_state(s_t), x)
        elif opts is not None and opts.train_core:  # split off the last step and keep its input
            s_prev, outs = s_t, []
            if x.size(1) > 1:
                out_a, s_prev = self.model.core(x[:, :-1], s_t)
                outs.append(out_a)
            out_b, s_end = self.model.core(x[:, -1:], s_prev)
            out = torch.cat(outs + [out_b], dim=1)
            kept = (detach_state(s_prev), x[:, -1:])
        else:
            out, s_end = self.model.core(x, s_t)
            kept = None
        loss = self.model.loss(out, y)
        objective, stats = loss, {}
        n = batch * steps  # positions the mean runs over: per-sequence units <-> mean-loss units

        if sg is not None:
            flat_end = flatten_state(s_end) if states is None else states[-batch:]  # s_{t+T}, with its graph
            with torch.no_grad():  # M(s_{t+T}) is only ever used as a constant
                if states is None:
                    sg_next = sg(flat_end, self._cond(self.model.next_input(y)) if opts.conditional else None)
                else:  # M(s_τ) at every step of this unroll: the Aux targets of the previous one
                    sg_steps = sg(states, self._cond_steps(x, y))
                    sg_next = sg_steps[-batch:]
            objective = objective + boundary_injection(flat_end, sg_next, opts.scale / n, batch_dim=0)
            if aux is not None and redo is not None:  # Â(s_τ) ≈ M(s_{τ+T}) for the previous unroll's steps
                m = min(redo.size(0), sg_steps.size(0))
                aux_pred, aux_target = aux(redo[-m:]), sg_steps[-m:]
                aux_loss = regression_loss(aux_pred, aux_target)
                objective = objective + opts.aux_weight * aux_loss
                stats["sg/aux_loss"] = aux_loss.detach()
                stats["sg/aux_cosine"] = cosine(aux_pred.detach(), aux_target)

        second_pass = want_target and not opts.scale_target and opts.scale != 1.0
        backward(objective, retain_graph=second_pass)

        sg_loss = target = prediction = None
        if want_target:
            target = bootstrapped_target(s_t) * n
            if second_pass:  # add the unscaled remainder (1 - scale) J^T M(s_{t+T})
                rest = torch.autograd.grad(boundary_injection(s_end, sg_next, 1.0), s_t)
                target = target + (1.0 - opts.scale) * flatten_state(rest)
            if opts.train_core and carry.kept is not None:  # M reads the kept core step's s_t
                flat_in = self._kept_step(carry)
            else:
                flat_in = flatten_state(s_t).detach()
            prediction = sg(flat_in, self._cond(x[:, 0]))  # M(s_t); x[:, 0] followed the boundary
            sg_loss = regression_loss(prediction, target)
            stats["sg/loss"] = sg_loss.detach()

        new = Carry(detach_state(s_end), kept, boundary=True)
        return UnrollOut(loss.detach(), sg_loss, new, stats, None if target is None else target.detach(),
                         None if prediction is None else prediction.detach())

    def _mean_loss(self, state: LSTMState, chunk: tuple[Tensor, Tensor]) -> tuple[Tensor, LSTMState]:
        x, y = chunk
        out, state = self.model.core(x, state)
        return self.model.loss(out, y), state

    @torch.no_grad()
    def probe(self, x: Tensor, y: Tensor, unroll: int, warmup: int) -> dict[str, Tensor]:
        """How good is M? Warm up `warmup` steps, then compare M at that boundary with the
        true future gradient, by BPTT over the rest of the window cut into unrolls.

        The true gradient is the one M is trained towards: with `scale_target` the target's
        future term is scaled once per unroll, so unroll j after the boundary counts scale**j."""
        state = self.model.init_state(x.size(0), x.device)
        _, state = self.model(x[:, :warmup], state)
        rest = range(warmup, x.size(1), unroll)
        chunks = [(j, x[:, i : i + unroll], y[:, i : i + unroll]) for j, i in enumerate(rest)]
        discount = self.dni.scale if self.dni.scale_target else 1.0

        def weighted(s: LSTMState, chunk: tuple[int, Tensor, Tensor]) -> tuple[Tensor, LSTMState]:
            loss, s = self._mean_loss(s, chunk[1:])
            return discount ** chunk[0] * loss, s

        true = true_future_gradient(weighted, state, chunks) * (x.size(0) * unroll)  # per-sequence units
        pred = self.sg(flatten_state(state), self._cond(x[:, warmup]))
        return {"sg/probe_cosine": cosine(pred, true),
                "sg/probe_norm_ratio": pred.norm(dim=1).mean() / true.norm(dim=1).mean().clamp_min(1e-30)}
