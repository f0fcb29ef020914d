"""Every layer kind in the table: the right weights, counted, saved, trained."""

import warnings

import keras
import numpy as np
import pytest

import keras_regs
from helpers import layer_configs, to_numpy

L = keras.layers
KERNEL = ("kernel",)
RECURRENT = ("kernel", "recurrent_kernel")

# name -> (input shape, input dtype, layer factory, names of the penalized weights)
CASES = {
    "Dense": ((6,), "float32", lambda: L.Dense(4), KERNEL),
    "EinsumDense": (
        (6,),
        "float32",
        lambda: L.EinsumDense("ab,bc->ac", 4, bias_axes="c"),
        KERNEL,
    ),
    "Conv1D": ((8, 3), "float32", lambda: L.Conv1D(2, 3), KERNEL),
    "Conv2D": ((6, 6, 2), "float32", lambda: L.Conv2D(2, 3), KERNEL),
    "Conv3D": ((4, 4, 4, 1), "float32", lambda: L.Conv3D(2, 2), KERNEL),
    "Conv1DTranspose": ((5, 3), "float32", lambda: L.Conv1DTranspose(2, 3), KERNEL),
    "Conv2DTranspose": ((4, 4, 2), "float32", lambda: L.Conv2DTranspose(2, 3), KERNEL),
    "Conv3DTranspose": (
        (3, 3, 3, 1),
        "float32",
        lambda: L.Conv3DTranspose(2, 2),
        KERNEL,
    ),
    "DepthwiseConv1D": (
        (8, 3),
        "float32",
        lambda: L.DepthwiseConv1D(3),
        KERNEL,  # Keras 3 names it "kernel"; saved as depthwise_regularizer
    ),
    "DepthwiseConv2D": (
        (6, 6, 2),
        "float32",
        lambda: L.DepthwiseConv2D(3),
        KERNEL,  # Keras 3 names it "kernel"; saved as depthwise_regularizer
    ),
    "SeparableConv1D": (
        (8, 3),
        "float32",
        lambda: L.SeparableConv1D(4, 3),
        ("depthwise_kernel", "pointwise_kernel"),
    ),
    "SeparableConv2D": (
        (6, 6, 2),
        "float32",
        lambda: L.SeparableConv2D(4, 3),
        ("depthwise_kernel", "pointwise_kernel"),
    ),
    "Embedding": ((5,), "int32", lambda: L.Embedding(10, 4), ("embeddings",)),
    "SimpleRNN": ((5, 4), "float32", lambda: L.SimpleRNN(3), RECURRENT),
    "LSTM": ((5, 4), "float32", lambda: L.LSTM(3), RECURRENT),
    "GRU": ((5, 4), "float32", lambda: L.GRU(3), RECURRENT),
    "Bidirectional": ((5, 4), "float32", lambda: L.Bidirectional(L.LSTM(3)), RECURRENT),
    "ConvLSTM1D": ((3, 6, 2), "float32", lambda: L.ConvLSTM1D(2, 3), RECURRENT),
}


def build(name):
    shape, dtype, make, _ = CASES[name]
    inputs = keras.Input(shape, dtype=dtype)
    x = make()(inputs)
    outputs = L.Dense(1, name="head")(L.Flatten()(x))
    return keras.Model(inputs, outputs)


def data(model, n=4):
    rng = np.random.default_rng(0)
    shape = (n, *model.inputs[0].shape[1:])
    if model.inputs[0].dtype == "int32":
        return rng.integers(0, 10, size=shape).astype("int32")
    return rng.normal(size=shape).astype("float32")


def total(model, x):
    model(x)
    return sum(float(to_numpy(loss)) for loss in model.losses)


def expected_l2(model, names, strength):
    """s * sum(W**2) over the tested layer's named weights and the head kernel.

    Every name must be found, and every kernel-like weight must be penalized: a
    table entry naming a weight that does not exist fails here.
    """
    tested = [
        v for v in model.weights if v.name in names and not v.path.startswith("head")
    ]
    assert {v.name for v in tested} == set(names), [v.path for v in model.weights]
    for v in model.trainable_weights:
        if len(v.shape) > 1 and v.name != "bias":
            assert v.regularizer is not None, v.path
    chosen = tested + [model.get_layer("head").kernel]
    return strength * sum(np.sum(to_numpy(v).astype("float64") ** 2) for v in chosen)


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_like_weights_are_penalized_saved_and_trained(name, tmp_path):
    model = build(name)
    x = data(model)
    keras_regs.regularize_model(model, weight_l2=0.1)
    value = total(model, x)
    np.testing.assert_allclose(
        value, expected_l2(model, CASES[name][3], 0.1), rtol=1e-5
    )
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert layer_configs(reloaded) == layer_configs(model)
    np.testing.assert_allclose(total(reloaded, x), value, rtol=1e-6)
    reloaded.compile(optimizer="sgd", loss="mse")
    loss = reloaded.fit(x, np.zeros((len(x), 1)), verbose=0).history["loss"][0]
    assert np.isfinite(loss)


def test_two_dimensional_biases_only_with_include_bias():
    """GRU (reset_after) and MultiHeadAttention have 2-D biases: still biases."""
    inputs = keras.Input((5, 8))
    attention = L.MultiHeadAttention(2, 4, name="mha")(inputs, inputs)
    outputs = L.Dense(1, name="head")(
        L.Flatten()(L.GRU(3, return_sequences=True, name="gru")(attention))
    )
    model = keras.Model(inputs, outputs)
    x = data(model)
    assert any(len(v.shape) == 2 and v.name == "bias" for v in model.weights)
    keras_regs.regularize_model(model, weight_l2=0.1)
    kernels = ("kernel", "recurrent_kernel")
    np.testing.assert_allclose(
        total(model, x), expected_l2(model, kernels, 0.1), rtol=1e-5
    )
    keras_regs.regularize_model(model, weight_l2=0.1, include_bias=True)
    every = sum(np.sum(to_numpy(v).astype("float64") ** 2) for v in model.weights)
    np.testing.assert_allclose(total(model, x), 0.1 * every, rtol=1e-5)


def test_multi_head_attention_projections_are_persisted(tmp_path):
    inputs = keras.Input((5, 8))
    outputs = L.Dense(1, name="head")(
        L.Flatten()(L.MultiHeadAttention(2, 4, name="mha")(inputs, inputs))
    )
    model = keras.Model(inputs, outputs)
    x = data(model)
    keras_regs.regularize_model(model, weight_l1=0.1)
    projections = [
        v for v in model.weights if v.path.startswith("mha/") and v.name == "kernel"
    ]
    assert len(projections) == 4
    expected = 0.1 * sum(
        np.abs(to_numpy(v)).sum()
        for v in projections + [model.get_layer("head").kernel]
    )
    np.testing.assert_allclose(total(model, x), expected, rtol=1e-5)
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(
        total(keras.saving.load_model(tmp_path / "m.keras"), x), expected, rtol=1e-6
    )
    # one attribute saves all four projections: a pattern may not split them
    with pytest.raises(ValueError, match="saves one penalty for .*could not be saved"):
        keras_regs.regularize_model(
            model, weight_l2={"strength": 0.1, "pattern": "mha/query/*"}
        )


def test_normalization_layers_only_when_a_pattern_asks():
    inputs = keras.Input((6,))
    x = L.BatchNormalization(name="bn")(L.Dense(4, name="dense")(inputs))
    model = keras.Model(inputs, L.Dense(1, name="head")(x))
    x = data(model)
    keras_regs.regularize_model(model, weight_l2=0.1)
    assert model.get_layer("bn").gamma.regularizer is None
    keras_regs.regularize_model(model, weight_l1={"strength": 0.1, "pattern": "bn"})
    bn = model.get_layer("bn")
    expected_l1 = 0.1 * (
        np.abs(to_numpy(bn.gamma)).sum() + np.abs(to_numpy(bn.beta)).sum()
    )
    l2 = 0.1 * sum(
        np.sum(to_numpy(model.get_layer(n).kernel) ** 2) for n in ("dense", "head")
    )
    np.testing.assert_allclose(total(model, x), expected_l1 + l2, rtol=1e-5)


def test_nested_models_are_walked_and_a_shared_layer_counts_once():
    shared = L.Dense(4, name="shared")
    inner_functional_in = keras.Input((4,))
    inner_functional = keras.Model(
        inner_functional_in,
        L.Dense(4, name="f_dense")(inner_functional_in),
        name="inner_f",
    )
    inner_sequential = keras.Sequential(
        [keras.Input((4,)), L.Dense(4, name="s_dense")], name="inner_s"
    )
    inputs = keras.Input((4,))
    x = shared(inner_sequential(inner_functional(shared(inputs))))
    model = keras.Model(inputs, L.Dense(1, name="head")(x))
    keras_regs.regularize_model(model, weight_l2=0.1)
    names = ["shared", "f_dense", "s_dense", "head"]
    layers = [
        model.get_layer("shared"),
        inner_functional.get_layer("f_dense"),
        inner_sequential.get_layer("s_dense"),
        model.get_layer("head"),
    ]
    assert [layer.name for layer in layers] == names
    expected = 0.1 * sum(np.sum(to_numpy(layer.kernel) ** 2) for layer in layers)
    x = data(model)
    np.testing.assert_allclose(total(model, x), expected, rtol=1e-5)
    assert len(model.losses) == 4
    # a pattern reaches into a nested model by variable path
    keras_regs.strip_regularization(model)
    keras_regs.regularize_model(
        model, weight_l1={"strength": 0.1, "pattern": "inner_s/*"}
    )
    np.testing.assert_allclose(
        total(model, x), 0.1 * np.abs(to_numpy(layers[2].kernel)).sum(), rtol=1e-6
    )


def test_simple_rnn_activity_penalty_is_kept_through_the_record(tmp_path):
    """SimpleRNN's config drops `activity_regularizer`: the model records the call."""
    inputs = keras.Input((5, 4))
    model = keras.Model(inputs, L.Dense(1)(L.SimpleRNN(3, name="rnn")(inputs)))
    keras_regs.regularize_model(model, hidden_l1=0.1)
    assert "keras_regs" in model.get_config()
    x = data(model)
    model(x)
    model.save(tmp_path / "rnn.keras")
    loaded = keras.saving.load_model(tmp_path / "rnn.keras")
    assert loaded.get_layer("rnn").activity_regularizer is not None
    loaded(x)
    np.testing.assert_allclose(
        [float(to_numpy(v)) for v in loaded.losses],
        [float(to_numpy(v)) for v in model.losses],
        rtol=1e-6,
    )


@keras.saving.register_keras_serializable(package="keras_regs_tests")
class Scale(keras.layers.Layer):
    """A user's layer with a kernel-like weight and its own regularizer argument."""

    def __init__(self, units=3, w_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.w_regularizer = keras.regularizers.get(w_regularizer)

    def build(self, shape):
        self.w = self.add_weight(
            shape=(shape[-1], self.units), name="w", regularizer=self.w_regularizer
        )

    def call(self, x):
        return x @ self.w

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "w_regularizer": keras.regularizers.serialize(self.w_regularizer),
        }


def scale_model():
    inputs = keras.Input((5,))
    return keras.Model(inputs, L.Dense(1, name="head")(Scale(name="scale")(inputs)))


def test_register_layer_saves_a_custom_layers_penalty_in_its_own_config(tmp_path):
    # not declared: it counts, the model records the call, and the note says how
    model = scale_model()
    with pytest.warns(
        keras_regs.KerasRegsWarning, match=r"keras_regs.register_layer\("
    ) as record:
        keras_regs.regularize_model(model, weight_l2=0.1)
    (note,) = [str(w.message) for w in record if "register_layer" in str(w.message)]
    assert note.splitlines()[-1] == "  scale (Scale): w"
    assert "keras_regs" in model.get_config()
    assert model.get_layer("scale").w_regularizer is None
    # declared: the layer's own config holds it, and the model records no call
    keras_regs.register_layer(Scale, {"w": "w_regularizer"})
    try:
        model = scale_model()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            keras_regs.regularize_model(model, weight_l2=0.1)
        assert model.get_config()["keras_regs"]["calls"] == []
        layer = model.get_layer("scale")
        assert isinstance(layer.w_regularizer, keras_regs.regularizers.Penalties)
        w, head = to_numpy(layer.w), to_numpy(model.get_layer("head").kernel)
        expected = 0.1 * (np.sum(w**2) + np.sum(head**2))
        model.save(tmp_path / "scale.keras")
        loaded = keras.saving.load_model(tmp_path / "scale.keras")
        np.testing.assert_allclose(
            sum(float(to_numpy(v)) for v in loaded.losses), expected, rtol=1e-5
        )
    finally:
        keras_regs.model.slots._REGISTERED.clear()


@pytest.mark.parametrize(
    "args, match",
    [
        ((int, {"w": "w_regularizer"}), "`cls`"),
        ((Scale, {}), "`weights`"),
        ((Scale, {"w": 3}), "`weights`"),
        ((Scale, {"w": "w_regularizer"}, 5), "`owner`"),
    ],
)
def test_register_layer_refuses_bad_arguments(args, match):
    with pytest.raises(TypeError, match=match):
        keras_regs.register_layer(*args)


def test_register_layer_with_a_misspelt_attribute_is_named_when_used():
    keras_regs.register_layer(Scale, {"w": "w_regulariser"})
    try:
        model = scale_model()
        with pytest.raises(ValueError, match=r"no attribute 'w_regulariser'"):
            keras_regs.regularize_model(model, weight_l2=0.1)
    finally:
        keras_regs.model.slots._REGISTERED.clear()
