"""The two-timescale system (Jaderberg et al. 2017, Section 3.3): network A ticks every step,
network B every T steps, and A's message to B crosses an interface.

A reads a digit stream and, at the end of every segment of T steps, outputs the number of odd
digits in the segment and emits a message m_j (a linear map of its state). B reads one
message per segment and outputs the number of 3s in the last T² steps (`seqdni.data.digits`).
B is unrolled over T ticks (T² steps) and updated once per T² steps in every regime; A's state
is truncated at every segment (its own task and its message only need the current segment).
The regimes differ only in the interface and in when A updates:

- `bptt`: end to end. B's loss reaches A through the messages, and A, update-locked to B,
  updates once per T² steps with everything.
- `cut`: decoupled, no gradient from B: A updates every T steps on its own loss.
- `dni`: decoupled with a synthetic gradient on the message: A updates every T steps on its
  own loss plus scale · M(m_j) (`seqdni.dni.Interface`); when B has backpropagated its
  T ticks, the gradients on its copies of the messages are M's targets.

Losses are per-sequence sums over an update's outputs, averaged over the batch; so with an
oracle M, A's gradients summed over the T segments equal the end-to-end ones (a test checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqdni.dni import Interface, SGOptions, detach_state
from seqdni.engines.base import Carry, ParamGroup, RecurrentEval, Stepper, mean_stats
from seqdni.nets import TwoNets

Regime = Literal["bptt", "cut", "dni"]
LSTMState = tuple[Tensor, Tensor]


@dataclass
class MessageOptions(SGOptions):
    """The synthetic gradient on A's message to B.

    Args:
        hidden: Width of M's hidden layer; 0 makes it linear.
        scale: Factor on M's output before it is injected into A's backward pass.
        lr: Learning rate of M's own Adam optimiser.
        clip: Gradient-norm clip of M; 0 disables.
        rank: > 0: M is a linear map of this rank (cheaper than d × d); 0: full rank.
        squash: M reads tanh of the state, element-wise, so its prediction stays bounded however
            large the state grows (a cell state that integrates would otherwise drag M with it).
        conditional: M also reads the digit frequencies of the segment A has just read (a hint:
            information that B's loss depends on, handed to M from outside A's network).
        sender_state: M also reads A's state (h, c) at the segment end, from which the message is
            computed. No information from outside A: M stays unconditional, but can see what the
            message does not yet carry.
    """

    conditional: bool = False
    sender_state: bool = False


class TwoTimescaleEngine(RecurrentEval, nn.Module):
    """The forward and backward passes of each regime, and one update of B (T² steps).

    Args:
        net: Networks A and B.
        regime: `bptt`, `cut` or `dni` (module docstring).
        dni: The message's synthetic gradient; set for `dni` only.
        lr, clip: Adam learning rate and gradient clip of A and of B (each its own optimiser).
    """

    def __init__(self, net: TwoNets, regime: Regime, dni: MessageOptions | None = None, lr: float = 1e-3,
                 clip: float = 5.0):
        super().__init__()
        self.net, self.regime, self.dni, self.lr, self.clip = net, regime, dni, lr, clip
        self.span = net.period * net.period
        self.conditional = regime == "dni" and dni.conditional
        self.sender_state = regime == "dni" and dni.sender_state
        symbols = net.embed.num_embeddings  # the digits: a conditional M reads their frequencies
        cond = (symbols if self.conditional else 0) + (2 * net.a.hidden_size if self.sender_state else 0)
        self.interface = Interface(net.a_message.out_features, dni, "message", cond) if regime == "dni" else None

    def param_groups(self) -> list[ParamGroup]:
        groups = [ParamGroup("b", self.net.b_parameters(), self.lr, self.clip),
                  ParamGroup("a", self.net.a_parameters(), self.lr, self.clip)]
        if self.interface is not None:
            groups.append(ParamGroup("sg", list(self.interface.parameters()), self.dni.lr, self.dni.clip))
        return groups

    def initial_carry(self, batch_size: int, device: torch.device) -> Carry:
        return Carry(self.net.init_state(batch_size, device))

    def update(self, x: Tensor, y: Tensor, carry: Carry, stepper: Stepper) -> tuple[Carry, list[dict]]:
        """One update of B over T² steps (and, decoupled, T updates of A before it)."""
        s_a, s_b = carry.state[:2], carry.state[2:]
        T = self.net.period
        if self.regime == "bptt":
            a_loss, b_loss, s_a, s_b = self.joint_update(x, y, s_a, s_b, stepper.backward)
            stepper.clip("a")
            stepper.step("a")
            logs = [{"train/a_loss": a_loss / T, "train/b_loss": b_loss / T}]
        else:
            logs, (messages, conds), s_a = self._a_segments(x, y, s_a, stepper)
            b_loss, s_b = self.b_update(messages, y, s_b, stepper.backward)
            logs.append({"train/b_loss": b_loss / T})
        stepper.clip("b")
        stepper.step("b")
        if self.regime == "dni":
            sg_loss, stats = self.learn(messages, conds)
            stepper.backward(sg_loss)
            stepper.clip("sg")
            stepper.step("sg")
            logs.append(stats)
        return Carry((*s_a, *s_b)), logs

    def _a_segments(self, x: Tensor, y: Tensor, s_a: LSTMState, stepper: Stepper):
        """Decoupled: A updates once per segment of T steps; its messages wait for B."""
        T, logs, messages, conds = self.net.period, [], [], []
        for j in range(T):
            seg = slice(j * T, (j + 1) * T)
            a_loss, s_a, message, cond, stats = self.a_update(x[:, seg], y[:, seg], s_a, stepper.backward)
            stepper.clip("a")
            stepper.step("a")
            messages.append(message)
            conds.append(cond)
            logs.append({"train/a_loss": a_loss, **stats})
        return logs, (messages, conds), s_a

    def summarise(self, outs: list[list[dict]]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        means = mean_stats([d for logs in outs for d in logs])
        losses = {k: means.pop(k) for k in ("train/b_loss", "train/a_loss")}
        return losses, means

    def a_update(self, x: Tensor, y: Tensor, s_a: LSTMState, backward=Tensor.backward
                 ) -> tuple[Tensor, LSTMState, Tensor, Tensor | None, dict[str, Tensor]]:
        """A's decoupled update over one segment: forward, backward of its loss (plus, under DNI,
        the message's synthetic gradient). Returns the loss, A's new state, the message as B's
        leaf (collecting B's gradient under DNI), what M read beside it, and diagnostics."""
        h, s_a = self.net.a_segment(x, detach_state(s_a))
        loss = self.net.a_loss(h, y[:, -1, 0])
        message = self.net.a_message(h)
        objective, stats, cond = loss, {}, self.condition(x, s_a)
        if self.interface is not None:
            g = self.interface.predict(message, cond, batch_dim=0)
            stats = self.interface.injected_norm(g)
            objective = objective + self.interface.inject(message, g, n_send=x.size(0), batch_dim=0)
        backward(objective)
        leaf = message.detach().requires_grad_(self.interface is not None)
        return loss.detach(), detach_state(s_a), leaf, cond, stats

    def condition(self, x: Tensor, s_a: LSTMState) -> Tensor | None:
        """What M reads beside the message: the digit frequencies of the segment A has just read
        (`conditional`) and A's state after it (`sender_state`), as one row per stream."""
        parts = [F.one_hot(x, self.net.embed.num_embeddings).float().mean(dim=1)] if self.conditional else []
        if self.sender_state:
            parts += [s.detach()[-1] for s in s_a]
        return torch.cat(parts, dim=1) if parts else None

    def b_update(self, messages: list[Tensor], y: Tensor, s_b: LSTMState, backward=Tensor.backward
                 ) -> tuple[Tensor, LSTMState]:
        """B's update over its T ticks: forward on the messages, backward of its loss."""
        out, s_b = self.net.b(torch.stack(messages, dim=1), detach_state(s_b))
        loss = self.net.b_loss(out, y[:, self.net.period - 1 :: self.net.period, 1])
        backward(loss)
        return loss.detach(), detach_state(s_b)

    def learn(self, messages: list[Tensor], conds: list[Tensor | None]) -> tuple[Tensor, dict[str, Tensor]]:
        """After B's backward: M's regression loss on the messages' true gradients (conds: what M
        read beside each message when it was sent)."""
        loss, stats, _ = self.interface.learn_leaves(messages, n_recv=messages[0].size(0), batch_dim=0,
                                                     conds=None if conds[0] is None else conds)
        return loss, stats

    def joint_update(self, x: Tensor, y: Tensor, s_a: LSTMState, s_b: LSTMState, backward=Tensor.backward
                     ) -> tuple[Tensor, Tensor, LSTMState, LSTMState]:
        """End to end over T² steps: A's segments, the messages with their graph, B, one backward."""
        T = self.net.period
        a_loss, messages = 0.0, []
        for j in range(T):
            h, s_a = self.net.a_segment(x[:, j * T : (j + 1) * T], detach_state(s_a))
            a_loss = a_loss + self.net.a_loss(h, y[:, (j + 1) * T - 1, 0])
            messages.append(self.net.a_message(h))
        out, s_b = self.net.b(torch.stack(messages, dim=1), detach_state(s_b))
        b_loss = self.net.b_loss(out, y[:, T - 1 :: T, 1])
        backward(a_loss + b_loss)
        return a_loss.detach(), b_loss.detach(), detach_state(s_a), detach_state(s_b)
