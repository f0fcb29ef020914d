"""BernoulliDropout: inverted dropout in training."""

import keras
from keras import ops

from keras_regs import _schedule
from keras_regs._validation import check_rate
from keras_regs.layers._seeded import SeededLayer


@keras.saving.register_keras_serializable(package="keras_regs")
class BernoulliDropout(SeededLayer):
    """Inverted dropout (theanets' `*_dropout`): zeroes a fraction `rate` of inputs.

    In training: each element is kept with probability `1 - rate` and divided by
    `1 - rate`, otherwise set to 0, so the expected output equals the input. At
    inference: `y = x`, the very same tensor.

    Unlike `keras.layers.Dropout`, the mask is always drawn from the layer's own
    `SeedGenerator` (so the layer runs under `jit` on JAX, also at `rate=0`, and a
    schedule may start at 0), `rate` is held in a variable (assigning `layer.rate`
    takes effect in an already compiled train step), and the random state is saved
    with the model. Masks pass through.

    Args:
        rate: the fraction of elements dropped, a float in [0, 1), or a
            `keras.optimizers.schedules.LearningRateSchedule` of the training
            step whose values stay in [0, 1).
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
        if not training:
            return inputs
        rate = self._held_now()
        uniform = keras.random.uniform(
            ops.shape(inputs), dtype="float32", seed=self.seed_generator
        )
        keep = ops.greater_equal(uniform, rate)
        kept = inputs / ops.cast(1.0 - rate, inputs.dtype)
        return ops.where(keep, kept, ops.zeros_like(inputs))
