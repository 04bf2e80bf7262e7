"""The synthetic-gradient mathematics, in plain PyTorch (names follow docs/dni-rnn.md).

- `state`: a recurrent state as one (batch, features) matrix; cutting it at a boundary.
- `functional`: the injection, the bootstrapped target, the regression loss, the true
  future gradient (and n-step targets, for every pending state at once) and diagnostics, as functions.
- `SyntheticGradient` (M), `SGOptions` (its settings) and `BoundaryOptions` (at a truncation boundary).
- `LeastSquares`: a linear M fitted in closed form (exponentially weighted ridge regression).
- `Interface`: one decoupled interface (predict, inject, target, learn), the one path every
  engine uses, and what a plain PyTorch TBPTT loop over any recurrent core needs.
- `layers`: the same interface between the blocks of a feed-forward network: the bootstrapped
  target (the next block's synthetic gradient backpropagated) and the true gradient at each cut.

Nothing here imports anything else from seqdni.
"""

from seqdni.dni.functional import (
    bootstrapped_target,
    boundary_injection,
    cosine,
    diagnostics,
    pending_targets,
    regression_loss,
    true_future_gradient,
)
from seqdni.dni.interface import Interface
from seqdni.dni.layers import bootstrap_target, true_layer_gradients
from seqdni.dni.least_squares import LeastSquares
from seqdni.dni.options import BoundaryOptions, SGOptions
from seqdni.dni.state import State, as_tuple, detach_state, flatten_state, unflatten_state
from seqdni.dni.synthetic import SyntheticGradient

__all__ = ["BoundaryOptions", "Interface", "LeastSquares", "SGOptions", "State", "SyntheticGradient", "as_tuple",
           "bootstrap_target", "bootstrapped_target", "boundary_injection", "cosine", "detach_state", "diagnostics",
           "flatten_state", "pending_targets", "regression_loss", "true_future_gradient", "true_layer_gradients",
           "unflatten_state"]
