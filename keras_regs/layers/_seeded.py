"""What the noise and dropout layers share: a held hyperparameter and saved seeds.

Two things Keras' own `Dropout` and `GaussianNoise` do not do:

- The hyperparameter (`rate`, `stddev`) lives in a float32 non-trainable variable,
  read inside `call`. A compiled train step therefore sees a new value assigned
  later (by the user or a callback) without being retraced; on JAX the variable
  is part of the state threaded through the jitted step. The Python value is kept
  beside it for `get_config`. The hyperparameter may also be a
  `keras.optimizers.schedules.LearningRateSchedule`, evaluated at the optimizer's
  step inside the step (the variable then holds the schedule's value at step 0).
- The `SeedGenerator` state is written with the layer's variables on save and read
  back on load, so a reloaded model continues the same random sequence.
"""

import keras

from keras_regs import _keras, _schedule
from keras_regs._validation import check_inserted_by, check_seed


class SeededLayer(keras.layers.Layer):
    """Base of the stochastic layers; `held` names the hyperparameter variable."""

    held = None  # the name of the hyperparameter, set by subclasses

    def __init__(self, value, seed=None, inserted_by=None, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.seed = check_seed(seed)
        self.inserted_by = check_inserted_by(inserted_by)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self._held_value = value
        self._held_variable = self.add_weight(
            name=self.held,
            shape=(),
            dtype="float32",
            initializer=keras.initializers.Constant(_initial(value)),
            trainable=False,
            autocast=False,
        )
        # The layer has no shape-dependent state: it is built at construction.
        self.built = True

    def _set_held(self, value):
        """A number takes effect in a compiled step; switching between a number
        and a schedule changes the traced step: compile the model again."""
        self._held_value = value
        self._held_variable.assign(_initial(value))

    def _held_now(self):
        """The hyperparameter as the step uses it: the variable, or the schedule
        at the optimizer's step."""
        if _schedule.is_schedule(self._held_value):
            return _schedule.value(self._held_value, self, self.held)
        return self._held_variable

    def _stateful_variables(self):
        return _keras.own_variables(self) + [self.seed_generator.state]

    def save_own_variables(self, store):
        for i, variable in enumerate(self._stateful_variables()):
            store[f"{i}"] = variable

    def load_own_variables(self, store):
        variables = self._stateful_variables()
        if len(store.keys()) != len(variables):
            raise ValueError(
                f"Layer '{self.name}' of type {type(self).__name__} expects "
                f"{len(variables)} saved variables ({self.held} and the seed "
                f"state); the file holds {len(store.keys())}."
            )
        for i, variable in enumerate(variables):
            variable.assign(store[f"{i}"])

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {self.held: _schedule.to_config(self._held_value), "seed": self.seed}
        )
        if self.inserted_by is not None:
            config["inserted_by"] = self.inserted_by
        return config


def _initial(value):
    """The variable's value: the number, or the schedule's value at step 0."""
    if _schedule.is_schedule(value):
        return float(keras.ops.convert_to_numpy(value(0)))
    return value
