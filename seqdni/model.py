"""The language model: embedding -> LSTM core -> linear head. Pure nn.Module."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CharLSTM(nn.Module):
    """Character LSTM language model with an explicit recurrent state (h, c).

    `forward(x, state) -> (logits, state)` runs the fused nn.LSTM over a whole window;
    `step` exposes the same core for a prefix of steps (DNI keeps the last one apart).
    """

    def __init__(self, vocab_size: int, embed_dim: int = 128, hidden_size: int = 256, num_layers: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        device = device if device is not None else self.head.weight.device
        z = torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device, dtype=self.head.weight.dtype)
        return z, z.clone()

    def core(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Ids (B, T) and state -> top-layer outputs (B, T, H) and the new state."""
        out, new_state = self.lstm(self.embed(x), state)
        return out, new_state

    def logits(self, out: Tensor) -> Tensor:
        return self.head(self.drop(out))

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if state is None:
            state = self.init_state(x.size(0), x.device)
        out, state = self.core(x, state)
        return self.logits(out), state

    @torch.no_grad()
    def generate(self, prime: Tensor, length: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """Warm the state on `prime` (1-D ids, at least one), then sample `length` ids."""
        if prime.numel() == 0:
            raise ValueError("generation needs at least one prime id")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        logits, state = self(prime.view(1, -1))
        last = logits[:, -1]
        out = []
        for _ in range(length):
            scaled = last / temperature
            if top_k is not None and top_k < scaled.size(-1):
                kth = torch.topk(scaled, top_k, dim=-1).values[..., -1:]
                scaled = scaled.masked_fill(scaled < kth, float("-inf"))
            nxt = torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator)
            out.append(nxt)
            logits, state = self(nxt, state)
            last = logits[:, -1]
        return torch.cat(out, dim=1).view(-1) if out else prime.new_empty(0)
