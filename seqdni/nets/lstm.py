"""LSTM networks: input encoder -> fused LSTM core -> linear head, with the task's loss.

`CharLSTM` (characters in, a distribution over the next character out) and `BitLSTM` (bit
vectors in, independent bits out) implement the network protocol (`seqdni.nets.protocol`),
including what the flat engine needs for DNI: `core_steps`, `state_size`, `condition`,
`cond_size`, `next_input`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqdni.nets.init import init_io, set_forget_bias
from seqdni.nets.resetting import resetting_lstm
from seqdni.nets.sampling import sample_ids

LN2 = math.log(2.0)
CLOSED_FORM_STEPS = 8  # from this unroll length on, the resetting recurrence runs its backward in closed form


def reset_rows(state: tuple[Tensor, ...], rows: Tensor) -> tuple[Tensor, ...]:
    """The state with the streams marked in `rows` (B,) bool set to zero, differentiably."""
    keep = (~rows).to(state[0].dtype).reshape(1, -1, 1)
    return tuple(t * keep for t in state)


class _LSTMNet(nn.Module):
    """Shared core: an nn.LSTM over the whole unroll with an explicit state (h, c)."""

    def __init__(self, in_dim: int, hidden_size: int, num_layers: int, dropout: float, out_dim: int,
                 forget_bias: float | None = None):
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.lstm = nn.LSTM(in_dim, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        if forget_bias is not None:
            set_forget_bias(self.lstm, forget_bias)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, out_dim)

    state_names = ("h", "c")  # what the training module logs the norms of (`state/h_norm`, ...)

    @property
    def state_size(self) -> int:
        """Features of the flattened (h, c) of one sequence: what M reads and predicts."""
        return 2 * self.num_layers * self.hidden_size

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        device = device if device is not None else self.head.weight.device
        z = torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device, dtype=self.head.weight.dtype)
        return z, z.clone()

    def encode(self, x: Tensor) -> Tensor:
        """Inputs -> the LSTM's input vectors, by the subclass's `embed`."""
        return self.embed(x)

    def split_resets(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The inputs and, for a network that resets its state, (B, T) bool: the steps before which
        each stream's state is set to zero (None: never)."""
        return x, None

    def core(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Inputs (B, T, ...) and state -> top-layer outputs (B, T, H) and the new state. Where the
        network resets its state, the resetting streams' state is zeroed before the marked steps
        (so no gradient crosses a reset): a written-out recurrence for one layer, the step-by-step
        core for deeper networks, since the fused kernel cannot zero rows between its steps. On the
        CPU a one-layer core with frozen weights (gradients for states alone: n-step targets, the
        probe) runs it too, from `CLOSED_FORM_STEPS` steps on: its closed-form backward costs one
        matrix product a step, where autograd through nn.LSTM records every gate operation."""
        x_in, resets = self.split_resets(x)
        if resets is None and self._states_only(x_in):
            resets = torch.zeros(x_in.shape[:2], dtype=torch.bool, device=x_in.device)
        if resets is None:
            return self.lstm(self.encode(x_in), state)
        if self.num_layers == 1:
            return self._resetting_recurrence(self.encode(x_in), state, resets)
        return self.core_steps(x, state)[:2]

    def _states_only(self, x: Tensor) -> bool:
        """Whether a pass over `x` wants state gradients alone, on a one-layer CPU core, long enough to pay."""
        return (self.num_layers == 1 and x.device.type == "cpu" and torch.is_grad_enabled()
                and x.size(1) >= CLOSED_FORM_STEPS and not self.lstm.weight_hh_l0.requires_grad)

    def _resetting_recurrence(self, e: Tensor, state: tuple[Tensor, Tensor], resets: Tensor
                              ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """A one-layer LSTM written out step by step (nn.LSTM's gates and order), zeroing each
        stream's state before the steps `resets` marks: one batched input product, then the
        recurrence, no host sync. From `CLOSED_FORM_STEPS` steps on its backward runs in closed form
        (`seqdni.nets.resetting`); shorter unrolls, whose cost is per-operation overhead, keep
        autograd's, which skips the weights' work when only states need gradients."""
        lstm = self.lstm
        pre = F.linear(e, lstm.weight_ih_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0)
        keep = (~resets).to(e.dtype).unsqueeze(-1)
        if e.size(1) >= CLOSED_FORM_STEPS:
            out, h, c = resetting_lstm(pre, state[0][0], state[1][0], keep, lstm.weight_hh_l0)
            return out, (h.unsqueeze(0), c.unsqueeze(0))
        h, c, outs = state[0][0], state[1][0], []
        for t in range(e.size(1)):
            h, c = h * keep[:, t], c * keep[:, t]
            i, f, g, o = torch.addmm(pre[:, t], h, lstm.weight_hh_l0.t()).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs, dim=1), (h.unsqueeze(0), c.unsqueeze(0))

    def core_steps(self, x: Tensor, state: tuple[Tensor, Tensor]
                   ) -> tuple[Tensor, tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """`core` one step at a time, also returning every step's full state (h, c), each
        (layers, T·B, H) in time-major order. Slower than the fused unroll: only DNI + Aux,
        which reads and predicts at every step, needs it."""
        x, resets = self.split_resets(x)
        e = self.encode(x)
        outs, hs, cs = [], [], []
        for i in range(e.size(1)):
            if resets is not None:
                state = reset_rows(state, resets[:, i])
            o, state = self.lstm(e[:, i : i + 1], state)
            outs.append(o)
            hs.append(state[0])
            cs.append(state[1])
        return torch.cat(outs, dim=1), state, (torch.cat(hs, dim=1), torch.cat(cs, dim=1))

    def step_states(self, x: Tensor, state: tuple[Tensor, Tensor], out: Tensor, graph: bool = False
                    ) -> tuple[Tensor, Tensor]:
        """`core_steps`'s every-step states (h, c) from the fused core's outputs `out` over the same
        inputs: a one-layer LSTM's h_t is its output, and c_t follows from h_{t-1} and x_t by one
        batched gate product and an elementwise scan (no step-by-step LSTM call). Deeper LSTMs
        run step by step. Without `graph`, values only; with it, both keep their graph to the
        parameters and to `out` (so a loss on them reaches the core as through `core_steps`)."""
        with torch.set_grad_enabled(graph and torch.is_grad_enabled()):
            if self.num_layers > 1:
                return self.core_steps(x, state)[2]
            x, resets = self.split_resets(x)
            e, lstm = self.encode(x), self.lstm
            h_out = out if graph else out.detach()
            h_prev = torch.cat([state[0][-1].unsqueeze(1), h_out[:, :-1]], dim=1)
            live = None if resets is None else (~resets).unsqueeze(-1).to(h_prev.dtype)  # 0: a reset before the step
            if live is not None:  # a reset zeroes the state a step starts from
                h_prev = h_prev * live
            gates = (F.linear(e, lstm.weight_ih_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0)
                     + F.linear(h_prev, lstm.weight_hh_l0))
            i, f, g, _ = gates.chunk(4, dim=-1)  # nn.LSTM's gate order: input, forget, cell, output
            add, keep = torch.sigmoid(i) * torch.tanh(g), torch.sigmoid(f)
            if live is not None:
                keep = keep * live
            c, cs = state[1][-1], []
            for t in range(e.size(1)):
                c = keep[:, t] * c + add[:, t]
                cs.append(c)
            return h_out.transpose(0, 1).reshape(1, -1, out.size(-1)), torch.cat(cs).unsqueeze(0)

    def logits(self, out: Tensor) -> Tensor:
        return self.head(self.drop(out))

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if state is None:
            state = self.init_state(x.size(0), x.device)
        out, state = self.core(x, state)
        return self.logits(out), state


class CharLSTM(_LSTMNet):
    """Character LSTM language model: embedding -> LSTM -> logits over the vocabulary."""

    def __init__(self, vocab_size: int, embed_dim: int = 128, hidden_size: int = 256, num_layers: int = 1,
                 dropout: float = 0.0, forget_bias: float | None = None, init_range: float | None = 0.1):
        super().__init__(embed_dim, hidden_size, num_layers, dropout, vocab_size, forget_bias)
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, embed_dim)
        init_io(self.embed, self.head, init_range)

    @property
    def cond_size(self) -> int:
        return self.vocab_size

    def condition(self, x_step: Tensor) -> Tensor:
        """Conditional DNI reads the next input, one-hot."""
        return F.one_hot(x_step, self.vocab_size).float()

    @staticmethod
    def next_input(y: Tensor) -> Tensor:
        """The input that follows the unroll: a language model's last target."""
        return y[:, -1]

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        logits = self.logits(out)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))

    def eval_sums(self, out: Tensor, y: Tensor) -> dict[str, Tensor]:
        logits = self.logits(out)
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
        return {"nats": ce.double(), "count": torch.tensor(float(y.numel()), dtype=torch.float64, device=y.device)}

    @staticmethod
    def eval_metrics(sums: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"bpc": sums["nats"] / sums["count"] / LN2}

    @staticmethod
    def train_metrics(loss: Tensor) -> dict[str, Tensor]:
        """The training loss (mean nats per character) as it is logged: bits per character."""
        return {"train/bpc": loss / LN2}

    def start(self, prime: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The state after `prime` (1, L) and the logits of the id that follows it."""
        logits, state = self(prime)
        return logits[:, -1], state

    def advance(self, ids: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        logits, state = self(ids, state)
        return logits[:, -1], state

    def generate(self, prime: Tensor, length: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """Warm the state on `prime` (1-D ids, at least one), then sample `length` ids."""
        return sample_ids(self, prime, length, temperature, top_k, generator)


class BitLSTM(_LSTMNet):
    """Binary vectors in, independent bits out (Copy, Repeat Copy).

    Targets `y` are (B, T, output_size + 2): the bits, a loss mask (1 on steps whose
    output is scored) and an episode-end flag (counts episodes for the metric). With
    `resets`, inputs carry one more channel after the `input_size` the network reads: 1 on
    the first step of each episode, before which the stream's state is set to zero.
    """

    def __init__(self, input_size: int, output_size: int, embed_dim: int = 128, hidden_size: int = 256,
                 num_layers: int = 1, dropout: float = 0.0, resets: bool = False, forget_bias: float | None = None,
                 init_range: float | None = 0.1):
        super().__init__(embed_dim, hidden_size, num_layers, dropout, output_size, forget_bias)
        self.input_size, self.output_size, self.resets = input_size, output_size, resets
        self.embed = nn.Linear(input_size, embed_dim)
        init_io(self.embed, self.head, init_range)

    def split_resets(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        if not self.resets:
            return x, None
        return x[..., : self.input_size], x[..., self.input_size] > 0

    @property
    def cond_size(self) -> int:
        return self.input_size

    def condition(self, x_step: Tensor) -> Tensor:
        return x_step[..., : self.input_size].float()

    @property
    def target_features(self) -> int:
        return self.output_size + 1

    def condition_targets(self, y: Tensor, steps: int) -> Tensor:
        """The targets ahead as a conditional M reads them, (B, steps · (output_size + 1)): each step's
        bits as ±1 where scored and 0 elsewhere, then its loss mask; with `resets`, the steps after the
        first episode end read 0 (no gradient crosses it), and so do steps past y's end."""
        y = self.current_episode(y) if self.resets else y
        k = self.output_size
        mask = y[..., k : k + 1]
        feats = torch.cat([(2 * y[..., :k] - 1) * mask, mask], dim=-1)
        return F.pad(feats, (0, 0, 0, steps - feats.size(1))).flatten(1)

    def _bce(self, out: Tensor, y: Tensor) -> Tensor:
        bits, mask = y[..., : self.output_size], y[..., self.output_size : self.output_size + 1]
        return F.binary_cross_entropy_with_logits(self.logits(out), bits, reduction="none") * mask

    def episode_ends(self, y: Tensor) -> Tensor:
        """(B,) bool: the streams whose episode ends inside the steps `y` covers."""
        return y[..., self.output_size + 1].amax(dim=1) > 0

    def current_episode(self, y: Tensor) -> Tensor:
        """`y` with the loss mask cleared after each stream's first episode end: the losses of the
        episode under way at the window's start."""
        k = self.output_size
        ended_before = (y[..., k + 1].cumsum(dim=1) - y[..., k + 1]) > 0
        return torch.cat([y[..., :k], y[..., k : k + 1] * (~ended_before).unsqueeze(-1).to(y.dtype),
                          y[..., k + 1 :]], dim=-1)

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        """Per-bit cross-entropy summed over the bits of scored steps, mean over B·T positions."""
        return self._bce(out, y).sum() / (y.size(0) * y.size(1))

    def eval_sums(self, out: Tensor, y: Tensor) -> dict[str, Tensor]:
        k = self.output_size
        bits, mask, end = y[..., :k], y[..., k : k + 1], y[..., k + 1]
        wrong = ((self.logits(out) > 0).to(bits.dtype) != bits).to(bits.dtype) * mask
        return {"nats": self._bce(out, y).sum().double(), "wrong": wrong.sum().double(),
                "episodes": end.sum().double()}

    @staticmethod
    def train_metrics(loss: Tensor) -> dict[str, Tensor]:
        return {"train/loss": loss}

    @staticmethod
    def eval_metrics(sums: dict[str, Tensor]) -> dict[str, Tensor]:
        episodes = sums["episodes"].clamp_min(1)
        return {"bits_error": sums["wrong"] / episodes, "loss_bits": sums["nats"] / episodes / LN2}
