"""Contractive on convolutions (closed form) and the Hutchinson estimator."""

import keras
import numpy as np
import pytest
from keras import ops

from helpers import ACTIVATIONS, jacobian_norms, layer_configs, to_numpy
from keras_regs.layers import Contractive

RNG = np.random.default_rng(1)
L = keras.layers
DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)


class JvpConv1D(L.Conv1D):
    """Not a Conv1D to `closed_form_applies`: the wrapper takes the jvp paths."""


class JvpConv2D(L.Conv2D):
    """Not a Conv2D to `closed_form_applies`."""


class JvpDepthwiseConv1D(L.DepthwiseConv1D):
    """Not a DepthwiseConv1D to `closed_form_applies`."""


def conv_numpy(layer, activation):
    """The convolution `layer` in NumPy float64, written apart from Keras: every
    kernel tap's strided window of the padded input times that tap's weights."""
    kernel = to_numpy(layer.kernel).astype("float64")
    bias = to_numpy(layer.bias).astype("float64")
    rank = kernel.ndim - 2
    sizes = kernel.shape[:rank]
    strides, dilation = layer.strides, layer.dilation_rate
    channels_first = layer.data_format == "channels_first"

    def f(x):
        if channels_first:
            x = np.moveaxis(x, 1, -1)
        pads = []
        for n, k, s, d in zip(x.shape[1:-1], sizes, strides, dilation, strict=True):
            span = (k - 1) * d + 1
            if layer.padding == "valid":
                pads.append((0, 0))
            elif layer.padding == "causal":
                pads.append((span - 1, 0))
            else:  # "same": ceil(n / s) outputs, an odd padding's extra one after
                total = max((-(-n // s) - 1) * s + span - n, 0)
                pads.append((total // 2, total - total // 2))
        x = np.pad(x, [(0, 0), *pads, (0, 0)])
        out = [
            (n - (k - 1) * d - 1) // s + 1
            for n, k, s, d in zip(x.shape[1:-1], sizes, strides, dilation, strict=True)
        ]
        z = 0.0
        for tap in np.ndindex(*sizes):
            window = x[
                (slice(None),)
                + tuple(
                    slice(t * d, t * d + (o - 1) * s + 1, s)
                    for t, o, s, d in zip(tap, out, strides, dilation, strict=True)
                )
            ]
            if isinstance(layer, DEPTHWISE):  # output channel c * multiplier + m
                product = window[..., :, None] * kernel[tap]
                z = z + product.reshape(*window.shape[:-1], -1)
            else:
                per_in = kernel.shape[-2]
                groups = window.shape[-1] // per_in
                per_out = kernel.shape[-1] // groups
                z = z + np.concatenate(
                    [
                        window[..., g * per_in : (g + 1) * per_in]
                        @ kernel[tap][:, g * per_out : (g + 1) * per_out]
                        for g in range(groups)
                    ],
                    axis=-1,
                )
        y = ACTIVATIONS[activation](z + bias)
        return np.moveaxis(y, -1, 1) if channels_first else y

    return f


def penalty(wrapper, x):
    wrapper(ops.convert_to_tensor(x))
    return float(to_numpy(wrapper.losses[-1]))


def built(layer, shape):
    layer.build(shape)
    layer.bias.assign(RNG.normal(size=layer.bias.shape).astype("float32"))
    return layer


# (layer class, arguments, one example's shape): every option of the closed form
CASES = {
    "conv1d_valid": (L.Conv1D, {"filters": 3, "kernel_size": 3}, (7, 2)),
    "conv1d_causal_dilated": (
        L.Conv1D,
        {"filters": 3, "kernel_size": 3, "padding": "causal", "dilation_rate": 2},
        (7, 2),
    ),
    "conv1d_same_strided": (
        L.Conv1D,
        {"filters": 2, "kernel_size": 3, "padding": "same", "strides": 2},
        (7, 2),
    ),
    "conv2d_same": (
        L.Conv2D,
        {"filters": 3, "kernel_size": 3, "padding": "same"},
        (5, 5, 2),
    ),
    "conv2d_valid_strided": (
        L.Conv2D,
        {"filters": 3, "kernel_size": 3, "strides": 2},
        (5, 5, 2),
    ),
    "conv2d_same_strided": (
        L.Conv2D,
        {"filters": 3, "kernel_size": 2, "padding": "same", "strides": 2},
        (5, 5, 2),
    ),
    "conv2d_dilated": (
        L.Conv2D,
        {"filters": 3, "kernel_size": 2, "padding": "same", "dilation_rate": 2},
        (5, 5, 2),
    ),
    "conv2d_groups": (
        L.Conv2D,
        {"filters": 4, "kernel_size": 3, "padding": "same", "groups": 2},
        (5, 5, 2),
    ),
    # 2 filters, 3 x 3 outputs: on TensorFlow, keras.ops.add takes a tensor
    # whose last axis has the bias's size for channels_last and adds the bias
    # there (the layer's own output is then wrong, wrapped or not)
    "conv2d_channels_first": (
        L.Conv2D,
        {"filters": 2, "kernel_size": 3, "data_format": "channels_first"},
        (2, 5, 5),
    ),
    "conv3d": (
        L.Conv3D,
        {"filters": 2, "kernel_size": 2, "padding": "same"},
        (3, 3, 3, 2),
    ),
    "depthwise1d": (
        L.DepthwiseConv1D,
        {"kernel_size": 3, "depth_multiplier": 2},
        (7, 2),
    ),
    "depthwise2d_same_strided": (
        L.DepthwiseConv2D,
        {"kernel_size": 3, "padding": "same", "strides": 2},
        (5, 5, 2),
    ),
}


# Two activations per case, in turn: each activation on several layouts.
TURNS = ["tanh", "relu", "sigmoid", "gelu", "elu", "silu", "softplus", "linear"]


@pytest.mark.parametrize(
    "case, activation",
    [
        (case, TURNS[(i + j) % len(TURNS)])
        for i, case in enumerate(CASES)
        for j in range(2)
    ],
)
def test_closed_form_matches_finite_differences(case, activation):
    cls, arguments, shape = CASES[case]
    x = RNG.normal(size=(3, *shape)).astype("float32")
    layer = built(cls(activation=activation, **arguments), (None, *shape))
    wrapper = Contractive(layer, 0.7)
    outputs = wrapper(ops.convert_to_tensor(x))
    assert wrapper.closed_form
    # the layer's own output, as the layer computes it
    np.testing.assert_allclose(
        to_numpy(outputs), to_numpy(layer(x)), rtol=1e-6, atol=1e-6
    )
    expected = 0.7 * jacobian_norms(conv_numpy(layer, activation), x).mean()
    np.testing.assert_allclose(penalty(wrapper, x), expected, rtol=2e-3)
    mean = Contractive(layer, 0.7, reduction="mean")
    entries = np.prod(shape) * np.prod(outputs.shape[1:])
    np.testing.assert_allclose(penalty(mean, x), expected / entries, rtol=2e-3)


@pytest.mark.parametrize(
    "closed, through_jvp, arguments, shape",
    [
        (L.Conv2D, JvpConv2D, CASES["conv2d_same_strided"][1], (5, 5, 2)),
        (L.Conv2D, JvpConv2D, CASES["conv2d_groups"][1], (5, 5, 2)),
        (L.Conv1D, JvpConv1D, CASES["conv1d_causal_dilated"][1], (7, 2)),
        (L.DepthwiseConv1D, JvpDepthwiseConv1D, CASES["depthwise1d"][1], (7, 2)),
    ],
)
def test_closed_form_equals_the_exact_jvp_path(closed, through_jvp, arguments, shape):
    x = RNG.normal(size=(4, *shape)).astype("float32")
    layer = built(closed(activation="gelu", **arguments), (None, *shape))
    subclass = through_jvp(activation="gelu", **arguments)
    subclass.build((None, *shape))
    subclass.set_weights(layer.get_weights())
    fast, slow = Contractive(layer, 1.0), Contractive(subclass, 1.0)
    np.testing.assert_allclose(penalty(fast, x), penalty(slow, x), rtol=1e-5)
    assert fast.closed_form and not slow.closed_form


def conv_model(**contractive):
    inputs = keras.Input((5, 5, 2))
    conv = L.Conv2D(
        3, 3, padding="same", activation="tanh", bias_initializer="glorot_uniform"
    )
    h = Contractive(conv, name="contractive", **{"strength": 0.3, **contractive})(
        inputs
    )
    return keras.Model(inputs, L.Dense(1, name="out")(L.Flatten()(h))), conv


def test_the_penalty_is_in_compiled_fit_and_evaluate():
    model, conv = conv_model()
    x = RNG.normal(size=(8, 5, 5, 2)).astype("float32")
    y = RNG.normal(size=(8, 1)).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    data = np.mean((to_numpy(model.predict(x, verbose=0)) - y) ** 2)
    expected = 0.3 * jacobian_norms(conv_numpy(conv, "tanh"), x).mean()
    assert model.get_layer("contractive").closed_form
    loss = model.fit(x, y, batch_size=8, verbose=0).history["loss"][0]
    np.testing.assert_allclose(loss - data, expected, rtol=2e-3)
    np.testing.assert_allclose(
        model.evaluate(x, y, verbose=0) - data, expected, rtol=2e-3
    )


def test_saves_and_reloads_with_the_same_penalty(tmp_path):
    model, _ = conv_model()
    x = RNG.normal(size=(4, 5, 5, 2)).astype("float32")
    model.save(tmp_path / "conv.keras")
    reloaded = keras.saving.load_model(tmp_path / "conv.keras")
    assert layer_configs(reloaded) == layer_configs(model)
    assert reloaded.get_layer("contractive").closed_form
    np.testing.assert_array_equal(to_numpy(reloaded(x)), to_numpy(model(x)))
    assert [float(to_numpy(v)) for v in reloaded.losses] == [
        float(to_numpy(v)) for v in model.losses
    ]


# The Hutchinson estimator.

DRAWS = 400


def draws(wrapper, x):
    """`DRAWS` independent estimates of the one example `x`'s squared norm: its
    copies in one batch each get their own random vectors."""
    batch = ops.convert_to_tensor(np.repeat(x, DRAWS, axis=0))
    return to_numpy(wrapper._hutchinson(batch, False)).astype("float64")


def conv1d_exact(shape):
    layer = built(JvpConv1D(3, 3, activation="tanh"), (None, *shape))
    return layer, lambda x: jacobian_norms(conv_numpy(layer, "tanh"), x)[0]


def conv2d_exact(shape):
    """A layer with a closed form: the estimator is used all the same."""
    layer = built(L.Conv2D(2, 2, activation="sigmoid"), (None, *shape))
    return layer, lambda x: penalty(Contractive(layer, 1.0), x)


def layer_norm_exact(shape):
    layer = L.LayerNormalization()
    layer.build((None, *shape))
    return layer, lambda x: penalty(Contractive(layer, 1.0), x)


@pytest.mark.parametrize(
    "make, shape",
    [(conv1d_exact, (6, 2)), (conv2d_exact, (3, 3, 2)), (layer_norm_exact, (6,))],
    ids=["conv1d_subclass", "conv2d_closed_form_layer", "layer_normalization"],
)
def test_hutchinson_is_unbiased_and_more_samples_lower_its_variance(make, shape):
    x = RNG.normal(size=(1, *shape)).astype("float32")
    layer, exact = make(shape)
    variances = {}
    for samples, seed in ((1, 11), (4, 12)):
        wrapper = Contractive(
            layer, 1.0, estimator="hutchinson", samples=samples, seed=seed
        )
        assert not wrapper.closed_form
        estimates = draws(wrapper, x)
        variances[samples] = estimates.var(ddof=1)
        error = np.sqrt(variances[samples] / DRAWS)
        assert abs(estimates.mean() - exact(x)) < 3 * error
        # random, not the exact value: Rademacher vectors are exact only when
        # the columns of J are orthogonal
        assert variances[samples] > 1e-2 * exact(x) ** 2
    assert 0.1 < variances[4] / variances[1] < 0.5  # about 1 / 4


def test_hutchinson_penalty_is_the_batch_mean_of_the_estimates():
    layer, _ = conv1d_exact((6, 2))
    x = RNG.normal(size=(5, 6, 2)).astype("float32")
    for reduction, entries in (("sum", 1), ("mean", 6 * 2 * 4 * 3)):
        wrapper, twin = (
            Contractive(
                layer, 0.5, reduction, estimator="hutchinson", samples=3, seed=21
            )
            for _ in range(2)
        )
        first = penalty(wrapper, x)  # the twin draws the same vectors
        estimates = to_numpy(twin._hutchinson(ops.convert_to_tensor(x), False))
        np.testing.assert_allclose(first, 0.5 * estimates.mean() / entries, rtol=1e-6)
        assert penalty(wrapper, x) != first  # the next call draws new vectors


def test_hutchinson_trains_in_compiled_fit():
    inputs = keras.Input((6, 2))
    h = Contractive(
        JvpConv1D(3, 3, activation="tanh"),
        0.2,
        estimator="hutchinson",
        samples=2,
        seed=3,
        name="contractive",
    )(inputs)
    model = keras.Model(inputs, L.Dense(1)(L.Flatten()(h)))
    wrapper = model.get_layer("contractive")
    x = RNG.normal(size=(64, 6, 2)).astype("float32")
    y = RNG.normal(size=(64, 1)).astype("float32")
    # SGD(0): the loss minus the data loss is the penalty, an estimate of the
    # exact one (64 examples times 2 samples: near it)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    data = np.mean((to_numpy(model.predict(x, verbose=0)) - y) ** 2)
    exact = 0.2 * jacobian_norms(conv_numpy(wrapper.layer, "tanh"), x).mean()
    state = to_numpy(wrapper.seed_generator.state)
    loss = model.fit(x, y, batch_size=64, verbose=0).history["loss"][0]
    np.testing.assert_allclose(loss - data, exact, rtol=0.1)
    assert not np.array_equal(to_numpy(wrapper.seed_generator.state), state)
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0).history["loss"]
    assert np.all(np.isfinite(history))


def test_hutchinson_saves_and_reloads_its_settings_and_random_state(tmp_path):
    inputs = keras.Input((6, 2))
    h = Contractive(
        JvpConv1D(3, 3, activation="tanh"),
        0.2,
        estimator="hutchinson",
        samples=3,
        seed=5,
        name="contractive",
    )(inputs)
    model = keras.Model(inputs, L.Flatten()(h))
    x = RNG.normal(size=(4, 6, 2)).astype("float32")
    model(x)  # advances the random state
    model.save(tmp_path / "h.keras")
    reloaded = keras.saving.load_model(
        tmp_path / "h.keras", custom_objects={"JvpConv1D": JvpConv1D}
    )
    config = reloaded.get_layer("contractive").get_config()
    assert (config["estimator"], config["samples"], config["seed"]) == (
        "hutchinson",
        3,
        5,
    )
    states = [
        to_numpy(m.get_layer("contractive").seed_generator.state)
        for m in (model, reloaded)
    ]
    np.testing.assert_array_equal(*states)
    model(x), reloaded(x)  # the same next draws
    assert [float(to_numpy(v)) for v in reloaded.losses] == [
        float(to_numpy(v)) for v in model.losses
    ]


def test_an_exact_wrapper_saves_no_state_of_its_own():
    wrapper = Contractive(L.Conv2D(2, 3), 0.1, seed=4)
    store = {}
    wrapper.save_own_variables(store)
    assert store == {} and wrapper.seed_generator is None
    config = wrapper.get_config()
    assert (config["estimator"], config["samples"], config["seed"]) == ("exact", 1, 4)
    assert "seed" not in Contractive(L.Conv2D(2, 3), 0.1).get_config()


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        ({"estimator": "sampled"}, ValueError, "`estimator`.*estimator='sampled'"),
        ({"estimator": 1}, TypeError, "`estimator`.*estimator=1 \\(of type int\\)"),
        ({"samples": 0}, ValueError, "`samples`. Expected an integer >= 1.*samples=0"),
        ({"samples": 2.0}, TypeError, "`samples`.*samples=2.0 \\(of type float\\)"),
        ({"samples": True}, TypeError, "`samples`.*samples=True"),
        ({"seed": -1}, ValueError, "`seed`.*seed=-1"),
        ({"seed": "1"}, TypeError, "`seed`.*seed='1'"),
    ],
)
def test_bad_arguments(arguments, error, message):
    with pytest.raises(error, match=f"Invalid .* for argument {message}"):
        Contractive(L.Dense(2), 0.1, **{"estimator": "hutchinson", **arguments})
    config = Contractive(L.Dense(2), 0.1).get_config()
    with pytest.raises(error, match=message):
        Contractive.from_config({**config, **arguments})
