"""BernoulliDropout: inverted dropout in training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import keras
from keras import ops
from keras.optimizers.schedules import LearningRateSchedule

from keras_regs import _schedule
from keras_regs._types import Tensor
from keras_regs._validation import (
    RATE_MAX,
    check_data_format,
    check_noise_shape,
    check_rate,
)
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

    `noise_shape` works as in `keras.layers.Dropout`: the keep-or-drop mask has
    that shape and is broadcast over the input, so an axis of size 1 shares one
    decision along it. `(None, 1, None)` on `(batch, steps, features)` drops the
    same features at every step; `None` takes the input's size on that axis. The
    spatial variants (`SpatialDropout1D`, `2D`, `3D`) drop whole feature maps.

    Args:
        rate: the fraction of elements dropped, a float in [0, 1), or a
            `keras.optimizers.schedules.LearningRateSchedule` of the training
            step (its values are clipped into [0, 1), NaN as 0). Loading
            weights sets it to the loaded value.
        noise_shape: `None` (a decision per element) or the shape of the mask, a
            tuple of positive integers and `None`s of the input's rank.
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

    def __init__(
        self,
        rate: float | LearningRateSchedule,
        noise_shape: Sequence[int | None] | None = None,
        seed: int | None = None,
        inserted_by: str | None = None,
        **kwargs: Any,
    ) -> None:
        rate = _schedule.check(rate, "rate", check_rate)
        noise_shape = check_noise_shape(noise_shape)
        super().__init__(inserted_by=inserted_by, value=rate, seed=seed, **kwargs)
        self.noise_shape = noise_shape

    @property
    def rate(self) -> float | LearningRateSchedule:
        return self._held_value

    @rate.setter
    def rate(self, value: float | LearningRateSchedule) -> None:
        self._set_held(_schedule.check(value, "rate", check_rate))

    def _mask_shape(self, inputs):
        """The shape of the keep-or-drop mask for `inputs` (static sizes where the
        input has them, else the dynamic ones)."""
        if self.noise_shape is None:
            return ops.shape(inputs)
        self._check_rank(inputs.shape)
        shape = ops.shape(inputs)
        return tuple(
            size if dim is None else dim
            for size, dim in zip(shape, self.noise_shape, strict=True)
        )

    def _check_rank(self, input_shape):
        """The mask's shape fits the input's: its rank, and on each axis 1 or
        the input's size (where the input's is known)."""
        if self.noise_shape is None:
            return
        problem = mask_shape_problem(self.noise_shape, input_shape)
        if problem is not None:
            raise ValueError(
                f"Invalid value for argument `noise_shape` of {type(self).__name__} "
                f"layer '{self.name}': {problem}. Received: "
                f"noise_shape={self.noise_shape!r}"
            )

    def compute_output_spec(
        self, inputs: keras.KerasTensor, *args: Any, **kwargs: Any
    ) -> keras.KerasTensor:
        self._check_rank(inputs.shape)
        return super().compute_output_spec(inputs, *args, **kwargs)

    def call(self, inputs: Tensor, training: bool | None = False) -> Tensor:
        dtype = self._check_input(inputs)
        if not training:
            return inputs
        rate = self._held_now()
        uniform = keras.random.uniform(
            self._mask_shape(inputs), dtype="float32", seed=self.seed_generator
        )
        keep = ops.greater_equal(uniform, rate)
        # 1 - rate in float32 (float64 for a float64 input), then in the
        # input's dtype: a float16 input keeps a rate of 0.9999 from rounding
        # to 1 before the subtraction
        wide = "float64" if dtype == "float64" else "float32"
        kept = inputs / ops.cast(1.0 - ops.cast(rate, wide), dtype)
        return ops.where(keep, kept, ops.zeros_like(inputs))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        if self.noise_shape is not None:
            config["noise_shape"] = list(self.noise_shape)
        return config


def mask_shape_problem(noise_shape, input_shape):
    """Why a dropout mask of `noise_shape` does not broadcast over an input of
    `input_shape` (None if it does)."""
    if len(noise_shape) != len(input_shape):
        return (
            f"it has {len(noise_shape)} axes, the input has {len(input_shape)} "
            f"(shape {tuple(input_shape)})"
        )
    for axis, (dim, size) in enumerate(zip(noise_shape, input_shape, strict=True)):
        if dim not in (None, 1) and size is not None and dim != size:
            return (
                f"its axis {axis} has size {dim}, neither 1 nor the input's size "
                f"{size} (shape {tuple(input_shape)})"
            )
    return None


class _SpatialDropout(BernoulliDropout):
    """Drops whole feature maps: one decision per example and channel."""

    rank = None  # the number of spatial axes, set by subclasses

    def __init__(
        self,
        rate: float | LearningRateSchedule,
        data_format: Literal["channels_last", "channels_first"] | None = None,
        seed: int | None = None,
        inserted_by: str | None = None,
        **kwargs: Any,
    ) -> None:
        if "noise_shape" in kwargs:
            raise TypeError(
                f"{type(self).__name__} takes no `noise_shape`: its mask is one "
                "decision per example and channel. Received: "
                f"noise_shape={kwargs['noise_shape']!r}"
            )
        super().__init__(rate, seed=seed, inserted_by=inserted_by, **kwargs)
        self.data_format = check_data_format(data_format)
        self.input_spec = keras.layers.InputSpec(ndim=self.rank + 2)

    def _mask_shape(self, inputs):
        # the rank is checked by the input spec, before `call`
        shape = ops.shape(inputs)
        ones = (1,) * self.rank
        if self.data_format == "channels_first":
            return (shape[0], shape[1], *ones)
        return (shape[0], *ones, shape[-1])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["data_format"] = self.data_format
        return config


@keras.saving.register_keras_serializable(package="keras_regs")
class SpatialDropout1D(_SpatialDropout):
    """Drops whole 1-D feature maps (channels), as `keras.layers.SpatialDropout1D`.

    `BernoulliDropout` with the mask shape `(batch, 1, channels)`: each channel of
    each example is kept (and scaled by `1 / (1 - rate)`) or zeroed at every step.
    Where neighbouring steps are strongly correlated (early convolutions),
    element-wise dropout hardly regularizes; dropping whole maps does.

    Args:
        rate: the fraction of channels dropped, a float in [0, 1), or a schedule.
        data_format: `"channels_last"` (`(batch, steps, channels)`) or
            `"channels_first"`; `None` takes `keras.config.image_data_format()`.
        seed: `None` or an integer: the seed of the layer's random sequence.
        inserted_by: as for `BernoulliDropout`.
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...).

    Example:

    ```python
    inputs = keras.Input((100, 8))
    x = keras.layers.Conv1D(16, 3, activation="relu")(inputs)
    x = keras_regs.layers.SpatialDropout1D(0.2, seed=13)(x)
    ```

    Reference: Tompson et al., "Efficient object localization using
    convolutional networks", CVPR 2015.
    """

    rank = 1


@keras.saving.register_keras_serializable(package="keras_regs")
class SpatialDropout2D(_SpatialDropout):
    """Drops whole 2-D feature maps (channels), as `keras.layers.SpatialDropout2D`.

    `BernoulliDropout` with the mask shape `(batch, 1, 1, channels)` (or
    `(batch, channels, 1, 1)` with `data_format="channels_first"`).

    Args:
        rate: the fraction of channels dropped, a float in [0, 1), or a schedule.
        data_format: `"channels_last"` or `"channels_first"`; `None` takes
            `keras.config.image_data_format()`.
        seed: `None` or an integer: the seed of the layer's random sequence.
        inserted_by: as for `BernoulliDropout`.
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...).

    Example:

    ```python
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
    x = keras_regs.layers.SpatialDropout2D(0.2, seed=13)(x)
    ```
    """

    rank = 2


@keras.saving.register_keras_serializable(package="keras_regs")
class SpatialDropout3D(_SpatialDropout):
    """Drops whole 3-D feature maps (channels), as `keras.layers.SpatialDropout3D`.

    `BernoulliDropout` with the mask shape `(batch, 1, 1, 1, channels)` (or
    `(batch, channels, 1, 1, 1)` with `data_format="channels_first"`).

    Args:
        rate: the fraction of channels dropped, a float in [0, 1), or a schedule.
        data_format: `"channels_last"` or `"channels_first"`; `None` takes
            `keras.config.image_data_format()`.
        seed: `None` or an integer: the seed of the layer's random sequence.
        inserted_by: as for `BernoulliDropout`.
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...).

    Example:

    ```python
    inputs = keras.Input((8, 8, 8, 1))
    x = keras.layers.Conv3D(4, 3, activation="relu")(inputs)
    x = keras_regs.layers.SpatialDropout3D(0.2, seed=13)(x)
    ```
    """

    rank = 3
