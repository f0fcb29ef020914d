"""Subclassed models for the save/load tests (importable by a fresh process)."""

import keras

import keras_regs


def _dense(units, name, seed, activation=None):
    return keras.layers.Dense(
        units,
        activation=activation,
        name=name,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        bias_initializer=keras.initializers.RandomNormal(seed=seed + 50),
    )


@keras.saving.register_keras_serializable(package="keras_regs_tests")
class Net(keras_regs.RegularizationMixin, keras.Model):
    """A subclassed MLP that keeps regularize_model's penalties."""

    def __init__(self, units=6, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = _dense(units, "hidden", 0, activation="tanh")
        self.out = _dense(2, "out", 1)

    def call(self, x):
        return self.out(self.hidden(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="keras_regs_tests")
class PlainNet(keras.Model):
    """The same model without the mixin: its penalties are not saved."""

    def __init__(self, units=6, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = _dense(units, "hidden", 0, activation="tanh")
        self.out = _dense(2, "out", 1)

    def call(self, x):
        return self.out(self.hidden(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="keras_regs_tests")
class NetWithFromConfig(keras_regs.RegularizationMixin, keras.Model):
    """A model with its own from_config (as Keras advises for nested objects)."""

    def __init__(self, activation="tanh", **kwargs):
        super().__init__(**kwargs)
        self.activation = keras.activations.get(activation)
        self.hidden = _dense(6, "hidden", 0, activation=self.activation)
        self.out = _dense(2, "out", 1)

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
