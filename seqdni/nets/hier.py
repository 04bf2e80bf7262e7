"""A hierarchical two-timescale character network: a lower LSTM reads every character, an upper
LSTM ticks every `tick` characters on a message from the lower one (`seqdni.engines.hier`
trains it, with a synthetic gradient on the message).

The message is bounded, m = tanh(W h_lower): under DNI, W is trained only by the synthetic
gradient, and an unbounded message let a linear M and W feed each other until the injected
gradient swamped the language model's (a CPU run). The prediction of the next character reads
the lower core's output and the upper core's latest output u (after the tick at that step, if
there is one). The state is (h_lower, c_lower, h_upper, c_upper).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from seqdni.nets.init import init_io
from seqdni.nets.lstm import CharLSTM
from seqdni.nets.sampling import sample_ids

LSTMState = tuple[Tensor, Tensor]


class HierLSTM(nn.Module):
    """Two LSTM levels; see the module docstring. Implements `CharLSTM`'s network protocol."""

    def __init__(self, vocab_size: int, embed_dim: int = 128, hidden_size: int = 256, num_layers: int = 1,
                 dropout: float = 0.0, tick: int = 4, upper_hidden: int = 256, message_size: int = 64,
                 init_range: float | None = 0.1):
        super().__init__()
        self.vocab_size, self.tick = vocab_size, tick
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lower = nn.LSTM(embed_dim, hidden_size, num_layers, batch_first=True,
                             dropout=dropout if num_layers > 1 else 0.0)
        self.message = nn.Linear(hidden_size, message_size)
        self.upper = nn.LSTM(message_size, upper_hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size + upper_hidden, vocab_size)
        init_io(self.embed, self.head, init_range)

    state_names = ("h_lower", "c_lower", "h_upper", "c_upper")

    # The loss and the evaluation are a character LM's, on the joint features.
    loss = CharLSTM.loss
    eval_sums = CharLSTM.eval_sums
    eval_metrics = staticmethod(CharLSTM.eval_metrics)
    train_metrics = staticmethod(CharLSTM.train_metrics)
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

    # The two levels' parameters (the engine trains them as one group): the tests of the upper level's
    # update schedule and of the oracle interface's lower/upper gradients tell them apart by these.
    def lower_parameters(self) -> list[nn.Parameter]:
        return [p for m in (self.embed, self.lower, self.message, self.head) for p in m.parameters()]

    def upper_parameters(self) -> list[nn.Parameter]:
        return list(self.upper.parameters())

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        device = device if device is not None else self.head.weight.device
        low = torch.zeros(self.lower.num_layers, batch_size, self.lower.hidden_size, device=device)
        up = torch.zeros(1, batch_size, self.upper.hidden_size, device=device)
        return low, low.clone(), up, up.clone()

    def ticks(self, steps: int, phase: int = 0) -> range:
        """Positions in a chunk of `steps` at which the upper core ticks, t with (phase + t + 1) % tick
        == 0; `phase` characters of the current tick period were read before the chunk."""
        return range((self.tick - 1 - phase) % self.tick, steps, self.tick)

    @staticmethod
    def tick_index(ticks: Sequence[int], device: torch.device) -> Tensor:
        """The (ascending) tick positions as an index on `device`: a range, as `ticks` gives, is made
        there, so the unroll copies nothing from the host; any other sequence is copied over."""
        if isinstance(ticks, range):
            return torch.arange(ticks.start, ticks.start + len(ticks) * ticks.step, ticks.step, device=device)
        return torch.tensor(list(ticks), dtype=torch.long, device=device)

    def lower_core(self, x: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        return self.lower(self.embed(x), state)

    def send(self, out: Tensor, ticks: Sequence[int]) -> Tensor:
        """The messages at the ticks: (B, len(ticks), message_size)."""
        return torch.tanh(self.message(out[:, self.tick_index(ticks, out.device)]))

    def read(self, out: Tensor, u_prev: Tensor, u_seq: Tensor, ticks: Sequence[int]) -> Tensor:
        """Features of every step: the lower output and the upper output latest at that step."""
        u_all = torch.cat([u_prev.unsqueeze(1), u_seq], dim=1)
        steps = torch.arange(out.size(1), device=out.device)
        latest = torch.searchsorted(self.tick_index(ticks, out.device), steps, right=True)  # ticks up to each step
        return torch.cat([out, u_all[:, latest]], dim=-1)

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

    def start(self, prime: Tensor) -> tuple[Tensor, tuple[tuple[Tensor, ...], int]]:
        """The state after `prime` (1, L), its tick phase, and the logits of the id that follows."""
        feats, state = self.core(prime, self.init_state(1, prime.device))
        return self.logits(feats[:, -1]), (state, prime.size(1) % self.tick)

    def advance(self, ids: Tensor, carry: tuple[tuple[Tensor, ...], int]):
        state, phase = carry
        feats, state = self.core(ids, state, phase)
        return self.logits(feats[:, -1]), (state, (phase + ids.size(1)) % self.tick)

    def generate(self, prime: Tensor, length: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """Warm the state on `prime` (1-D ids, at least one), then sample `length` ids."""
        return sample_ids(self, prime, length, temperature, top_k, generator)
