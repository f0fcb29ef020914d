"""HiddenL1: an L1 penalty on activations (theanets' `hidden_l1`, `hidden_sparsity`)."""

from __future__ import annotations

import keras
from keras import ops

from keras_regs._types import Tensor
from keras_regs.regularizers.base import Regularizer


@keras.saving.register_keras_serializable(package="keras_regs")
class HiddenL1(Regularizer):
    """L1 penalty on a layer's output: sparse hidden representations.

    Use it as an `activity_regularizer`. Formula, for the output `h` of a batch of
    `B` examples and strength `s`, as it reaches the loss (Keras divides an activity
    penalty by the batch size):

    - `reduction="sum"`: `s * sum(abs(h)) / B`, exactly
      `keras.regularizers.L1(s)` as an activity regularizer;
    - `reduction="mean"`: `s * mean(abs(h))` over all elements, theanets'
      normalisation.

    Neither depends on the batch size. The output is cast to float32 before the
    sum, so under `mixed_float16` the sum cannot overflow (Keras' built-in `L1`
    sums in float16 and its half-precision result fails to add to the float32 loss
    on TensorFlow).

    Args:
        strength: the coefficient `s`, a finite number >= 0, or a schedule of
            the training step (`keras.optimizers.schedules.LearningRateSchedule`).
            Defaults to 0.01, as Keras' `L1()`; `None` means that default.
        reduction: `"sum"` (default) or `"mean"`.

    Example:

    ```python
    layer = keras.layers.Dense(
        64, activation="relu", activity_regularizer=keras_regs.HiddenL1(1e-3)
    )
    ```
    """

    target = "activity"
    aliases = ("hidden_sparsity",)

    def call(self, x: Tensor) -> Tensor:
        return ops.abs(x)
