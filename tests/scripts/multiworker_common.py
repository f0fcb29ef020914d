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
import threading
import time

import keras
import numpy as np

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

import keras_regs  # noqa: E402
from helpers import seed_states  # noqa: E402

GLOBAL_BATCH, EPOCHS, LEARNING_RATE, MOMENTUM = 16, 3, 0.1, 0.9
# the BackupAndRestore run: RESUME_EPOCHS in all, interrupted as epoch
# INTERRUPT_AT begins
RESUME_EPOCHS, INTERRUPT_AT = 4, 2


def base_model(seeded=True):
    """A Functional MLP, 5 -> 8 -> 6 -> 2 (tanh), no penalties; its
    initializers seeded, or with `seeded=False` drawn from Keras' global seed
    (on a JAX cluster the one `keras.distribution.initialize` agrees on)."""

    def seed(value):
        return value if seeded else None

    x_in = keras.Input((5,), name="x")
    h = x_in
    for i, units in enumerate((8, 6)):
        h = keras.layers.Dense(
            units,
            activation="tanh",
            name=f"dense_{i}",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed(i)),
            bias_initializer=keras.initializers.RandomNormal(seed=seed(10 + i)),
        )(h)
    out = keras.layers.Dense(
        2,
        name="out",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed(9)),
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


def unseeded_model():
    """The random model's penalties and layers with nothing seeded (neither
    the initializers nor the inserted noise and dropout): every process of a
    cluster must still build the same model."""
    return keras_regs.regularize_model(
        base_model(seeded=False),
        weight_l2=1e-2,
        hidden_l1=1e-2,
        input_noise=0.3,
        hidden_dropout=0.25,
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


def optimizer():
    """SGD with momentum: an optimizer with state (the momentums and the
    iteration count) that a resumed run must restore."""
    return keras.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM)


def compiled(model):
    model.compile(optimizer=optimizer(), loss="mse")
    return model


def arrays(model, optimizer=None):
    """Every weight, the noise and dropout layers' random state, then every
    variable of `optimizer` (by default the model's own, once built: the
    iteration count, the learning rate and the momentums), as lists."""
    optimizer = optimizer or getattr(model, "optimizer", None)
    values = [keras.ops.convert_to_numpy(v.value) for v in model.weights]
    values += seed_states(model)
    if optimizer is not None and optimizer.built:
        values += [keras.ops.convert_to_numpy(v.value) for v in optimizer.variables]
    return [np.asarray(v).tolist() for v in values]


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
    faulthandler.enable()  # a crash (a segfault) says so in the log
    seconds = float(os.environ.get("MULTIWORKER_WATCHDOG", "0"))
    if seconds > 0:
        faulthandler.dump_traceback_later(seconds, exit=True)
    parent = int(os.environ.get("MULTIWORKER_PARENT", "0"))
    if parent:
        threading.Thread(target=orphan_guard, args=(parent,), daemon=True).start()


def orphan_guard(parent):
    """Exits the worker (at once, whatever it is doing) as soon as the process
    that started it, the test, is gone: a worker is never left running when
    pytest is killed. On Linux the worker script has already asked the kernel
    to kill it then (PR_SET_PDEATHSIG); this covers a test that ended before
    that, and other systems."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(3)


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
