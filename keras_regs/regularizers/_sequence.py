"""What the recurrent penalties share: the 3-D check and the padded-step mask."""

from __future__ import annotations

from keras import ops

from keras_regs._types import Tensor
from keras_regs.regularizers.base import Regularizer


class SequencePenalty(Regularizer):
    """An activity penalty on a `(batch, time, units)` sequence output.

    Padded steps do not count. An activity regularizer never sees the Keras mask
    (Keras calls it before it attaches the mask to the output), so the steps are
    read off the output itself: Keras' recurrent layers repeat the previous output
    through masked steps (`zero_output_for_mask=False`, the default) or output
    zeros there (`zero_output_for_mask=True`). A step is real when its output is
    not all zeros and differs from the previous step's (the step before the first
    counts as zeros); a difference between steps t-1 and t counts when both are
    real. Without padding every step of real data is real. A real step whose whole
    output is exactly zero, or exactly equal to the previous one, is taken for
    padding: with float activations this does not happen in practice.
    """

    target = "activity"

    def __call__(self, x: Tensor) -> Tensor:
        if len(x.shape) != 3:
            raise ValueError(
                f"{type(self).__name__} expects a sequence output of shape (batch, "
                "time, units), as a recurrent layer returns with "
                f"return_sequences=True. Received: a tensor of shape {tuple(x.shape)}"
            )
        return super().__call__(x)

    def mask(self, x: Tensor) -> Tensor:
        previous = ops.concatenate([ops.zeros_like(x[:, :1]), x[:, :-1]], axis=1)
        changed = ops.any(ops.not_equal(x, previous), axis=-1)
        nonzero = ops.any(ops.not_equal(x, 0), axis=-1)
        real = ops.cast(ops.logical_and(changed, nonzero), "float32")  # (batch, time)
        return self.pair_mask(real[:, 1:] * real[:, :-1])

    def pair_mask(self, pairs: Tensor) -> Tensor:
        """`pairs` (batch, time - 1) shaped like the terms of `call`."""
        return pairs
