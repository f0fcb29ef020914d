"""Contractive: the Jacobian penalty against float64 finite differences."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_regs
from helpers import ACTIVATIONS, jacobian_norms, layer_configs, to_numpy
from keras_regs.layers import Contractive

RNG = np.random.default_rng(0)


def dense_numpy(layer, activation):
    kernel, bias = (
        to_numpy(layer.kernel).astype("float64"),
        to_numpy(layer.bias).astype("float64"),
    )
    return lambda x: ACTIVATIONS[activation](x @ kernel + bias)


def conv_numpy(kernel, bias):
    """Conv1D, valid padding, stride 1, tanh, in NumPy float64."""

    def f(x):
        width = kernel.shape[0]
        steps = x.shape[1] - width + 1
        z = np.stack(
            [
                np.einsum("bkc,kcf->bf", x[:, t : t + width], kernel)
                for t in range(steps)
            ],
            axis=1,
        )
        return np.tanh(z + bias)

    return f


class JvpConv1D(keras.layers.Conv1D):
    """A Conv1D the closed form does not recognize (a subclass may change
    `call`): the wrapper takes the exact jvp path."""


def penalty(wrapper, x):
    wrapper(ops.convert_to_tensor(x))
    return float(to_numpy(wrapper.losses[-1]))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_closed_form_matches_finite_differences(activation):
    x = RNG.normal(size=(6, 5)).astype("float32")
    dense = keras.layers.Dense(
        4, activation=activation, bias_initializer="glorot_uniform"
    )
    wrapper = Contractive(dense, 0.7)
    assert penalty(wrapper, x) and wrapper.closed_form
    expected = 0.7 * jacobian_norms(dense_numpy(dense, activation), x).mean()
    np.testing.assert_allclose(penalty(wrapper, x), expected, rtol=2e-3)
    mean = Contractive(dense, 0.7, reduction="mean")
    np.testing.assert_allclose(penalty(mean, x), expected / (5 * 4), rtol=2e-3)


def test_einsum_dense_closed_form_matches_finite_differences():
    """A time axis: the Jacobian is block diagonal over time steps."""
    x = RNG.normal(size=(3, 4, 5)).astype("float32")
    layer = keras.layers.EinsumDense(
        "btc,cd->btd", (4, 3), bias_axes="d", activation="tanh"
    )
    wrapper = Contractive(layer, 1.0)
    penalty(wrapper, x)
    kernel, bias = (
        to_numpy(layer.kernel).astype("float64"),
        to_numpy(layer.bias).astype("float64"),
    )
    expected = jacobian_norms(
        lambda v: np.tanh(np.einsum("btc,cd->btd", v, kernel) + bias), x
    ).mean()
    assert wrapper.closed_form
    np.testing.assert_allclose(penalty(wrapper, x), expected, rtol=2e-3)


def test_jvp_fallback_matches_finite_differences_and_the_closed_form():
    x = RNG.normal(size=(3, 7, 2)).astype("float32")
    conv = JvpConv1D(3, 3, activation="tanh", bias_initializer="glorot_uniform")
    wrapper = Contractive(conv, 0.5)
    penalty(wrapper, x)
    assert not wrapper.closed_form
    reference = conv_numpy(
        to_numpy(conv.kernel).astype("float64"), to_numpy(conv.bias).astype("float64")
    )
    np.testing.assert_allclose(
        penalty(wrapper, x), 0.5 * jacobian_norms(reference, x).mean(), rtol=2e-3
    )
    # the same Dense layer through both paths
    dense = keras.layers.Dense(70, activation="sigmoid")  # 70 outputs: two jvp chunks
    xd = ops.convert_to_tensor(RNG.normal(size=(4, 70)).astype("float32"))
    closed = Contractive(dense, 1.0)
    closed(xd)
    through_jvp = float(to_numpy(ops.sum(closed._through_jvp(xd, False)))) / 4
    np.testing.assert_allclose(
        float(to_numpy(closed.losses[0])), through_jvp, rtol=1e-5
    )


def kernel_gradient(wrapper, x):
    """d penalty / d kernel by the backend's autodiff."""
    x = ops.convert_to_tensor(x)
    kernel = wrapper.layer.kernel
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            wrapper(x)
            value = wrapper.losses[-1]
        return to_numpy(tape.gradient(value, kernel.value))
    import jax

    def value_of(kernel_value):
        trainable = [
            kernel_value if v is kernel else v.value
            for v in wrapper.trainable_variables
        ]
        non_trainable = [v.value for v in wrapper.non_trainable_variables]
        _, _, losses = wrapper.stateless_call(
            trainable, non_trainable, x, return_losses=True
        )
        return losses[-1]

    return np.asarray(jax.grad(value_of)(kernel.value))


def numeric_gradient(value_of, kernel):
    grad = np.zeros_like(kernel)
    for index in np.ndindex(kernel.shape):
        step = np.zeros_like(kernel)
        step[index] = 1e-6
        grad[index] = (value_of(kernel + step) - value_of(kernel - step)) / 2e-6
    return grad


@pytest.mark.skipif(
    keras.backend.backend() not in ("tensorflow", "jax"), reason="autodiff helper"
)
def test_penalty_gradients_match_finite_differences():
    x = RNG.normal(size=(4, 3)).astype("float32")
    dense = keras.layers.Dense(2, activation="tanh", bias_initializer="glorot_uniform")
    wrapper = Contractive(dense, 1.0)
    wrapper(ops.convert_to_tensor(x))
    bias = to_numpy(dense.bias).astype("float64")

    def closed_value(kernel):
        return jacobian_norms(lambda v: np.tanh(v @ kernel + bias), x).mean()

    expected = numeric_gradient(closed_value, to_numpy(dense.kernel).astype("float64"))
    np.testing.assert_allclose(
        kernel_gradient(wrapper, x), expected, rtol=2e-3, atol=1e-5
    )

    xc = RNG.normal(size=(2, 4, 2)).astype("float32")
    conv = JvpConv1D(2, 2, activation="tanh", bias_initializer="glorot_uniform")
    fallback = Contractive(conv, 1.0)
    fallback(ops.convert_to_tensor(xc))
    conv_bias = to_numpy(conv.bias).astype("float64")

    def conv_value(kernel):
        return jacobian_norms(conv_numpy(kernel, conv_bias), xc).mean()

    expected = numeric_gradient(conv_value, to_numpy(conv.kernel).astype("float64"))
    np.testing.assert_allclose(
        kernel_gradient(fallback, xc), expected, rtol=2e-3, atol=1e-5
    )


def autoencoder(strength=0.1, inner=None):
    inputs = keras.Input((6,))
    dense = inner or keras.layers.Dense(4, activation="sigmoid", name="code")
    code = Contractive(dense, strength, name="contractive")(inputs)
    return keras.Model(inputs, keras.layers.Dense(6, name="decode")(code)), dense


def test_trains_in_fit_with_the_penalty_in_the_loss_and_shares_weights():
    model, dense = autoencoder(0.3)
    wrapper = model.get_layer("contractive")
    assert [id(v) for v in wrapper.trainable_weights] == [
        id(v) for v in dense.trainable_weights
    ]
    assert len(model.trainable_weights) == 4  # the wrapper adds none of its own
    x = RNG.normal(size=(32, 6)).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    loss = model.fit(x, x, batch_size=32, verbose=0).history["loss"][0]
    code = dense_numpy(dense, "sigmoid")
    decode = model.get_layer("decode")
    prediction = code(x) @ to_numpy(decode.kernel) + to_numpy(decode.bias)
    expected = np.mean((prediction - x) ** 2) + 0.3 * jacobian_norms(code, x).mean()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(x, x, epochs=5, batch_size=8, verbose=0).history["loss"]
    assert np.all(np.isfinite(history)) and history[-1] < history[0]


def test_saves_and_reloads(tmp_path):
    model, _ = autoencoder(0.2)
    x = RNG.normal(size=(8, 6)).astype("float32")
    model.save(tmp_path / "cae.keras")
    reloaded = keras.saving.load_model(tmp_path / "cae.keras")
    assert layer_configs(reloaded) == layer_configs(model)
    np.testing.assert_array_equal(to_numpy(reloaded(x)), to_numpy(model(x)))
    assert [float(to_numpy(v)) for v in reloaded.losses] == [
        float(to_numpy(v)) for v in model.losses
    ]
    assert reloaded.get_layer("contractive").get_config()["strength"] == 0.2


def test_a_backend_without_jvp_gets_a_clear_error(monkeypatch):
    def no_jvp(*args, **kwargs):
        raise NotImplementedError("jvp")

    monkeypatch.setattr(ops, "jvp", no_jvp)
    x = ops.convert_to_tensor(RNG.normal(size=(2, 5, 2)).astype("float32"))
    # hard_sigmoid has no closed form: the exact path needs jvp, as the estimator
    for estimator in ("exact", "hutchinson"):
        with pytest.raises(
            NotImplementedError, match=r"Contractive\(Conv1D\) needs keras.ops.jvp"
        ):
            conv = keras.layers.Conv1D(2, 2, activation="hard_sigmoid")
            Contractive(conv, 0.1, estimator=estimator)(x)
    # the closed forms need no jvp
    Contractive(keras.layers.Dense(2, activation="tanh"), 0.1)(
        ops.convert_to_tensor(RNG.normal(size=(2, 3)).astype("float32"))
    )
    Contractive(keras.layers.Conv1D(2, 2, activation="tanh"), 0.1)(x)


def test_bad_arguments():
    with pytest.raises(TypeError, match="argument `layer`.*Received: layer=3"):
        Contractive(3, 0.1)
    with pytest.raises(ValueError, match="strength=-1.0"):
        Contractive(keras.layers.Dense(2), -1.0)
    with pytest.raises(ValueError, match="reduction='max'"):
        Contractive(keras.layers.Dense(2), 0.1, reduction="max")


def deep_model():
    inputs = keras.Input((6,), name="x")
    h = keras.layers.Dense(5, activation="tanh", name="h1")(inputs)
    h = keras.layers.Dense(4, activation="sigmoid", name="h2")(h)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(h))


def test_regularize_model_wraps_hidden_layers_and_strip_unwraps(tmp_path):
    model = deep_model()
    x = RNG.normal(size=(8, 6)).astype("float32")
    before = to_numpy(model.predict(x, verbose=0))
    result = keras_regs.regularize_model(
        model, contractive=0.1, hidden_dropout=0.2, weight_l2=1e-3
    )
    names = [layer.name for layer in result.layers]
    assert names == [
        "x",
        "h1_contractive",
        "h1_dropout",
        "h2_contractive",
        "h2_dropout",
        "out",
    ]
    np.testing.assert_array_equal(to_numpy(result.predict(x, verbose=0)), before)
    # the penalty is the NumPy Jacobian norm of each hidden layer, on its own input
    h1, h2 = model.get_layer("h1"), model.get_layer("h2")
    a1 = dense_numpy(h1, "tanh")(x)
    expected = 0.1 * (
        jacobian_norms(dense_numpy(h1, "tanh"), x).mean()
        + jacobian_norms(dense_numpy(h2, "sigmoid"), a1).mean()
    )
    result(x)
    # each wrapper's own add_loss comes first; its inner layer's weight penalty after
    contractive = [
        float(to_numpy(result.get_layer(name).losses[0]))
        for name in ("h1_contractive", "h2_contractive")
    ]
    np.testing.assert_allclose(sum(contractive), expected, rtol=1e-4)
    # weight penalties still reach the wrapped layers' kernels
    assert h1.kernel.regularizer is not None
    assert (
        keras_regs.regularize_model(
            result, contractive=0.1, hidden_dropout=0.2, weight_l2=1e-3
        )
        is result
    )
    moved = keras_regs.regularize_model(
        result, contractive={"strength": 0.5, "pattern": "h2"}
    )
    assert [layer.name for layer in moved.layers if "contractive" in layer.name] == [
        "h2_contractive"
    ]
    assert moved.get_layer("h2_contractive").strength == 0.5
    moved.save(tmp_path / "m.keras")
    stripped = keras_regs.strip_regularization(
        keras.saving.load_model(tmp_path / "m.keras")
    )
    assert [layer.name for layer in stripped.layers] == ["x", "h1", "h2", "out"]
    np.testing.assert_array_equal(to_numpy(stripped.predict(x, verbose=0)), before)


def test_regularize_model_contractive_trains_and_previews():
    model = deep_model()
    rows = keras_regs.preview_rows(model, contractive=0.2)
    assert {(r["layer"], r["target"], r["strength"]) for r in rows} == {
        ("h1_contractive", "wraps h1", 0.2),
        ("h2_contractive", "wraps h2", 0.2),
    }
    result = keras_regs.regularize_model(
        model, contractive={"strength": 0.2, "reduction": "mean"}
    )
    assert result.get_layer("h1_contractive").reduction == "mean"
    result.compile(optimizer="adam", loss="mse")
    x = RNG.normal(size=(16, 6)).astype("float32")
    history = result.fit(x, x[:, :2], epochs=3, verbose=0).history["loss"]
    assert np.all(np.isfinite(history))


# Regressions found in review: each failed before its fix.


def test_the_wrapped_layers_activity_penalty_counts_once_on_both_paths():
    x = RNG.normal(size=(4, 6)).astype("float32")
    dense = keras.layers.Dense(
        5, activation="tanh", activity_regularizer=keras.regularizers.L1(1.0)
    )
    closed = Contractive(dense, 0.0)
    closed(ops.convert_to_tensor(x))
    activity = np.abs(dense_numpy(dense, "tanh")(x)).sum() / len(x)
    values = sorted(float(to_numpy(v)) for v in closed.losses)
    np.testing.assert_allclose(values, [0.0, activity], rtol=1e-5)

    norm = keras.layers.LayerNormalization(
        activity_regularizer=keras.regularizers.L1(1.0)
    )
    fallback = Contractive(norm, 0.0)
    out = fallback(ops.convert_to_tensor(x))
    values = sorted(float(to_numpy(v)) for v in fallback.losses)
    np.testing.assert_allclose(
        values, [0.0, np.abs(to_numpy(out)).sum() / len(x)], rtol=1e-5
    )
    model = keras.Sequential([keras.Input((6,)), fallback])
    model.compile(optimizer="sgd", loss="mse")
    assert np.isfinite(
        model.fit(x, x, verbose=0).history["loss"][0]
    )  # no leaked tracer


def test_jvp_fallback_on_more_than_two_chunks_of_inputs():
    x = RNG.normal(size=(2, 130)).astype("float32")  # 130 coordinates: 3 chunks
    wrapper = Contractive(keras.layers.Dense(3, activation="hard_sigmoid"), 1.0)
    assert not wrapper.closed_form
    dense = wrapper.layer
    wrapper(ops.convert_to_tensor(x))
    kernel, bias = (
        to_numpy(dense.kernel).astype("float64"),
        to_numpy(dense.bias).astype("float64"),
    )

    def hard_sigmoid(v):
        return np.clip(v / 6 + 0.5, 0, 1)

    expected = jacobian_norms(lambda v: hard_sigmoid(v @ kernel + bias), x).mean()
    np.testing.assert_allclose(float(to_numpy(wrapper.losses[0])), expected, rtol=2e-3)


def test_masks_pass_through_the_wrapper():
    tokens = keras.Input((None,), dtype="int32")
    embedded = keras.layers.Embedding(20, 4, mask_zero=True)(tokens)
    wrapped = Contractive(keras.layers.Dense(4, activation="tanh"), 0.1)(embedded)
    model = keras.Model(tokens, keras.layers.LSTM(3)(wrapped))
    short = to_numpy(model(np.array([[3, 5, 7]], "int32")))
    padded = to_numpy(model(np.array([[3, 5, 7, 0, 0]], "int32")))
    np.testing.assert_allclose(padded, short, rtol=1e-6)
    # a masked LSTM wrapped by regularize_model (its node passes mask=)
    seq = keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            keras.layers.Embedding(20, 4, mask_zero=True),
            keras.layers.Dense(4, name="d1"),
            keras.layers.LSTM(3, name="lstm"),
            keras.layers.Dense(1),
        ]
    )
    ids = np.array([[3, 5, 7, 0, 0]], "int32")
    before = to_numpy(seq(ids))
    result = keras_regs.regularize_model(
        seq, contractive={"strength": 0.1, "pattern": "d1"}
    )
    np.testing.assert_array_equal(to_numpy(result(ids)), before)
    result = keras_regs.regularize_model(
        seq, contractive={"strength": 0.1, "pattern": "lstm"}
    )
    np.testing.assert_array_equal(to_numpy(result(ids)), before)


def test_layers_with_integer_inputs_are_not_wrapped():
    tokens = keras.Input((6,), dtype="int32")
    pooled = keras.layers.GlobalAveragePooling1D()(
        keras.layers.Embedding(20, 4, name="embed")(tokens)
    )
    model = keras.Model(
        tokens, keras.layers.Dense(1)(keras.layers.Dense(4, name="hidden")(pooled))
    )
    result = keras_regs.regularize_model(model, contractive=0.1)
    assert [layer.name for layer in result.layers if "contractive" in layer.name] == [
        "hidden_contractive"
    ]
    result(np.arange(6)[None].astype("int32"))
    with pytest.raises(ValueError, match="'embed' takes or returns integer tensors"):
        keras_regs.regularize_model(
            model, contractive={"strength": 0.1, "pattern": "embed"}
        )


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow's XLA and jvp"
)
def test_jvp_wrappers_ask_tensorflow_for_no_xla():
    """XLA recompiles a TensorFlow step through jvp at every step: a wrapper on
    the jvp path makes `jit_compile="auto"` choose no XLA (on a GPU machine; a
    CPU-only one never takes XLA), a closed-form wrapper does not."""
    from keras.src.trainers.trainer import model_supports_jit

    def model(wrapper):
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(1)(wrapper(inputs)))

    closed = Contractive(keras.layers.Dense(3, activation="tanh"), 0.1)
    assert closed.closed_form and model_supports_jit(model(closed))
    for wrapper in (
        Contractive(keras.layers.Dense(3, activation="hard_sigmoid"), 0.1),
        Contractive(
            keras.layers.Dense(3, activation="tanh"), 0.1, estimator="hutchinson"
        ),
    ):
        assert not wrapper.closed_form and not model_supports_jit(model(wrapper))
    # read when compiled: LoRA enabled after wrapping takes the jvp path
    dense = keras.layers.Dense(3, activation="tanh")
    late = Contractive(dense, 0.1)
    late_model = model(late)
    assert model_supports_jit(late_model)
    dense.enable_lora(2)
    assert not late.closed_form and not model_supports_jit(late_model)


@pytest.mark.parametrize("estimator", ["exact", "hutchinson"])
def test_a_wrapped_blocks_own_activity_penalties_count_once(estimator):
    """A block (a Sequential) whose inner Dense has an activity penalty, on the
    jvp paths: the block's call inside the Jacobian-vector products adds no loss
    (it counted twice, and on JAX leaked a tracer)."""
    x = RNG.normal(size=(4, 3)).astype("float32")
    block = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(
                4, activation="tanh", activity_regularizer=keras_regs.HiddenL1(1.0)
            ),
        ]
    )
    inputs = keras.Input((3,))
    wrapper = Contractive(block, 0.0, estimator=estimator, seed=1)
    model = keras.Model(
        inputs, keras.layers.Dense(1, kernel_initializer="zeros")(wrapper(inputs))
    )
    kernel, bias = (to_numpy(v).astype("float64") for v in block.layers[0].weights)
    activity = np.abs(np.tanh(x @ kernel + bias)).sum() / len(x)
    model(x)
    np.testing.assert_allclose(
        sorted(float(to_numpy(v)) for v in model.losses), [0.0, activity], rtol=1e-5
    )
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    loss = model.fit(x, np.zeros((4, 1)), batch_size=4, verbose=0).history["loss"]
    np.testing.assert_allclose(loss, [activity], rtol=1e-5)
