"""The models that every save path is tried on, and their data."""

import keras
import numpy as np

import keras_regs


def seeded_dense(units, name, seed, activation="tanh", **kwargs):
    """A Dense layer with seeded kernel and bias initializers."""
    return keras.layers.Dense(
        units,
        activation=activation,
        name=name,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        bias_initializer=keras.initializers.RandomNormal(seed=seed + 50),
        **kwargs,
    )


def sequential():
    """Per-layer, by hand: every penalty slot and both layers, no regularize_model."""
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras_regs.layers.GaussianNoise(0.1, seed=1),
            seeded_dense(
                8,
                "dense_0",
                0,
                kernel_regularizer=keras_regs.WeightL1(1e-2),
                bias_regularizer=keras_regs.WeightL2(1e-2, reduction="mean"),
                activity_regularizer=keras_regs.HiddenL1(1e-2),
            ),
            keras_regs.layers.BernoulliDropout(0.2, seed=2),
            seeded_dense(2, "out", 1, activation=None),
        ]
    )


def functional():
    x_in = keras.Input((6,), name="x")
    h = seeded_dense(8, "dense_0", 0)(x_in)
    h = seeded_dense(6, "dense_1", 1)(h)
    model = keras.Model(x_in, seeded_dense(2, "out", 2, activation=None)(h))
    return keras_regs.regularize_model(
        model, weight_l2=1e-2, hidden_l1=1e-3, input_noise=0.1, hidden_dropout=0.2
    )


def nested():
    block = keras.Sequential(
        [
            keras.Input((8,)),
            seeded_dense(8, "inner_0", 3),
            seeded_dense(6, "inner_1", 4),
        ],
        name="block",
    )
    x_in = keras.Input((6,), name="x")
    h = block(seeded_dense(8, "dense_0", 0)(x_in))
    model = keras.Model(x_in, seeded_dense(2, "out", 2, activation=None)(h))
    return keras_regs.regularize_model(
        model,
        weight_l1=1e-3,
        hidden_l1={"strength": 1e-3, "pattern": "inner_*"},
        hidden_dropout=0.2,
    )


def multi_io():
    a, b = keras.Input((6,), name="a"), keras.Input((3,), name="b")
    h = keras.layers.Concatenate()(
        [seeded_dense(8, "dense_a", 0)(a), seeded_dense(4, "dense_b", 1)(b)]
    )
    h = seeded_dense(8, "dense_1", 2)(h)
    first = seeded_dense(2, "first", 3, activation=None)(h)
    second = seeded_dense(1, "second", 4, activation="sigmoid")(h)
    model = keras.Model([a, b], [first, second])
    return keras_regs.regularize_model(
        model,
        weight_l2={"strength": 1e-2, "reduction": "mean"},
        hidden_l1=1e-3,
        input_noise=0.05,
        hidden_dropout=0.1,
    )


def every_class():
    """Every keras_regs class, all through one regularize_model call."""
    x_in = keras.Input((6,), name="x")
    x = keras.layers.Reshape((3, 2))(x_in)
    x = keras.layers.LSTM(4, return_sequences=True, name="lstm", seed=3)(x)
    x = keras.layers.Flatten()(x)
    x = seeded_dense(8, "dense_0", 0)(x)
    x = seeded_dense(6, "dense_1", 1)(x)
    model = keras.Model(x_in, seeded_dense(2, "out", 2, activation=None)(x))
    return keras_regs.regularize_model(
        model,
        weight_l1=1e-3,
        weight_l2=1e-2,
        hidden_l1=1e-3,
        recurrent_norm=1e-3,
        recurrent_state={"strength": 1e-3, "reduction": "mean"},
        input_noise=0.1,
        hidden_dropout=0.2,
        contractive={"strength": 0.05, "pattern": "dense_*"},
        seed=5,
    )


MODELS = {
    "sequential": sequential,
    "functional": functional,
    "nested": nested,
    "multi_io": multi_io,
    "every_class": every_class,
}


def data(name, n=32):
    rng = np.random.default_rng(0)
    if name == "multi_io":
        x = [rng.normal(size=(n, 6)), rng.normal(size=(n, 3))]
        y = [rng.normal(size=(n, 2)), rng.integers(0, 2, size=(n, 1))]
        return [v.astype("float32") for v in x], [v.astype("float32") for v in y]
    x = rng.normal(size=(n, 6)).astype("float32")
    return x, rng.normal(size=(n, 2)).astype("float32")


def kerashub():
    """The KerasHub row: a tiny GPT-2 backbone (its config holds only its
    constructor arguments), regularized in place; never from_preset."""
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=40,
        num_layers=2,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=8,
    )
    return keras_regs.regularize_model(
        backbone, weight_l2=1e-2, hidden_dropout=0.2, seed=5
    )


def kerashub_data(n=8):
    rng = np.random.default_rng(0)
    x = {
        "token_ids": rng.integers(1, 40, size=(n, 8)).astype("int32"),
        "padding_mask": np.ones((n, 8), "int32"),
    }
    return x, rng.normal(size=(n, 8, 8)).astype("float32")
