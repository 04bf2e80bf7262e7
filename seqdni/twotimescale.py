"""The two-timescale system (Jaderberg et al. 2017, Section 3.3): network A ticks every step,
network B every T steps, and A's message to B crosses an interface.

A reads a digit stream and, at the end of every segment of T steps, outputs the number of odd
digits in the segment and emits a message m_j (a linear map of its state). B reads one
message per segment and outputs the number of 3s in the last T² steps (`seqdni.digits`).
B is unrolled over T ticks (T² steps) and updated once per T² steps in every regime; A's state
is truncated at every segment (its own task and its message only need the current segment).
The regimes differ only in the interface and in when A updates:

- `bptt`: end to end. B's loss reaches A through the messages, and A, update-locked to B,
  updates once per T² steps with everything.
- `cut`: decoupled, no gradient from B: A updates every T steps on its own loss.
- `dni`: decoupled with a synthetic gradient on the message: A updates every T steps on its
  own loss plus scale · M(m_j) (`seqdni.interface.Interface`); when B has backpropagated its
  T ticks, the gradients on its copies of the messages are M's targets.

Losses are per-sequence sums over an update's outputs, averaged over the batch; so with an
oracle M, A's gradients summed over the T segments equal the end-to-end ones (a test checks).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqdni.digits import DIGITS
from seqdni.dni import DNIOptions, detach_state
from seqdni.interface import Interface, check_options
from seqdni.lit import SeqModel
from seqdni.model import Task
from seqdni.tbptt import Carry

Regime = Literal["bptt", "cut", "dni"]
LSTMState = tuple[Tensor, Tensor]


class TwoNets(nn.Module):
    """Network A (embedding -> LSTM -> count head and message head) and network B
    (LSTM over messages -> count head). The state is (h_A, c_A, h_B, c_B)."""

    def __init__(self, period: int, embed_dim: int, hidden_a: int, hidden_b: int, message_size: int):
        super().__init__()
        self.period = period
        self.embed = nn.Embedding(len(DIGITS), embed_dim)
        self.a = nn.LSTM(embed_dim, hidden_a, batch_first=True)
        self.a_head = nn.Linear(hidden_a, period + 1)
        self.a_message = nn.Linear(hidden_a, message_size)
        self.b = nn.LSTM(message_size, hidden_b, batch_first=True)
        self.b_head = nn.Linear(hidden_b, period * period + 1)

    def a_parameters(self) -> list[nn.Parameter]:
        return [p for m in (self.embed, self.a, self.a_head, self.a_message) for p in m.parameters()]

    def b_parameters(self) -> list[nn.Parameter]:
        return [p for m in (self.b, self.b_head) for p in m.parameters()]

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        device = device if device is not None else self.b_head.weight.device
        za = torch.zeros(1, batch_size, self.a.hidden_size, device=device)
        zb = torch.zeros(1, batch_size, self.b.hidden_size, device=device)
        return za, za.clone(), zb, zb.clone()

    def a_segment(self, x: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        """A over one segment (B, T): its last output (B, H_A) and its new state."""
        out, state = self.a(self.embed(x), state)
        return out[:, -1], state

    def a_loss(self, h: Tensor, target: Tensor) -> Tensor:
        """A's count loss at segment ends: h (B, ..., H_A), summed over outputs, mean over the batch."""
        logits = self.a_head(h)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), reduction="sum") / h.size(0)

    def b_loss(self, out: Tensor, target: Tensor) -> Tensor:
        """B's count loss over its ticks: out (B, N, H_B), summed over ticks, mean over the batch."""
        logits = self.b_head(out)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), reduction="sum") / out.size(0)

    def core(self, x: Tensor, state: tuple[Tensor, ...]) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, ...]]:
        """Evaluation forward over (B, W) digits, W a multiple of T: (A's logits, B's logits) per segment."""
        if x.size(1) % self.period:
            raise ValueError(f"{x.size(1)} steps are not a whole number of segments of T = {self.period}")
        out, s_a = self.a(self.embed(x), state[:2])
        h = out[:, self.period - 1 :: self.period]
        out_b, s_b = self.b(self.a_message(h), state[2:])
        return (self.a_head(h), self.b_head(out_b)), (*s_a, *s_b)

    def eval_sums(self, out: tuple[Tensor, Tensor], y: Tensor) -> dict[str, Tensor]:
        a_logits, b_logits = out
        ends = y[:, self.period - 1 :: self.period]
        f64 = dict(dtype=torch.float64, device=y.device)
        return {"a_wrong": (a_logits.argmax(-1) != ends[..., 0]).sum().to(**f64),
                "b_wrong": (b_logits.argmax(-1) != ends[..., 1]).sum().to(**f64),
                "outputs": torch.tensor(float(ends[..., 0].numel()), **f64)}

    @staticmethod
    def eval_metrics(sums: dict[str, Tensor]) -> dict[str, Tensor]:
        n = sums["outputs"].clamp_min(1)
        return {"b_error": sums["b_wrong"] / n, "a_error": sums["a_wrong"] / n}


def _backward(t: Tensor) -> None:
    t.backward()


class TwoTimescaleEngine(nn.Module):
    """The forward and backward passes of each regime, in plain PyTorch (no optimiser steps)."""

    def __init__(self, nets: TwoNets, regime: Regime, dni: DNIOptions | None = None):
        super().__init__()
        self.nets, self.regime = nets, regime
        self.conditional = regime == "dni" and dni.conditional
        cond = len(DIGITS) if self.conditional else 0
        self.interface = Interface(nets.a_message.out_features, dni, "message", cond) if regime == "dni" else None

    def a_update(self, x: Tensor, y: Tensor, s_a: LSTMState, backward=_backward
                 ) -> tuple[Tensor, LSTMState, Tensor, dict[str, Tensor]]:
        """A's decoupled update over one segment: forward, backward of its loss (plus, under DNI,
        the message's synthetic gradient). Returns the loss, A's new state, the message as B's
        leaf (collecting B's gradient under DNI) and diagnostics."""
        h, s_a = self.nets.a_segment(x, detach_state(s_a))
        loss = self.nets.a_loss(h, y[:, -1, 0])
        message = self.nets.a_message(h)
        objective, stats = loss, {}
        if self.interface is not None:
            term, stats = self.interface.inject(message, n_send=x.size(0), batch_dim=0, cond=self.condition(x))
            objective = objective + term
        backward(objective)
        leaf = message.detach().requires_grad_(self.interface is not None)
        return loss.detach(), detach_state(s_a), leaf, stats

    def condition(self, x: Tensor) -> Tensor | None:
        """Conditional DNI: M also reads what A read since its last message, as digit frequencies."""
        if not self.conditional:
            return None
        return F.one_hot(x, len(DIGITS)).float().mean(dim=1)

    def b_update(self, messages: list[Tensor], y: Tensor, s_b: LSTMState, backward=_backward
                 ) -> tuple[Tensor, LSTMState]:
        """B's update over its T ticks: forward on the messages, backward of its loss."""
        out, s_b = self.nets.b(torch.stack(messages, dim=1), detach_state(s_b))
        loss = self.nets.b_loss(out, y[:, self.nets.period - 1 :: self.nets.period, 1])
        backward(loss)
        return loss.detach(), detach_state(s_b)

    def learn(self, messages: list[Tensor], x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """After B's backward: M's regression loss on the messages' true gradients (x: the T² steps)."""
        T = self.nets.period
        conds = [self.condition(x[:, j * T : (j + 1) * T]) for j in range(T)]
        loss, stats, _ = self.interface.learn(messages, n_recv=messages[0].size(0), batch_dim=0,
                                              conds=None if conds[0] is None else conds)
        return loss, stats

    def joint_update(self, x: Tensor, y: Tensor, s_a: LSTMState, s_b: LSTMState, backward=_backward
                     ) -> tuple[Tensor, Tensor, LSTMState, LSTMState]:
        """End to end over T² steps: A's segments, the messages with their graph, B, one backward."""
        T = self.nets.period
        a_loss, messages = 0.0, []
        for j in range(T):
            h, s_a = self.nets.a_segment(x[:, j * T : (j + 1) * T], detach_state(s_a))
            a_loss = a_loss + self.nets.a_loss(h, y[:, (j + 1) * T - 1, 0])
            messages.append(self.nets.a_message(h))
        out, s_b = self.nets.b(torch.stack(messages, dim=1), detach_state(s_b))
        b_loss = self.nets.b_loss(out, y[:, T - 1 :: T, 1])
        backward(a_loss + b_loss)
        return a_loss.detach(), b_loss.detach(), detach_state(s_a), detach_state(s_b)


class TwoTimescale(SeqModel):
    """Networks A and B of the two-timescale system, trained in one of three regimes.

    Evaluation, checkpoints (with the carried states), the NaN stop and the throughput log are
    `SeqModel`'s; `trainer.max_steps` counts B's updates (one per T² steps of every stream)
    in every regime, so the same `max_steps` means the same data.

    Args:
        task: The digit-stream task; linked from the data module (`data.task`).
        window: Steps per training batch; linked from `data.window`.
        period: T; must equal `data.period`.
        regime: `bptt` (end to end, one update per T² steps), `cut` (decoupled, A gets no
            gradient from B) or `dni` (decoupled, a synthetic gradient on A's message).
        embed_dim: Digit embedding size of A.
        hidden_a: LSTM units of A.
        hidden_b: LSTM units of B.
        message_size: Width of A's message to B.
        lr: Adam learning rate of A and of B (each has its own optimiser).
        clip: Gradient-norm clip of A and of B, each on its own gradients; 0 disables.
        dni: The message's synthetic-gradient model (hidden width, scale, lr, clip); set for
            regime `dni` only. With `conditional: true` M also reads the digit frequencies of
            the segment A has just read.
    """

    def __init__(self, task: Task, window: int = 64, period: int = 4, regime: Regime = "dni", embed_dim: int = 16,
                 hidden_a: int = 64, hidden_b: int = 64, message_size: int = 16, lr: float = 1e-3, clip: float = 5.0,
                 dni: DNIOptions | None = None):
        if isinstance(task, dict):
            task = Task(**task)
        if isinstance(dni, dict):
            dni = DNIOptions(**dni)
        if task.name != "two-timescale":
            raise ValueError(f"TwoTimescale trains the two-timescale digit task, not {task.name!r}; "
                             "use data.class_path seqdni.digits.DigitStreams")
        if regime not in ("bptt", "cut", "dni"):
            raise ValueError(f"model.regime must be bptt, cut or dni, got {regime!r}")
        if (dni is not None) != (regime == "dni"):
            raise ValueError("model.dni must be set for regime dni and unset (null) for bptt and cut; "
                             f"got regime {regime!r} with dni {'set' if dni is not None else 'unset'}")
        if dni is not None:
            check_options(dni, "TwoTimescale", conditional=True)
        if period < 2 or window % (period * period):
            raise ValueError(f"data.window ({window}) must be a multiple of T² with T = model.period ({period}) >= 2")
        super().__init__(task, window, unroll=period * period, embed_dim=embed_dim, hidden_size=hidden_a, lr=lr,
                         clip=clip)
        self.hparams["dni"] = None if dni is None else asdict(dni)
        self.sg_options = dni  # not SeqModel's `dni`: there is no truncation-boundary synthetic gradient here
        self.vocab = None  # digits in, counts out: nothing to sample
        self.period, self.regime = period, regime
        self.model = TwoNets(period, embed_dim, hidden_a, hidden_b, message_size)
        self.engine = TwoTimescaleEngine(self.model, regime, dni)

    def setup(self, stage: str) -> None:
        data_period = getattr(self.trainer.datamodule, "period", self.period)
        if data_period != self.period:
            raise ValueError(f"model.period ({self.period}) differs from data.period ({data_period}); "
                             "set both to the same T")

    def configure_optimizers(self):
        lr = self.hparams.lr
        opts = [torch.optim.Adam(self.model.b_parameters(), lr=lr), torch.optim.Adam(self.model.a_parameters(), lr=lr)]
        if self.sg_options is not None:
            opts.append(torch.optim.Adam(self.engine.interface.parameters(), lr=self.sg_options.lr))
        return opts

    def _clip(self, params, value: float) -> None:
        if value > 0:
            torch.nn.utils.clip_grad_norm_(params, value)

    def training_step(self, batch, batch_idx: int):
        x, y = batch
        opts = self.optimizers()
        opt_b, opt_a, opt_m = opts[0], opts[1], (opts[2] if len(opts) > 2 else None)
        T, clip = self.period, self.hparams.clip
        if x.size(1) % (T * T):
            raise ValueError(f"a training batch of {x.size(1)} steps is not a multiple of T² = {T * T}")
        if self.carry is None:
            self.carry = Carry(self.model.init_state(x.size(0), x.device))
        elif self.carry.state[0].device != x.device:
            self.carry = self.carry.to(x.device)
        s_a, s_b = self.carry.state[:2], self.carry.state[2:]
        logs: list[dict[str, Tensor]] = []
        for c in range(x.size(1) // (T * T)):
            xc, yc = x[:, c * T * T : (c + 1) * T * T], y[:, c * T * T : (c + 1) * T * T]
            if self.regime == "bptt":
                a_loss, b_loss, s_a, s_b = self.engine.joint_update(xc, yc, s_a, s_b, self._backward)
                self._clip(self.model.a_parameters(), clip)
                opt_a.optimizer.step()  # raw: global_step counts B's updates only
                opt_a.zero_grad(set_to_none=True)
                logs.append({"train/a_loss": a_loss / T, "train/b_loss": b_loss / T})
            else:
                messages = []
                for j in range(T):
                    seg = slice(j * T, (j + 1) * T)
                    a_loss, s_a, message, stats = self.engine.a_update(xc[:, seg], yc[:, seg], s_a, self._backward)
                    self._clip(self.model.a_parameters(), clip)
                    opt_a.optimizer.step()
                    opt_a.zero_grad(set_to_none=True)
                    messages.append(message)
                    logs.append({"train/a_loss": a_loss, **stats})
                b_loss, s_b = self.engine.b_update(messages, yc, s_b, self._backward)
                logs.append({"train/b_loss": b_loss / T})
            self._clip(self.model.b_parameters(), clip)
            opt_b.step()  # a LightningOptimizer step: one per T² steps, counted in global_step
            opt_b.zero_grad(set_to_none=True)
            if self.regime == "dni":
                sg_loss, stats = self.engine.learn(messages, xc)
                self.manual_backward(sg_loss)
                self._clip(self.engine.interface.parameters(), self.sg_options.clip)
                opt_m.optimizer.step()
                opt_m.zero_grad(set_to_none=True)
                logs.append(stats)
        self.carry = Carry((*s_a, *s_b))
        means = {k: torch.stack([d[k] for d in logs if k in d]).mean() for k in {k for d in logs for k in d}}
        if not (torch.isfinite(means["train/a_loss"]) and torch.isfinite(means["train/b_loss"])):
            self._stop_on_non_finite(batch_idx)
        for key, value in sorted(means.items()):
            self.log(key, value, prog_bar=key == "train/b_loss")
        return None
