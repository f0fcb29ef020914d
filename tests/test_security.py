"""Security: safe_mode loading, no smuggled callables, no pickle anywhere.

Loading with `safe_mode=True` is tested for every class in
`test_serialization.py` and `test_round_trips.py` (fresh processes); the
tampered-file cases in `test_bad_input.py` refuse lambdas and function paths
inside every keras_regs object. Here: a callable that Keras *can* resolve (it is
registered) is still refused by every keras_regs slot, and never called; and no
code path pickles.
"""

import ast
import json
import os
import zipfile

import h5py
import keras
import numpy as np
import pytest

import keras_regs
from helpers import mlp

PACKAGE = os.path.dirname(keras_regs.__file__)
CALLS = []


@keras.saving.register_keras_serializable(package="keras_regs_tests")
def smuggled(x):
    """A registered function: Keras' deserialize resolves it to this object."""
    CALLS.append(x)
    return keras.ops.sum(x)


SMUGGLED = keras.saving.serialize_keras_object(smuggled)


@pytest.mark.parametrize(
    ("name", "build"),
    [
        (
            "penalty",
            lambda: keras_regs.regularizers.Penalties.from_config(
                {"penalties": {"weight_l2": SMUGGLED}, "base": None}
            ),
        ),
        (
            "base",
            lambda: keras_regs.regularizers.Penalties.from_config(
                {"penalties": {}, "base": SMUGGLED}
            ),
        ),
        (
            "strength",
            lambda: keras_regs.WeightL2.from_config(
                {"strength": SMUGGLED, "reduction": "sum"}
            ),
        ),
        (
            "stddev",
            lambda: keras_regs.layers.GaussianNoise.from_config(
                {"stddev": SMUGGLED, "seed": 1}
            ),
        ),
        (
            "layer",
            lambda: keras_regs.layers.Contractive(
                keras.saving.deserialize_keras_object(SMUGGLED), 0.1
            ),
        ),
    ],
)
def test_a_resolvable_callable_is_refused_and_never_called(name, build):
    assert keras.saving.deserialize_keras_object(SMUGGLED) is smuggled
    CALLS.clear()
    with pytest.raises(TypeError, match="Invalid type for argument"):
        build()
    assert CALLS == []


def test_the_same_callable_in_a_saved_model_is_refused(tmp_path):
    model = keras_regs.regularize_model(mlp(), weight_l2=0.1)
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    dense = next(
        layer for layer in config["config"]["layers"] if layer["name"] == "dense_0"
    )
    dense["config"]["kernel_regularizer"]["config"]["penalties"]["weight_l2"] = SMUGGLED
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "evil.keras", "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    CALLS.clear()
    with pytest.raises(TypeError) as info:
        keras.saving.load_model(tmp_path / "evil.keras", safe_mode=True)
    assert "penalties['weight_l2']" in str(info.value)
    assert CALLS == []


PICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve"}


def test_no_module_of_the_package_imports_a_pickler_or_allows_pickle():
    found = []
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name.split(".")[0] for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module.split(".")[0]]
                elif isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                    names = ["allow_pickle"]
                else:
                    continue
                found += [(path, n) for n in names if n in {*PICKLERS, "allow_pickle"}]
    assert found == []
    assert (
        len([f for _, _, fs in os.walk(PACKAGE) for f in fs if f.endswith(".py")]) > 20
    )


def test_a_saved_file_holds_json_and_numeric_arrays_only(tmp_path):
    """What keras_regs adds to a .keras file (held hyperparameters, seed
    states) is plain numbers: no object arrays that would need pickle."""
    model = keras_regs.regularize_model(
        mlp(), weight_l2=0.1, hidden_l1=0.01, input_noise=0.1, hidden_dropout=0.2
    )
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        assert sorted(archive.namelist()) == [
            "config.json",
            "metadata.json",
            "model.weights.h5",
        ]
        json.loads(archive.read("config.json"))
        archive.extract("model.weights.h5", tmp_path)
    datasets = []
    with h5py.File(tmp_path / "model.weights.h5") as f:
        f.visititems(
            lambda name, item: (
                datasets.append((name, item.dtype))
                if isinstance(item, h5py.Dataset)
                else None
            )
        )
    assert any("dropout" in name for name, _ in datasets)
    for name, dtype in datasets:
        assert np.issubdtype(dtype, np.number), (name, dtype)
