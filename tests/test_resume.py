"""Resumed training equals uninterrupted training, random state included.

Train N epochs, save to `.keras`, load in a fresh process, train M more: the
losses and weights equal those of N + M epochs in one go (fixed seeds,
`shuffle=False`). The model uses every keras_regs class, so the random state of
its noise and dropout layers must come back too. The same experiment with Keras'
own `GaussianNoise` and `Dropout` shows what the test would catch: those layers
restart their random sequence after loading, and the resumed run diverges.
"""

import json
import textwrap

import keras
import numpy as np
import pytest

import keras_regs
from helpers import TESTS_DIR, run_python, seed_states, to_numpy
from zoo import every_class

FIRST, MORE = 2, 2

_RESUME = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {tests_dir!r})
    import numpy as np
    import keras_regs
    import keras
    from helpers import seed_states, to_numpy
    x, y = np.load(sys.argv[1]), np.load(sys.argv[2])
    results = {{}}
    for path in json.loads(sys.argv[3]):
        model = keras.saving.load_model(path, safe_mode=True)
        history = model.fit(
            x, y, batch_size=8, epochs={more}, shuffle=False, verbose=0
        )
        arrays = [to_numpy(v) for v in model.weights] + seed_states(model)
        np.savez(path + "_resumed.npz", *arrays)
        results[path] = history.history["loss"]
    print(json.dumps(results))
    """
)


def keras_layers_model():
    """The same shape of model with Keras' own noise and dropout layers."""
    x_in = keras.Input((6,), name="x")
    x = keras.layers.GaussianNoise(0.1, seed=5)(x_in)
    x = keras.layers.Dense(
        8,
        activation="tanh",
        kernel_initializer=keras.initializers.GlorotUniform(seed=0),
        kernel_regularizer=keras_regs.WeightL2(1e-2),
    )(x)
    x = keras.layers.Dropout(0.3, seed=6)(x)
    return keras.Model(x_in, keras.layers.Dense(2)(x))


def train(path, x, y, epochs):
    """Load the (uncompiled) starting point, compile, fit."""
    model = keras.saving.load_model(path)
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0)
    return model, history.history["loss"]


@pytest.mark.slow
def test_resumed_training_equals_uninterrupted_training(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 6)).astype("float32")
    y = rng.normal(size=(48, 2)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)

    starts, mids = {}, {}
    for name, build in (("keras_regs", every_class), ("keras", keras_layers_model)):
        keras.utils.set_random_seed(0)
        model = build()
        # Saved before compiling: Keras refuses to load the unbuilt optimizer of
        # a model compiled but never trained ("it has 20 variables whereas the
        # saved optimizer has 2").
        starts[name] = str(tmp_path / f"{name}_start.keras")
        model.save(starts[name])

    uninterrupted, first_part = {}, {}
    for name, start in starts.items():
        model, losses = train(start, x, y, FIRST + MORE)
        uninterrupted[name] = (model, losses)
        model, losses = train(start, x, y, FIRST)
        first_part[name] = losses
        mids[name] = str(tmp_path / f"{name}_mid.keras")
        model.save(mids[name])

    script = _RESUME.format(tests_dir=TESTS_DIR, more=MORE)
    resumed = json.loads(
        run_python(
            script,
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
            json.dumps(list(mids.values())),
        )
        .strip()
        .splitlines()[-1]
    )

    def compare(name):
        model, losses = uninterrupted[name]
        arrays = np.load(mids[name] + "_resumed.npz")
        resumed_arrays = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
        expected = [to_numpy(v) for v in model.weights] + seed_states(model)
        return (
            first_part[name] + resumed[mids[name]],
            losses,
            resumed_arrays,
            expected,
        )

    # keras_regs: the same losses, weights and random state, bit for bit.
    losses, expected_losses, arrays, expected = compare("keras_regs")
    assert len(seed_states(uninterrupted["keras_regs"][0])) == 4
    assert losses == expected_losses
    assert len(arrays) == len(expected)
    for a, b in zip(arrays, expected, strict=True):
        np.testing.assert_array_equal(a, b)

    # Keras' own layers: the resumed run draws other noise and other masks.
    losses, expected_losses, arrays, expected = compare("keras")
    assert losses[:FIRST] == expected_losses[:FIRST]
    assert losses[FIRST:] != expected_losses[FIRST:]
    assert any(not np.array_equal(a, b) for a, b in zip(arrays, expected, strict=True))
