"""Every public class through get_config, JSON, and a .keras file in a new process."""

import json

import keras
import numpy as np
import pytest

import keras_regs
from helpers import (
    LAYERS,
    REGULARIZERS,
    assert_snapshots_equal,
    load_in_fresh_process,
    snapshot,
    to_numpy,
)


@pytest.mark.parametrize("name", sorted(REGULARIZERS))
def test_regularizer_config_and_json_round_trip(name):
    original = REGULARIZERS[name]()
    assert (
        original.get_config()
        == type(original).from_config(original.get_config()).get_config()
    )
    payload = json.dumps(keras.regularizers.serialize(original))
    restored = keras.regularizers.deserialize(json.loads(payload))
    assert type(restored) is type(original)
    assert restored.get_config() == original.get_config()
    assert all(type(v) in (float, str) for v in restored.get_config().values())
    x = np.random.default_rng(0).normal(size=(3, 6, 4)).astype("float32")
    assert float(to_numpy(restored(x))) == float(to_numpy(original(x))) > 0


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_config_and_json_round_trip(name):
    original = LAYERS[name]()
    restored = type(original).from_config(original.get_config())
    assert restored.get_config() == original.get_config()
    payload = json.dumps(keras.layers.serialize(original))
    restored = keras.layers.deserialize(json.loads(payload))
    assert type(restored) is type(original)
    assert restored.get_config() == original.get_config()


def every_class_model():
    """A model that uses every public keras_regs class at once."""
    inputs = keras.Input((6,))
    x = keras_regs.layers.GaussianNoise(0.2, name="noise")(inputs)
    x = keras.layers.Reshape((3, 2))(x)
    x = keras.layers.LSTM(
        4, return_sequences=True, activity_regularizer=keras_regs.RecurrentNorm(1e-3)
    )(x)
    x = keras.layers.GRU(
        4,
        return_sequences=True,
        activity_regularizer=keras_regs.RecurrentState(1e-3, reduction="mean"),
    )(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(
        16,
        activation="relu",
        kernel_regularizer=keras_regs.WeightL1(1e-3),
        bias_regularizer=keras_regs.WeightL2(1e-2, reduction="mean"),
        activity_regularizer=keras_regs.HiddenL1(1e-3, reduction="mean"),
    )(x)
    x = keras_regs.layers.BernoulliDropout(0.3, name="dropout")(x)
    x = keras_regs.layers.Contractive(
        keras.layers.Dense(8, activation="tanh"), 0.05, name="contractive"
    )(x)
    outputs = keras.layers.Dense(
        1,
        kernel_regularizer=keras_regs.WeightL2(1e-3),
        activity_regularizer=keras_regs.HiddenL1(1e-2),
    )(x)
    return keras.Model(inputs, outputs)


@pytest.mark.slow
def test_model_with_every_class_reloads_in_a_fresh_process(tmp_path):
    """Only `import keras_regs`, no custom_objects, safe_mode=True: nothing lost.

    Trained first, so the weights and the noise and dropout layers' random state
    are not their initial values.
    """
    model = every_class_model()
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 6)).astype("float32"), rng.normal(size=(64, 1))
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    path = tmp_path / "every_class.keras"
    model.save(path)
    before = snapshot(model, x)
    assert len(before["losses"]) == 8
    after = load_in_fresh_process(path, x)
    assert_snapshots_equal(before, after)


def test_reloaded_layers_continue_the_same_random_sequence(tmp_path):
    """The SeedGenerator state is saved: the next draws after loading are the
    draws the original would have made (Keras' own Dropout starts over)."""
    model = keras.Sequential(
        [
            keras.Input((32,)),
            keras_regs.layers.GaussianNoise(1.0),
            keras_regs.layers.BernoulliDropout(0.5),
        ]
    )
    x = np.ones((8, 32), "float32")
    for _ in range(3):
        model(x, training=True)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    for _ in range(2):
        np.testing.assert_array_equal(
            to_numpy(reloaded(x, training=True)), to_numpy(model(x, training=True))
        )


def test_penalties_config_json_round_trip_and_value():
    original = keras_regs.regularizers.Penalties(
        {"weight_l2": keras_regs.WeightL2(0.1), "weight_l1": keras_regs.WeightL1(0.2)},
        base=keras.regularizers.L2(0.3),
    )
    payload = json.dumps(keras.regularizers.serialize(original))
    restored = keras.regularizers.deserialize(json.loads(payload))
    assert type(restored) is keras_regs.regularizers.Penalties
    assert restored.get_config() == original.get_config()
    assert list(restored.penalties) == ["weight_l2", "weight_l1"]
    w = np.random.default_rng(0).normal(size=(5, 3)).astype("float64")
    expected = 0.1 * np.sum(w**2) + 0.2 * np.abs(w).sum() + 0.3 * np.sum(w**2)
    for penalties in (original, restored):
        value = penalties(w.astype("float32"))
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
        np.testing.assert_allclose(float(to_numpy(value)), expected, rtol=1e-6)
    with pytest.raises(TypeError, match="`penalties`"):
        keras_regs.regularizers.Penalties([keras_regs.WeightL2(0.1)])
    with pytest.raises(TypeError, match=r"`penalties\['weight_l2'\]`"):
        keras_regs.regularizers.Penalties({"weight_l2": "abc"})
