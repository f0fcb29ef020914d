"""What the distribution scripts share: the model, the data, a weight diff."""

import keras
import numpy as np

import keras_regs

BATCH, EPOCHS, LEARNING_RATE = 16, 3, 0.1


def build():
    """A seeded MLP with weight and activity penalties through regularize_model
    (no noise or dropout: each replica would draw its own numbers)."""
    keras.utils.set_random_seed(0)
    x_in = keras.Input((5,))
    h = x_in
    for i, units in enumerate((8, 6)):
        h = keras.layers.Dense(
            units,
            activation="tanh",
            name=f"dense_{i}",
            kernel_initializer=keras.initializers.GlorotUniform(seed=i),
        )(h)
    out = keras.layers.Dense(
        2, name="out", kernel_initializer=keras.initializers.GlorotUniform(seed=9)
    )(h)
    return keras_regs.regularize_model(
        keras.Model(x_in, out), weight_l2=1e-2, weight_l1=1e-3, hidden_l1=1e-2
    )


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    return x, rng.normal(size=(64, 2)).astype("float32")


def fitted(logs=None):
    """Built, compiled and fitted under whatever distribution is current: the
    model and its losses (and, given a dict as `logs`, every History entry in it)."""
    model = build()
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="mse")
    x, y = data()
    history = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
    if logs is not None:
        logs.update(history.history)
    return model, history.history["loss"]


def weight_difference(a, b):
    return max(
        float(
            np.abs(
                keras.ops.convert_to_numpy(u.value)
                - keras.ops.convert_to_numpy(v.value)
            ).max()
        )
        for u, v in zip(a.weights, b.weights, strict=True)
    )
