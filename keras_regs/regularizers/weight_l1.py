"""WeightL1: an L1 penalty on weights (theanets' `weight_l1`, `weight_sparsity`)."""

from __future__ import annotations

import keras
from keras import ops

from keras_regs._types import Tensor
from keras_regs.regularizers.base import Regularizer


@keras.saving.register_keras_serializable(package="keras_regs")
class WeightL1(Regularizer):
    """L1 penalty on a weight tensor: pushes weights to exactly zero.

    Formula, for the weight tensor `W` and strength `s`:

    - `reduction="sum"`: `s * sum(abs(W))`, exactly `keras.regularizers.L1(s)`;
    - `reduction="mean"`: `s * mean(abs(W))`, theanets' normalisation.

    Computed in float32 whatever the weight's dtype; returns a float32 scalar.

    Args:
        strength: the coefficient `s`, a finite number >= 0, or a schedule of
            the training step (`keras.optimizers.schedules.LearningRateSchedule`).
            Defaults to 0.01, as Keras' `L1()`; `None` means that default.
        reduction: `"sum"` (default) or `"mean"`.

    Example:

    ```python
    layer = keras.layers.Dense(64, kernel_regularizer=keras_regs.WeightL1(1e-4))
    ```
    """

    target = "weights"
    aliases = ("weight_sparsity",)

    def call(self, x: Tensor) -> Tensor:
        return ops.abs(x)
