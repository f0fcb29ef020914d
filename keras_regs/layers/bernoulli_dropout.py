"""BernoulliDropout: inverted dropout in training."""

import keras
from keras import ops

from keras_regs import _schedule
from keras_regs._validation import RATE_MAX, check_rate
from keras_regs.layers._seeded import SeededLayer


@keras.saving.register_keras_serializable(package="keras_regs")
class BernoulliDropout(SeededLayer):
    """Inverted dropout (theanets' `*_dropout`): zeroes a fraction `rate` of inputs.

    In training: each element is kept with probability `1 - rate` and divided by
    `1 - rate`, otherwise set to 0, so the expected output equals the input. At
    inference: `y = x`, the very same tensor. The input is never cast (a float16
    or float64 input gives an output of its dtype); an integer or boolean input
    is refused with a `TypeError`.

    Unlike `keras.layers.Dropout`, the mask is always drawn from the layer's own
    `SeedGenerator` (so the layer runs under `jit` on JAX, also at `rate=0`, and a
    schedule may start at 0), `rate` is held in a variable (assigning `layer.rate`
    takes effect in an already compiled train step), and the random state is saved
    with the model. Masks pass through.

    Args:
        rate: the fraction of elements dropped, a float in [0, 1), or a
            `keras.optimizers.schedules.LearningRateSchedule` of the training
            step (its values are clipped into [0, 1), NaN as 0). Loading
            weights sets it to the loaded value.
        seed: `None` or an integer: the seed of the layer's random sequence.
        inserted_by: `None` for a layer you place yourself; the keyword of
            `keras_regs.regularize_model` that inserted it otherwise (saved with
            the model, so `keras_regs.strip_regularization` finds it after a
            reload).
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...).

    Example:

    ```python
    inputs = keras.Input((784,))
    x = keras.layers.Dense(256, activation="relu")(inputs)
    x = keras_regs.layers.BernoulliDropout(0.3, seed=13)(x)
    ```
    """

    held = "rate"
    held_check = staticmethod(check_rate)
    held_max = RATE_MAX

    def __init__(self, rate, seed=None, inserted_by=None, **kwargs):
        super().__init__(
            inserted_by=inserted_by,
            value=_schedule.check(rate, "rate", check_rate),
            seed=seed,
            **kwargs,
        )

    @property
    def rate(self):
        return self._held_value

    @rate.setter
    def rate(self, value):
        self._set_held(_schedule.check(value, "rate", check_rate))

    def call(self, inputs, training=False):
        dtype = self._check_input(inputs)
        if not training:
            return inputs
        rate = self._held_now()
        uniform = keras.random.uniform(
            ops.shape(inputs), dtype="float32", seed=self.seed_generator
        )
        keep = ops.greater_equal(uniform, rate)
        # 1 - rate in float32 (float64 for a float64 input), then in the
        # input's dtype: a float16 input keeps a rate of 0.9999 from rounding
        # to 1 before the subtraction
        wide = "float64" if dtype == "float64" else "float32"
        kept = inputs / ops.cast(1.0 - ops.cast(rate, wide), dtype)
        return ops.where(keep, kept, ops.zeros_like(inputs))
