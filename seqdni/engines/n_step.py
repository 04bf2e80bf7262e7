"""n-step targets for the flat engine's M (`DNIOptions.target_unrolls`, `pending_targets`).

M(s_t) learns the true gradient of the next n unrolls before it bootstraps on M at their end. The
engine carries the last n - 1 unrolls (`Carry.history`: start state, inputs, targets and, for a
conditional M, what M reads beside the state) and recomputes them with the current weights when a
target is due: once, n - 1 updates late (`learn_n_step`), or at every update for every state still
waiting, each on the horizon it has so far (`learn_pending`).
"""

from __future__ import annotations

from itertools import accumulate

import torch
from torch import Tensor

from seqdni.dni import detach_state, flatten_state, pending_targets, true_future_gradient
from seqdni.engines.base import Carry, Kept, state_gradients_only


class NStepTargets:
    """The flat engine's n-step learners; the engine provides `net`, `dni` and `boundary`."""

    @staticmethod
    def _history(carry: Carry, s_t: tuple[Tensor, ...], x: Tensor, y: Tensor, cond: Tensor | None
                 ) -> tuple[Kept, ...]:
        """n-step targets: the unrolls whose start states await a target, this one last. An unroll
        that did not start at a boundary (the first of a fit) has no prediction to train."""
        return (*carry.history, Kept(detach_state(s_t), x, y, cond)) if carry.boundary else ()

    def _learn_n_step(self, window: tuple[Kept, ...], g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """M(s_t) at the start of `window` (n unrolls, this one last) against its n-step target
        ∂(Σ_j γ^j n_j ℓ_j)/∂s_t + γ^n J_nᵀ M(s_{t+nT}) (per-sequence units, n_j = B·T_j), by BPTT through
        the unrolls recomputed with the current weights; `episodic`: each stream's losses stop at
        its first episode end, and a stream whose episode ended has no future term."""
        gamma, n = self.dni.gamma, len(window)
        ys = [k.targets for k in window]
        if self.dni.episodic:
            lengths = [t.size(1) for t in ys]
            joined = torch.cat(ys, dim=1)
            ys = list(torch.split(self.net.current_episode(joined), lengths, dim=1))
            g = g * self._going_on(joined, g).unsqueeze(1)

        def unroll(s, xs):  # the n unrolls in one call of the core, each unroll's loss in its own units
            out, s = self.net.core(xs, s)
            starts = [0, *accumulate(t.size(1) for t in ys)]
            parts = [gamma ** j * t.size(0) * t.size(1) * self.net.loss(out[:, a : a + t.size(1)], t)
                     for j, (t, a) in enumerate(zip(ys, starts))]
            return torch.stack(parts).sum(), s

        xs = torch.cat([k.inputs for k in window], dim=1)
        with state_gradients_only(self.net):
            target = true_future_gradient(unroll, window[0].state, [xs], bootstrap=gamma ** n * g)
        loss, prediction = self.boundary.learn(flatten_state(window[0].state), target, window[0].cond)
        return loss, prediction, target

    def _learn_pending(self, window: tuple[Kept, ...], g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`pending_targets`: M at the start state of every unroll in `window` (this one last), each
        against the target it has so far (`seqdni.dni.pending_targets`: one recomputation from the
        oldest stored state with the current weights, one backward); M reads the states as recomputed.
        `episodic` (the network resets its state at each episode start, so no gradient crosses one): a
        stream whose episode ends in the last unroll keeps no future term."""
        if self.dni.episodic:
            g = g * self._going_on(window[-1].targets, g).unsqueeze(1)

        def unroll(s, kept):  # one unroll's loss in per-sequence units
            out, s = self.net.core(kept.inputs, s)
            return kept.targets.size(0) * kept.targets.size(1) * self.net.loss(out, kept.targets), s

        with state_gradients_only(self.net):
            states, target = pending_targets(unroll, window[0].state, list(window), g, self.dni.gamma)
        conds = torch.cat([k.cond for k in window]) if window[0].cond is not None else None
        loss, prediction = self.boundary.learn(states, target, conds)
        return loss, prediction, target

    def _discounts(self, y: Tensor, g: Tensor) -> Tensor | None:
        """`episodic`: γ per stream, 0 for those whose episode ended inside this unroll."""
        if not self.dni.episodic:
            return None
        return self.dni.gamma * self._going_on(y, g)

    def _going_on(self, y: Tensor, like: Tensor) -> Tensor:
        """(B,) 1 for the streams whose episode does not end inside `y`, 0 for the others (like's dtype)."""
        return (~self.net.episode_ends(y)).to(like.dtype)
