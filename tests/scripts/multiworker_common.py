"""What the multi-worker scripts and tests/test_multiworker.py share.

The backend is chosen by whoever imports this module (the worker scripts set
KERAS_BACKEND first; the test imports it in the pytest process of its
backend's pass). The models, the data and the way results become JSON are
written once here; each backend's script holds its training runs, which the
test imports for its one-process reference: the cluster and the reference run
the very same code, only the strategy (TensorFlow) or the distribution (JAX)
differs.
"""

import faulthandler
import json
import os
import sys

import keras
import numpy as np

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

import keras_regs  # noqa: E402
from helpers import seed_states  # noqa: E402

GLOBAL_BATCH, EPOCHS, LEARNING_RATE = 16, 3, 0.1
# the BackupAndRestore run: RESUME_EPOCHS in all, interrupted as epoch
# INTERRUPT_AT begins
RESUME_EPOCHS, INTERRUPT_AT = 4, 2


def base_model():
    """A seeded Functional MLP, 5 -> 8 -> 6 -> 2 (tanh), no penalties."""
    x_in = keras.Input((5,), name="x")
    h = x_in
    for i, units in enumerate((8, 6)):
        h = keras.layers.Dense(
            units,
            activation="tanh",
            name=f"dense_{i}",
            kernel_initializer=keras.initializers.GlorotUniform(seed=i),
            bias_initializer=keras.initializers.RandomNormal(seed=10 + i),
        )(h)
    out = keras.layers.Dense(
        2, name="out", kernel_initializer=keras.initializers.GlorotUniform(seed=9)
    )(h)
    return keras.Model(x_in, out)


def deterministic_model():
    """Weight and activity penalties only: the same numbers on any cluster."""
    return keras_regs.regularize_model(
        base_model(), weight_l2=1e-2, weight_l1=1e-3, hidden_l1=1e-2
    )


def random_model():
    """Penalties, plus input noise and hidden dropout (seeded layers that
    regularize_model inserts): what the resume and saving checks train."""
    return keras_regs.regularize_model(
        base_model(),
        weight_l2=1e-2,
        hidden_l1=1e-2,
        input_noise=0.3,
        hidden_dropout=0.25,
        seed=21,
    )


def data(n=32):
    """n examples (the global data set); fit splits each global batch of
    GLOBAL_BATCH rows between the workers."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5)).astype("float32")
    return x, rng.normal(size=(n, 2)).astype("float32")


def probe():
    """Inputs the saved model is compared on (not training data)."""
    return np.random.default_rng(1).normal(size=(6, 5)).astype("float32")


def compiled(model):
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="mse")
    return model


def arrays(model):
    """Every weight, then the noise and dropout layers' random state, as lists."""
    values = [keras.ops.convert_to_numpy(v.value) for v in model.weights]
    return [np.asarray(v).tolist() for v in values + seed_states(model)]


def history(h):
    """A History's entries as plain floats."""
    return {key: [float(v) for v in values] for key, values in h.history.items()}


def max_difference(a, b):
    """The largest absolute difference between two lists of nested lists."""
    assert len(a) == len(b), (len(a), len(b))
    return max(
        float(np.max(np.abs(np.asarray(u, "float64") - np.asarray(v, "float64"))))
        for u, v in zip(a, b, strict=True)
    )


def saved_record(model):
    """What a reload must give back: the config (every penalty and inserted
    layer), the weights and random state, and on `probe()` the predictions, the
    penalties (`model.losses`) and their float32 total. An inference call:
    the random state does not move."""
    predictions = model(probe(), training=False)
    return {
        "config": json.loads(model.to_json()),
        "arrays": arrays(model),
        "predictions": np.asarray(keras.ops.convert_to_numpy(predictions)).tolist(),
        "losses": [float(keras.ops.convert_to_numpy(v)) for v in model.losses],
        "penalty": float(
            keras.ops.convert_to_numpy(keras_regs.regularization_loss(model))
        ),
    }


def watchdog():
    """A worker that hangs (waiting in a collective for a peer that died)
    prints every thread's stack and exits after MULTIWORKER_WATCHDOG seconds,
    before the test kills it: the test's failure message then shows where."""
    seconds = float(os.environ.get("MULTIWORKER_WATCHDOG", "0"))
    if seconds > 0:
        faulthandler.dump_traceback_later(seconds, exit=True)


class Interrupt(keras.callbacks.Callback):
    """Stops fit as epoch `at` begins (every worker at the same point, so no
    worker waits in a collective for another), as a preemption would."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise Interrupted(f"interrupted as epoch {epoch} begins")


class Interrupted(RuntimeError):
    pass


class EpochLogs(keras.callbacks.Callback):
    """Every epoch's logs, kept across an interruption (History is lost with it)."""

    def __init__(self):
        super().__init__()
        self.epochs = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[epoch] = {k: float(v) for k, v in (logs or {}).items()}
