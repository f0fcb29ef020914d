"""What the noise and dropout layers share: a held hyperparameter and saved seeds.

Two things Keras' own `Dropout` and `GaussianNoise` do not do:

- The hyperparameter (`rate`, `stddev`) lives in a float32 non-trainable variable,
  read inside `call`. A compiled train step therefore sees a new value assigned
  later (by the user or a callback) without being retraced; on JAX the variable
  is part of the state threaded through the jitted step. The Python value is kept
  beside it for `get_config`; loading weights sets it from the loaded variable,
  so what the layer reports is what it uses. The hyperparameter may also be a
  `keras.optimizers.schedules.LearningRateSchedule`, evaluated at the optimizer's
  step inside the step and clipped into the argument's range (the variable then
  holds the schedule's clipped value at step 0).
- The `SeedGenerator` state is written with the layer's variables on save and read
  back on load, so a reloaded model continues the same random sequence.

Like Keras' layers of those names, they are built at construction only when a
subclass does not define `build`; a subclass's `build(input_shape)` runs on the
first call, or on load, with the input shape. They never cast their input: at
inference the output is the input tensor itself, in training it is computed in
the input's floating-point dtype; an integer or boolean input is refused.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras.optimizers.schedules import LearningRateSchedule

from keras_regs import _keras, _schedule
from keras_regs._validation import FLOAT32_MAX, check_inserted_by, check_seed


def save_variables(store, variables):
    """`save_own_variables` of a layer that saves `variables` (its own and its
    random state)."""
    for i, variable in enumerate(variables):
        store[f"{i}"] = variable


def read_saved(layer, store, variables, what):
    """The values `store` holds for `variables`, each checked against its
    variable before any is assigned (a tampered or mismatched file changes
    nothing); `what` says what the layer saves, for the error."""
    if len(store.keys()) != len(variables):
        raise ValueError(
            f"Layer '{layer.name}' of type {type(layer).__name__} expects "
            f"{len(variables)} saved variables ({what}); the file holds "
            f"{len(store.keys())}."
        )
    values = [np.asarray(store[f"{i}"]) for i in range(len(variables))]
    for i, (variable, value) in enumerate(zip(variables, values, strict=True)):
        if value.shape != tuple(variable.shape):
            raise ValueError(
                f"Layer '{layer.name}' of type {type(layer).__name__} expects "
                f"saved variable {i} ({variable.name}) of shape "
                f"{tuple(variable.shape)}. Received: shape {value.shape}"
            )
    return values


class SeededLayer(keras.layers.Layer):
    """Base of the stochastic layers; `held` names the hyperparameter variable,
    `held_check(value, name)` validates a number for it, and `held_max` is the
    largest value a schedule's output is clipped to."""

    held = None  # the name of the hyperparameter, set by subclasses
    held_check = None  # its check, a function of (value, name), set by subclasses
    held_max = FLOAT32_MAX

    def __init__(
        self,
        value: float | LearningRateSchedule,
        seed: int | None = None,
        inserted_by: str | None = None,
        **kwargs: Any,
    ) -> None:
        autocast = kwargs.pop("autocast", False)
        if autocast is not False:
            raise ValueError(
                "Invalid value for argument `autocast`. Expected False (the layer "
                "returns its input in the input's own dtype). "
                f"Received: autocast={autocast!r}"
            )
        super().__init__(autocast=False, **kwargs)
        self.supports_masking = True
        self.seed = check_seed(seed)
        self.inserted_by = check_inserted_by(inserted_by)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self._held_value = value
        self._held_variable = self.add_weight(
            name=self.held,
            shape=(),
            dtype="float32",
            initializer=keras.initializers.Constant(self._initial(value)),
            trainable=False,
            autocast=False,
        )
        # No shape-dependent state: built now, unless a subclass defines `build`,
        # which then runs with the input shape on the first call or on load (as
        # Keras' own Dropout decides in its private `_build_at_init`).
        if type(self).build is keras.layers.Layer.build:
            self.built = True

    def _initial(self, value):
        """The variable's value: the number, or the schedule's value at step 0
        (clipped as in a step)."""
        if _schedule.is_schedule(value):
            return _schedule.clip_number(
                float(keras.ops.convert_to_numpy(value(0))), self.held_max
            )
        return value

    def _set_held(self, value):
        """A number takes effect in a compiled step; switching between a number
        and a schedule changes the traced step: compile the model again."""
        self._held_value = value
        self._held_variable.assign(self._initial(value))

    def _held_now(self):
        """The hyperparameter as the step uses it: the variable, or the schedule
        at the optimizer's step, clipped into [0, held_max]."""
        if _schedule.is_schedule(self._held_value):
            return _schedule.value(
                self._held_value, self, self.held, maximum=self.held_max
            )
        return self._held_variable

    def _check_input(self, inputs):
        """Refuse a tensor that is not floating point (noise on token ids, a
        division of an integer tensor): naming the layer and the dtype."""
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        if not keras.backend.is_float_dtype(dtype):
            raise TypeError(
                f"Invalid dtype for the input of {type(self).__name__} layer "
                f"'{self.name}'. Expected a floating-point tensor (float16, "
                f"bfloat16, float32 or float64). Received: inputs of dtype {dtype}"
            )
        return dtype

    def compute_output_spec(
        self, inputs: keras.KerasTensor, *args: Any, **kwargs: Any
    ) -> keras.KerasTensor:
        """The input's shape and dtype: the layer never casts its input."""
        dtype = self._check_input(inputs)
        return keras.KerasTensor(inputs.shape, dtype=dtype)

    def _stateful_variables(self):
        return _keras.own_variables(self) + [self.seed_generator.state]

    def save_own_variables(self, store: dict[str, Any]) -> None:
        save_variables(store, self._stateful_variables())

    def load_own_variables(self, store: dict[str, Any]) -> None:
        """Check every value before assigning any: a tampered or mismatched file
        changes nothing. The loaded hyperparameter is what the layer then uses
        and reports (`rate`, `get_config`), unless it holds a schedule."""
        variables = self._stateful_variables()
        values = read_saved(self, store, variables, f"{self.held} and the seed state")
        index = next(i for i, v in enumerate(variables) if v is self._held_variable)
        held = self._check_loaded(values[index])
        values[index] = np.asarray(held, "float32")
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value)
        if not _schedule.is_schedule(self._held_value) and np.float32(
            self._held_value
        ) != np.float32(held):
            self._held_value = held

    def _check_loaded(self, value):
        """The loaded hyperparameter as a Python float, checked as the
        constructor checks it: the shortest decimal that float32 rounds to the
        loaded value (0.1, not 0.10000000149011612)."""
        number = value.item()
        if isinstance(number, float) and abs(number) <= FLOAT32_MAX:
            number = float(str(np.float32(number)))
        try:
            return self.held_check(number, self.held)
        except (TypeError, ValueError) as error:
            raise type(error)(
                f"Cannot load the weights of layer '{self.name}' "
                f"({type(self).__name__}): the saved `{self.held}` is invalid. "
                f"{error}"
            ) from None

    def compute_output_shape(
        self, input_shape: tuple[int | None, ...]
    ) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {self.held: _schedule.to_config(self._held_value), "seed": self.seed}
        )
        if self.inserted_by is not None:
            config["inserted_by"] = self.inserted_by
        return config
