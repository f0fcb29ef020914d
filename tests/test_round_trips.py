"""The round-trip matrix: five models through every way Keras saves or copies one.

Models: Sequential with hand-set penalties and layers, Functional, nested,
multi-input/multi-output, and one that uses every keras_regs class through
`regularize_model`. Each is trained first, so its weights and its noise and
dropout layers' random state are not their initial values.

Paths, and what each must keep bit-identical:

- `.keras` loaded in a fresh process (`safe_mode=True`, only `import keras_regs`)
  and `.weights.h5` into a freshly built model: config, weights, the random
  state of the noise and dropout layers, `model.losses`, predictions;
- `to_json`/`model_from_json`, `get_config`/`from_config` and `clone_model`, each
  followed by `set_weights`: config, weights, `model.losses`, predictions (these
  paths copy `get_weights()`, which holds no random state: the copies draw from
  their seed's start, as Keras' own layers do);
- `model.export()` served by `tf.saved_model.load` (TensorFlow): inference
  predictions bit-identical to `model.predict`, noise and dropout off.
"""

import json

import keras
import numpy as np
import pytest

from helpers import (
    assert_snapshots_equal,
    load_all_in_fresh_process,
    seed_states,
    snapshot,
    to_numpy,
)
from zoo import MODELS, data, kerashub, kerashub_data


def trained(name):
    """The model, compiled and trained for one epoch."""
    keras.backend.clear_session()  # layer names as in a new process
    keras.utils.set_random_seed(0)
    model = MODELS[name]()
    losses = ["mse", "binary_crossentropy"] if name == "multi_io" else "mse"
    model.compile(optimizer="adam", loss=losses)
    x, y = data(name)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return model, x


def check_kept(model, x, copy):
    """What every in-process path keeps: layer configs, weights, losses,
    predictions; the copy's noise and dropout draw from their seeds' start."""
    before = snapshot(model, x, seeds=False)
    assert_snapshots_equal(before, snapshot(copy, x, seeds=False), config=False)
    assert len(before["losses"]) > 0


def keeps_penalties(model):
    """The penalties are there to be kept: a model with none would pass."""
    return any(
        isinstance(r, keras.regularizers.Regularizer)
        for r in [v.regularizer for v in model.weights]
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_json_config_and_clone_keep_everything(name):
    model, x = trained(name)
    assert keeps_penalties(model)
    weights = model.get_weights()
    copies = {
        "json": keras.models.model_from_json(model.to_json()),
        "config": type(model).from_config(model.get_config()),
        "clone": keras.models.clone_model(model),
    }
    for path, copy in copies.items():
        copy.set_weights(weights)
        try:
            check_kept(model, x, copy)
        except AssertionError as error:
            raise AssertionError(f"{path}: {error}") from error
    # from_config and model_from_json also keep the model's name (compared as
    # JSON: a build_config's shape is a tuple before, a list after)
    config = json.loads(json.dumps(model.get_config()))
    for path in ("json", "config"):
        assert json.loads(json.dumps(copies[path].get_config())) == config, path


@pytest.mark.parametrize("name", sorted(MODELS))
def test_weights_h5_into_a_freshly_built_model(name, tmp_path):
    """The same code builds the model again; the file brings back the weights
    and the random state of the noise and dropout layers."""
    model, x = trained(name)
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    keras.backend.clear_session()  # as a new process would name its layers
    fresh = MODELS[name]()
    assert any(
        not np.array_equal(to_numpy(a), to_numpy(b))
        for a, b in zip(fresh.weights, model.weights, strict=True)
    )
    trained_states = seed_states(model)
    assert len(trained_states) > 0
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(seed_states(fresh), trained_states, strict=True)
    )
    fresh.load_weights(path)
    assert_snapshots_equal(snapshot(model, x), snapshot(fresh, x), config=False)


@pytest.mark.slow
def test_keras_files_load_in_a_fresh_process(tmp_path):
    """All five models saved, then loaded in one new Python with only
    `import keras_regs` and `safe_mode=True`: config, weights, random state,
    losses and predictions identical."""
    items, snapshots = [], []
    for name in sorted(MODELS):
        model, x = trained(name)
        path = tmp_path / f"{name}.keras"
        model.save(path)
        items.append((path, x))
        snapshots.append(snapshot(model, x))
    for name, before, after in zip(
        sorted(MODELS), snapshots, load_all_in_fresh_process(items), strict=True
    ):
        try:
            assert_snapshots_equal(before, after)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from error


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="model.export() SavedModel: TF"
)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_exported_saved_model_serves_inference_without_noise(name, tmp_path):
    import tensorflow as tf

    model, x = trained(name)
    model.export(str(tmp_path / "exported"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "exported"))
    eager = keras.tree.map_structure(to_numpy, model(x, training=False))
    noisy = keras.tree.map_structure(to_numpy, model(x, training=True))
    first = keras.tree.map_structure(np.asarray, served.serve(x))
    second = keras.tree.map_structure(np.asarray, served.serve(x))
    keras.tree.map_structure(np.testing.assert_array_equal, first, second)
    # Bit-identical to Keras' compiled inference on the same batch ...
    batch = len(keras.tree.flatten(x)[0])
    predicted = model.predict(x, batch_size=batch, verbose=0)
    keras.tree.map_structure(np.testing.assert_array_equal, first, predicted)
    # ... which equals an eager call to float32 rounding (another trace).
    keras.tree.map_structure(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        first,
        eager,
    )
    # ... and far from a training-mode pass, where noise and dropout are on.
    differences = keras.tree.map_structure(
        lambda a, b: float(np.abs(a - b).max()), first, noisy
    )
    assert max(keras.tree.flatten(differences)) > 1e-3


def test_round_trip_checks_catch_a_lost_penalty():
    """The matrix's comparison fails when a path loses a penalty: the config
    differs and `model.losses` shrinks."""
    model, x = trained("functional")
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.get_layer("dense_0").kernel_regularizer = None
    copy.get_layer("dense_0").kernel.regularizer = None
    with pytest.raises(AssertionError):
        check_kept(model, x, copy)
    assert json.loads(model.to_json()) != json.loads(copy.to_json())
    assert len(copy.losses) < len(model.losses)


def trained_kerashub():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = kerashub()
    model.compile(optimizer="adam", loss="mse")
    x, y = kerashub_data()
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    return model, x


@pytest.mark.slow
def test_kerashub_row_keeps_everything_on_every_path(tmp_path):
    """The matrix's KerasHub row: JSON, get_config, `.weights.h5` into a model
    built again, `.keras` in a fresh process (only keras_regs and keras_hub
    imported), and (TensorFlow) the exported SavedModel. `clone_model` is left
    out: Keras' clone of a KerasHub backbone is a plain Functional rebuilt from
    its layers' configs, without the backbone's class, with or without
    keras_regs (docs/saving.md)."""
    model, x = trained_kerashub()
    assert keeps_penalties(model) and len(seed_states(model)) > 0
    weights = model.get_weights()
    for path, copy in {
        "json": keras.models.model_from_json(model.to_json()),
        "config": type(model).from_config(model.get_config()),
    }.items():
        assert type(copy) is type(model), path
        copy.set_weights(weights)
        try:
            check_kept(model, x, copy)
        except AssertionError as error:
            raise AssertionError(f"{path}: {error}") from error
    model.save_weights(tmp_path / "model.weights.h5")
    keras.backend.clear_session()
    fresh = kerashub()
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(seed_states(fresh), seed_states(model), strict=True)
    )
    fresh.load_weights(tmp_path / "model.weights.h5")
    assert_snapshots_equal(snapshot(model, x), snapshot(fresh, x), config=False)
    model.save(tmp_path / "model.keras")
    (after,) = load_all_in_fresh_process(
        [(tmp_path / "model.keras", x)],
        imports=("import keras_regs", "import keras_hub"),
    )
    assert_snapshots_equal(snapshot(model, x), after)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        model.export(str(tmp_path / "exported"), verbose=False)
        served = tf.saved_model.load(str(tmp_path / "exported"))
        predicted = model.predict(x, batch_size=len(x["token_ids"]), verbose=0)
        np.testing.assert_array_equal(np.asarray(served.serve(x)), predicted)
