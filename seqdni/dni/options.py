"""The settings of a synthetic-gradient interface: every interface's (`SGOptions`), and those of an
interface at a truncation boundary, whose target bootstraps on M itself (`BoundaryOptions`)."""

from __future__ import annotations

from dataclasses import dataclass

from seqdni.errors import UserError


@dataclass
class SGOptions:
    """A synthetic-gradient model M at an interface (a truncation boundary or a message).

    Args:
        hidden: Width of M's hidden layer; 0 makes it linear.
        scale: Factor on M's output before it is injected into the sender's backward pass.
            0.1 keeps an untrained M from dominating the true gradient.
        lr: Learning rate of M's own Adam optimiser.
        clip: Gradient-norm clip of M (separate from the core's clip); 0 disables.
        rank: > 0: M is a linear map of this rank (d -> rank -> d), 2·d·rank weights instead of
            d², so cheaper to evaluate and train; 0: full rank. Not with `hidden`.
        squash: M reads tanh of the value, element-wise, so its prediction stays bounded however
            large the value grows. An LSTM's cell state can grow without bound on an endless
            stream; a linear M on it then grows with it, and the injection feeds the growth.
        skip: With `hidden`: M is the MLP plus a linear map of the same input (both start at zero).
        experts: > 0: M adds a gated mixture of this many low-rank linear maps,
            Σ_k softmax(G f)_k U_k V_kᵀ f (f: what M reads): a linear map that changes with the state.
            U starts at zero, so M starts as without it. 0: none.
        expert_rank: The rank r of each of those maps (U_k, V_k: d × r).
    """

    hidden: int = 0
    scale: float = 0.1
    lr: float = 1e-3
    clip: float = 1.0
    rank: int = 0
    squash: bool = False
    skip: bool = False
    experts: int = 0
    expert_rank: int = 32

    def __post_init__(self) -> None:
        for key in ("hidden", "lr", "clip", "rank", "experts", "expert_rank"):
            if getattr(self, key) < 0:
                raise UserError(f"model.dni.{key} must be >= 0, got {getattr(self, key)}")
        if self.hidden > 0 and self.rank > 0:
            raise UserError("model.dni.hidden (an MLP) and model.dni.rank (a low-rank linear map) exclude each "
                            "other; set one of them to 0")
        if self.skip and self.hidden == 0:
            raise UserError("model.dni.skip adds a linear map beside M's hidden layer; set model.dni.hidden > 0 "
                            "or unset skip")
        if self.scale <= 0:
            raise UserError(f"model.dni.scale must be > 0, got {self.scale}")



@dataclass
class BoundaryOptions(SGOptions):
    """M at a truncation boundary, where the target's future term is M's own next prediction:

        target_t = n · ∂ℓ/∂s_t + discount · Jᵀ M(s_{t+T}),   J = ∂s_{t+T}/∂s_t

    while the core receives scale · M(s_{t+T}). So M learns the future gradient with unroll k
    ahead weighted discount^k: its horizon is about 1 / (1 - discount) unrolls.

    Args:
        hidden: Width of M's hidden layer; 0 makes it linear.
        scale: α, the factor on M's output when it is injected into the core's backward pass.
            0.1 keeps an untrained M from dominating the true in-unroll gradient.
        lr: Learning rate of M's own Adam optimiser.
        clip: Gradient-norm clip of M (separate from the core's clip); 0 disables.
        rank: > 0: M is a linear map of this rank (cheaper than d × d); 0: full rank.
        squash: M reads tanh of the state, element-wise, so its prediction stays bounded however
            large the state grows (a cell state that integrates would otherwise drag M with it).
        skip: With `hidden`: M is the MLP plus a linear map of the same input (both start at zero).
        experts: > 0: M adds a gated mixture of this many low-rank linear maps,
            Σ_k softmax(G f)_k U_k V_kᵀ f (f: what M reads): a linear map that changes with the state.
            U starts at zero, so M starts as without it. 0: none.
        expert_rank: The rank r of each of those maps (U_k, V_k: d × r).
        discount: γ in [0, 1], the factor on the future term of the bootstrapped target. Unset:
            γ = α (or 1 with `scale_target: false`). γ = α costs nothing extra (the target is
            ∂J_k/∂s_t of the one backward pass); any other γ costs one more vector-Jacobian
            product with respect to the states (no weight gradients).
        scale_target: The earlier switch for γ: true (or unset) is γ = α, false is γ = 1. Give
            `discount` instead; setting both is an error unless they agree.
    """

    scale_target: bool | None = None
    discount: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.discount is not None:
            if not 0.0 <= self.discount <= 1.0:
                raise UserError(f"model.dni.discount is γ in [0, 1], got {self.discount}")
            implied = None if self.scale_target is None else (self.scale if self.scale_target else 1.0)
            if implied is not None and implied != self.discount:
                raise UserError(f"model.dni.scale_target {str(self.scale_target).lower()} means discount {implied}, "
                                 f"but model.dni.discount is {self.discount}; give only model.dni.discount")

    @property
    def gamma(self) -> float:
        """γ, the discount of the bootstrapped target's future term."""
        if self.discount is not None:
            return self.discount
        return self.scale if self.scale_target in (None, True) else 1.0

    @property
    def second_pass(self) -> bool:
        """Whether a bootstrapped target needs (γ - α) · Jᵀ M(s_{t+T}) beyond the backward pass."""
        return self.gamma != self.scale
