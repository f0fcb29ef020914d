"""regularize_model's noise and dropout: inserted layers over the same weights."""

import keras
import numpy as np
import pytest

import keras_regs
from helpers import layer_configs, mlp, to_numpy
from keras_regs.layers import BernoulliDropout, GaussianNoise

L = keras.layers


def two_tower_model():
    """Two inputs, two outputs, a layer shared by both towers, nested models."""
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    shared = L.Dense(5, name="shared")
    inner_f_in = keras.Input((5,))
    inner_f = keras.Model(
        inner_f_in, L.Dense(5, name="f_dense")(inner_f_in), name="inner_f"
    )
    inner_s = keras.Sequential(
        [keras.Input((5,)), L.Dense(5, name="s_dense")], name="inner_s"
    )
    ha = inner_f(shared(L.Dense(4, name="pa")(a)))
    hb = inner_s(shared(L.Dense(4, name="pb")(b)))
    return keras.Model([a, b], [L.Dense(1, name="o1")(ha), L.Dense(2, name="o2")(hb)])


def inputs_for(model, n=8, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, *t.shape[1:])).astype("float32") for t in model.inputs]


def inserted(model):
    found = {}

    def visit(current):
        for layer in current.layers:
            if isinstance(layer, keras.Model):
                visit(layer)
            elif getattr(layer, "inserted_by", None):
                found[layer.name] = (
                    type(layer).__name__,
                    layer.inserted_by,
                    layer._held_value,
                )

    visit(model)
    return found


def predictions(model, x, training=False):
    out = model(x, training=training)
    return [to_numpy(o) for o in (out if isinstance(out, list) else [out])]


def test_functional_model_with_shared_layers_and_nested_models():
    model = two_tower_model()
    x = inputs_for(model)
    before = predictions(model, x)
    result = keras_regs.regularize_model(
        model, input_noise=0.1, hidden_dropout=0.3, output_noise=0.01
    )
    assert inserted(result) == {
        "a_noise": ("GaussianNoise", "input_noise", 0.1),
        "b_noise": ("GaussianNoise", "input_noise", 0.1),
        "pa_dropout": ("BernoulliDropout", "hidden_dropout", 0.3),
        "pb_dropout": ("BernoulliDropout", "hidden_dropout", 0.3),
        # the shared layer is called twice: one inserted layer per call
        "shared_dropout": ("BernoulliDropout", "hidden_dropout", 0.3),
        "shared_dropout_1": ("BernoulliDropout", "hidden_dropout", 0.3),
        # inside the nested Functional and Sequential models
        "f_dense_dropout": ("BernoulliDropout", "hidden_dropout", 0.3),
        "s_dense_dropout": ("BernoulliDropout", "hidden_dropout", 0.3),
        "o1_noise": ("GaussianNoise", "output_noise", 0.01),
        "o2_noise": ("GaussianNoise", "output_noise", 0.01),
    }
    assert isinstance(result.get_layer("inner_s"), keras.Sequential)
    # bit for bit at inference
    for p, q in zip(before, predictions(result, x), strict=True):
        np.testing.assert_array_equal(p, q)
    # every weight of the input model is a weight of the result, the same object
    result_ids = {id(v) for v in result.weights}
    assert all(id(v) in result_ids for v in model.weights)
    # training the result updates the original model
    result.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    result.fit(x, [np.ones((8, 1)), np.ones((8, 2))], verbose=0)
    after = predictions(model, x)
    assert not np.array_equal(before[0], after[0])
    for p, q in zip(after, predictions(result, x), strict=True):
        np.testing.assert_array_equal(p, q)


def test_noise_and_dropout_act_in_training_only():
    model = keras_regs.regularize_model(mlp(), hidden_dropout=0.5, input_noise=1.0)
    x = inputs_for(model)[0]
    a, b = predictions(model, x, training=True), predictions(model, x, training=True)
    assert not np.array_equal(a[0], b[0])
    np.testing.assert_array_equal(predictions(model, x)[0], predictions(mlp(), x)[0])


def test_sequential_stays_sequential_and_inserted_layers_follow_their_anchor():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            L.Dense(6, name="d1"),
            L.Dense(5, name="d2"),
            L.Dense(1, name="d3"),
        ]
    )
    result = keras_regs.regularize_model(
        model, input_dropout=0.2, hidden_noise=0.1, hidden_dropout=0.3
    )
    assert isinstance(result, keras.Sequential)
    names = [layer.name for layer in result.layers]
    first_input = model.inputs[0]._keras_history.operation.name
    assert names == [
        f"{first_input}_dropout",
        "d1",
        "d1_noise",
        "d1_dropout",
        "d2",
        "d2_noise",
        "d2_dropout",
        "d3",
    ]
    x = inputs_for(model)[0]
    np.testing.assert_array_equal(predictions(result, x)[0], predictions(model, x)[0])


def test_seeds_derive_from_seed_so_two_calls_give_the_same_noise():
    x = inputs_for(mlp())[0]
    one = keras_regs.regularize_model(mlp(), input_noise=0.5, hidden_dropout=0.5)
    two = keras_regs.regularize_model(mlp(), input_noise=0.5, hidden_dropout=0.5)
    other = keras_regs.regularize_model(
        mlp(), input_noise=0.5, hidden_dropout=0.5, seed=14
    )
    a, b, c = (predictions(m, x, training=True)[0] for m in (one, two, other))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    default = [
        layer.seed
        for layer in one.layers
        if isinstance(layer, (GaussianNoise, BernoulliDropout))
    ]
    assert len(set(default)) == len(default)  # each inserted layer draws its own noise


def test_pattern_forms():
    result = keras_regs.regularize_model(
        mlp(), noise={"x": 0.2, "dense_1": 0.1}, dropout={"dense_*": 0.25}
    )
    assert inserted(result) == {
        "x_noise": ("GaussianNoise", "noise", 0.2),
        "dense_1_noise": ("GaussianNoise", "noise", 0.1),
        "dense_0_dropout": ("BernoulliDropout", "dropout", 0.25),
        "dense_1_dropout": ("BernoulliDropout", "dropout", 0.25),
    }
    names = [layer.name for layer in result.layers]
    assert names.index("dense_1_noise") < names.index("dense_1_dropout")  # noise first


def test_idempotent_and_replacing_never_stacking():
    model = mlp()
    once = keras_regs.regularize_model(model, hidden_dropout=0.3, input_noise=0.1)
    config = layer_configs(once)
    assert (
        keras_regs.regularize_model(once, hidden_dropout=0.3, input_noise=0.1) is once
    )
    assert layer_configs(once) == config
    # a new value replaces the old one in place
    again = keras_regs.regularize_model(once, hidden_dropout=0.5)
    assert {k: v[2] for k, v in inserted(again).items()} == {
        "x_noise": 0.1,
        "dense_0_dropout": 0.5,
        "dense_1_dropout": 0.5,
    }
    # a different selection for the keyword rebuilds; other keywords are kept
    moved = keras_regs.regularize_model(
        again, hidden_dropout={"rate": 0.4, "pattern": "dense_1"}
    )
    assert inserted(moved) == {
        "x_noise": ("GaussianNoise", "input_noise", 0.1),
        "dense_1_dropout": ("BernoulliDropout", "hidden_dropout", 0.4),
    }
    x = inputs_for(model)[0]
    np.testing.assert_array_equal(predictions(moved, x)[0], predictions(model, x)[0])


def test_inserted_layers_survive_saving_and_strip_after_reload(tmp_path):
    model = keras_regs.regularize_model(mlp(), hidden_dropout=0.3, weight_l2=0.01)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert inserted(reloaded) == inserted(model)
    assert (
        keras_regs.regularize_model(reloaded, hidden_dropout=0.3, weight_l2=0.01)
        is reloaded
    )
    stripped = keras_regs.strip_regularization(reloaded)
    assert inserted(stripped) == {}
    assert layer_configs(stripped) == layer_configs(mlp())


def test_dropout_counts_inside_fit():
    model = keras_regs.regularize_model(mlp(), hidden_dropout=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x = inputs_for(model, n=64)[0]
    y = np.zeros((64, 2), "float32")
    train = model.fit(x, y, batch_size=64, verbose=0).history["loss"][0]
    evaluated = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert train != pytest.approx(evaluated, rel=1e-3)
    assert evaluated == pytest.approx(
        float(np.mean(predictions(mlp(), x)[0] ** 2)), rel=1e-5
    )


# Regressions found in review: each of these failed before its fix.


def shared_twice():
    x = keras.Input((4,), name="x")
    shared = L.Dense(4, name="shared")
    return keras.Model(x, L.Dense(1, name="out")(shared(shared(x))))


def test_a_shared_layer_keeps_one_inserted_layer_per_call_across_calls():
    model = keras_regs.regularize_model(shared_twice(), hidden_dropout=0.3)
    model = keras_regs.regularize_model(model, input_noise=0.1)
    again = keras_regs.regularize_model(model, input_noise=0.1)
    assert again is model
    assert sorted(inserted(model)) == ["shared_dropout", "shared_dropout_1", "x_noise"]


def test_a_new_seed_leaves_other_keywords_layers_alone():
    model = keras_regs.regularize_model(mlp(), hidden_dropout=0.3)
    before = {
        layer.name: (id(layer), getattr(layer, "seed", None)) for layer in model.layers
    }
    model = keras_regs.regularize_model(model, input_noise=0.1, seed=7)
    for name in ("dense_0_dropout", "dense_1_dropout"):
        assert (id(model.get_layer(name)), model.get_layer(name).seed) == before[name]


def test_the_same_insertion_call_keeps_the_compiled_train_function():
    model = keras_regs.regularize_model(mlp(), hidden_dropout=0.3)
    model.compile(optimizer="sgd", loss="mse")
    x = inputs_for(model)[0]
    model.fit(x, np.zeros((8, 2)), verbose=0)
    train_function = model.train_function
    assert keras_regs.regularize_model(model, hidden_dropout=0.3) is model
    assert model.train_function is train_function


def test_roles_inside_a_nested_model_with_several_outputs():
    """`ib` only feeds `head`: hidden, not output, though `inner`'s other output is."""
    ii = keras.Input((4,), name="ii")
    inner = keras.Model(
        ii, [L.Dense(3, name="ia")(ii), L.Dense(3, name="ib")(ii)], name="inner"
    )
    x = keras.Input((4,), name="x")
    oa, ob = inner(x)
    model = keras.Model(x, [oa, L.Dense(1, name="head")(ob)])
    out = keras_regs.regularize_model(model, output_noise=0.1)
    assert sorted(inserted(out)) == ["head_noise", "ia_noise"]
    hidden = keras_regs.regularize_model(model, hidden_dropout=0.3)
    assert sorted(inserted(hidden)) == ["ib_dropout"]
    # and a pattern reaches the nested Functional model's layers by path
    keras_regs.regularize_model(
        model, weight_l2={"strength": 0.1, "pattern": "inner/*"}
    )
    assert inner.get_layer("ia").kernel.regularizer is not None
    assert model.get_layer("head").kernel.regularizer is None


def test_integer_inputs_are_refused_for_input_noise_and_dropout():
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    pooled = L.GlobalAveragePooling1D()(L.Embedding(20, 4, name="embedding")(tokens))
    model = keras.Model(tokens, L.Dense(1)(pooled))
    for keyword in ("input_noise", "input_dropout"):
        with pytest.raises(ValueError, match="input 'tokens' is not"):
            keras_regs.regularize_model(model, **{keyword: 0.1})
    result = keras_regs.regularize_model(model, dropout={"embedding": 0.2})
    assert list(inserted(result)) == ["embedding_dropout"]


def test_overlapping_patterns_of_one_keyword_insert_one_layer():
    result = keras_regs.regularize_model(
        mlp(), dropout={"dense_*": 0.1, "dense_1": 0.2}
    )
    assert {k: v[2] for k, v in inserted(result).items()} == {
        "dense_0_dropout": 0.1,
        "dense_1_dropout": 0.2,
    }


def test_preview_reports_exactly_what_the_call_inserts():
    model = shared_twice()
    rows = keras_regs.preview_rows(model, hidden_dropout=0.3)
    result = keras_regs.regularize_model(model, hidden_dropout=0.3)
    assert sorted(r["layer"] for r in rows) == sorted(inserted(result))
    assert keras_regs.preview_rows(result, hidden_dropout=0.3) == []
    rows = keras_regs.preview_rows(result, hidden_dropout=0.5)
    assert {(r["layer"], r["strength"]) for r in rows} == {
        ("shared_dropout", 0.5),
        ("shared_dropout_1", 0.5),
    }


def test_a_frozen_nested_model_stays_frozen():
    inner = keras.Sequential(
        [keras.Input((4,)), L.Dense(4, name="inner_dense")], name="inner"
    )
    inner.trainable = False
    x = keras.Input((4,))
    model = keras.Model(x, L.Dense(1)(inner(L.Dense(4, name="first")(x))))
    result = keras_regs.regularize_model(model, hidden_dropout=0.2)
    assert result.get_layer("inner").trainable is False
