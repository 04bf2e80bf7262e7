"""The settings of a synthetic-gradient interface: every interface's (`SGOptions`), and those of an
interface at a truncation boundary, whose target bootstraps on M itself (`BoundaryOptions`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SGOptions:
    """A synthetic-gradient model M at an interface (a truncation boundary or a message).

    Args:
        hidden: Width of M's hidden layer; 0 makes it linear.
        scale: Factor on M's output before it is injected into the sender's backward pass.
            0.1 keeps an untrained M from dominating the true gradient.
        lr: Learning rate of M's own Adam optimiser.
        clip: Gradient-norm clip of M (separate from the core's clip); 0 disables.
    """

    hidden: int = 0
    scale: float = 0.1
    lr: float = 1e-3
    clip: float = 1.0

    def __post_init__(self) -> None:
        for key in ("hidden", "lr", "clip"):
            if getattr(self, key) < 0:
                raise ValueError(f"model.dni.{key} must be >= 0, got {getattr(self, key)}")
        if self.scale <= 0:
            raise ValueError(f"model.dni.scale must be > 0, got {self.scale}")



@dataclass
class BoundaryOptions(SGOptions):
    """M at a truncation boundary, where the target's future term is M's own next prediction.

    Args:
        hidden: Width of M's hidden layer; 0 makes it linear.
        scale: Factor on M's output before it is injected into the core's backward pass.
            0.1 keeps an untrained M from dominating the true in-unroll gradient.
        lr: Learning rate of M's own Adam optimiser.
        clip: Gradient-norm clip of M (separate from the core's clip); 0 disables.
        scale_target: If true the future term of the bootstrapped target uses the scaled
            prediction, so target_t = ∂J_k/∂s_t exactly (one backward pass; M then learns a
            gradient discounted by `scale` per unroll). If false the target uses M unscaled, so
            M estimates the undiscounted future gradient (one extra vector-Jacobian product with
            respect to the states, no weight gradients).
    """

    scale_target: bool = True

    @property
    def second_pass(self) -> bool:
        """Whether a bootstrapped target needs the unscaled remainder of its future term."""
        return not self.scale_target and self.scale != 1.0
