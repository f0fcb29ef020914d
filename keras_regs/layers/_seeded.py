"""What the noise and dropout layers share: a held hyperparameter and saved seeds.

Two things Keras' own `Dropout` and `GaussianNoise` do not do:

- The hyperparameter (`rate`, `stddev`) lives in a float32 non-trainable variable,
  read inside `call`. A compiled train step therefore sees a new value assigned
  later (by the user, a callback or a schedule) without being retraced; on JAX the
  variable is part of the state threaded through the jitted step. The Python value
  is kept beside it for `get_config`.
- The `SeedGenerator` state is written with the layer's variables on save and read
  back on load, so a reloaded model continues the same random sequence.
"""

import keras

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
            initializer=keras.initializers.Constant(value),
            trainable=False,
            autocast=False,
        )
        # The layer has no shape-dependent state: it is built at construction.
        self.built = True

    def _set_held(self, value):
        self._held_value = value
        self._held_variable.assign(value)

    def _stateful_variables(self):
        return (
            self._trainable_variables
            + self._non_trainable_variables
            + [self.seed_generator.state]
        )

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
        config.update({self.held: self._held_value, "seed": self.seed})
        if self.inserted_by is not None:
            config["inserted_by"] = self.inserted_by
        return config
