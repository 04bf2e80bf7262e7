"""The hierarchical engine: a two-timescale character LM (`seqdni.nets.HierLSTM`) with an interface
between the levels.

The lower core is unrolled and updated every `unroll` characters. The upper core is unrolled
over `upper_unroll` ticks, a *period* of P = upper_unroll · tick / unroll lower unrolls, and
updated once per period. The lower→upper message crosses an interface (`message`):

- `bptt`: the levels are unrolled together (P = 1), the message carries the true gradient.
- `cut`: the lower core gets no gradient from the upper one.
- `dni`: the lower core uses scale · M(m) at once (`seqdni.dni.Interface`) and updates
  without waiting for the period to end; the upper core reads a detached copy of m, and when
  the period ends and the upper core is backpropagated, the gradients on those copies are M's
  targets.

In `cut` and `dni` the lower core reads detached copies of u; their gradients are collected
over the period and backpropagated through the upper core once, at its end. The upper core's
objective is the period's mean loss. Optionally (`boundaries`), each level's truncation boundary
also gets a synthetic gradient, through the same `Interface`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from seqdni.dni import BoundaryOptions, Interface, detach_state
from seqdni.engines.base import Carry, ParamGroup, Unrolling, UnrollOut
from seqdni.errors import UserError
from seqdni.nets import HierLSTM

Message = Literal["bptt", "cut", "dni"]
LSTMState = tuple[Tensor, Tensor]


@dataclass
class Period:
    """The upper core's unroll in progress; its graph lives until the period's last lower unroll."""

    start: LSTMState  # upper state at the period start (a leaf under a boundary synthetic gradient)
    state: LSTMState  # upper state so far, with its graph
    u_read: Tensor  # the lower core's (leaf) copy of the latest upper output
    reads: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # (upper output, the lower's leaf copy)
    messages: list[Tensor] = field(default_factory=list)  # the upper core's leaf copies of the messages
    done: int = 0  # lower unrolls done


@dataclass
class HierCarry(Carry):
    period: Period | None = None  # the upper unroll in progress (never in a checkpoint)

    def state_dict(self, gather) -> dict:
        if self.period is not None:
            raise UserError("a checkpoint in the middle of an upper unroll cannot be resumed exactly; "
                               "data.window must be a multiple of model.upper_unroll × model.tick")
        return super().state_dict(gather)


class HierEngine(Unrolling, nn.Module):
    """One lower unroll's forward and backward (and, at a period's end, the upper core's backward).

    Args:
        net: The two-level network.
        unroll: Lower truncation length in characters (one lower update each).
        upper_unroll: Upper truncation length in ticks.
        message: The lower→upper interface: `bptt`, `cut` or `dni`.
        dni: Settings of every synthetic-gradient interface (message and boundaries; `discount`
            concerns the boundaries, whose targets bootstrap on M).
        boundaries: Also put a synthetic gradient at each level's truncation boundary.
        lr, weight_decay, clip: The cores' Adam (both levels together) and gradient clip.
    """

    def __init__(self, net: HierLSTM, unroll: int, upper_unroll: int, message: Message = "dni",
                 dni: BoundaryOptions | None = None, boundaries: bool = False, lr: float = 2e-3,
                 weight_decay: float = 0.0, clip: float = 1.0):
        super().__init__()
        self.net, self.span, self.message, self.dni = net, unroll, message, dni
        self.lr, self.weight_decay, self.clip = lr, weight_decay, clip
        self.per_period = upper_unroll * net.tick // unroll
        self.msg_sg = Interface(net.message.out_features, dni, "message") if message == "dni" else None
        self.lower_sg = Interface(net.lower_size, dni, "lower") if boundaries else None
        self.upper_sg = Interface(net.upper_size, dni, "upper") if boundaries else None

    def interfaces(self) -> list[Interface]:
        return [sg for sg in (self.msg_sg, self.lower_sg, self.upper_sg) if sg is not None]

    def param_groups(self) -> list[ParamGroup]:
        groups = [ParamGroup("core", list(self.net.parameters()), self.lr, self.clip, self.weight_decay)]
        if self.interfaces():
            groups.append(ParamGroup("sg", [p for sg in self.interfaces() for p in sg.parameters()],
                                     self.dni.lr, self.dni.clip))
        return groups

    def initial_carry(self, batch_size: int, device: torch.device) -> HierCarry:
        return HierCarry(self.net.init_state(batch_size, device))

    def eval_start(self, batch_size: int, device: torch.device) -> tuple[tuple[Tensor, ...], int]:
        return self.net.init_state(batch_size, device), 0

    def eval_step(self, x: Tensor, y: Tensor, state: tuple[tuple[Tensor, ...], int]):
        """The tick phase is carried across evaluation batches with the state."""
        s, phase = state
        out, s = self.net.core(x, s, phase)
        return self.net.eval_sums(out, y), (s, (phase + x.size(1)) % self.net.tick)

    @staticmethod
    def _inject(sg: Interface, value, n: float, stats: dict, batch_dim: int = 1) -> tuple[Tensor, Tensor]:
        """The injection term of M(value) and M(value) itself."""
        g = sg.predict(value, batch_dim=batch_dim)
        stats.update(sg.injected_norm(g))
        return sg.inject(value, g, n, batch_dim), g

    def _second_pass(self) -> bool:
        return self.dni is not None and self.dni.second_pass

    def _learn_boundary(self, sg: Interface, leaf, end, g: Tensor, n: float, retain_graph: bool = False):
        """A boundary's M against n · ∂J/∂leaf, plus (γ - α) Jᵀ M(end) when the discount γ ≠ α."""
        extra = sg.remainder(end, g, leaf, retain_graph=retain_graph) if self._second_pass() else None
        return sg.learn_leaves([leaf], n, extra=extra)

    # ---- one lower unroll ------------------------------------------------------------------------
    def unroll(self, x: Tensor, y: Tensor, carry: Carry, backward=Tensor.backward) -> UnrollOut:
        if self.message == "bptt":
            return self._joint(x, y, carry, backward)
        n = y.numel()  # the lower objective is a mean over B·T characters
        want_lower = self.lower_sg is not None and carry.boundary
        s_low = detach_state(carry.state[:2], requires_grad=want_lower)
        period = getattr(carry, "period", None) or self._open(carry)
        loss, low_end, g_low, stats = self._lower(x, y, s_low, period, n, backward, want_lower)
        sg_losses = []
        if want_lower:
            sg_loss, st, _ = self._learn_boundary(self.lower_sg, s_low, low_end, g_low, n)
            sg_losses.append(sg_loss)
            stats.update(st)
        up = detach_state(period.state)
        if period.done == self.per_period:
            sg_losses += self._close(period, n * self.per_period, backward, stats)
            period = None
        new = HierCarry((*detach_state(low_end), *up), boundary=True, period=period)
        return UnrollOut(loss.detach(), sum(sg_losses) if sg_losses else None, new, stats)

    def _lower(self, x: Tensor, y: Tensor, s_low: LSTMState, period: Period, n: int, backward, want_lower: bool
               ) -> tuple[Tensor, LSTMState, Tensor | None, dict]:
        """The lower core's forward and backward; the upper core advances on the messages."""
        out, low_end = self.net.lower_core(x, s_low)
        ticks = self.net.ticks(x.size(1))
        m = self.net.send(out, ticks)
        objective, stats = 0.0, {}
        if self.msg_sg is not None:  # the synthetic gradient for the message, at once
            objective = objective + self._inject(self.msg_sg, m, n, stats, batch_dim=0)[0]
        m_leaf = m.detach().requires_grad_(self.msg_sg is not None)
        u_seq, period.state = self.net.upper(m_leaf, period.state)
        u_leaf = u_seq.detach().requires_grad_()
        loss = self.net.loss(self.net.read(out, period.u_read, u_leaf, ticks), y)
        objective = objective + loss
        g_low = None
        if self.lower_sg is not None:
            term, g_low = self._inject(self.lower_sg, low_end, n, stats)
            objective = objective + term
        backward(objective, retain_graph=want_lower and self._second_pass())
        period.reads.append((u_seq, u_leaf))
        period.messages.append(m_leaf)
        period.u_read, period.done = u_leaf[:, -1], period.done + 1
        return loss, low_end, g_low, stats

    def _open(self, carry: Carry) -> Period:
        want_upper = self.upper_sg is not None and carry.boundary
        start = detach_state(carry.state[2:], requires_grad=want_upper)
        u0 = start[0][-1]
        u0_leaf = u0.detach().requires_grad_(want_upper)
        return Period(start, start, u0_leaf, [(u0, u0_leaf)] if want_upper else [])

    def _close(self, period: Period, n_upper: int, backward, stats: dict) -> list[Tensor]:
        """The upper core's backward over the period: the lower core's gradients on its copies of u
        (scaled to the period's mean loss), plus the upper boundary's synthetic gradient."""
        objective = sum((node * (leaf.grad / self.per_period)).sum()
                        for node, leaf in period.reads if leaf.grad is not None and node.requires_grad)
        want_upper = self.upper_sg is not None and period.start[0].requires_grad
        if self.upper_sg is not None:
            term, g_up = self._inject(self.upper_sg, period.state, n_upper, stats)
            objective = objective + term
        if isinstance(objective, Tensor):
            backward(objective, retain_graph=want_upper and self._second_pass())
        learn = []
        if self.msg_sg is not None:
            learn.append(self.msg_sg.learn_leaves(period.messages, n_upper, batch_dim=0))
        if want_upper:
            learn.append(self._learn_boundary(self.upper_sg, period.start, period.state, g_up, n_upper))
        for _, st, _ in learn:
            stats.update(st)
        return [sg_loss for sg_loss, _, _ in learn]

    def _joint(self, x: Tensor, y: Tensor, carry: Carry, backward) -> UnrollOut:
        """`bptt`: both levels unrolled together over this unroll (P = 1), one backward."""
        n, stats = y.numel(), {}
        sgs = (self.lower_sg, self.upper_sg)
        leaves = [detach_state(part, requires_grad=sg is not None and carry.boundary)
                  for sg, part in zip(sgs, (carry.state[:2], carry.state[2:]))]
        feats, new = self.net.core(x, (*leaves[0], *leaves[1]))
        loss = self.net.loss(feats, y)
        objective, gs, ends = loss, [None, None], (new[:2], new[2:])
        for i, sg in enumerate(sgs):
            if sg is not None:
                term, gs[i] = self._inject(sg, ends[i], n, stats)
                objective = objective + term
        backward(objective, retain_graph=carry.boundary and self._second_pass())
        sg_losses = []
        for sg, leaf, end, g in zip(sgs, leaves, ends, gs):
            if sg is not None and carry.boundary:
                sg_loss, st, _ = self._learn_boundary(sg, leaf, end, g, n, retain_graph=True)
                sg_losses.append(sg_loss)
                stats.update(st)
        return UnrollOut(loss.detach(), sum(sg_losses) if sg_losses else None,
                         HierCarry(detach_state(new), boundary=True), stats)
