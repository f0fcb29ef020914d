"""regularize_model's penalties: in place, counted in fit, saved, selected, atomic."""

import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import keras_regs
from custom_penalties import WeightInverse
from helpers import (
    TESTS_DIR,
    assert_states_equal,
    layer_configs,
    mlp,
    mlp_numpy,
    model_state,
    to_numpy,
)

X = np.random.default_rng(0).normal(size=(32, 5)).astype("float32")
Y = np.random.default_rng(1).normal(size=(32, 2)).astype("float32")


def kernels(model):
    return [to_numpy(v) for v in model.weights if v.name == "kernel"]


def fit_loss(model, learning_rate=0.0):
    if not model.compiled:
        model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    return model.fit(X, Y, batch_size=32, epochs=1, verbose=0).history["loss"][0]


def penalty_total(model):
    model(X)
    return sum(float(to_numpy(loss)) for loss in model.losses)


def test_weight_and_hidden_penalties_count_in_fit():
    model = keras_regs.regularize_model(mlp(), weight_l2=1e-2, hidden_l1=1e-3)
    loss = fit_loss(model)
    hidden, prediction = mlp_numpy(model, X)
    expected = (
        np.mean((prediction - Y) ** 2)
        + 1e-2 * sum(np.sum(k.astype("float64") ** 2) for k in kernels(model))
        + 1e-3 * sum(np.abs(h).sum() / len(X) for h in hidden)  # hidden only
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert model.get_layer("out").activity_regularizer is None
    # set on the config attribute and on the variable, so it counts and is saved
    layer = model.get_layer("dense_0")
    assert layer.kernel.regularizer is layer.kernel_regularizer
    assert model.get_layer("dense_0").bias.regularizer is None  # include_bias=False


def test_hidden_l2_keyword_counts_in_fit_and_evaluate_and_is_saved(tmp_path):
    """hidden_l2 = Keras' L2 as an activity regularizer on every hidden layer."""
    model = keras_regs.regularize_model(mlp(), hidden_l2=1e-2)
    loss = fit_loss(model)
    hidden, prediction = mlp_numpy(model, X)
    data = np.mean((prediction - Y) ** 2)
    expected = data + 1e-2 * sum(np.square(h).sum() / len(X) for h in hidden)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    logs = model.evaluate(X, Y, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["hidden_l2"], expected - data, rtol=1e-5)
    path = str(tmp_path / "hidden_l2.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    restored.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    logs = restored.evaluate(X, Y, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(logs["hidden_l2"], expected - data, rtol=1e-5)


def test_a_trained_model_picks_the_penalty_up_without_recompiling():
    model = mlp()
    plain = fit_loss(model)  # compiles, traces and caches the train function
    returned = keras_regs.regularize_model(model, weight_l2=1.0)
    assert returned is model
    with_penalty = fit_loss(model)
    penalty = sum(np.sum(k.astype("float64") ** 2) for k in kernels(model))
    np.testing.assert_allclose(with_penalty - plain, penalty, rtol=1e-5)
    np.testing.assert_allclose(
        model.evaluate(X, Y, verbose=0, return_dict=True)["loss"] - plain,
        penalty,
        rtol=1e-5,
    )


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("weight_decay", "weight_l2"),
        ("weight_sparsity", "weight_l1"),
        ("hidden_sparsity", "hidden_l1"),
    ],
)
def test_theanets_aliases_attach_the_canonical_penalty(alias, canonical):
    a = keras_regs.regularize_model(mlp(), **{alias: 0.1})
    b = keras_regs.regularize_model(mlp(), **{canonical: 0.1})
    assert layer_configs(a) == layer_configs(b)
    assert penalty_total(a) == penalty_total(b) > 0
    # the alias replaces the canonical keyword's penalty, never stacks beside it
    keras_regs.regularize_model(b, **{alias: 0.2})
    np.testing.assert_allclose(penalty_total(b), 2 * penalty_total(a), rtol=1e-6)


def test_a_registered_custom_penalty_is_a_keyword():
    model = keras_regs.regularize_model(mlp(), weight_inverse=1e-3)
    expected = 1e-3 * sum(
        np.sum(1 / np.sum(k.astype("float64") ** 2, axis=0)) for k in kernels(model)
    )
    np.testing.assert_allclose(penalty_total(model), expected, rtol=1e-5)
    assert isinstance(
        model.get_layer("out").kernel_regularizer.penalties["weight_inverse"],
        WeightInverse,
    )


def test_mean_reduction_is_theanets_mean_over_the_whole_model():
    """theanets: s / |Omega| * sum over the |Omega| matched tensors of mean(W**2)."""
    model = keras_regs.regularize_model(mlp(), weight_l2=0.3, reduction="mean")
    ks = kernels(model)
    expected = 0.3 / len(ks) * sum(np.mean(k.astype("float64") ** 2) for k in ks)
    np.testing.assert_allclose(penalty_total(model), expected, rtol=1e-6)
    # and hidden_l1: s / |hidden| * sum over hidden layers of mean(abs(h))
    model = keras_regs.regularize_model(
        mlp(), hidden_l1={"strength": 0.5, "reduction": "mean"}
    )
    hidden, _ = mlp_numpy(model, X)
    expected = 0.5 / len(hidden) * sum(np.mean(np.abs(h)) for h in hidden)
    np.testing.assert_allclose(penalty_total(model), expected, rtol=1e-5)


def test_patterns_on_layer_names_and_variable_paths_and_include_bias():
    model = keras_regs.regularize_model(
        mlp(), weight_l1={"weight": 0.1, "pattern": "dense_[1]"}
    )
    k1 = to_numpy(model.get_layer("dense_1").kernel)
    np.testing.assert_allclose(penalty_total(model), 0.1 * np.abs(k1).sum(), rtol=1e-6)

    model = keras_regs.regularize_model(
        mlp(), weight_l2={"strength": 0.1, "pattern": "*/bias"}
    )
    biases = [to_numpy(layer.bias) for layer in model.layers[1:]]
    np.testing.assert_allclose(
        penalty_total(model), 0.1 * sum(np.sum(b**2) for b in biases), rtol=1e-6
    )

    model = keras_regs.regularize_model(mlp(), weight_l2=0.1, include_bias=True)
    weights = [to_numpy(w) for w in model.weights]
    np.testing.assert_allclose(
        penalty_total(model),
        0.1 * sum(np.sum(w.astype("float64") ** 2) for w in weights),
        rtol=1e-6,
    )


def test_same_spec_twice_changes_nothing_and_a_new_value_replaces():
    model = keras_regs.regularize_model(mlp(), weight_l2=1e-2, hidden_l1=1e-3)
    fit_loss(model)
    state = model_state(model, X)
    train_function = model.train_function
    assert keras_regs.regularize_model(model, weight_l2=1e-2, hidden_l1=1e-3) is model
    assert_states_equal(state, model_state(model, X))
    assert model.train_function is train_function
    n_losses = len(model.losses)
    keras_regs.regularize_model(model, weight_l2=3e-2)
    assert len(model.losses) == n_losses
    l2 = 3e-2 * sum(np.sum(k.astype("float64") ** 2) for k in kernels(model))
    hidden, _ = mlp_numpy(model, X)
    l1 = 1e-3 * sum(np.abs(h).sum() / len(X) for h in hidden)
    np.testing.assert_allclose(penalty_total(model), l2 + l1, rtol=1e-5)


def test_a_penalty_set_by_hand_is_kept_beside_and_restored_by_strip():
    model = mlp(kernel_regularizer=keras.regularizers.L2(0.5))
    own = model.get_layer("dense_0").kernel_regularizer
    keras_regs.regularize_model(model, weight_l2=0.1)
    ks = kernels(model)
    expected = 0.5 * sum(np.sum(k**2) for k in ks[:2]) + 0.1 * sum(
        np.sum(k**2) for k in ks
    )
    np.testing.assert_allclose(penalty_total(model), expected, rtol=1e-5)
    keras_regs.strip_regularization(model)
    assert model.get_layer("dense_0").kernel_regularizer is own
    assert model.get_layer("dense_0").kernel.regularizer is own
    assert model.get_layer("out").kernel_regularizer is None
    np.testing.assert_allclose(
        penalty_total(model), 0.5 * sum(np.sum(k**2) for k in ks[:2]), rtol=1e-5
    )


def test_penalties_survive_keras_json_and_clone_round_trips(tmp_path):
    model = keras_regs.regularize_model(
        mlp(),
        weight_l2=1e-2,
        hidden_l1=1e-3,
        weight_l1={"strength": 1e-3, "pattern": "out"},
    )
    expected = penalty_total(model)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    from_json = keras.models.model_from_json(model.to_json())
    from_json.set_weights(model.get_weights())
    cloned = keras.models.clone_model(model)
    cloned.set_weights(model.get_weights())
    for other in (reloaded, from_json, cloned):
        assert layer_configs(other) == layer_configs(model)
        assert penalty_total(other) == expected
        assert len(other.losses) == len(model.losses)


def test_errors_name_the_argument_and_leave_the_model_untouched():
    model = keras_regs.regularize_model(mlp(), weight_l2=1e-2, hidden_dropout=0.2)
    fit_loss(model)
    state = model_state(model, X)
    cases = [
        ({"wieght_l2": 1e-3}, ValueError, "Did you mean `weight_l2`"),
        ({"weight_l2": -1.0}, ValueError, "weight_l2=-1.0"),
        ({"weight_l2": "abc"}, TypeError, "weight_l2='abc'"),
        (
            {"weight_l2": {"strength": 1, "pattern": "nothing_*"}},
            ValueError,
            "'nothing_\\*'",
        ),
        (
            {"weight_l2": {"strength": 1, "patern": "x"}},
            ValueError,
            "unknown key 'patern'",
        ),
        ({"weight_l2": 1e-3, "weight_decay": 1e-3}, ValueError, "give it once"),
        ({"hidden_dropout": 1.0}, ValueError, "hidden_dropout=1.0"),
        ({"dropout": {"nothing_*": 0.5}}, ValueError, "matches no layer"),
        ({"weight_l1": 1e-3, "noise": {"zzz": 0.1}}, ValueError, "'zzz'"),
        ({"reduction": "avg", "weight_l1": 1.0}, ValueError, "reduction='avg'"),
        ({"include_bias": 1, "weight_l1": 1.0}, TypeError, "include_bias=1"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            keras_regs.regularize_model(model, **kwargs)
        assert_states_equal(state, model_state(model, X))
    with pytest.raises(TypeError, match="Expected a keras.Model.*Received: model="):
        keras_regs.regularize_model(keras.layers.Dense(3), weight_l2=1.0)


def test_preview_shows_what_would_be_attached_and_changes_nothing():
    model = mlp()
    state = model_state(model, X)
    rows = keras_regs.preview_rows(model, weight_l2=0.1, hidden_dropout=0.3)
    assert_states_equal(state, model_state(model, X))
    penalties = {r["layer"]: r["value"] for r in rows if r["keyword"] == "weight_l2"}
    for layer in model.layers[1:]:
        np.testing.assert_allclose(
            penalties[layer.name], 0.1 * np.sum(to_numpy(layer.kernel) ** 2), rtol=1e-6
        )
    inserted = [r for r in rows if r["keyword"] == "hidden_dropout"]
    assert [r["target"] for r in inserted] == ["after dense_0", "after dense_1"]


def test_summary_lists_every_penalty_with_its_value():
    model = mlp(kernel_regularizer=keras.regularizers.L1(0.5))
    model = keras_regs.regularize_model(
        model, weight_l2=0.1, hidden_l1=0.01, input_noise=0.2
    )
    printed = []
    assert keras_regs.summary(model, x=X, print_fn=printed.append) is None
    rows = keras_regs.summary_rows(model, x=X)
    hidden, _ = mlp_numpy(model, X)
    by_key = {(r["layer"], r["keyword"], r["target"]): r for r in rows}
    for i, h in enumerate(hidden):
        layer = model.get_layer(f"dense_{i}")
        kernel = to_numpy(layer.kernel)
        row = by_key[(layer.name, "weight_l2", layer.kernel.path)]
        np.testing.assert_allclose(row["value"], 0.1 * np.sum(kernel**2), rtol=1e-6)
        own = by_key[(layer.name, "(own)", layer.kernel.path)]
        assert own["class"] == "L1"
        activity = by_key[(layer.name, "hidden_l1", "activity")]
        np.testing.assert_allclose(
            activity["value"], 0.01 * np.abs(h).sum() / len(X), rtol=1e-5
        )
        assert activity["strength"] == 0.01 and activity["reduction"] == "sum"
    (noise,) = [r for r in rows if r["keyword"] == "input_noise"]
    assert noise["target"] == "after x" and noise["strength"] == 0.2
    assert "weight_l2" in printed[0] and "hidden_l1" in printed[0]
    # the summary's eager call left the activity regularizers in place
    assert isinstance(
        model.get_layer("dense_0").activity_regularizer,
        keras_regs.regularizers.Penalties,
    )


def test_frozen_and_undeclared_layers_are_reported():
    class Custom(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], 3), name="w")

        def call(self, x):
            return x @ self.w

    inputs = keras.Input((5,))
    frozen = keras.layers.Dense(4, name="frozen", trainable=False)
    outputs = keras.layers.Dense(2)(Custom(name="custom")(frozen(inputs)))
    model = keras.Model(inputs, outputs)
    with pytest.warns(keras_regs.KerasRegsWarning) as record:
        keras_regs.regularize_model(model, weight_l2=0.1, hidden_l1=0.1)
    messages = [str(w.message) for w in record]
    assert all(w.category is keras_regs.KerasRegsWarning for w in record)
    assert issubclass(keras_regs.KerasRegsWarning, UserWarning)
    # one filter silences keras_regs' warnings (the same call warns again), and
    # only them
    with pytest.warns(keras_regs.KerasRegsWarning):
        keras_regs.regularize_model(model, weight_l2=0.1, hidden_l1=0.1)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=keras_regs.KerasRegsWarning)
        keras_regs.regularize_model(model, weight_l2=0.1, hidden_l1=0.1)
        warnings.warn("not keras_regs'", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["not keras_regs'"]
    (undeclared,) = [m for m in messages if "register_layer" in m]
    assert undeclared.splitlines()[-1] == "  custom (Custom): w"
    (frozen,) = [m for m in messages if m.startswith("keras_regs: `weight_l2` skipped")]
    assert frozen.splitlines()[1:] == ["  frozen: kernel"]
    # the custom layer's weight counts, the frozen one does not
    w = to_numpy(model.get_layer("custom").w)
    out = to_numpy(model.layers[-1].kernel)
    counted = sum(
        float(to_numpy(v.regularizer(v)))
        for v in model.trainable_weights
        if v.regularizer is not None
    )
    np.testing.assert_allclose(counted, 0.1 * (np.sum(w**2) + np.sum(out**2)), 1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keras_regs.regularize_model(mlp(), weight_l2=0.1)


def test_subclassed_models_get_penalties_and_a_clear_refusal_for_insertion():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(4, activation="tanh", name="hidden")
            self.out = keras.layers.Dense(2, name="out")

        def call(self, x):
            return self.out(self.hidden(x))

    model = Net()
    model(X)
    keras_regs.regularize_model(
        model, weight_l2=0.1, hidden_l1={"strength": 0.1, "pattern": "hidden"}
    )
    assert "keras_regs" in model.get_config()  # the call is recorded
    kernel = to_numpy(model.hidden.kernel)
    out_kernel = to_numpy(model.out.kernel)
    h = np.tanh(X @ kernel + to_numpy(model.hidden.bias))
    expected = 0.1 * (np.sum(kernel**2) + np.sum(out_kernel**2)) + 0.1 * np.abs(
        h
    ).sum() / len(X)
    np.testing.assert_allclose(penalty_total(model), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="subclassed model has no graph.*pattern"):
        keras_regs.regularize_model(model, hidden_l1=0.1)
    with pytest.raises(
        TypeError, match="cannot insert layers into the subclassed model"
    ):
        keras_regs.regularize_model(model, hidden_dropout=0.1)


_PLAIN_LOADER = """
import sys
sys.modules["keras_regs"] = None  # keras_regs cannot be imported here
import json, numpy as np, keras
model = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
np.save(sys.argv[3], keras.ops.convert_to_numpy(model(x, training=False)))
print(json.dumps([l.__class__.__module__ for l in model.layers]))
"""


@pytest.mark.slow
def test_stripped_model_loads_with_plain_keras_in_a_fresh_process(tmp_path):
    model = mlp()
    expected = to_numpy(model(X))
    weights = [to_numpy(w) for w in model.weights]
    regularized = keras_regs.regularize_model(
        model, weight_l2=0.1, hidden_l1=0.1, input_noise=0.1, hidden_dropout=0.5
    )
    regularized.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    regularized.fit(X, Y, verbose=0)
    stripped = keras_regs.strip_regularization(regularized)
    assert layer_configs(stripped) == layer_configs(model)
    for a, b in zip(weights, stripped.weights, strict=True):
        np.testing.assert_array_equal(a, to_numpy(b))
    stripped.save(tmp_path / "plain.keras")
    np.save(tmp_path / "x.npy", X)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _PLAIN_LOADER,
            str(tmp_path / "plain.keras"),
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not any(
        "keras_regs" in m for m in json.loads(result.stdout.splitlines()[-1])
    )
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)
    assert TESTS_DIR  # the loader does not see the tests folder either


def test_activity_patterns_skip_inserted_layers():
    model = keras_regs.regularize_model(mlp(), hidden_dropout=0.3)
    keras_regs.regularize_model(
        model, hidden_l1={"strength": 1e-3, "pattern": "dense_1*"}
    )
    assert model.get_layer("dense_1").activity_regularizer is not None
    assert model.get_layer("dense_1_dropout").activity_regularizer is None


def sum_of_weights(w):
    return 0.1 * keras.ops.sum(w)


def test_a_plain_function_regularizer_gets_a_clear_error_and_no_change():
    x = keras.Input((5,))
    layer = keras.layers.Dense(2, name="fn", kernel_regularizer=sum_of_weights)
    model = keras.Model(x, layer(x))
    state = model_state(model, X)
    with pytest.raises(
        ValueError, match="layer 'fn' has a regularizer on fn/kernel that is a plain"
    ):
        keras_regs.regularize_model(model, weight_l2=1e-3)
    assert_states_equal(state, model_state(model, X))


def test_time_distributed_layers_are_penalized_and_saved(tmp_path):
    x = keras.Input((3, 5))
    model = keras.Model(
        x, keras.layers.TimeDistributed(keras.layers.Dense(2, name="inner"))(x)
    )
    keras_regs.regularize_model(model, weight_l2=0.1)
    kernel = to_numpy(model.layers[1].layer.kernel)
    np.testing.assert_allclose(
        penalty_total_on(model, np.ones((2, 3, 5))), 0.1 * np.sum(kernel**2), rtol=1e-6
    )
    model.save(tmp_path / "td.keras")
    reloaded = keras.saving.load_model(tmp_path / "td.keras")
    np.testing.assert_allclose(
        penalty_total_on(reloaded, np.ones((2, 3, 5))),
        0.1 * np.sum(kernel**2),
        rtol=1e-6,
    )


def penalty_total_on(model, x):
    model(x.astype("float32"))
    return sum(float(to_numpy(loss)) for loss in model.losses)
