"""Graph surgery that cannot go wrong (issue 15).

Inserting noise, dropout and contractive wrappers builds a new graph over the
user's very layers. These tests hold it to what the docs promise:

- no node, inserted layer or tensor is left behind on the user's layers by
  `regularize_model`, `strip_regularization` or `preview`, whatever is called
  how often (the graphs of dropped models go once Python collects them);
- a model built by hand from the same tensors is never disturbed;
- inputs keep their names and every attribute (`sparse`);
- inserted layers take their anchor's dtype policy: inference is bit-identical
  on float64 models and on float32 models regularized under `mixed_float16`;
- the feature-extractor idiom works on the returned and on the stripped model,
  and `keras_regs.layer_output` works on any;
- `contractive` with `reduction="mean"` gives each wrapped layer s / |Omega|.
"""

import gc

import keras
import numpy as np
import pytest

import keras_regs
from helpers import mlp, mlp_numpy, to_numpy

X = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")


def node_counts(model):
    """`{layer name: number of calls recorded on it}` for every layer."""
    return {layer.name: len(layer._inbound_nodes) for layer in model.layers}


def live(cls):
    gc.collect()
    # type(o), not isinstance: some objects (PyTorch's deprecated ones) warn on
    # `__class__`
    return sum(issubclass(type(o), cls) for o in gc.get_objects())


def settle(model):
    """Let Python collect the dropped models, then make one keras_regs call
    (here a strip of a model with nothing inserted: it changes nothing), which
    removes their nodes."""
    gc.collect()
    assert keras_regs.strip_regularization(model) is model


def cycle(model):
    """One regularize / same spec again / strip round, as a user writes it."""
    model = keras_regs.regularize_model(model, hidden_dropout=0.3, input_noise=0.1)
    model = keras_regs.regularize_model(model, hidden_dropout=0.3, input_noise=0.1)
    model = keras_regs.regularize_model(model, hidden_dropout=0.2, weight_l2=0.01)
    return keras_regs.strip_regularization(model)


def test_cycles_leave_no_node_and_no_inserted_layer_behind():
    original = mlp()
    expected = to_numpy(original(X))
    model = cycle(original)
    settle(model)
    counts, dropouts = node_counts(original), live(keras_regs.layers.BernoulliDropout)
    # one call of the user's model, one of the model in hand (the input layer:
    # the user's only, the model in hand has one of its own)
    assert counts == {"x": 1, "dense_0": 2, "dense_1": 2, "out": 2}, counts
    for _ in range(12):
        model = cycle(model)
        keras_regs.preview(model, hidden_noise=0.1, print_fn=lambda *a, **k: None)
    settle(model)
    assert node_counts(original) == counts
    assert live(keras_regs.layers.BernoulliDropout) == dropouts
    # both models still work, and the user's model saves as before
    np.testing.assert_array_equal(to_numpy(original(X)), expected)
    np.testing.assert_array_equal(to_numpy(model(X)), expected)
    assert model.get_config() == original.get_config()


def test_the_same_spec_again_adds_no_node():
    model = keras_regs.regularize_model(mlp(), hidden_dropout=0.3)
    counts = node_counts(model)
    again = keras_regs.regularize_model(model, hidden_dropout=0.3)
    assert again is model
    assert node_counts(model) == counts


def test_a_rebuild_that_fails_leaves_no_node(monkeypatch):
    model = mlp()
    counts = node_counts(model)

    def refuse(self, inputs, *args, **kwargs):
        raise RuntimeError("refused while building")

    monkeypatch.setattr(keras_regs.layers.GaussianNoise, "compute_output_spec", refuse)
    with pytest.raises(RuntimeError, match="refused while building"):
        keras_regs.regularize_model(model, hidden_noise=0.1)
    assert node_counts(model) == counts


def test_a_model_built_by_hand_from_the_same_tensors_is_left_alone(tmp_path):
    """Nodes another model holds are never moved or removed: its config (which
    names nodes by position) and its saved file stay as they were."""
    original = mlp()
    features = keras.Model(original.input, original.get_layer("dense_1").output)
    config = features.get_config()
    expected = to_numpy(features(X))
    model = original
    for _ in range(4):
        model = cycle(model)
    settle(model)
    assert features.get_config() == config
    features.save(tmp_path / "features.keras")
    loaded = keras.saving.load_model(tmp_path / "features.keras")
    np.testing.assert_allclose(to_numpy(loaded(X)), expected, rtol=1e-6)


# ---- inputs ---------------------------------------------------------------


def auto_named():
    inputs = keras.Input((5,))  # named `input_layer` by Keras
    x = keras.layers.Dense(4, activation="tanh", name="dense_0")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


@pytest.mark.parametrize("build", [auto_named, mlp], ids=["auto-named", "named"])
def test_inputs_keep_their_names_and_strip_gives_back_the_config(build):
    model = build()
    name = model.layers[0].name
    result = keras_regs.regularize_model(model, hidden_dropout=0.3, input_noise=0.1)
    assert result.layers[0].name == name
    assert result.get_layer(name) is result.layers[0]
    keras_regs.regularize_model(
        result, dropout={name: 0.2}
    )  # a pattern on the input's name selects it
    assert keras_regs.strip_regularization(result).get_config() == model.get_config()


def test_a_sparse_input_stays_sparse(backend):
    if backend not in ("tensorflow", "jax"):
        pytest.skip("sparse inputs: TensorFlow and JAX")
    inputs = keras.Input((5,), sparse=True)
    x = keras.layers.Dense(4, activation="tanh", name="dense_0")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    result = keras_regs.regularize_model(model, hidden_dropout=0.3)
    assert result.inputs[0].sparse
    assert result.layers[0].get_config() == model.layers[0].get_config()
    assert keras_regs.strip_regularization(result).get_config() == model.get_config()


# ---- dtype policies -------------------------------------------------------

SPEC = {"output_noise": 0.3, "hidden_dropout": 0.4, "input_noise": 0.2}


def test_a_float64_model_stays_float64_and_bit_identical(backend):
    if backend == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("JAX computes in float64 only with jax_enable_x64")
    keras.config.set_dtype_policy("float64")
    model = mlp()
    keras.config.set_dtype_policy("float32")
    x = X.astype("float64")
    expected = to_numpy(model(x))
    result = keras_regs.regularize_model(model, **SPEC)
    assert result.outputs[0].dtype == "float64"
    got = to_numpy(result(x))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, expected)
    _, reference = mlp_numpy(model, x)
    # (on PyTorch the float32 input reaches the float64 layers through a
    # float32 step: the output agrees with NumPy's float64 to 1e-7 only)
    np.testing.assert_allclose(got, reference, rtol=1e-6, atol=1e-6)
    # the noise after the output computes in float64; the input noise in the
    # input's dtype (keras.Input's default is floatx(), float32)
    assert result.get_layer("out_noise").dtype_policy.name == "float64"
    assert result.get_layer("x_noise").dtype_policy.name == model.inputs[0].dtype


def test_a_float32_model_regularized_under_mixed_precision_is_bit_identical():
    model = mlp()
    expected = to_numpy(model.predict(X, verbose=0))
    keras.config.set_dtype_policy("mixed_float16")
    result = keras_regs.regularize_model(model, contractive=0.1, **SPEC)
    keras.config.set_dtype_policy("float32")
    np.testing.assert_array_equal(to_numpy(result.predict(X, verbose=0)), expected)
    policies = {
        layer.dtype_policy.name
        for layer in result.layers
        if not isinstance(layer, keras.layers.InputLayer)
    }
    assert policies == {"float32"}, policies


# ---- the feature-extractor idiom ------------------------------------------


def hidden_reference(model, x, index):
    hidden, _ = mlp_numpy(model, x)
    return hidden[index]


def test_the_feature_extractor_idiom_works_on_the_returned_and_stripped_model():
    original = mlp()
    result = keras_regs.regularize_model(original, hidden_dropout=0.3)
    features = keras.Model(result.input, result.get_layer("dense_1").output)
    np.testing.assert_allclose(
        to_numpy(features(X)), hidden_reference(original, X, 1), rtol=1e-5
    )
    # (a model built by hand from `result`'s tensors holds its calls first:
    # they stay first, see the next test; here it is dropped before the strip)
    del features
    gc.collect()
    stripped = keras_regs.strip_regularization(result)
    features = keras.Model(stripped.input, stripped.get_layer("dense_0").output)
    np.testing.assert_allclose(
        to_numpy(features(X)), hidden_reference(original, X, 0), rtol=1e-5
    )


def test_layer_output_gives_each_model_its_own_tensor():
    original = mlp()
    result = keras_regs.regularize_model(original, hidden_dropout=0.3)
    for model in (original, result):
        features = keras.Model(model.input, keras_regs.layer_output(model, "dense_1"))
        np.testing.assert_allclose(
            to_numpy(features(X)), hidden_reference(original, X, 1), rtol=1e-5
        )
        assert features.get_layer("dense_1") is original.get_layer("dense_1")


def test_layer_output_of_a_shared_layer_needs_the_call():
    inputs = keras.Input((5,), name="x")
    shared = keras.layers.Dense(5, activation="tanh", name="shared")
    first = shared(inputs)
    second = shared(first)
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(second))
    with pytest.raises(ValueError, match=r"called 2 times.*call=None"):
        keras_regs.layer_output(model, "shared")
    assert keras_regs.layer_output(model, "shared", call=1) is second
    assert keras_regs.layer_output(model, shared, call=np.int64(0)) is first
    with pytest.raises(ValueError, match="call=2"):
        keras_regs.layer_output(model, "shared", call=2)
    with pytest.raises(ValueError, match="layer='nope'"):
        keras_regs.layer_output(model, "nope")


# ---- contractive with reduction="mean" ------------------------------------


def test_contractive_mean_gives_each_layer_its_share():
    """Each of the |Omega| = 2 hidden layers gets s / 2: the whole term is
    s / |Omega| * sum over layers of mean over batch and Jacobian entries of
    (dh_j/dx_i)**2, with dh_j/dx_i = (1 - h_j**2) W_ij for a tanh Dense."""
    strength = 0.6
    model = mlp()
    result = keras_regs.regularize_model(model, contractive=strength, reduction="mean")
    wrappers = [layer for layer in result.layers if layer.name.endswith("contractive")]
    assert [w.strength for w in wrappers] == [strength / 2] * 2
    result(X)
    hidden, _ = mlp_numpy(model, X)
    terms = []
    for name, h in zip(["dense_0", "dense_1"], hidden, strict=True):
        kernel = to_numpy(model.get_layer(name).kernel).astype("float64")
        jacobian = (1 - h**2)[:, None, :] * kernel[None, :, :]  # (batch, in, out)
        terms.append(np.mean(jacobian**2))
    expected = strength / 2 * sum(terms)
    np.testing.assert_allclose(
        sum(float(to_numpy(loss)) for loss in result.losses), expected, rtol=1e-5
    )


def assert_every_call_names_existing_calls(*models):
    """Every tensor a kept call takes names (by position) the call that made it:
    removing nodes never leaves a call whose input names a call that is gone."""
    for model in models:
        for layer in model.layers:
            for node in layer._inbound_nodes:
                for tensor in node.input_tensors:
                    operation, index, position = tensor._keras_history
                    if operation is None:
                        continue
                    assert index < len(operation._inbound_nodes), (layer.name, index)
                    made = operation._inbound_nodes[index].outputs[position]
                    assert made is tensor, (layer.name, operation.name, index)


def test_nodes_kept_for_a_hand_built_model_keep_their_whole_graph():
    """A dropped model's calls that cannot go (a hand-built model holds a later
    call of the same layer) stay with every call they take inputs from."""
    model = mlp()
    result = keras_regs.regularize_model(model, hidden_dropout=0.3)
    features = keras.Model(model.input, keras_regs.layer_output(model, "dense_1"))
    del result
    settle(model)
    keras_regs.regularize_model(model, weight_l2=1e-4)
    assert_every_call_names_existing_calls(model, features)
    # the documented way works on both models
    rebuilt = keras.Model(model.input, keras_regs.layer_output(model, "dense_1"))
    np.testing.assert_allclose(
        to_numpy(rebuilt(X)), hidden_reference(model, X, 1), rtol=1e-5
    )
    np.testing.assert_allclose(
        to_numpy(features(X)), hidden_reference(model, X, 1), rtol=1e-5
    )


class TwoOutputs(keras.layers.Layer):
    """A layer with a kernel that returns two tensors."""

    def build(self, shape):
        self.kernel = self.add_weight(shape=(shape[-1], 3), name="kernel")

    def call(self, x):
        y = keras.ops.tanh(x @ self.kernel)
        return y, 2 * y

    def compute_output_shape(self, shape):
        return (shape[:-1] + (3,), shape[:-1] + (3,))


def test_contractive_by_default_skips_a_layer_of_several_outputs():
    inputs = keras.Input((5,), name="x")
    a, b = TwoOutputs(name="two")(inputs)
    hidden = keras.layers.Dense(4, activation="tanh", name="dense")(inputs)
    merged = keras.layers.Concatenate()([a, b, hidden])
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(merged))
    result = keras_regs.regularize_model(model, contractive=0.1)
    wrapped = sorted(
        layer.layer.name
        for layer in result.layers
        if isinstance(layer, keras_regs.layers.Contractive)
    )
    assert wrapped == ["dense"]
    with pytest.raises(ValueError, match="'two' returns several tensors"):
        keras_regs.regularize_model(
            model, contractive={"strength": 0.1, "pattern": "two"}
        )
