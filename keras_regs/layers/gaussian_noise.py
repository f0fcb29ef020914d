"""GaussianNoise: additive zero-mean Gaussian noise in training."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops
from keras.optimizers.schedules import LearningRateSchedule

from keras_regs import _schedule
from keras_regs._types import Tensor
from keras_regs._validation import check_non_negative
from keras_regs.layers._seeded import SeededLayer


@keras.saving.register_keras_serializable(package="keras_regs")
class GaussianNoise(SeededLayer):
    """Adds zero-mean Gaussian noise to its input in training (theanets' `*_noise`).

    In training: `y = x + n`, `n ~ N(0, stddev**2)` drawn independently for every
    element. At inference: `y = x`, the very same tensor. The input is never cast
    (a float16 or float64 input gives an output of its dtype); an integer or
    boolean input is refused with a `TypeError`.

    Unlike `keras.layers.GaussianNoise`, any finite `stddev >= 0` is accepted (Keras
    refuses values above 1), the noise is always drawn from the layer's own
    `SeedGenerator` (so it runs under `jit` on JAX, also at `stddev=0`), `stddev` is
    held in a variable (assigning `layer.stddev` takes effect in an already compiled
    train step), and the random state is saved with the model. Masks pass through.

    Args:
        stddev: the noise's standard deviation, a finite number >= 0 (at most
            float32's largest), or a
            `keras.optimizers.schedules.LearningRateSchedule` of the training
            step (its values are clipped to >= 0, NaN as 0). Loading weights
            sets it to the loaded value.
        seed: `None` or an integer: the seed of the layer's random sequence.
        inserted_by: `None` for a layer you place yourself; the keyword of
            `keras_regs.regularize_model` that inserted it otherwise (saved with
            the model, so `keras_regs.strip_regularization` finds it after a
            reload).
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...).

    Example:

    ```python
    inputs = keras.Input((784,))
    x = keras_regs.layers.GaussianNoise(0.1, seed=13)(inputs)
    ```
    """

    held = "stddev"
    held_check = staticmethod(check_non_negative)

    def __init__(
        self,
        stddev: float | LearningRateSchedule,
        seed: int | None = None,
        inserted_by: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            inserted_by=inserted_by,
            value=_schedule.check(stddev, "stddev", check_non_negative),
            seed=seed,
            **kwargs,
        )

    @property
    def stddev(self) -> float | LearningRateSchedule:
        return self._held_value

    @stddev.setter
    def stddev(self, value: float | LearningRateSchedule) -> None:
        self._set_held(_schedule.check(value, "stddev", check_non_negative))

    def call(self, inputs: Tensor, training: bool | None = False) -> Tensor:
        dtype = self._check_input(inputs)
        if not training:
            return inputs
        noise = keras.random.normal(
            ops.shape(inputs), dtype=dtype, seed=self.seed_generator
        )
        return inputs + noise * ops.cast(self._held_now(), dtype)
