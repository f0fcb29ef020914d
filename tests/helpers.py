"""Shared test helpers: the catalogue of public classes, models, round trips."""

import json
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np

import keras_regs

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

# Every public penalty, built with non-default arguments where there are any.
REGULARIZERS = {
    "WeightL1": lambda: keras_regs.WeightL1(0.01),
    "WeightL2": lambda: keras_regs.WeightL2(0.02, reduction="mean"),
    "HiddenL1": lambda: keras_regs.HiddenL1(0.03),
    "HiddenL2": lambda: keras_regs.HiddenL2(0.06, reduction="mean"),
    "RecurrentNorm": lambda: keras_regs.RecurrentNorm(0.04),
    "RecurrentState": lambda: keras_regs.RecurrentState(0.05, reduction="mean"),
}
# Every public layer.
LAYERS = {
    "GaussianNoise": lambda: keras_regs.layers.GaussianNoise(1.5, seed=7),
    "BernoulliDropout": lambda: keras_regs.layers.BernoulliDropout(0.25, seed=8),
    "BernoulliDropout(noise_shape)": lambda: keras_regs.layers.BernoulliDropout(
        0.25, noise_shape=(None, 1, None), seed=8
    ),
    "SpatialDropout1D": lambda: keras_regs.layers.SpatialDropout1D(0.2, seed=9),
    "SpatialDropout2D": lambda: keras_regs.layers.SpatialDropout2D(
        0.3, data_format="channels_first", seed=10
    ),
    "SpatialDropout3D": lambda: keras_regs.layers.SpatialDropout3D(0.4, seed=11),
    "Contractive": lambda: keras_regs.layers.Contractive(
        keras.layers.Dense(3, activation="tanh"), 0.1, reduction="mean"
    ),
}


# Elementwise activations in NumPy float64, for the contractive references.
_ERF = np.vectorize(math.erf)
ACTIVATIONS = {
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0),
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": np.tanh,
    "softplus": lambda z: np.log1p(np.exp(z)),
    "elu": lambda z: np.where(z > 0, z, np.exp(z) - 1),
    "selu": lambda z: (
        1.0507009873554805 * np.where(z > 0, z, 1.6732632423543772 * (np.exp(z) - 1))
    ),
    "gelu": lambda z: 0.5 * z * (1 + _ERF(z / np.sqrt(2))),
    "silu": lambda z: z / (1 + np.exp(-z)),
}
JACOBIAN_STEP = 1e-5


def jacobian_norms(f, x):
    """Each example's squared Frobenius norm of the Jacobian of `f` (a NumPy
    function of a batch), by central differences in float64 (every
    coordinate's two steps in one call of `f`, as one batch)."""
    x = x.astype("float64")
    size = x[0].size
    steps = (JACOBIAN_STEP * np.eye(size)).reshape(size, 1, *x.shape[1:])
    up, down = (f((x + sign * steps).reshape(-1, *x.shape[1:])) for sign in (1, -1))
    columns = ((up - down) / (2 * JACOBIAN_STEP)).reshape(size, len(x), -1)
    return np.sum(columns**2, axis=(0, 2))


def to_numpy(x):
    """A tensor or a variable as a NumPy array (variables through `.numpy()`:
    `np.array` of a Keras TensorFlow variable trips NumPy 2's `__array__`
    deprecation warning, an error in this suite)."""
    if isinstance(x, keras.Variable):
        return np.array(x.numpy())
    return keras.ops.convert_to_numpy(x)


def dense_model(units=8, inputs=5, seed=0, **dense_kwargs):
    """Input -> Dense(units, tanh, **dense_kwargs) -> Dense(1), seeded weights."""
    init = keras.initializers.GlorotUniform(seed=seed)
    x_in = keras.Input((inputs,))
    h = keras.layers.Dense(
        units,
        activation="tanh",
        kernel_initializer=init,
        name="hidden",
        bias_initializer=keras.initializers.RandomNormal(seed=seed + 1),
        **dense_kwargs,
    )(x_in)
    out = keras.layers.Dense(1, kernel_initializer=init, name="out")(h)
    return keras.Model(x_in, out)


def numpy_forward(model, x):
    """`dense_model`'s hidden kernel, activations and predictions, in NumPy."""
    hidden, out = model.get_layer("hidden"), model.get_layer("out")
    kernel, bias = to_numpy(hidden.kernel), to_numpy(hidden.bias)
    h = np.tanh(x.astype("float64") @ kernel + bias)
    prediction = h @ to_numpy(out.kernel) + to_numpy(out.bias)
    return kernel, h, prediction


def regression_data(n=64, inputs=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, inputs)).astype("float32")
    y = (x @ rng.normal(size=(inputs, 1))).astype("float32")
    return x, y


def _seeded_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _seeded_layers(layer)
        elif isinstance(
            layer, (keras_regs.layers.GaussianNoise, keras_regs.layers.BernoulliDropout)
        ):
            yield layer


def seed_states(model):
    """The random state of keras_regs' noise and dropout layers (Keras saves
    none of its own layers' seed states, so an LSTM cell's is not included)."""
    return [to_numpy(layer.seed_generator.state) for layer in _seeded_layers(model)]


def snapshot(model, x, seeds=True):
    """Everything a round trip must keep, as plain Python/NumPy values: the
    config, the weights (and with `seeds`, the noise and dropout layers' random
    state), `model.losses` after an inference call on `x`, and the predictions."""
    predictions = keras.tree.map_structure(to_numpy, model(x, training=False))
    if isinstance(predictions, dict):  # a KerasHub backbone's named outputs
        predictions = [predictions[key] for key in sorted(predictions)]
    return {
        "config": json.loads(model.to_json()),
        "variables": [to_numpy(v) for v in model.weights]
        + (seed_states(model) if seeds else []),
        "losses": [float(to_numpy(loss)) for loss in model.losses],
        "predictions": predictions,
    }


def assert_snapshots_equal(a, b, config=True):
    """Bit-identical weights, losses and predictions; with `config`, equal
    model configs (else equal but for the model's name and compile settings:
    a clone has a new name, a freshly built model is not compiled)."""
    if config:
        assert a["config"] == b["config"]
    else:
        inner_a, inner_b = dict(a["config"]["config"]), dict(b["config"]["config"])
        inner_a.pop("name"), inner_b.pop("name")
        assert inner_a == inner_b
    assert len(a["variables"]) == len(b["variables"])
    for va, vb in zip(a["variables"], b["variables"], strict=True):
        np.testing.assert_array_equal(va, vb)
    assert a["losses"] == b["losses"]
    keras.tree.map_structure(
        np.testing.assert_array_equal, a["predictions"], b["predictions"]
    )


def save_inputs(path, x):
    """`x` (an array, a list of arrays or a dict of arrays) as an .npz file,
    without pickle."""
    if isinstance(x, dict):
        np.savez(path, **{f"key_{k}": v for k, v in x.items()}, kind="dict")
        return
    arrays = list(x) if isinstance(x, (list, tuple)) else [x]
    kind = "list" if isinstance(x, (list, tuple)) else "array"
    np.savez(path, *arrays, kind=kind)


def load_inputs(path):
    data = np.load(path)
    kind = str(data["kind"])
    if kind == "dict":
        return {k[len("key_") :]: data[k] for k in data.files if k.startswith("key_")}
    arrays = [data[f"arr_{i}"] for i in range(len(data.files) - 1)]
    return arrays if kind == "list" else arrays[0]


_LOADER = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {tests_dir!r})
    import numpy as np
    {imports}
    import keras
    from helpers import load_inputs, snapshot
    for path, x_path, out in json.loads(sys.argv[1]):
        model = keras.saving.load_model(path, safe_mode=True)
        snap = snapshot(model, load_inputs(x_path))
        predictions = snap["predictions"]
        if not isinstance(predictions, list):
            predictions = [predictions]
        np.savez(out, *snap["variables"])
        np.savez(out + "_predictions.npz", *predictions)
        with open(out + ".json", "w") as f:
            json.dump(
                {{
                    "config": snap["config"],
                    "losses": snap["losses"],
                    "list": isinstance(snap["predictions"], list),
                }},
                f,
            )
    """
)


def run_python(script, *args):
    """Run the source `script` in a new Python with `args`; fail with its stderr."""
    return run_file("-c", script, *args)


def run_file(*argv):
    """Run `python *argv` in a new process; its stdout (fail with its stderr)."""
    result = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def load_all_in_fresh_process(items, imports=("import keras_regs",)):
    """Load each `(path, x)` `.keras` file in one new Python; snapshot each on x.

    The new process imports only what `imports` lists (by default keras_regs,
    no `custom_objects`) and loads with `safe_mode=True`.
    """
    jobs = []
    for path, x in items:
        base = os.path.splitext(str(path))[0]
        x_path, out = base + "_x.npz", base + "_snapshot"
        save_inputs(x_path, x)
        jobs.append((str(path), x_path, out))
    script = _LOADER.format(imports="\n".join(imports), tests_dir=TESTS_DIR)
    run_python(script, json.dumps(jobs))
    snapshots = []
    for _, _, out in jobs:
        arrays = np.load(out + ".npz")
        predictions = np.load(out + "_predictions.npz")
        with open(out + ".json") as f:
            meta = json.load(f)
        predictions = [predictions[f"arr_{i}"] for i in range(len(predictions.files))]
        snapshots.append(
            {
                "config": meta["config"],
                "losses": meta["losses"],
                "variables": [arrays[f"arr_{i}"] for i in range(len(arrays.files))],
                "predictions": predictions if meta["list"] else predictions[0],
            }
        )
    return snapshots


def load_in_fresh_process(path, x, imports=("import keras_regs",)):
    """`load_all_in_fresh_process` for one file."""
    return load_all_in_fresh_process([(path, x)], imports)[0]


def layer_configs(model):
    """The model's config without its name and compile settings: the layers."""
    return json.loads(model.to_json())["config"]["layers"]


def model_state(model, x=None):
    """Everything `regularize_model` must leave untouched when it raises.

    With `x`, the model is called on it first, so activity penalties are current.
    """
    if x is not None:
        model(x)
    layers = []

    def visit(current):
        for layer in current.layers:
            layers.append(layer)
            if isinstance(layer, keras.Model):
                visit(layer)

    visit(model)
    return {
        "config": json.loads(model.to_json()),
        "layers": [id(layer) for layer in layers],
        "weights": [to_numpy(v) for v in model.weights],
        "regularizers": [id(v.regularizer) for v in model.weights],
        "activity": [id(layer.activity_regularizer) for layer in layers],
        "losses": [float(to_numpy(loss)) for loss in model.losses],
    }


def assert_states_equal(a, b):
    assert a["config"] == b["config"]
    assert a["layers"] == b["layers"]
    assert a["regularizers"] == b["regularizers"]
    assert a["activity"] == b["activity"]
    assert a["losses"] == b["losses"]
    for wa, wb in zip(a["weights"], b["weights"], strict=True):
        np.testing.assert_array_equal(wa, wb)


def mlp(hidden=(8, 6), inputs=5, outputs=2, seed=0, **dense_kwargs):
    """A Functional MLP with named layers `dense_0`, `dense_1`, ..., `out`."""
    x_in = keras.Input((inputs,), name="x")
    x = x_in
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(
            units,
            activation="tanh",
            name=f"dense_{i}",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i),
            bias_initializer=keras.initializers.RandomNormal(seed=seed + 10 + i),
            **dense_kwargs,
        )(x)
    out = keras.layers.Dense(
        outputs,
        name="out",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 99),
    )(x)
    return keras.Model(x_in, out)


def mlp_numpy(model, x):
    """`mlp`'s hidden activations (one array per hidden layer) and output."""
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    hidden, h = [], x.astype("float64")
    for layer in dense[:-1]:
        h = np.tanh(h @ to_numpy(layer.kernel) + to_numpy(layer.bias))
        hidden.append(h)
    return hidden, h @ to_numpy(dense[-1].kernel) + to_numpy(dense[-1].bias)
