"""WeightL2: an L2 penalty on weights (theanets' `weight_l2`, `weight_decay`)."""

from __future__ import annotations

import keras
from keras import ops

from keras_regs._types import Tensor
from keras_regs.regularizers.base import Regularizer


@keras.saving.register_keras_serializable(package="keras_regs")
class WeightL2(Regularizer):
    """L2 penalty on a weight tensor ("weight decay" as a loss term).

    Formula, for the weight tensor `W` and strength `s`:

    - `reduction="sum"`: `s * sum(W**2)`, exactly `keras.regularizers.L2(s)`;
    - `reduction="mean"`: `s * mean(W**2)`, theanets' normalisation.

    This is a penalty added to the loss; it equals decoupled weight decay
    (`keras.optimizers.AdamW`, `weight_decay=`) only for plain SGD.
    Computed in float32 whatever the weight's dtype; returns a float32 scalar.

    Args:
        strength: the coefficient `s`, a finite number >= 0, or a schedule of
            the training step (`keras.optimizers.schedules.LearningRateSchedule`).
            Defaults to 0.01, as Keras' `L2()`; `None` means that default.
        reduction: `"sum"` (default) or `"mean"`.

    Example:

    ```python
    layer = keras.layers.Dense(64, kernel_regularizer=keras_regs.WeightL2(1e-4))
    ```
    """

    target = "weights"
    aliases = ("weight_decay",)

    def call(self, x: Tensor) -> Tensor:
        return ops.square(x)
