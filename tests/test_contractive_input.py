"""Contractive with respect to the model's input (theanets' definition)."""

import json

import keras
import numpy as np
import pytest
from keras import ops

import keras_regs
from helpers import jacobian_norms, to_numpy
from keras_regs.layers import Contractive

RNG = np.random.default_rng(5)
X = RNG.normal(size=(6, 4)).astype("float32")
Y = RNG.normal(size=(6, 2)).astype("float32")
S = 0.5


def mlp(out_initializer="glorot_uniform"):
    """x -> Dense(5, tanh) -> BatchNorm -> Dropout -> Dense(3, sigmoid) -> Dense(2),
    the same weights at every call."""
    init = keras.initializers.GlorotUniform
    inputs = keras.Input((4,), name="x")
    h = keras.layers.Dense(
        5, activation="tanh", name="d1", kernel_initializer=init(seed=1)
    )(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Dropout(0.5, seed=1, name="drop")(h)
    h = keras.layers.Dense(
        3, activation="sigmoid", name="d2", kernel_initializer=init(seed=2)
    )(h)
    if out_initializer != "zeros":
        out_initializer = init(seed=3)
    outputs = keras.layers.Dense(
        2, name="out", kernel_initializer=out_initializer, bias_initializer="zeros"
    )(h)
    model = keras.Model(inputs, outputs)
    bn = model.get_layer("bn")  # statistics that are not the identity
    rng = np.random.default_rng(7)
    bn.moving_mean.assign(rng.normal(size=5).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=5).astype("float32"))
    return model


def layer(model, name):
    """The layer named `name`, wrapped or not."""
    for candidate in model.layers:
        inner = candidate.layer if isinstance(candidate, Contractive) else candidate
        if inner.name == name:
            return inner
    raise KeyError(name)


def numpy_hidden(model, kernel_1=None):
    """The two hidden outputs as functions of x, in float64, at inference (the
    dropout off, the batch normalization with its moving statistics)."""
    w = {
        name: [to_numpy(v).astype("float64") for v in layer(model, name).weights]
        for name in ("d1", "bn", "d2")
    }
    k1 = w["d1"][0] if kernel_1 is None else kernel_1
    gamma, beta, mean, variance = w["bn"]
    eps = layer(model, "bn").epsilon

    def h1(x):
        return np.tanh(x @ k1 + w["d1"][1])

    def h2(x):
        normal = (h1(x) - mean) / np.sqrt(variance + eps) * gamma + beta
        return 1 / (1 + np.exp(-(normal @ w["d2"][0] + w["d2"][1])))

    return h1, h2


def reference(model, x=X, kernel_1=None):
    """theanets' penalty: s * mean over the batch of ||d h_k / d x||_F**2, summed
    over the hidden layers, by finite differences."""
    return sum(S * jacobian_norms(h, x).mean() for h in numpy_hidden(model, kernel_1))


def wrappers(model):
    return [layer for layer in model.layers if isinstance(layer, Contractive)]


def penalties(model, x=X):
    model(x)
    return [float(to_numpy(loss)) for loss in model.losses]


def test_each_hidden_layer_against_finite_differences_and_unlike_wrt_layer():
    plain = mlp()
    model = keras_regs.regularize_model(plain, contractive=S, wrt="input")
    wrapped = wrappers(model)
    assert [(w.layer.name, w.wrt) for w in wrapped] == [
        ("d1", "input"),
        ("d2", "input"),
    ]
    h1, h2 = numpy_hidden(plain)
    expected = [S * jacobian_norms(h, X).mean() for h in (h1, h2)]
    np.testing.assert_allclose(penalties(model), expected, rtol=2e-3)
    # the per-layer Jacobian: the same for the first hidden layer (its input is
    # the model's), another number for the second
    per_layer = keras_regs.regularize_model(mlp(), contractive=S)
    layer_values = penalties(per_layer)
    np.testing.assert_allclose(layer_values[0], expected[0], rtol=2e-3)
    assert abs(layer_values[1] - expected[1]) > 0.05 * expected[1]


def test_in_compiled_fit_and_evaluate_with_the_dropout_training():
    """The loss is the data loss plus the penalties; the dropout in the path is
    active for the data loss (training) and off in the Jacobian's path."""
    model = keras_regs.regularize_model(mlp(), contractive=S, wrt="input")
    expected = reference(model)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    logs = model.fit(X, Y, batch_size=6, epochs=2, verbose=0).history
    np.testing.assert_allclose(logs["contractive"], [expected] * 2, rtol=2e-3)
    np.testing.assert_allclose(
        np.array(logs["loss"]) - logs["data_loss"], [expected] * 2, rtol=2e-3
    )
    result = model.evaluate(X, Y, batch_size=6, verbose=0, return_dict=True)
    np.testing.assert_allclose(result["contractive"], expected, rtol=2e-3)


def test_the_gradient_reaches_the_layers_before_the_hidden_layer():
    """The output layer is zero and the target too, so the data loss has no
    gradient: one SGD step moves the first kernel by -lr * d penalty / d k1,
    which the second layer's term feeds through the path (finite differences)."""
    model = keras_regs.regularize_model(
        mlp(out_initializer="zeros"), contractive=S, wrt="input"
    )
    kernel = to_numpy(layer(model, "d1").kernel).astype("float64")
    gradient = np.zeros_like(kernel)
    for index in np.ndindex(kernel.shape):
        step = np.zeros_like(kernel)
        step[index] = 1e-4
        up, down = (reference(model, kernel_1=kernel + s * step) for s in (1, -1))
        gradient[index] = (up - down) / 2e-4
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(X, np.zeros_like(Y), batch_size=6, epochs=1, verbose=0)
    moved = to_numpy(layer(model, "d1").kernel) - kernel
    # float32 against float64: 2e-5 where the largest step is 0.05
    np.testing.assert_allclose(moved, -0.1 * gradient, rtol=5e-3, atol=2e-5)
    assert np.abs(gradient).max() > 1e-3


def test_saved_loaded_and_stripped(tmp_path):
    model = keras_regs.regularize_model(mlp(), contractive=S, wrt="input")
    before = penalties(model)
    path = str(tmp_path / "wrt_input.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert [w.wrt for w in wrappers(restored)] == [
        "input",
        "input",
    ]
    np.testing.assert_allclose(penalties(restored), before, rtol=1e-6)
    config = json.loads(restored.to_json())
    assert keras.models.model_from_json(json.dumps(config)) is not None
    stripped = keras_regs.strip_regularization(restored)
    assert not wrappers(stripped)
    assert penalties(stripped) == []


def test_the_keyword_dict_and_a_second_call_switching_back():
    model = keras_regs.regularize_model(
        mlp(), contractive={"strength": S, "wrt": "input", "pattern": "d2"}
    )
    (wrapper,) = wrappers(model)
    assert (wrapper.layer.name, wrapper.wrt) == ("d2", "input")
    again = keras_regs.regularize_model(
        model, contractive={"strength": S, "pattern": "d2"}
    )
    (wrapper,) = wrappers(again)
    assert wrapper.wrt == "layer"
    np.testing.assert_allclose(
        penalties(again),
        penalties(
            keras_regs.regularize_model(
                mlp(), contractive={"strength": S, "pattern": "d2"}
            )
        ),
        rtol=1e-6,
    )


def test_hutchinson_with_respect_to_the_input_is_unbiased():
    """400 draws of the estimate for the second hidden layer: their mean within 3
    standard errors of the finite-difference value, and a spread above 0."""
    inputs = keras.Input((4,))
    h1 = keras.layers.Dense(5, activation="tanh", name="d1")(inputs)
    d2 = keras.layers.Dense(3, activation="sigmoid", name="d2")
    wrapper = Contractive(d2, 1.0, wrt="input", estimator="hutchinson", seed=3)
    model = keras.Model(inputs, wrapper(h1, source=inputs))
    x = X[:2]
    draws = np.array([penalties(model, x)[0] for _ in range(400)])
    k1, b1 = (to_numpy(v).astype("float64") for v in model.get_layer("d1").weights)
    k2, b2 = (to_numpy(v).astype("float64") for v in d2.weights)
    exact = jacobian_norms(
        lambda v: 1 / (1 + np.exp(-(np.tanh(v @ k1 + b1) @ k2 + b2))), x
    ).mean()
    error = draws.std(ddof=1) / np.sqrt(len(draws))
    assert draws.std() > 0
    assert abs(draws.mean() - exact) < 3 * error


def sequential():
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(5, name="d1"),
            keras.layers.Dense(2, name="out"),
        ]
    )


def test_what_cannot_be_done_is_refused_and_the_model_kept():
    model = sequential()
    before = json.dumps(model.get_config(), sort_keys=True)
    with pytest.raises(
        ValueError, match=r"Sequential model.*keras.Model\(model.inputs"
    ):
        keras_regs.regularize_model(model, contractive=S, wrt="input")
    assert json.dumps(model.get_config(), sort_keys=True) == before
    # the same layers as a Functional model: accepted
    functional = keras.Model(model.inputs, model.outputs)
    keras_regs.regularize_model(functional, contractive=S, wrt="input")
    with pytest.raises(ValueError, match="`wrt`.*`contractive` is not given"):
        keras_regs.regularize_model(mlp(), weight_l2=0.1, wrt="input")
    with pytest.raises(ValueError, match=r"wrt='inputs'"):
        keras_regs.regularize_model(mlp(), contractive=S, wrt="inputs")
    with pytest.raises(TypeError, match=r"contractive\['wrt'\]=1"):
        keras_regs.regularize_model(mlp(), contractive={"strength": S, "wrt": 1})
    # two inputs
    a, b = keras.Input((3,)), keras.Input((3,))
    h = keras.layers.Dense(4, name="h")(keras.layers.Concatenate()([a, b]))
    two = keras.Model([a, b], keras.layers.Dense(1)(h))
    with pytest.raises(ValueError, match="2 inputs"):
        keras_regs.regularize_model(
            two, contractive={"strength": S, "wrt": "input", "pattern": "h"}
        )
    # a shared layer has no one path
    x = keras.Input((3,))
    shared = keras.layers.Dense(3, name="shared")
    tied = keras.Model(x, keras.layers.Dense(1)(shared(shared(x))))
    with pytest.raises(ValueError, match="called more than once"):
        keras_regs.regularize_model(
            tied, contractive={"strength": S, "wrt": "input", "pattern": "shared"}
        )


def test_the_wrapper_by_hand_needs_a_source_and_a_graph():
    wrapper = Contractive(keras.layers.Dense(2), 0.1, wrt="input")
    with pytest.raises(ValueError, match="call it with the model's input as `source=`"):
        wrapper(keras.Input((3,)))
    eager = Contractive(keras.layers.Dense(2), 0.1, wrt="input")
    with pytest.raises(ValueError, match="call it on symbolic tensors"):
        eager(ops.ones((2, 3)), source=ops.ones((2, 3)))


def test_under_mixed_float16_the_path_is_found_and_the_penalty_is_float32():
    """Keras casts a float32 `source=` to float16 under `mixed_float16`: the
    wrapper keeps the graph's own input, so the path is found."""
    expected = reference(mlp())
    keras.config.set_dtype_policy("mixed_float16")
    model = keras_regs.regularize_model(mlp(), contractive=S, wrt="input")
    model(X)
    assert all(
        keras.backend.standardize_dtype(loss.dtype) == "float32"
        for loss in model.losses
    )
    np.testing.assert_allclose(sum(penalties(model)), expected, rtol=2e-2)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    logs = model.fit(X, Y, batch_size=6, epochs=1, verbose=0).history
    np.testing.assert_allclose(logs["contractive"], [expected], rtol=2e-2)


def test_a_reloaded_model_takes_the_same_call_again(tmp_path):
    """After a reload the wrapped layers are called through their wrappers only
    (no call of their own): still one call each, not a shared layer."""
    model = keras_regs.regularize_model(mlp(), contractive=S, wrt="input")
    path = str(tmp_path / "again.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    again = keras_regs.regularize_model(restored, contractive=2 * S, wrt="input")
    np.testing.assert_allclose(
        penalties(again), [2 * v for v in penalties(model)], rtol=1e-5
    )
    layered = keras_regs.regularize_model(
        keras.saving.load_model(path),
        contractive={"strength": S, "wrt": "input", "pattern": "d2"},
    )
    assert [w.layer.name for w in wrappers(layered)] == ["d2"]


class MaskedScale(keras.layers.Layer):
    """y = tanh(x * w) where the mask is on, 0 where it is off."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, x, mask=None):
        y = ops.tanh(x * self.w)
        if mask is not None:
            y = y * ops.cast(mask, y.dtype)[..., None]
        return y


class MarkPadding(keras.layers.Layer):
    """Masks the all-zero steps and passes the values on unchanged (unlike
    `Masking`, whose zeros would hide a lost mask from the Jacobian)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_mask(self, x, mask=None):
        return ops.any(ops.not_equal(x, 0), axis=-1)

    def call(self, x):
        return x


def test_the_mask_reaches_the_wrapped_layer_inside_the_jacobian():
    """With `source=` the wrapper has two tensor arguments and Keras hands its
    call no mask: it takes its input's. Masked steps have no Jacobian."""
    x = RNG.normal(size=(3, 4, 2)).astype("float32")
    x[0, 2:] = 0.0  # masked steps
    inputs = keras.Input((4, 2))
    marked = MarkPadding()(inputs)
    wrapper = Contractive(MaskedScale(), 1.0, wrt="input")
    model = keras.Model(inputs, wrapper(marked, source=inputs))
    mask = np.any(x != 0, axis=-1)

    def f(v):  # rows: coordinate by coordinate, each the batch's examples
        return np.tanh(v) * np.tile(mask, (len(v) // len(x), 1))[..., None]

    expected = jacobian_norms(f, x).mean()
    np.testing.assert_allclose(penalties(model, x), [expected], rtol=2e-3)
    assert expected < jacobian_norms(np.tanh, x).mean() * 0.9


def test_a_wrapper_called_twice_from_one_input_or_with_a_misplaced_source():
    inputs = keras.Input((3,))
    wrapper = Contractive(keras.layers.Dense(3), 0.1, wrt="input")
    h = wrapper(keras.layers.Dense(3)(inputs), source=inputs)
    with pytest.raises(ValueError, match="called twice on paths from the same input"):
        wrapper(h, source=inputs)
    per_layer = Contractive(keras.layers.Dense(3), 0.1)
    with pytest.raises(ValueError, match="has wrt='layer'.*given `source=`"):
        per_layer(inputs, source=inputs)


def test_a_dropout_called_in_training_on_the_path_is_off_in_the_jacobian():
    """Monte Carlo dropout (`training=True` in the graph) on the path: the
    penalty is still the deterministic one of the path at inference."""
    inputs = keras.Input((4,))
    h1 = keras.layers.Dense(5, activation="tanh", name="d1")(inputs)
    dropped = keras.layers.Dropout(0.5, seed=2)(h1, training=True)
    d2 = keras.layers.Dense(3, activation="sigmoid", name="d2")
    model = keras.Model(
        inputs, Contractive(d2, 1.0, wrt="input")(dropped, source=inputs)
    )
    k1, b1 = (to_numpy(v).astype("float64") for v in model.get_layer("d1").weights)
    k2, b2 = (to_numpy(v).astype("float64") for v in d2.weights)
    expected = jacobian_norms(
        lambda v: 1 / (1 + np.exp(-(np.tanh(v @ k1 + b1) @ k2 + b2))), X
    ).mean()
    for _ in range(3):
        np.testing.assert_allclose(penalties(model), [expected], rtol=2e-3)


def test_summary_values_the_activity_penalties_on_the_path_once():
    inputs = keras.Input((4,))
    h = keras.layers.Dense(
        5, activation="tanh", name="d1", activity_regularizer=keras_regs.HiddenL1(0.3)
    )(inputs)
    h = keras.layers.Dense(3, activation="sigmoid", name="d2")(h)
    plain = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    k1, b1 = (to_numpy(v).astype("float64") for v in plain.get_layer("d1").weights)
    expected = 0.3 * np.abs(np.tanh(X @ k1 + b1)).sum() / len(X)
    model = keras_regs.regularize_model(plain, contractive=S, wrt="input")
    rows = keras_regs.summary_rows(model, x=X)
    values = [r for r in rows if (r["layer"], r["target"]) == ("d1", "activity")]
    assert len(values) == 1
    np.testing.assert_allclose(values[0]["value"], expected, rtol=1e-5)
