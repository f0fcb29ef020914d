"""Subclassed models keep regularize_model's penalties with RegularizationMixin."""

import json
import warnings

import keras
import numpy as np
import pytest

import keras_regs
from custom_models import Net, NetWithFromConfig, PlainNet
from helpers import (
    assert_snapshots_equal,
    load_all_in_fresh_process,
    snapshot,
    to_numpy,
)

X = np.random.default_rng(0).normal(size=(16, 5)).astype("float32")
Y = np.random.default_rng(1).normal(size=(16, 2)).astype("float32")
SPEC = {"weight_l2": 0.1, "hidden_l1": {"strength": 0.05, "pattern": "hidden"}}


def expected_penalties(model, x):
    """NumPy: weight_l2 on both kernels, hidden_l1 on the hidden output (Keras
    divides an activity penalty by the batch size)."""
    kernel, out_kernel = to_numpy(model.hidden.kernel), to_numpy(model.out.kernel)
    h = np.tanh(x.astype("float64") @ kernel + to_numpy(model.hidden.bias))
    return 0.1 * (np.sum(kernel**2) + np.sum(out_kernel**2)) + 0.05 * np.abs(
        h
    ).sum() / len(x)


def regularized(cls=Net):
    keras.backend.clear_session()
    model = cls()
    model(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PlainNet's warning: tested below
        keras_regs.regularize_model(model, **SPEC)
    model.compile(optimizer="adam", loss="mse")
    model.fit(X, Y, epochs=1, batch_size=8, verbose=0)
    return model


@pytest.mark.slow
def test_keras_file_keeps_the_penalties_in_a_fresh_process(tmp_path):
    models = {"mixin": regularized(Net), "plain": regularized(PlainNet)}
    items, before = [], {}
    for name, model in models.items():
        before[name] = snapshot(model, X)
        model.save(tmp_path / f"{name}.keras")
        items.append((tmp_path / f"{name}.keras", X))
    total = sum(before["mixin"]["losses"])
    np.testing.assert_allclose(total, expected_penalties(models["mixin"], X), 1e-5)
    after = load_all_in_fresh_process(
        items, imports=("import keras_regs", "import custom_models")
    )
    assert_snapshots_equal(before["mixin"], after[0])
    assert len(after[0]["losses"]) == 3
    # Without the mixin too: regularize_model recorded its call in the config
    # (the model's class became keras_regs' subclass of PlainNet), replayed on load.
    assert_snapshots_equal(before["plain"], after[1])
    assert len(after[1]["losses"]) == 3


def test_loaded_model_trains_with_the_penalties(tmp_path):
    model = regularized()
    model.save(tmp_path / "net.keras")
    loaded = keras.saving.load_model(tmp_path / "net.keras")
    assert loaded.get_config()["keras_regs"] == model.get_config()["keras_regs"]
    assert repr(loaded.hidden.kernel_regularizer) == repr(
        model.hidden.kernel_regularizer
    )
    evaluated = loaded.evaluate(X, Y, verbose=0, return_dict=True)
    assert evaluated == model.evaluate(X, Y, verbose=0, return_dict=True)
    evaluated = evaluated["loss"]
    data_loss = float(np.mean((to_numpy(loaded(X)) - Y) ** 2))
    np.testing.assert_allclose(
        evaluated - data_loss, expected_penalties(loaded, X), rtol=1e-4
    )


@pytest.mark.parametrize("path", ["from_config", "json", "clone"])
def test_config_paths_replay_the_spec_at_the_first_call(path):
    model = regularized()
    copy = {
        "from_config": lambda: Net.from_config(model.get_config()),
        "json": lambda: keras.models.model_from_json(model.to_json()),
        "clone": lambda: keras.models.clone_model(model),
    }[path]()
    copy(X)
    copy.set_weights(model.get_weights())
    assert_snapshots_equal(snapshot(model, X), snapshot(copy, X), config=False)
    assert len(copy.losses) == 3


def test_later_calls_replace_and_strip_forgets(tmp_path):
    model = regularized()
    keras_regs.regularize_model(model, weight_l2=0.3, weight_l1=0.01)
    record = model.get_config()["keras_regs"]
    assert record == [
        {
            "include_bias": False,
            "weight_l2": {"strength": 0.1, "reduction": "sum"},
            "hidden_l1": {"strength": 0.05, "reduction": "sum", "pattern": "hidden"},
        },
        {
            "include_bias": False,
            "weight_l2": {"strength": 0.3, "reduction": "sum"},
            "weight_l1": {"strength": 0.01, "reduction": "sum"},
        },
    ]
    # the same call again records nothing new
    keras_regs.regularize_model(model, weight_l2=0.3, weight_l1=0.01)
    assert model.get_config()["keras_regs"] == record
    json.dumps(record)  # plain JSON
    model.save(tmp_path / "twice.keras")
    loaded = keras.saving.load_model(tmp_path / "twice.keras")
    assert_snapshots_equal(snapshot(model, X), snapshot(loaded, X))
    kernels = [to_numpy(loaded.hidden.kernel), to_numpy(loaded.out.kernel)]
    h = np.tanh(X.astype("float64") @ kernels[0] + to_numpy(loaded.hidden.bias))
    expected = sum(0.3 * np.sum(k**2) + 0.01 * np.abs(k).sum() for k in kernels)
    expected += 0.05 * np.abs(h).sum() / len(X)
    np.testing.assert_allclose(sum(snapshot(loaded, X)["losses"]), expected, 1e-5)

    keras_regs.strip_regularization(loaded)
    assert "keras_regs" not in loaded.get_config()
    loaded.save(tmp_path / "stripped.keras")
    assert keras.saving.load_model(tmp_path / "stripped.keras").losses == []


def test_plain_subclassed_model_keeps_its_penalties_through_the_record():
    """No warning, no mixin: the call is recorded in the config, and the model
    stays a PlainNet (its class is a keras_regs subclass of PlainNet)."""
    keras.backend.clear_session()
    model = PlainNet()
    model(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keras_regs.regularize_model(model, **SPEC)
    assert isinstance(model, PlainNet) and type(model).__name__ == "PlainNet"
    record = model.get_config()["keras_regs"]
    assert record["class"]["registered_name"] == "keras_regs_tests>PlainNet"
    assert [call["weight_l2"]["strength"] for call in record["calls"]] == [0.1]
    copy = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(model)
    )
    copy(X)  # built at its first call, which replays the record
    copy.set_weights(model.get_weights())
    np.testing.assert_allclose(
        sum(float(to_numpy(loss)) for loss in copy.losses),
        expected_penalties(copy, X),
        rtol=1e-5,
    )
    keras_regs.strip_regularization(model)
    assert type(model) is PlainNet and "keras_regs" not in model.get_config()


def test_a_class_with_its_own_from_config_keeps_the_record(tmp_path):
    keras.backend.clear_session()
    model = NetWithFromConfig()
    model(X)
    keras_regs.regularize_model(model, weight_l2=0.1)
    model.save(tmp_path / "own.keras")
    loaded = keras.saving.load_model(tmp_path / "own.keras")
    assert_snapshots_equal(snapshot(model, X), snapshot(loaded, X))
    assert len(loaded.losses) == 2


def test_fit_right_after_from_config_trains_with_the_penalties():
    """TensorFlow builds such a model only inside the first traced step: the
    penalties are attached there, and the train function being traced kept."""
    model = regularized()
    copy = Net.from_config(model.get_config())
    copy.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    copy.fit(X, Y, epochs=1, batch_size=16, verbose=0)  # builds, attaches
    copy.set_weights(model.get_weights())
    history = copy.fit(X, Y, epochs=2, batch_size=16, verbose=0, shuffle=False)
    data = float(np.mean((to_numpy(copy(X)) - Y) ** 2))
    for loss in history.history["loss"]:
        np.testing.assert_allclose(loss, data + expected_penalties(copy, X), rtol=1e-4)


def test_penalties_inside_a_nested_subclassed_model_are_recorded(tmp_path):
    """The nested model's config does not list its layers: the outer model
    records the call, and a reload has every penalty."""
    keras.backend.clear_session()
    inner = PlainNet(name="inner")
    x_in = keras.Input((5,))
    outer = keras.Model(x_in, keras.layers.Dense(1, name="head")(inner(x_in)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keras_regs.regularize_model(outer, weight_l2=0.1)
    assert "keras_regs" in outer.get_config()
    outer.save(tmp_path / "outer.keras")
    loaded = keras.saving.load_model(tmp_path / "outer.keras")
    assert len(loaded.losses) == 3
    np.testing.assert_allclose(
        sorted(float(to_numpy(loss)) for loss in loaded.losses),
        sorted(float(to_numpy(loss)) for loss in outer.losses),
        rtol=1e-6,
    )
