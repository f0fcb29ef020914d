"""Subclassed models for the save/load tests (importable by a fresh process)."""

import keras

import keras_regs
from zoo import seeded_dense


@keras.saving.register_keras_serializable(package="keras_regs_tests")
class PlainNet(keras.Model):
    """A subclassed MLP: regularize_model's penalties are not saved with it."""

    def __init__(self, units=6, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = seeded_dense(units, "hidden", 0)
        self.out = seeded_dense(2, "out", 1, activation=None)

    def call(self, x):
        return self.out(self.hidden(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="keras_regs_tests")
class Net(keras_regs.RegularizationMixin, PlainNet):
    """The same model with the mixin: it keeps regularize_model's penalties."""


@keras.saving.register_keras_serializable(package="keras_regs_tests")
class NetWithFromConfig(keras_regs.RegularizationMixin, keras.Model):
    """A model with its own from_config (as Keras advises for nested objects)."""

    def __init__(self, activation="tanh", **kwargs):
        super().__init__(**kwargs)
        self.activation = keras.activations.get(activation)
        self.hidden = seeded_dense(6, "hidden", 0, activation=self.activation)
        self.out = seeded_dense(2, "out", 1, activation=None)

    def call(self, x):
        return self.out(self.hidden(x))

    def get_config(self):
        activation = keras.activations.serialize(self.activation)
        return {**super().get_config(), "activation": activation}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["activation"] = keras.activations.deserialize(config["activation"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_regs_tests")
class Block(keras.layers.Layer):
    """A user's composite layer: builds its sublayers from its own arguments."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.inner = keras.layers.Dense(self.units, name="inner")
        self.norm = keras.layers.LayerNormalization(name="norm")
        self.proj = keras.layers.Dense(input_shape[-1], name="proj")
        self.inner.build(input_shape)
        self.norm.build((*input_shape[:-1], self.units))
        self.proj.build((*input_shape[:-1], self.units))

    def call(self, x):
        return x + self.proj(keras.activations.gelu(self.norm(self.inner(x))))

    def get_config(self):
        return {**super().get_config(), "units": self.units}
