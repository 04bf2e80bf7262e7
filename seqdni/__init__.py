"""seqdni: recurrent sequence models trained with synthetic gradients (Decoupled Neural Interfaces)."""

from seqdni.dni import (
                        DNIOptions,
                        SyntheticGradient,
                        bootstrapped_target,
                        boundary_injection,
                        regression_loss,
                        true_future_gradient,
)

__all__ = ["DNIOptions", "SyntheticGradient", "boundary_injection", "bootstrapped_target", "regression_loss",
           "true_future_gradient"]
__version__ = "0.1.0"
