"""seqdni: recurrent sequence models trained with synthetic gradients (Decoupled Neural Interfaces).

Layers, lowest first (a layer imports only from those before it):
`dni` (the mathematics) and `data` -> `nets` (pure networks) -> `engines` (one update) ->
`training` (the LightningModule, optimisers, callbacks) -> `cli` (train, sample).
"""

from seqdni.dni import (
    Interface,
    SGOptions,
    SyntheticGradient,
    bootstrapped_target,
    boundary_injection,
    regression_loss,
    true_future_gradient,
)

__all__ = ["Interface", "SGOptions", "SyntheticGradient", "boundary_injection", "bootstrapped_target",
           "regression_loss", "true_future_gradient"]
__version__ = "0.1.0"
