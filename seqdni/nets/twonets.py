"""The two networks of the two-timescale system (Jaderberg et al. 2017, Section 3.3).

Network A reads a digit stream and, every T steps, predicts the number of odd digits in its
last T digits and sends a message to network B; B ticks once per message and predicts the
number of 3s in the last T² digits. `seqdni.engines.twotimescale` trains them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqdni.errors import UserError

LSTMState = tuple[Tensor, Tensor]
SYMBOLS = 10  # the digits 0-9 A reads (`seqdni.data.digits.DIGITS`; not imported: it would load Lightning)


class TwoNets(nn.Module):
    """Network A (embedding -> LSTM -> count head and message head) and network B
    (LSTM over messages -> count head). The state is (h_A, c_A, h_B, c_B)."""

    def __init__(self, period: int, embed_dim: int, hidden_a: int, hidden_b: int, message_size: int):
        super().__init__()
        self.period = period
        self.embed = nn.Embedding(SYMBOLS, embed_dim)
        self.a = nn.LSTM(embed_dim, hidden_a, batch_first=True)
        self.a_head = nn.Linear(hidden_a, period + 1)
        self.a_message = nn.Linear(hidden_a, message_size)
        self.b = nn.LSTM(message_size, hidden_b, batch_first=True)
        self.b_head = nn.Linear(hidden_b, period * period + 1)

    state_names = ("h_a", "c_a", "h_b", "c_b")

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
            raise UserError(f"{x.size(1)} steps are not a whole number of segments of T = {self.period}")
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


