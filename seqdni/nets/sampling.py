"""Sampling from a language model: one loop for every network that can read a prime and advance.

A network implements `start(prime) -> (logits of the next id, carry)` and
`advance(ids, carry) -> (logits, carry)`, the carry being whatever it needs between steps (an
LSTM's state; the hierarchical LM's state and tick phase), and its `generate` is `sample_ids`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from seqdni.errors import UserError


def check_generation(prime: Tensor, temperature: float) -> None:
    if prime.numel() == 0:
        raise UserError("generation needs at least one prime id")
    if temperature <= 0:
        raise UserError(f"temperature must be > 0, got {temperature}")


def sample_next(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """One id per row from (B, V) logits: softmax at `temperature`, optionally among the top k."""
    scaled = logits / temperature
    if top_k is not None and top_k < scaled.size(-1):
        kth = torch.topk(scaled, top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    return torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator)


@torch.no_grad()
def sample_ids(net: Any, prime: Tensor, length: int, temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None) -> Tensor:
    """Warm the network on `prime` (1-D ids, at least one), then sample `length` ids."""
    check_generation(prime, temperature)
    logits, carry = net.start(prime.view(1, -1))
    out = []
    for _ in range(length):
        nxt = sample_next(logits, temperature, top_k, generator)
        out.append(nxt)
        logits, carry = net.advance(nxt, carry)
    return torch.cat(out, dim=1).view(-1) if out else prime.new_empty(0)
