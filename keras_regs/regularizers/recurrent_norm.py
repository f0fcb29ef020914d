"""RecurrentNorm: the norm stabilizer of Krueger and Memisevic (2016)."""

from __future__ import annotations

import keras
from keras import ops

from keras_regs._types import Tensor
from keras_regs.regularizers._sequence import SequencePenalty


@keras.saving.register_keras_serializable(package="keras_regs")
class RecurrentNorm(SequencePenalty):
    """The norm stabilizer: penalizes changes of the hidden state's norm over time.

    Use it as the `activity_regularizer` of a recurrent layer with
    `return_sequences=True`. For the output `h` of shape `(B, T, units)`, the
    Euclidean norm over units `n[t] = norm(h[t])` and strength `s`, as the value
    reaches the loss (Keras divides an activity penalty by `B`):

    - `reduction="sum"`: `s * sum over t >= 1 of (n[t] - n[t-1])**2 / B`;
    - `reduction="mean"`: `s * mean of (n[t] - n[t-1])**2` over the batch and the
      steps t >= 1.

    The difference is squared, as in the paper (theanets' implementation forgot
    the square). Padded steps do not count. A tensor that is not 3-D raises
    `ValueError`.

    Args:
        strength: the coefficient `s`, a finite number >= 0, or a schedule of
            the training step (`keras.optimizers.schedules.LearningRateSchedule`).
            Defaults to 0.01, as Keras' `L1()`; `None` means that default.
        reduction: `"sum"` (default) or `"mean"`.

    Example:

    ```python
    layer = keras.layers.GRU(
        64, return_sequences=True,
        activity_regularizer=keras_regs.RecurrentNorm(1e-2),
    )
    ```

    References:
        Krueger and Memisevic, "Regularizing RNNs by stabilizing activations",
        ICLR 2016.
    """

    def call(self, x: Tensor) -> Tensor:
        norms = ops.sqrt(ops.sum(ops.square(x), axis=-1))
        return ops.square(norms[:, 1:] - norms[:, :-1])
