"""Property-based tests: random small architectures times random specs.

For every drawn model and spec:

- `regularize_model` then a `.keras` round trip gives equal penalties and
  predictions;
- `strip_regularization(regularize_model(m, **spec))` equals `m`;
- regularizing twice with the same spec equals regularizing once.

The budget is small and fixed (a seeded, database-free run of a few examples per
property) so that CI stays fast and every run draws the same cases.
"""

import json
import os
import tempfile

import keras
import numpy as np
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import keras_regs
from helpers import assert_snapshots_equal, snapshot, to_numpy

PROPERTY_SETTINGS = settings(
    max_examples=10,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
ACTIVATIONS = ["tanh", "relu", "sigmoid", None]


@st.composite
def architectures(draw):
    """A recipe: kind ("dense", "conv", "lstm"), widths and activations."""
    kind = draw(st.sampled_from(["dense", "conv", "lstm"]))
    widths = draw(st.lists(st.integers(2, 6), min_size=1, max_size=3))
    activations = draw(
        st.lists(
            st.sampled_from(ACTIVATIONS), min_size=len(widths), max_size=len(widths)
        )
    )
    return kind, widths, activations


def build(recipe):
    """A seeded Functional model from a recipe; the same recipe, the same model."""
    kind, widths, activations = recipe
    keras.backend.clear_session()
    init = keras.initializers.GlorotUniform(seed=0)
    x_in = keras.Input((8,), name="x")
    x = x_in
    if kind == "conv":
        x = keras.layers.Reshape((8, 1))(x)
        x = keras.layers.Conv1D(3, 3, kernel_initializer=init, name="conv")(x)
        x = keras.layers.Flatten()(x)
    elif kind == "lstm":
        x = keras.layers.Reshape((4, 2))(x)
        x = keras.layers.LSTM(
            3,
            return_sequences=True,
            kernel_initializer=init,
            recurrent_initializer=keras.initializers.Orthogonal(seed=2),
            name="lstm",
            seed=1,
        )(x)
        x = keras.layers.Flatten()(x)
    for i, (units, activation) in enumerate(zip(widths, activations, strict=True)):
        x = keras.layers.Dense(
            units,
            activation=activation,
            kernel_initializer=keras.initializers.GlorotUniform(seed=i + 1),
            bias_initializer=keras.initializers.RandomNormal(seed=i + 10),
            name=f"dense_{i}",
        )(x)
    out = keras.layers.Dense(2, kernel_initializer=init, name="out")(x)
    return keras.Model(x_in, out)


strengths = st.floats(1e-4, 1.0, allow_nan=False, allow_infinity=False)
rates = st.floats(0.0, 0.5)


@st.composite
def specs(draw, kind):
    """A regularize_model spec that fits the architecture's kind."""
    keys = ["weight_l1", "weight_l2", "hidden_l1", "input_noise", "hidden_dropout"]
    if kind == "lstm":
        keys += ["recurrent_norm", "recurrent_state"]
    chosen = draw(st.lists(st.sampled_from(keys), min_size=1, unique=True))
    spec = {}
    for key in chosen:
        if key == "hidden_dropout":
            spec[key] = draw(rates)
        elif key == "input_noise":
            spec[key] = draw(st.floats(0.0, 1.0))
        else:
            spec[key] = draw(strengths)
    spec["reduction"] = draw(st.sampled_from(["sum", "mean"]))
    spec["include_bias"] = draw(st.booleans())
    return spec


@st.composite
def cases(draw):
    recipe = draw(architectures())
    return recipe, draw(specs(recipe[0]))


X = np.random.default_rng(0).normal(size=(6, 8)).astype("float32")


def state(model):
    """Layer configs, weights, penalty values: what must come back equal."""
    model(X)
    return {
        "layers": json.loads(model.to_json())["config"]["layers"],
        "weights": [to_numpy(v) for v in model.weights],
        "losses": [float(to_numpy(loss)) for loss in model.losses],
        "predictions": to_numpy(model(X, training=False)),
    }


def assert_same(a, b):
    assert a["layers"] == b["layers"]
    assert a["losses"] == b["losses"]
    for u, v in zip(a["weights"], b["weights"], strict=True):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(a["predictions"], b["predictions"])


@seed(20261122)
@PROPERTY_SETTINGS
@given(cases())
def test_saved_and_loaded_gives_equal_penalties_and_predictions(case):
    recipe, spec = case
    model = keras_regs.regularize_model(build(recipe), **spec)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        before, after = snapshot(model, X), snapshot(loaded, X)
    assert_snapshots_equal(before, after)


@seed(20261122)
@PROPERTY_SETTINGS
@given(cases())
def test_strip_undoes_regularize(case):
    recipe, spec = case
    original = state(build(recipe))
    model = build(recipe)
    regularized = keras_regs.regularize_model(model, **spec)
    assert state(regularized)["layers"] != original["layers"]
    assert_same(state(keras_regs.strip_regularization(regularized)), original)


@seed(20261122)
@PROPERTY_SETTINGS
@given(cases())
def test_regularizing_twice_equals_once(case):
    recipe, spec = case
    once = state(keras_regs.regularize_model(build(recipe), **spec))
    model = keras_regs.regularize_model(build(recipe), **spec)
    twice = keras_regs.regularize_model(model, **spec)
    assert twice is model
    assert_same(state(twice), once)
