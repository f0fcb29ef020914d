"""RecurrentState: a penalty on changes of a recurrent layer's state."""

from __future__ import annotations

import keras
from keras import ops

from keras_regs._types import Tensor
from keras_regs.regularizers._sequence import SequencePenalty


@keras.saving.register_keras_serializable(package="keras_regs")
class RecurrentState(SequencePenalty):
    """Penalizes the squared change of the hidden state between time steps.

    Use it as the `activity_regularizer` of a recurrent layer with
    `return_sequences=True`. For the output `h` of shape `(B, T, units)` and
    strength `s`, as the value reaches the loss (Keras divides an activity penalty
    by `B`):

    - `reduction="sum"`: `s * sum over t >= 1 and units of (h[t] - h[t-1])**2 / B`;
    - `reduction="mean"`: `s * mean of (h[t] - h[t-1])**2` over the batch, the
      steps t >= 1 and the units.

    Padded steps (a Keras mask upstream) do not count, as for `RecurrentNorm`
    (the penalty reads them off the output:
    <https://keras-regs.readthedocs.io/en/latest/recurrent.html> says how). A
    tensor that is not 3-D raises `ValueError`.

    Args:
        strength: the coefficient `s`, a finite number >= 0, or a schedule of
            the training step (`keras.optimizers.schedules.LearningRateSchedule`).
            Defaults to 0.01, as Keras' `L1()`; `None` means that default.
        reduction: `"sum"` (default) or `"mean"`.

    Example:

    ```python
    layer = keras.layers.LSTM(
        64, return_sequences=True,
        activity_regularizer=keras_regs.RecurrentState(1e-3),
    )
    ```
    """

    def call(self, x: Tensor) -> Tensor:
        return ops.square(x[:, 1:] - x[:, :-1])

    def pair_mask(self, pairs: Tensor) -> Tensor:
        return pairs[..., None]
