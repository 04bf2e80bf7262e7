"""A decoupled interface between a sender and a receiver, built from `seqdni.dni`.

A message from one network to another is the same mechanism as a truncation boundary
(docs/dni-rnn.md): a value v (a message, or a state), a synthetic gradient M(v) that the
sender uses at once, and a target that arrives later, read off the receiver's copy of v
(a detached leaf) after the receiver's backward pass:

    sender:    J_send = loss_send + < stopgrad(scale · M(v)) / n_send, v >     (`inject`)
    receiver:  v_leaf = detach(v); ... backward ...; target = n_recv · v_leaf.grad
    M:         || M(v) - stopgrad(target) ||²                                  (`learn`)

n_send and n_recv turn the sender's and receiver's mean losses into per-sequence units, as in
`seqdni.tbptt`: M predicts the gradient of the *sum* of one sequence's losses downstream.

`width` splits each example's flattened value into rows of that many features, so one M
serves a sequence of messages (B, N, width) as B·N separate messages.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqdni.dni import (
    DNIOptions,
    State,
    SyntheticGradient,
    bootstrapped_target,
    boundary_injection,
    diagnostics,
    flatten_state,
    regression_loss,
)


def check_options(opts: DNIOptions, owner: str, key: str = "model.dni", conditional: bool = False) -> None:
    """The DNIOptions fields an interface of `owner` does not implement, rejected by name."""
    unsupported = (("train_core", False), ("aux_weight", 0.0)) + ((("conditional", False),) if not conditional else ())
    for field, off in unsupported:
        if getattr(opts, field) != off:
            raise ValueError(f"{key}.{field} is not supported by {owner}; set it to {str(off).lower()}")


class Interface(nn.Module):
    """One decoupled interface: its synthetic-gradient model M and the two halves of its use.

    Args:
        width: Features of one value (a message, or one example's flattened state).
        opts: Synthetic-gradient settings (hidden width, scale).
        name: Used in the diagnostics' names: `sg/<name>/...`.
        cond_dim: Width of a conditioning input that M also reads (conditional DNI); 0 for none.
    """

    def __init__(self, width: int, opts: DNIOptions, name: str, cond_dim: int = 0):
        super().__init__()
        self.width, self.opts, self.name = width, opts, name
        self.sg = SyntheticGradient(width, opts.hidden, cond_dim)

    def _rows(self, value: State, batch_dim: int) -> Tensor:
        return flatten_state(value, batch_dim).reshape(-1, self.width)

    def inject(self, value: State, n_send: float, batch_dim: int = 1, cond: Tensor | None = None
               ) -> tuple[Tensor, dict[str, Tensor]]:
        """The sender's extra objective term: its gradient w.r.t. `value` is scale · M(value) / n_send.
        `cond`: one conditioning row per row of `value` (conditional DNI)."""
        flat = flatten_state(value, batch_dim)
        with torch.no_grad():  # M's output is only ever a constant here
            g = self.sg(flat.detach().reshape(-1, self.width), cond)
        term = boundary_injection(value, g.reshape(flat.shape), self.opts.scale / n_send, batch_dim)
        return term, {f"sg/{self.name}/injected_norm": (self.opts.scale * g).norm(dim=1).mean()}

    def learn(self, leaves: list[State], n_recv: float, batch_dim: int = 1, conds: list[Tensor] | None = None
              ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """After the receiver's backward: M's regression loss (with its graph), diagnostics, the targets.
        `conds`: the conditioning inputs that went with the leaves' values (conditional DNI)."""
        target = torch.cat([bootstrapped_target(leaf, batch_dim).reshape(-1, self.width) for leaf in leaves]) * n_recv
        inputs = torch.cat([self._rows(leaf, batch_dim).detach() for leaf in leaves])
        pred = self.sg(inputs, None if conds is None else torch.cat(conds))
        loss = regression_loss(pred, target)
        stats = {f"sg/{self.name}/loss": loss.detach(), **diagnostics(pred, target, f"sg/{self.name}")}
        return loss, stats, target.detach()
