"""A hierarchical two-timescale character language model with DNI between the levels.

The lower core (an LSTM) reads every character. Every `tick` characters it sends a message
m = tanh(W h_lower) to the upper core (an LSTM), which ticks once on it. The message is bounded:
under DNI, W is trained only by the synthetic gradient, and an unbounded message let a linear
M and W feed each other until the injected gradient swamped the language model's (a CPU run). The prediction of the next
character reads the lower core's output and the upper core's latest output u (after the tick
at that step, if there is one). The state is (h_lower, c_lower, h_upper, c_upper).

Training (`HierUnroller`): the lower core is unrolled and updated every `unroll` characters. The
upper core is unrolled over `upper_unroll` ticks, a *period* of P = upper_unroll · tick / unroll
lower unrolls, and updated once per period. The lower→upper message crosses an interface
(`model.message`):

- `bptt`: the levels are unrolled together (P = 1), the message carries the true gradient.
- `cut`: the lower core gets no gradient from the upper one.
- `dni`: the lower core uses scale · M(m) at once (`seqdni.interface.Interface`) and updates
  without waiting for the period to end; the upper core reads a detached copy of m, and when
  the period ends and the upper core is backpropagated, the gradients on those copies are M's
  targets.

In `cut` and `dni` the lower core reads detached copies of u; their gradients are collected
over the period and backpropagated through the upper core once, at its end. The upper core's
objective is the period's mean loss. Optionally (`boundaries`), each level's truncation boundary
also gets a synthetic gradient, with the same `Interface`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from seqdni.dni import DNIOptions, detach_state
from seqdni.interface import Interface, check_options
from seqdni.lit import SeqModel
from seqdni.model import CharLSTM, Task, check_generation, sample_next
from seqdni.tbptt import Carry, UnrollOut

Message = Literal["bptt", "cut", "dni"]
LSTMState = tuple[Tensor, Tensor]


class HierLSTM(nn.Module):
    """Two LSTM levels; see the module docstring. Implements `CharLSTM`'s network protocol."""

    def __init__(self, vocab_size: int, embed_dim: int = 128, hidden_size: int = 256, num_layers: int = 1,
                 dropout: float = 0.0, tick: int = 4, upper_hidden: int = 256, message_size: int = 64):
        super().__init__()
        self.vocab_size, self.tick = vocab_size, tick
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lower = nn.LSTM(embed_dim, hidden_size, num_layers, batch_first=True,
                             dropout=dropout if num_layers > 1 else 0.0)
        self.message = nn.Linear(hidden_size, message_size)
        self.upper = nn.LSTM(message_size, upper_hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size + upper_hidden, vocab_size)

    # The loss and the evaluation are a character LM's, on the joint features.
    loss = CharLSTM.loss
    eval_sums = CharLSTM.eval_sums
    eval_metrics = staticmethod(CharLSTM.eval_metrics)
    condition = CharLSTM.condition
    next_input = staticmethod(CharLSTM.next_input)

    @property
    def lower_size(self) -> int:
        return 2 * self.lower.num_layers * self.lower.hidden_size

    @property
    def upper_size(self) -> int:
        return 2 * self.upper.hidden_size

    @property
    def state_size(self) -> int:
        return self.lower_size + self.upper_size

    @property
    def cond_size(self) -> int:
        return self.vocab_size

    def lower_parameters(self) -> list[nn.Parameter]:
        return [p for m in (self.embed, self.lower, self.message, self.head) for p in m.parameters()]

    def upper_parameters(self) -> list[nn.Parameter]:
        return list(self.upper.parameters())

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        device = device if device is not None else self.head.weight.device
        low = torch.zeros(self.lower.num_layers, batch_size, self.lower.hidden_size, device=device)
        up = torch.zeros(1, batch_size, self.upper.hidden_size, device=device)
        return low, low.clone(), up, up.clone()

    def ticks(self, steps: int, phase: int = 0) -> list[int]:
        """Positions in a chunk of `steps` at which the upper core ticks; `phase` characters of the
        current tick period were read before the chunk."""
        return [t for t in range(steps) if (phase + t + 1) % self.tick == 0]

    def lower_core(self, x: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        return self.lower(self.embed(x), state)

    def send(self, out: Tensor, ticks: list[int]) -> Tensor:
        """The messages at the ticks: (B, len(ticks), message_size)."""
        return torch.tanh(self.message(out[:, ticks]))

    def read(self, out: Tensor, u_prev: Tensor, u_seq: Tensor, ticks: list[int]) -> Tensor:
        """Features of every step: the lower output and the upper output latest at that step."""
        u_all = torch.cat([u_prev.unsqueeze(1), u_seq], dim=1)
        latest = torch.zeros(out.size(1), dtype=torch.long)
        for t in ticks:
            latest[t:] += 1
        return torch.cat([out, u_all[:, latest.to(out.device)]], dim=-1)

    def core(self, x: Tensor, state: tuple[Tensor, ...], phase: int = 0) -> tuple[Tensor, tuple[Tensor, ...]]:
        """End to end over (B, T) characters: features (B, T, H + H_upper) and the new state."""
        out, low = self.lower_core(x, state[:2])
        ticks = self.ticks(x.size(1), phase)
        h_up, c_up = state[2:]
        u_seq = out.new_zeros(x.size(0), 0, self.upper.hidden_size)
        if ticks:
            u_seq, (h_up, c_up) = self.upper(self.send(out, ticks), (h_up, c_up))
        return self.read(out, state[2][-1], u_seq, ticks), (*low, h_up, c_up)

    def logits(self, features: Tensor) -> Tensor:
        return self.head(self.drop(features))

    @torch.no_grad()
    def generate(self, prime: Tensor, length: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """Warm the state on `prime` (1-D ids, at least one), then sample `length` ids."""
        check_generation(prime, temperature)
        feats, state = self.core(prime.view(1, -1), self.init_state(1, prime.device))
        phase, out = prime.numel() % self.tick, []
        for _ in range(length):
            nxt = sample_next(self.logits(feats[:, -1]), temperature, top_k, generator)
            out.append(nxt)
            feats, state = self.core(nxt, state, phase)
            phase = (phase + 1) % self.tick
        return torch.cat(out, dim=1).view(-1) if out else prime.new_empty(0)


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
    period: Period | None = None


class HierUnroller(nn.Module):
    """One lower unroll's forward and backward (and, at a period's end, the upper core's backward);
    the `seqdni.tbptt.Unroller` interface, so `SeqModel`'s training loop drives it."""

    def __init__(self, model: HierLSTM, unroll: int, upper_unroll: int, message: Message = "dni",
                 dni: DNIOptions | None = None, boundaries: bool = False):
        super().__init__()
        self.model, self.message = model, message
        self.per_period = upper_unroll * model.tick // unroll
        self.msg_sg = Interface(model.message.out_features, dni, "message") if message == "dni" else None
        self.lower_sg = Interface(model.lower_size, dni, "lower") if boundaries else None
        self.upper_sg = Interface(model.upper_size, dni, "upper") if boundaries else None

    def core_parameters(self) -> list[nn.Parameter]:
        return list(self.model.parameters())

    def sg_parameters(self) -> list[nn.Parameter]:
        return [p for sg in (self.msg_sg, self.lower_sg, self.upper_sg) if sg is not None for p in sg.parameters()]

    def initial_carry(self, batch_size: int, device: torch.device) -> HierCarry:
        return HierCarry(self.model.init_state(batch_size, device))

    def unroll(self, x: Tensor, y: Tensor, carry: Carry, backward=Tensor.backward) -> UnrollOut:
        if self.message == "bptt":
            return self._joint(x, y, carry, backward)
        n = y.numel()  # the lower objective is a mean over B·T characters
        want_lower = self.lower_sg is not None and carry.boundary
        s_low = detach_state(carry.state[:2], requires_grad=want_lower)
        period = getattr(carry, "period", None) or self._open(carry)
        out, low_end = self.model.lower_core(x, s_low)
        ticks = self.model.ticks(x.size(1))
        m = self.model.send(out, ticks)
        objective, stats = 0.0, {}
        if self.msg_sg is not None:  # the synthetic gradient for the message, at once
            term, st = self.msg_sg.inject(m, n, batch_dim=0)
            objective, stats = objective + term, {**stats, **st}
        m_leaf = m.detach().requires_grad_(self.msg_sg is not None)
        u_seq, period.state = self.model.upper(m_leaf, period.state)
        u_leaf = u_seq.detach().requires_grad_()
        loss = self.model.loss(self.model.read(out, period.u_read, u_leaf, ticks), y)
        objective = objective + loss
        if self.lower_sg is not None:
            term, st = self.lower_sg.inject(low_end, n)
            objective, stats = objective + term, {**stats, **st}
        backward(objective)
        period.reads.append((u_seq, u_leaf))
        period.messages.append(m_leaf)
        period.u_read, period.done = u_leaf[:, -1], period.done + 1
        sg_losses = []
        if want_lower:
            sg_loss, st, _ = self.lower_sg.learn([s_low], n)
            sg_losses.append(sg_loss)
            stats.update(st)
        if period.done == self.per_period:
            sg_losses += self._close(period, n * self.per_period, backward, stats)
            up, period = detach_state(period.state), None
        else:
            up = detach_state(period.state)
        new = HierCarry((*detach_state(low_end), *up), boundary=True, period=period)
        return UnrollOut(loss.detach(), sum(sg_losses) if sg_losses else None, new, stats)

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
        if self.upper_sg is not None:
            term, st = self.upper_sg.inject(period.state, n_upper)
            objective = objective + term
            stats.update(st)
        if isinstance(objective, Tensor):
            backward(objective)
        learn = []
        if self.msg_sg is not None:
            learn.append(self.msg_sg.learn(period.messages, n_upper, batch_dim=0))
        if self.upper_sg is not None and period.start[0].requires_grad:
            learn.append(self.upper_sg.learn([period.start], n_upper))
        for _, st, _ in learn:
            stats.update(st)
        return [sg_loss for sg_loss, _, _ in learn]

    def _joint(self, x: Tensor, y: Tensor, carry: Carry, backward) -> UnrollOut:
        """`bptt`: both levels unrolled together over this unroll (P = 1), one backward."""
        n, stats = y.numel(), {}
        leaves = []
        for sg, part in ((self.lower_sg, carry.state[:2]), (self.upper_sg, carry.state[2:])):
            leaves.append(detach_state(part, requires_grad=sg is not None and carry.boundary))
        feats, new = self.model.core(x, (*leaves[0], *leaves[1]))
        loss = self.model.loss(feats, y)
        objective = loss
        for sg, end in ((self.lower_sg, new[:2]), (self.upper_sg, new[2:])):
            if sg is not None:
                term, st = sg.inject(end, n)
                objective = objective + term
                stats.update(st)
        backward(objective)
        sg_losses = []
        for sg, leaf in zip((self.lower_sg, self.upper_sg), leaves):
            if sg is not None and carry.boundary:
                sg_loss, st, _ = sg.learn([leaf], n)
                sg_losses.append(sg_loss)
                stats.update(st)
        return UnrollOut(loss.detach(), sum(sg_losses) if sg_losses else None,
                         HierCarry(detach_state(new), boundary=True), stats)


class HierLM(SeqModel):
    """The hierarchical character LM (`HierLSTM`) trained by `SeqModel`'s loop through `HierUnroller`.

    `trainer.max_steps` counts lower-core updates (one per `unroll` characters), as for the flat
    model. There is no true-gradient probe (`probe_every` is 0).

    Args:
        task: The vocabulary; linked from the data module (`data.task`).
        window: Columns per training batch; linked from `data.window`. A multiple of the upper
            unroll (`upper_unroll` · `tick` characters), so no period spans two batches.
        unroll: Truncation length of the lower core, in characters: one update per unroll.
        embed_dim: Character embedding size.
        hidden_size: LSTM units per lower layer.
        num_layers: Lower LSTM layers.
        dropout: Dropout on the features the prediction reads (and between lower layers).
        lr: Adam learning rate of both levels.
        weight_decay: Adam weight decay of both levels.
        clip: Gradient-norm clip of the cores (both levels together); 0 disables.
        lr_schedule: `constant`, or `cosine` decay to 0 over `trainer.max_steps`.
        warmup_steps: Linear warm-up steps of the learning rate.
        tick: Characters per tick of the upper core (k); `unroll` must be a multiple of it.
        upper_hidden: LSTM units of the upper core.
        message_size: Width of the lower core's message to the upper core.
        upper_unroll: Truncation length of the upper core, in ticks: it updates once per
            `upper_unroll` · `tick` characters, a multiple of `unroll`.
        message: The lower→upper interface: `bptt` (end to end; needs `upper_unroll` · `tick` =
            `unroll`), `cut` (no gradient to the lower core) or `dni` (a synthetic gradient).
        boundaries: Also put a synthetic gradient at each level's truncation boundary.
        dni: Synthetic-gradient settings of every interface (hidden width, scale, lr, clip); set
            when `message` is `dni` or `boundaries` is true, otherwise unset.
    """

    def __init__(self, task: Task, window: int = 128, unroll: int = 8, embed_dim: int = 128, hidden_size: int = 256,
                 num_layers: int = 1, dropout: float = 0.0, lr: float = 2e-3, weight_decay: float = 0.0,
                 clip: float = 1.0, lr_schedule: Literal["constant", "cosine"] = "constant", warmup_steps: int = 0,
                 tick: int = 4, upper_hidden: int = 256, message_size: int = 64, upper_unroll: int = 8,
                 message: Message = "dni", boundaries: bool = False, dni: DNIOptions | None = None):
        task = Task(**task) if isinstance(task, dict) else task
        dni = DNIOptions(**dni) if isinstance(dni, dict) else dni
        _check(task, window, unroll, tick, upper_unroll, message, boundaries, dni)
        super().__init__(task, window, unroll, embed_dim, hidden_size, num_layers, dropout, lr, weight_decay, clip,
                         lr_schedule, warmup_steps)
        self.dni = dni  # SeqModel's loop: the synthetic-gradient optimiser and its clip serve every interface
        self.hparams["dni"] = None if dni is None else asdict(dni)
        self.hparams["probe_every"] = 0  # read by SeqModel's loop
        self.model = HierLSTM(len(task.symbols), embed_dim, hidden_size, num_layers, dropout, tick, upper_hidden,
                              message_size)
        self.engine = HierUnroller(self.model, unroll, upper_unroll, message, dni, boundaries)

    def _eval_start(self) -> None:
        super()._eval_start()
        self._eval_phase = 0

    def _eval_step(self, batch) -> None:
        """`SeqModel._eval_step`, with the tick phase carried across evaluation batches too."""
        x, y = batch
        if self._eval_state is None:
            self._eval_state = self.model.init_state(x.size(0), x.device)
        out, self._eval_state = self.model.core(x, self._eval_state, self._eval_phase)
        self._eval_phase = (self._eval_phase + x.size(1)) % self.model.tick
        sums = self.model.eval_sums(out, y)
        self._eval_sums = sums if self._eval_sums is None else {k: v + sums[k] for k, v in self._eval_sums.items()}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if getattr(self.carry, "period", None) is not None:
            raise RuntimeError("a checkpoint in the middle of an upper unroll cannot be resumed exactly; "
                               "data.window must be a multiple of model.upper_unroll × model.tick")
        super().on_save_checkpoint(checkpoint)


def _check(task: Task, window: int, unroll: int, tick: int, upper_unroll: int, message: str, boundaries: bool,
           dni: DNIOptions | None) -> None:
    """HierLM's arguments, each error naming the key to change."""
    if task.kind != "chars":
        raise ValueError(f"HierLM is a character language model; the {task.name!r} task has no vocabulary")
    if tick <= 0 or upper_unroll <= 0 or unroll <= 0:
        raise ValueError(f"model.tick ({tick}), model.upper_unroll ({upper_unroll}) and model.unroll ({unroll}) "
                         "must be positive")
    if message not in ("bptt", "cut", "dni"):
        raise ValueError(f"model.message must be bptt, cut or dni, got {message!r}")
    if unroll % tick:
        raise ValueError(f"model.unroll ({unroll}) must be a multiple of model.tick ({tick})")
    period = upper_unroll * tick
    if period % unroll:
        raise ValueError(f"the upper unroll, model.upper_unroll × model.tick = {period} characters, must be a "
                         f"multiple of model.unroll ({unroll})")
    if message == "bptt" and period != unroll:
        raise ValueError(f"with model.message bptt the levels are unrolled together: set model.upper_unroll to "
                         f"model.unroll / model.tick = {unroll // tick} (got {upper_unroll})")
    if window % period:
        raise ValueError(f"data.window ({window}) must be a multiple of the upper unroll, model.upper_unroll × "
                         f"model.tick = {period} characters")
    needs = message == "dni" or boundaries
    if needs != (dni is not None):
        raise ValueError("model.dni must be set when model.message is dni or model.boundaries is true, and unset "
                         f"(null) otherwise; got message {message!r}, boundaries {boundaries}, "
                         f"dni {'set' if dni is not None else 'unset'}")
    if dni is not None:
        check_options(dni, "HierLM")
        if boundaries and not dni.scale_target:
            raise ValueError("model.dni.scale_target false is not supported by HierLM; set it to true")
