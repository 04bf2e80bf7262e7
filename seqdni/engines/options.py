"""The settings of DNI in the flat engine (`FlatEngine`): a boundary interface's options plus the
engine's own (conditional M, the kept core step, DNI + Aux, reuse, episodes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from seqdni.dni import BoundaryOptions
from seqdni.errors import UserError


@dataclass
class DNIOptions(BoundaryOptions):
    """Synthetic gradients at the truncation boundaries of the flat engine (unset: plain TBPTT).

    Args:
        hidden: Width of the synthetic-gradient model's hidden layer; 0 makes it linear.
        scale: Factor on M's output before it is injected into the core's backward pass.
            0.1 keeps an untrained M from dominating the true in-unroll gradient.
        lr: Learning rate of M's own Adam optimiser. 0 freezes M (a control; not with `least_squares`,
            which ignores it): M's targets are then not computed (unless `train_core`), which leaves
            the core's training bit for bit as it would be if they were, without dropout (with
            dropout, the masks drawn after the first skipped target differ, as under another seed).
        clip: Gradient-norm clip of M (separate from the core's clip); 0 disables.
        rank: > 0: M (and, under Aux, Â) is a linear map of this rank (cheaper than d × d); 0: full rank.
        squash: M reads tanh of the state, element-wise, so its prediction stays bounded however
            large the state grows (a cell state that integrates would otherwise drag M with it).
        skip: With `hidden`: M is the MLP plus a linear map of the same input (both start at zero).
        experts: > 0: M adds a gated mixture of this many low-rank linear maps,
            Σ_k softmax(G f)_k U_k V_kᵀ f (f: what M reads): a linear map that changes with the state.
            U starts at zero, so M starts as without it. 0: none. On Copy, no better than the
            linear M (docs/copy.md, "At the barrier").
        expert_rank: The rank r of each of those maps (U_k, V_k: d × r).
        discount: γ, the factor on the future term of the bootstrapped target (unset: γ = α);
            M learns the future gradient with unroll k ahead weighted γ^k. γ ≠ α costs one more
            vector-Jacobian product with respect to the states.
        scale_target: The earlier switch for γ (true: γ = α, false: γ = 1); give `discount`.
        conditional: M also reads the next input (the first one after the boundary).
        lookahead: > 0: conditional M on the targets ahead (the sequence form of the paper's cDNI,
            whose M reads a layer's label): M at a boundary also reads the targets of the next
            `lookahead` steps (Copy, Repeat Copy: each step's bits, ±1 where scored, and its loss
            mask; with `data.resets`, steps of a later episode read 0). Information from outside the
            core, so report it apart from DNI. The data must supply that many targets beyond each
            window (`data.lookahead`, at least as large). 0: none. Not with `conditional` or Aux.
        train_core: The regression loss also trains the kept core step that produced
            s_t, not only M. Its gradient is added after the core's clip.
        aux_weight: DNI + Aux when > 0: every step also predicts the synthetic gradient
            emitted T steps later, Â(s_τ) ≈ M(s_{τ+T}), with this loss weight. The targets of
            an unroll's steps are known one unroll later, when that unroll is recomputed step by
            step with the current parameters (the fused nn.LSTM returns the full state (h, c)
            at the unroll's end only). The auxiliary loss is part of the core's objective, so
            the core's clip sees it.
        aux_keep_graph: DNI + Aux without the step-by-step recomputation: each unroll runs the
            fused core on copies of the core's weights and keeps the graph of its every-step
            states until the next unroll, whose auxiliary loss is backpropagated through it. The
            auxiliary gradient is then taken at the weights of one update before (the copies);
            the unroll's own loss and the injection are not affected. Memory is the same (2T
            steps held); after a resume the first unroll recomputes the previous one with the
            current weights, as without this option. Not with DDP.
        reuse: Evaluate M once per boundary: M(s_{t+T}), computed with its graph for the
            injection, is kept and trained one unroll later as the prediction M(s_t), instead of
            evaluating M on that state again (one of M's three matrix products per unroll saved).
            The kept prediction was made before M's last update, so its regression gradient is
            taken at parameters one update old (for a linear M, 2·(W_old s_t - target)·s_tᵀ).
            Needs a linear M (`hidden` 0), without Aux, `train_core` or DDP; after a resume the
            first boundary evaluates M afresh.
        episodic: Where the task marks episode ends (Copy, Repeat Copy), a target does not
            bootstrap across one: for a stream whose episode ends inside the unroll, the target of
            M(s_t) keeps the unroll's own losses and drops the future term γ Jᵀ M(s_{t+T}) (a
            terminal state, as in TD learning). M then learns the gradient of the rest of the
            current episode, which stays finite at γ = 1 on endless streams. Costs one more
            vector-Jacobian product with respect to the states. The core still receives the
            injection at every boundary; losses of the next episode inside the same unroll (at
            most T - 1 steps) stay in the target.
        target_unrolls: n, the unrolls of true gradient in M's target before it bootstraps (n-step
            targets, as in n-step temporal-difference learning). 1: the target of M(s_t) is read off
            unroll k's own backward pass. n > 1: M(s_t) is trained n - 1 unrolls later, on
            ∂(Σ_{j<n} γ^j ℓ_{k+j})/∂s_t + γ^n J_nᵀ M(s_{t+nT}), by BPTT from s_t through the n unrolls
            recomputed from their stored start state and inputs with the current weights (a
            vector-Jacobian product with respect to the state only; on the Copy configs an update
            costs 1.9–2.1× a 1-step one at n = 4, 3.0–3.6× at n = 8; docs/copy.md). The core's update
            is unchanged.
            With `episodic`, the losses stop at each stream's first episode end and that stream's
            target has no future term. DNI and DNI + Aux (Aux's targets are M's outputs, however M
            learns); not with `conditional`, `train_core` or `reuse`.
        pending_targets: With n-step targets, M also learns, at every update, every start state still
            waiting for its n-step target, each on the target it has so far (the true gradient of the
            k < n unrolls after it, then γ^k Jᵀ M at their end): a state is learned from the update
            after it was made, with a horizon that grows by one unroll per update up to n, instead of
            once, n - 1 updates late. Same recomputation and one backward as the n-step target; M's
            regression runs over n times the rows (at n = 8 an update costs 1.13–1.27× the plain
            n-step one on the Copy configs). M reads the states as the current weights
            recompute them from the oldest stored one. With `episodic`, needs streams that reset the
            state at each episode start (`data.resets`).
        injection: What the core receives at each boundary. "prediction": scale · M(s_{t+T}), M's
            prediction for its own state (DNI). "shuffled", a control: the same predictions with the
            batch's streams rotated by a random non-zero offset at every boundary, so each stream
            receives another stream's synthetic gradient, of the same size and distribution but
            carrying nothing about its own future. M learns exactly as with "prediction" (its
            one-step target is corrected for what was injected, one more vector-Jacobian product). A
            gain over BPTT that survives it does not come from credit assignment. Needs at least two
            streams per batch; not with Aux or `train_core`, which train the core on its own stream's M.
            "none", a control: nothing (BPTT-T's gradient), while M learns as with "prediction" (its
            one-step target corrected likewise). With Aux, the core still learns to predict M's
            output T steps ahead: what DNI + Aux gains beyond it comes from the injection. Not with
            `train_core`.
        least_squares: > 0: M is not trained by its optimiser but fitted in closed form, at every
            update, to its targets of about this many recent updates (an exponentially weighted
            ridge regression, `seqdni.dni.LeastSquares`); `lr` and `clip` then do nothing. 0: Adam.
            A full-rank linear M only (`hidden`, `rank` and `experts` 0), not with `train_core` or
            `reuse`. On Copy every memory tried trained the core less well than Adam (docs/copy.md,
            "At the barrier"): the fit lags the changing core.
        ridge: λ of the least-squares fit, relative to the mean squared input feature.
        solve_every: The least-squares fit solves for M's weights every this many updates (a
            (d+1)×(d+1) linear system); the moments take in every update's rows.
    """

    conditional: bool = False
    lookahead: int = 0
    train_core: bool = False
    aux_weight: float = 0.0
    aux_keep_graph: bool = False
    reuse: bool = False
    episodic: bool = False
    target_unrolls: int = 1
    pending_targets: bool = False
    injection: Literal["prediction", "shuffled", "none"] = "prediction"
    least_squares: int = 0
    ridge: float = 0.01
    solve_every: int = 10

    @property
    def second_pass(self) -> bool:
        return super().second_pass or self.episodic or self.controlled

    @property
    def shuffled(self) -> bool:
        """The control injection: each stream receives another stream's synthetic gradient."""
        return self.injection == "shuffled"

    @property
    def controlled(self) -> bool:
        """A control injection: the core receives something other than its own stream's M(s_{t+T})."""
        return self.injection != "prediction"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_injection()
        if self.aux_weight < 0:
            raise UserError(f"model.dni.aux_weight must be >= 0, got {self.aux_weight}")
        if self.target_unrolls < 1:
            raise UserError(f"model.dni.target_unrolls is n >= 1, the unrolls of true gradient in M's target; got "
                            f"{self.target_unrolls}")
        if self.pending_targets and self.target_unrolls < 2:
            raise UserError("model.dni.pending_targets trains M on the states awaiting an n-step target, which "
                            "model.dni.target_unrolls 1 does not keep; set target_unrolls >= 2 or unset "
                            "pending_targets")
        if self.pending_targets and self.gamma == 0:
            raise UserError("model.dni.pending_targets needs model.dni.discount > 0 (each state's target is read off "
                            "one backward pass with the unrolls weighted γ^j)")
        multi = [k for k, on in (("conditional", self.conditional), ("train_core", self.train_core),
                                 ("reuse", self.reuse)) if on]
        if self.target_unrolls > 1 and multi:
            raise UserError(f"model.dni.target_unrolls > 1 (n-step targets) is for DNI and DNI + Aux; it does not "
                            f"combine with model.dni.{multi[0]}: unset one of them")
        self._check_lookahead()
        if self.least_squares < 0 or self.ridge < 0 or self.solve_every < 1:
            raise UserError(f"model.dni.least_squares (updates of memory) and model.dni.ridge must be >= 0 and "
                            f"model.dni.solve_every >= 1; got {self.least_squares}, {self.ridge}, {self.solve_every}")
        fitted = [k for k, on in (("hidden", self.hidden > 0), ("rank", self.rank > 0), ("experts", self.experts > 0),
                                  ("train_core", self.train_core), ("reuse", self.reuse)) if on]
        if self.least_squares and fitted:
            raise UserError(f"model.dni.least_squares fits a full-rank linear M in closed form, which "
                            f"model.dni.{fitted[0]} rules out; unset one of them")
        if self.aux_keep_graph and self.aux_weight <= 0:
            raise UserError("model.dni.aux_keep_graph keeps a graph for the auxiliary loss of DNI + Aux, which "
                            "model.dni.aux_weight 0 turns off; set model.dni.aux_weight > 0 or unset aux_keep_graph")
        clash = [k for k, on in (("hidden", self.hidden > 0), ("rank", self.rank > 0), ("experts", self.experts > 0),
                                 ("aux_weight", self.aux_weight > 0), ("train_core", self.train_core)) if on]
        if self.reuse and clash:
            raise UserError(f"model.dni.reuse keeps M's graph across M's update, which only a full-rank linear M "
                            f"without Aux or train_core allows; unset model.dni.{clash[0]} or model.dni.reuse")

    def _check_injection(self) -> None:
        if self.injection not in ("prediction", "shuffled", "none"):
            raise UserError(f"model.dni.injection is what the core receives at a boundary, \"prediction\" (DNI), "
                            f"\"shuffled\" (a control: another stream's prediction) or \"none\" (a control: "
                            f"nothing); got {self.injection!r}")
        own = [k for k, on in (("aux_weight", self.aux_weight > 0), ("train_core", self.train_core)) if on]
        if self.shuffled and own:
            raise UserError(f"model.dni.injection shuffled keeps each stream's own synthetic gradient from its core, "
                            f"but model.dni.{own[0]} trains the core on it; unset one of them")
        if self.injection == "none" and self.train_core:
            raise UserError("model.dni.injection none keeps M's predictions from the core, but model.dni.train_core "
                            "trains the core on M's loss; unset one of them")

    def _check_lookahead(self) -> None:
        if self.lookahead < 0:
            raise UserError(f"model.dni.lookahead is a number of steps >= 0, got {self.lookahead}")
        both = [k for k, on in (("conditional", self.conditional), ("aux_weight", self.aux_weight > 0)) if on]
        if self.lookahead and both:
            raise UserError(f"model.dni.lookahead (M reads the targets ahead) does not combine with "
                            f"model.dni.{both[0]}: unset one of them")
