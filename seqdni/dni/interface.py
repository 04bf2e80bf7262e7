"""One decoupled interface: the synthetic-gradient model M and the three moves of its use.

A truncation boundary and a message between two networks are the same mechanism
(docs/dni-rnn.md): a value v (a state, or a message) sent forward, a synthetic gradient
M(v) that the sender uses at once, and a target that arrives later, read off the
receiver's copy of v (a detached leaf) after the receiver's backward pass:

    sender:    J_send = loss_send + < stopgrad(scale · M(v)) / n_send, v >     (`predict`, `inject`)
    receiver:  v_leaf = detach(v); ... backward ...; target = n_recv · v_leaf.grad   (`target`)
    M:         || M(v) - stopgrad(target) ||²                                  (`learn`)

n_send and n_recv turn the sender's and receiver's *mean* losses into per-sequence units:
M predicts the gradient of the *sum* of one sequence's future losses, so its targets keep
their size whatever the batch size or unroll length.

`width` cuts each example's flattened value into rows of that many features, so one M
serves a sequence of messages (B, N, width) as B·N separate messages. Every engine in
`seqdni.engines`, and a plain PyTorch loop (README), uses this class.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqdni.dni.functional import bootstrapped_target, boundary_injection, diagnostics, regression_loss
from seqdni.dni.least_squares import LeastSquares
from seqdni.dni.options import SGOptions
from seqdni.dni.state import State, as_tuple, flatten_state
from seqdni.dni.synthetic import SyntheticGradient


class Interface(nn.Module):
    """M at one interface, with the sender's and the receiver's halves of its use.

    Args:
        width: Features of one value (one example's flattened state, or one message).
        opts: Synthetic-gradient settings (`SGOptions`; `BoundaryOptions` at a truncation boundary).
        name: Diagnostics are named `sg/<name>/...` (`sg/...` without a name).
        cond_dim: Width of a conditioning input that M also reads (conditional DNI); 0 for none.
        fit: (memory, ridge, every) to fit a linear M by least squares (`LeastSquares`) instead of
            by its optimiser: M's parameters then take no gradient steps (`by_gradient` is false).
    """

    def __init__(self, width: int, opts: SGOptions, name: str = "", cond_dim: int = 0,
                 fit: tuple[int, float, int] | None = None):
        super().__init__()
        self.width, self.opts = width, opts
        self.prefix = f"sg/{name}" if name else "sg"
        self.sg = SyntheticGradient(width, opts.hidden, cond_dim, opts.rank, opts.squash, opts.skip,
                                    opts.experts, opts.expert_rank)
        self.fit = None if fit is None else LeastSquares(width + cond_dim, width, *fit)
        if self.fit is not None:  # set by the fit alone: no gradient, so DDP leaves M out of its reduction
            self.sg.requires_grad_(False)

    @property
    def by_gradient(self) -> bool:
        """Whether M learns by gradient steps on `learn`'s loss (else `learn` fits it by least squares)."""
        return self.fit is None

    @property
    def learns(self) -> bool:
        """Whether M changes at all: fitted by least squares, or by gradient steps at a learning rate
        above 0 (`lr: 0` freezes M, a control: it then needs no targets)."""
        return self.fit is not None or self.opts.lr > 0

    def rows(self, value: State, batch_dim: int = 1) -> Tensor:
        """A value as rows of `width` features (a (B, width) matrix passes through unchanged)."""
        return flatten_state(value, batch_dim).reshape(-1, self.width)

    def predict(self, value: State, cond: Tensor | None = None, batch_dim: int = 1) -> Tensor:
        """M(v) as a constant, one row per `width` features; `cond`: one conditioning row per row."""
        with torch.no_grad():
            return self.sg(self.rows(value, batch_dim).detach(), cond)

    def inject(self, value: State, g: Tensor, n_send: float, batch_dim: int = 1) -> Tensor:
        """The sender's extra objective term: its gradient with respect to `value` is scale · g / n_send."""
        flat = flatten_state(value, batch_dim)
        return boundary_injection(flat, g.reshape(flat.shape), self.opts.scale / n_send, batch_dim=0)

    def injected_norm(self, g: Tensor) -> dict[str, Tensor]:
        return {f"{self.prefix}/injected_norm": (self.opts.scale * g).norm(dim=1).mean()}

    def target(self, leaves: list[State], n_recv: float, batch_dim: int = 1) -> Tensor:
        """After the receiver's backward: n_recv · ∂J/∂v on each leaf, as rows (the leaves in order)."""
        grads = [bootstrapped_target(leaf, batch_dim).reshape(-1, self.width) for leaf in leaves]
        return torch.cat(grads) * n_recv

    def remainder(self, end: State, g: Tensor, leaf: State, batch_dim: int = 1, retain_graph: bool = False,
                  discount: Tensor | None = None, sent: Tensor | None = None) -> Tensor:
        """A bootstrapped target's future term beyond the injected one, (γ - α) · Jᵀ g, where J is
        ∂end/∂leaf (`BoundaryOptions.discount`; one extra vector-Jacobian product; `end`'s graph
        must still be alive). `discount`: one γ per row of g instead of the options' γ (0 where
        an episode ended, so the target keeps no future term there). J is block-diagonal over
        the rows (independent streams), so a per-row γ scales g's rows before the product.
        `sent`: what the sender received in g's place (a control), when it is not g: the backward
        pass then carried α Jᵀ sent, and the remainder is Jᵀ (γ g - α sent)."""
        gamma = self.opts.gamma if discount is None else discount
        if sent is None:
            coef = gamma - self.opts.scale
            g = g * coef.reshape(-1, 1) if isinstance(coef, Tensor) else g * coef
        else:
            g = (g * gamma.reshape(-1, 1) if isinstance(gamma, Tensor) else g * gamma) - self.opts.scale * sent
        rest = torch.autograd.grad(boundary_injection(end, g, 1.0, batch_dim), as_tuple(leaf),
                                   retain_graph=retain_graph)
        return flatten_state(tuple(rest), batch_dim)

    def learn(self, inputs: Tensor, target: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """M's regression loss (with its graph) on rows `inputs`, and the prediction, detached. Fitted
        by least squares, the loss (no graph) is the prediction's before the rows are folded in."""
        if self.fit is None:
            prediction = self.sg(inputs, cond)
            return regression_loss(prediction, target), prediction.detach()
        with torch.no_grad():
            features = self.sg.features(inputs, cond)
            prediction = self.sg.net(features)
            self.fit.update(features, target, self.sg.net[-1])
        return regression_loss(prediction, target), prediction

    def learn_leaves(self, leaves: list[State], n_recv: float, batch_dim: int = 1,
                     conds: list[Tensor] | None = None, extra: Tensor | None = None
                     ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """`target` (plus `extra`, e.g. a `remainder`) and `learn` on the receiver's leaves at once:
        the loss, diagnostics, the targets."""
        target = self.target(leaves, n_recv, batch_dim)
        if extra is not None:
            target = target + extra
        inputs = torch.cat([self.rows(leaf, batch_dim).detach() for leaf in leaves])
        loss, prediction = self.learn(inputs, target, None if conds is None else torch.cat(conds))
        return loss, {f"{self.prefix}/loss": loss.detach(), **self.diagnostics(prediction, target)}, target.detach()

    def diagnostics(self, prediction: Tensor, target: Tensor) -> dict[str, Tensor]:
        return diagnostics(prediction, target, self.prefix)
