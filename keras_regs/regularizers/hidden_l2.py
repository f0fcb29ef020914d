"""HiddenL2: an L2 penalty on activations (Keras' `activity_regularizer=L2(...)`)."""

from __future__ import annotations

import keras
from keras import ops

from keras_regs._types import Tensor
from keras_regs.regularizers.base import Regularizer


@keras.saving.register_keras_serializable(package="keras_regs")
class HiddenL2(Regularizer):
    """L2 penalty on a layer's output: small hidden activations.

    Use it as an `activity_regularizer`. Formula, for the output `h` of a batch of
    `B` examples and strength `s`, as it reaches the loss (Keras divides an activity
    penalty by the batch size):

    - `reduction="sum"`: `s * sum(h**2) / B`, exactly `keras.regularizers.L2(s)`
      as an activity regularizer;
    - `reduction="mean"`: `s * mean(h**2)` over all elements.

    Neither depends on the batch size. The output is cast to float32 before the
    sum, so under `mixed_float16` the squares cannot overflow (float16's largest
    is 65504: an activation of 256 already squares to infinity there).

    Args:
        strength: the coefficient `s`, a finite number >= 0, or a schedule of
            the training step (`keras.optimizers.schedules.LearningRateSchedule`).
            Defaults to 0.01, as Keras' `L2()`; `None` means that default.
        reduction: `"sum"` (default) or `"mean"`.

    Example:

    ```python
    layer = keras.layers.Dense(
        64, activation="relu", activity_regularizer=keras_regs.HiddenL2(1e-4)
    )
    ```
    """

    target = "activity"

    def call(self, x: Tensor) -> Tensor:
        return ops.square(x)
