"""Property-based tests: random small models times random specs.

Two families of drawn models:

- small Dense/Conv/LSTM stacks (`architectures`, below), with the penalty
  keywords, the recurrent ones included;
- random Functional graphs (`tests/graphs.py`): Conv1D/Conv2D/Dense ->
  BatchNormalization -> activation chains, shared layers, branches merged with
  Add or Concatenate, nested Functional and Sequential models (one called
  twice), integer branches (an int input, maybe through an Identity or Reshape,
  into an Embedding), a second output, mixed precision; times every keyword of
  `regularize_model` in every form (numbers, dicts with patterns and
  reductions, aliases, the `noise` and `dropout` maps, `include_bias`,
  `reduction`, `seed`).

Properties, for every drawn model and spec:

1. inference is bit-identical (`predict`), the output dtypes and input names are
   kept, no noise or dropout follows an integer tensor, and what the docs say
   must be refused is refused with a ValueError naming the layer, leaving the
   model exactly as it was;
2. `strip_regularization(regularize_model(m, **spec))` has `m`'s config and
   predictions;
3. regularizing twice with the same spec equals regularizing once;
4. a `.keras` round trip (after two fit steps for some cases) gives equal
   penalties and predictions;
5. the weight penalty equals a NumPy computation from the documented selection
   and reductions;
6. graph hygiene: repeated regularize/preview/strip cycles do not leave nodes
   on the model's layers.

The budget is small and fixed (a seeded, database-free run of 10 examples per
property, no shrinking) so that CI stays fast and every run draws the same cases.
The long mode (docs/testing.md) draws more and shrinks failures:
`KERAS_REGS_PROPERTY_EXAMPLES=500`, and `KERAS_REGS_PROPERTY_SEED` for other cases.
"""

import gc
import json
import os
import tempfile

import graphs
import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, seed, settings
from hypothesis import strategies as st

import keras_regs
from helpers import (
    assert_snapshots_equal,
    assert_states_equal,
    model_state,
    snapshot,
    to_numpy,
)

# Graph surgery, saving and penalties are what these draw at random; the
# per-backend parts (steps, variables, loading) are tested on every backend
# elsewhere. CI runs them on TensorFlow and JAX, not again on PyTorch.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="random graphs: the TensorFlow and JAX passes (tests/test_properties.py)",
)

EXAMPLES = int(os.environ.get("KERAS_REGS_PROPERTY_EXAMPLES", "10"))
# The seed of the drawn cases. The graph properties' default was picked among
# 300 seeds as the one whose first 10 cases cover most of tests/graphs.py
# (stems, block kinds, integer paths, dtype policies, keywords and their forms).
_SEED = os.environ.get("KERAS_REGS_PROPERTY_SEED")
SEED = int(_SEED or 20261122)
GRAPH_SEED = int(_SEED or 121)
LONG = EXAMPLES > 10
PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=False,  # the seed below fixes the cases
    # CI: the drawn cases only; a failure is reported as drawn. The long mode
    # shrinks it to a small one.
    phases=[Phase.explicit, Phase.reuse, Phase.generate]
    + ([Phase.target, Phase.shrink] if LONG else []),
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
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
    """A seeded Functional model from a recipe; the same recipe, the same model
    (every layer named: no `clear_session`, which costs half a second a call)."""
    kind, widths, activations = recipe
    init = keras.initializers.GlorotUniform(seed=0)
    x_in = keras.Input((8,), name="x")
    x = x_in
    if kind == "conv":
        x = keras.layers.Reshape((8, 1), name="reshape")(x)
        x = keras.layers.Conv1D(3, 3, kernel_initializer=init, name="conv")(x)
        x = keras.layers.Flatten(name="flatten")(x)
    elif kind == "lstm":
        x = keras.layers.Reshape((4, 2), name="reshape")(x)
        x = keras.layers.LSTM(
            3,
            return_sequences=True,
            kernel_initializer=init,
            recurrent_initializer=keras.initializers.Orthogonal(seed=2),
            name="lstm",
            seed=1,
        )(x)
        x = keras.layers.Flatten(name="flatten")(x)
    for i, (units, activation) in enumerate(zip(widths, activations, strict=True)):
        x = keras.layers.Dense(
            units,
            activation=activation,
            kernel_initializer=keras.initializers.GlorotUniform(seed=i + 1),
            bias_initializer=keras.initializers.RandomNormal(seed=i + 10),
            name=f"dense_{i}",
        )(x)
    out = keras.layers.Dense(2, kernel_initializer=init, name="out")(x)
    return keras.Model(x_in, out, name="stack")


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


@seed(SEED)
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


@seed(SEED)
@PROPERTY_SETTINGS
@given(cases())
def test_strip_undoes_regularize(case):
    recipe, spec = case
    original = state(build(recipe))
    model = build(recipe)
    regularized = keras_regs.regularize_model(model, **spec)
    assert state(regularized)["layers"] != original["layers"]
    assert_same(state(keras_regs.strip_regularization(regularized)), original)


@seed(SEED)
@PROPERTY_SETTINGS
@given(cases())
def test_regularizing_twice_equals_once(case):
    recipe, spec = case
    once = state(keras_regs.regularize_model(build(recipe), **spec))
    model = keras_regs.regularize_model(build(recipe), **spec)
    twice = keras_regs.regularize_model(model, **spec)
    assert twice is model
    assert_same(state(twice), once)


# ---------------------------------------------------------------------------
# Random Functional graphs (tests/graphs.py) times every keyword


@st.composite
def graph_cases(draw, keywords=graphs.ALL_KEYWORDS, required=()):
    """A graph recipe and a spec template for it."""
    recipe = draw(graphs.recipes())
    return recipe, draw(graphs.templates(keywords, required))


def compiled(model, run_eagerly=False):
    model.compile(
        optimizer=keras.optimizers.SGD(0.01), loss="mse", run_eagerly=run_eagerly
    )
    return model


def prepare(case, run_eagerly=False):
    """The built, compiled model, its layout, the resolved spec, data and what
    the docs say must be refused."""
    recipe, template = case
    model = compiled(graphs.build(recipe), run_eagerly)
    nodes = graphs.layout(model)
    spec = graphs.resolve(template, nodes)
    x, y = graphs.data(model)
    refused, may_skip = graphs.refusals(nodes, spec)
    return model, nodes, spec, x, y, refused, may_skip


def as_list(outputs):
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [to_numpy(o) for o in outputs]


def predict(model, x):
    return as_list(model.predict(x, batch_size=len(x[0]), verbose=0))


def infer(model, x):
    """The predictions of one inference call, and `model.losses` after it."""
    outputs = as_list(model(x, training=False))
    return outputs, [float(to_numpy(loss)) for loss in model.losses]


def assert_bit_identical(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b, strict=True):
        assert u.dtype == v.dtype
        assert np.array_equal(u, v), np.max(np.abs(u.astype("float64") - v))


# TensorFlow's oneDNN kernels (on by default on x86) round a traced graph's
# fused MatMul + BiasAdd + Add differently when Keras runs two same-depth
# calls in another order, which any layer that is the identity at inference
# (keras.layers.Identity or Dropout as much as an inserted one) can cause
# after the two calls of a shared layer: `predict` then differs in the last
# bit, without keras_regs, and not with TF_ENABLE_ONEDNN_OPTS=0. Eager calls
# are compared bit for bit everywhere; `predict` bit for bit except there.
ONEDNN = (
    keras.backend.backend() == "tensorflow"
    and os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0"
)
_EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7, "float32": 2.0**-23}


def assert_predicted_alike(a, b):
    """`predict` outputs: bit-identical, or within two units in the last place
    of their dtype where oneDNN may reorder (see ONEDNN)."""
    if not ONEDNN:
        assert_bit_identical(a, b)
        return
    assert len(a) == len(b)
    for u, v in zip(a, b, strict=True):
        assert u.dtype == v.dtype
        u, v, eps = u.astype("float64"), v.astype("float64"), _EPS[str(u.dtype)]
        scale = max(float(np.max(np.abs(v), initial=0.0)), 1.0)
        np.testing.assert_allclose(u, v, rtol=2 * eps, atol=2 * eps * scale)


def regularize(model, spec, may_skip):
    """`(regularize_model(model, **spec), spec)`. Where it refuses, as the docs
    allow, noise or dropout on an integer input (naming it), the spec without
    those keywords (`input_noise`, `input_dropout`) is applied instead."""
    try:
        return keras_regs.regularize_model(model, **spec), spec
    except ValueError as error:
        names = [name for _, found in may_skip for name in found]
        if not any(f"'{name}'" in str(error) for name in names):
            raise
    skipped = {keyword for keyword, _ in may_skip}
    spec = {k: v for k, v in spec.items() if k not in skipped}
    return keras_regs.regularize_model(model, **spec), spec


def inserted_after_integers(model):
    """The inserted noise and dropout layers that take an integer tensor."""
    stochastic = (keras_regs.layers.GaussianNoise, keras_regs.layers.BernoulliDropout)
    found = []

    def visit(current):
        for layer in current.layers:
            if isinstance(layer, keras.Model):
                visit(layer)
            elif isinstance(layer, stochastic) and layer.inserted_by is not None:
                for node in layer._inbound_nodes:
                    if any(
                        "int" in str(t.dtype)
                        for t in keras.tree.flatten(node.input_tensors)
                    ):
                        found.append(layer.name)

    visit(model)
    return found


def wrapped_without_kernel(model):
    """The layers that `contractive` wrapped and that own no kernel: by default
    it wraps the hidden layers (docs/regularize-model.md: the layers that own a
    kernel-like weight), not the normalization or activation ending a block."""
    found = []

    def visit(current):
        for layer in current.layers:
            if isinstance(layer, keras.Model):
                visit(layer)
            elif (
                isinstance(layer, keras_regs.layers.Contractive)
                and layer.inserted_by == "contractive"
                and not any(len(w.shape) > 1 for w in layer.layer.trainable_weights)
            ):
                found.append(layer.layer.name)

    visit(model)
    return found


@seed(GRAPH_SEED)
@PROPERTY_SETTINGS
@given(graph_cases())
def test_graph_inference_is_bit_identical_and_refusals_change_nothing(case):
    model, _, spec, x, _, refused, may_skip = prepare(case)
    before = predict(model, x)
    eager = infer(model, x)[0] if ONEDNN else None
    if refused:
        state = model_state(model, x)
        with pytest.raises(ValueError) as info:
            keras_regs.regularize_model(model, **spec)
        # the refusal of an integer input (`input_noise`) counts as well
        names = [name for _, found in refused + may_skip for name in found]
        if all(found for _, found in refused):  # each reason names a layer
            assert any(f"'{name}'" in str(info.value) for name in names), (
                refused,
                str(info.value),
            )
        assert_states_equal(model_state(model, x), state)
        assert_bit_identical(predict(model, x), before)
        return
    result, spec = regularize(model, spec, may_skip)
    assert inserted_after_integers(result) == []
    contractive = spec.get("contractive")
    if contractive is not None and "pattern" not in (
        contractive if isinstance(contractive, dict) else {}
    ):  # by default: the hidden layers
        assert wrapped_without_kernel(result) == []
    assert [str(t.dtype) for t in result.outputs] == [
        str(t.dtype) for t in model.outputs
    ]
    assert [t.name for t in result.inputs] == [t.name for t in model.inputs]
    if ONEDNN:  # eager calls bit for bit, `predict` to the last bits
        assert_bit_identical(infer(result, x)[0], eager)
    assert_predicted_alike(predict(result, x), before)


@seed(GRAPH_SEED)
@PROPERTY_SETTINGS
@given(graph_cases())
def test_graph_strip_gives_back_the_config_and_predictions(case):
    model, _, spec, x, _, refused, may_skip = prepare(case)
    assume(not refused)
    config, (before, _) = model.get_config(), infer(model, x)
    result, _ = regularize(model, spec, may_skip)
    stripped = keras_regs.strip_regularization(result)
    assert stripped.get_config() == config
    after, losses = infer(stripped, x)
    assert losses == []
    assert_bit_identical(after, before)


def graph_state(model, x):
    """The config (compile settings included), weights, penalties and
    predictions of a model: what regularizing again must leave equal."""
    predictions, losses = infer(model, x)
    return {
        "config": json.loads(model.to_json()),
        "weights": [to_numpy(v) for v in model.weights],
        "losses": losses,
        "predictions": predictions,
    }


@seed(GRAPH_SEED)
@PROPERTY_SETTINGS
@given(graph_cases())
def test_graph_regularizing_twice_equals_once(case):
    model, _, spec, x, _, refused, may_skip = prepare(case)
    assume(not refused)
    once, spec = regularize(model, spec, may_skip)
    once_state = graph_state(once, x)
    twice = keras_regs.regularize_model(once, **spec)
    assert twice is once
    twice_state = graph_state(twice, x)
    assert twice_state["config"] == once_state["config"]
    assert twice_state["losses"] == once_state["losses"]
    for a, b in zip(twice_state["weights"], once_state["weights"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert_bit_identical(twice_state["predictions"], once_state["predictions"])


# A model compiled under mixed_float16 has a LossScaleOptimizer; loaded where
# the global policy is float32 it gets a plain one, and Keras skips the saved
# optimizer's variables with this warning (without keras_regs too). The
# property is about the model's penalties and predictions.
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
@seed(GRAPH_SEED)
@PROPERTY_SETTINGS
@given(graph_cases(), st.booleans())
def test_graph_saved_and_loaded_gives_equal_penalties_and_predictions(case, train):
    # Two fit steps where cheap: on TensorFlow, run eagerly (a traced train
    # step costs seconds; an eager JAX step, tens of seconds).
    train = train and keras.backend.backend() == "tensorflow"
    model, _, spec, x, y, refused, may_skip = prepare(case, run_eagerly=train)
    assume(not refused)
    model, _ = regularize(model, spec, may_skip)
    if train:  # noise and dropout act, BatchNormalization's statistics move
        model.fit(x, y, batch_size=3, epochs=1, shuffle=False, verbose=0)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        before, after = snapshot(model, x), snapshot(loaded, x)
    # Keras' own `Sequential.from_config` drops a Sequential's dtype policy (a
    # nested Sequential built under mixed_bfloat16 loads as the global policy,
    # with or without keras_regs); its layers keep theirs.
    for state in (before, after):
        for layer in state["config"]["config"]["layers"]:
            if layer["class_name"] == "Sequential":
                layer["config"].pop("dtype", None)
    assert_snapshots_equal(before, after)


@seed(GRAPH_SEED)
@PROPERTY_SETTINGS
@given(
    graph_cases(graphs.WEIGHT_KEYWORDS, required=("weight_l1", "weight_l2")),
)
def test_graph_weight_penalty_equals_numpy(case):
    model, nodes, spec, x, _, refused, may_skip = prepare(case)
    assume(not refused)
    result, spec = regularize(model, spec, may_skip)
    expected = graphs.weight_penalty(nodes, spec)
    total = sum(infer(result, x)[1])
    np.testing.assert_allclose(total, expected, rtol=1e-5, atol=1e-8)


def every_layer(model):
    found = []

    def visit(current):
        for layer in current.layers:
            if all(layer is not seen for seen in found):
                found.append(layer)
                if isinstance(layer, keras.Model):
                    visit(layer)

    visit(model)
    return found


@seed(GRAPH_SEED)
@PROPERTY_SETTINGS
@given(graph_cases())
def test_graph_cycles_leave_no_nodes_behind(case):
    model, _, spec, *_ = prepare(case)
    layers = every_layer(model)

    def cycle():
        try:
            keras_regs.preview(model, print_fn=lambda text: None, **spec)
            result = keras_regs.regularize_model(model, **spec)
        except ValueError:  # refused: must leave nothing behind either
            return
        keras_regs.strip_regularization(result)
        del result
        gc.collect()

    def nodes():
        # Dropped models' nodes go at the next keras_regs call once Python has
        # collected them; a nested model's, once the outer model's are gone
        # and Python has collected it too: two rounds.
        for _ in range(2):
            gc.collect()
            keras_regs.strip_regularization(model)  # nothing to strip: tidies
        return {layer.name: len(layer._inbound_nodes) for layer in layers}

    cycle()
    after_one = nodes()
    cycle()
    cycle()
    assert nodes() == after_one
