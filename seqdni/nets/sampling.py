"""Sampling from a language model's logits."""

from __future__ import annotations

import torch
from torch import Tensor


def check_generation(prime: Tensor, temperature: float) -> None:
    if prime.numel() == 0:
        raise ValueError("generation needs at least one prime id")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def sample_next(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """One id per row from (B, V) logits: softmax at `temperature`, optionally among the top k."""
    scaled = logits / temperature
    if top_k is not None and top_k < scaled.size(-1):
        kth = torch.topk(scaled, top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    return torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator)
