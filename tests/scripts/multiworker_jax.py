"""One process of a two-process JAX cluster (CPU, 127.0.0.1).

tests/test_multiworker.py starts two of these, twice:

    multiworker_jax.py train  COORDINATOR PROCESSES PROCESS_ID OUT.json WORKDIR
    multiworker_jax.py resume COORDINATOR PROCESSES PROCESS_ID OUT.json WORKDIR

Each calls `keras.distribution.initialize(COORDINATOR, PROCESSES, PROCESS_ID)`
(`jax.distributed.initialize`, then one random seed agreed by every process,
which unseeded initializers and layers draw from) with LOCAL_DEVICES CPU devices
of its own (cross-process collectives on CPU through gloo, JAX 0.10's default),
sets `keras.distribution.DataParallel` over the global device list, and trains.

`train`:
- fit on the deterministic model (penalties only), from a tf.data pipeline of
  global batches that fit shards between the processes;
- a jitted custom loop on the same model adding `keras_regs.regularization_loss`
  inside a `keras.StatelessScope`, each global batch assembled from the rows
  each process holds (`jax.make_array_from_process_local_data`);
- fit on a model with nothing seeded (its weights and random layers drawn from
  the agreed seed): each process reports its copy, which the test compares;
- the random model (noise and dropout inserted) for RESUME_EPOCHS epochs
  uninterrupted, then again with `keras.callbacks.BackupAndRestore`,
  interrupted as epoch INTERRUPT_AT begins: the process then ends.

`resume`: new processes, a new cluster, the random model built afresh and fit
with the same BackupAndRestore, which restores it (weights, optimizer, random
state) and runs the remaining epochs. Then every process saves the model (Keras
creates an optimizer variable while saving, which a multi-process distribution
places on every process: a save run by the chief alone would wait for the
others forever); the chief's goes to WORKDIR/cluster.keras, the other's to a
temporary directory it deletes.

Each writes its results to OUT.json. The functions are also what the test's
one-process reference runs (no distribution, one device, the global batch).
"""

import json
import os
import shutil
import sys
import tempfile
import time

STARTED = time.monotonic()
if __name__ == "__main__" and sys.platform.startswith("linux"):
    # first thing, before the long imports: the kernel kills this worker when
    # the test that started it ends, however it ends (multiworker_common's
    # watchdog checks that the test had not already ended)
    import ctypes

    ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
LOCAL_DEVICES = 2
os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # imported by the test, not run
    sys.path.append(HERE)
import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402
from multiworker_common import (  # noqa: E402
    EPOCHS,
    GLOBAL_BATCH,
    INTERRUPT_AT,
    RESUME_EPOCHS,
    EpochLogs,
    Interrupt,
    Interrupted,
    arrays,
    compiled,
    data,
    deterministic_model,
    history,
    optimizer,
    random_model,
    saved_record,
    unseeded_model,
    watchdog,
)

import keras_regs  # noqa: E402


def dataset():
    """The global data set in global batches: under a multi-process
    distribution fit gives each process its rows of every batch (Keras
    shards a tf.data pipeline there, and refuses arrays)."""
    x, y = data()
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)


def fit_run():
    """fit on the global batch: every History entry and the final weights."""
    model = compiled(deterministic_model())
    h = model.fit(dataset(), epochs=EPOCHS, shuffle=False, verbose=0)
    return {"history": history(h), "weights": arrays(model)}


def unseeded_fit():
    """fit on the model with nothing seeded: its initial weights and random
    state, every History entry, and the final weights and optimizer state."""
    model = compiled(unseeded_model())
    initial = arrays(model)
    h = model.fit(dataset(), epochs=EPOCHS, shuffle=False, verbose=0)
    return {"initial": initial, "history": history(h), "weights": arrays(model)}


def random_fit(callbacks=()):
    """The random model for RESUME_EPOCHS epochs (or until a callback stops
    it): the model and each epoch's logs."""
    model = compiled(random_model())
    logs = EpochLogs()
    try:
        model.fit(
            dataset(),
            epochs=RESUME_EPOCHS,
            shuffle=False,
            verbose=0,
            callbacks=[*callbacks, logs],
        )
    except Interrupted:
        pass
    return model, {str(epoch): value for epoch, value in logs.epochs.items()}


def loop_run(to_global=None):
    """A jitted custom loop on the deterministic model, adding
    `keras_regs.regularization_loss(model)` inside a `keras.StatelessScope`:
    each step's data loss and penalty, and the final weights. `to_global` makes
    a global batch (a `jax.Array` over the cluster) from the rows of it that
    this process holds."""
    model = deterministic_model()
    sgd = optimizer()
    sgd.build(model.trainable_variables)
    trainable, non_trainable = model.trainable_variables, model.non_trainable_variables

    def loss_fn(trainable_values, non_trainable_values, x, y):
        mapping = [
            *zip(trainable, trainable_values, strict=True),
            *zip(non_trainable, non_trainable_values, strict=True),
        ]
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as s:
            predictions = model(x, training=True)
            data_loss = ops.mean(keras.losses.mean_squared_error(y, predictions))
            penalty = keras_regs.regularization_loss(model)
        non_trainable_values = [s.get_current_value(v) for v in non_trainable]
        return data_loss + penalty, (data_loss, penalty, non_trainable_values)

    gradient_fn = jax.value_and_grad(loss_fn, has_aux=True)

    @jax.jit
    def step(state, x, y):
        trainable_values, non_trainable_values, optimizer_values = state
        (_, (data_loss, penalty, non_trainable_values)), gradients = gradient_fn(
            trainable_values, non_trainable_values, x, y
        )
        trainable_values, optimizer_values = sgd.stateless_apply(
            optimizer_values, gradients, trainable_values
        )
        state = trainable_values, non_trainable_values, optimizer_values
        return state, ops.stack([data_loss, penalty])

    state = (
        [v.value for v in trainable],
        [v.value for v in non_trainable],
        [v.value for v in sgd.variables],
    )
    x, y = data()
    losses = []
    for _ in range(EPOCHS):
        for start in range(0, len(x), GLOBAL_BATCH):
            xb, yb = x[start : start + GLOBAL_BATCH], y[start : start + GLOBAL_BATCH]
            if to_global is not None:
                xb, yb = to_global(xb), to_global(yb)
            state, values = step(state, xb, yb)
            losses.append(np.asarray(values).tolist())
    for variable, value in zip(trainable, state[0], strict=True):
        variable.assign(value)
    for variable, value in zip(sgd.variables, state[2], strict=True):
        variable.assign(value)
    return {
        "data": [v[0] for v in losses],
        "penalty": [v[1] for v in losses],
        "weights": arrays(model, sgd),
    }


def main():
    watchdog()
    phase, coordinator, processes, process_id, out, workdir = sys.argv[1:7]
    processes, process_id = int(processes), int(process_id)
    jax.config.update("jax_num_cpu_devices", LOCAL_DEVICES)
    # jax.distributed.initialize, then a random seed agreed by every process
    # (the coordinator binds to JAX_COORDINATOR_BIND_ADDRESS, which the test
    # sets to 127.0.0.1: JAX's default listens on every interface)
    keras.distribution.initialize(coordinator, processes, process_id)
    seconds = {"import": round(time.monotonic() - STARTED, 2)}
    last = time.monotonic()

    def timer(name):
        nonlocal last
        seconds[name] = round(time.monotonic() - last, 2)
        last = time.monotonic()

    devices = keras.distribution.list_devices("cpu")
    distribution = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(distribution)
    chief = jax.process_index() == 0
    report = {
        "process": jax.process_index(),
        "processes": jax.process_count(),
        "devices": len(devices),
        "local_devices": jax.local_device_count(),
        "data_axes": list(distribution.get_data_layout((GLOBAL_BATCH, 5)).axes),
        "seconds": seconds,
    }
    backup = os.path.join(workdir, f"backup-{process_id}")
    if phase == "train":
        report["fit"] = fit_run()
        timer("fit")
        rows = GLOBAL_BATCH // processes
        layout = distribution.get_data_layout((GLOBAL_BATCH, 1)).backend_layout

        def to_global(batch):
            """This process's rows of a global batch, as the global jax.Array."""
            local = batch[process_id * rows : (process_id + 1) * rows]
            return jax.make_array_from_process_local_data(layout, local)

        report["loop"] = loop_run(to_global)
        timer("loop")
        report["unseeded"] = unseeded_fit()
        timer("unseeded")
        model, report["uninterrupted_logs"] = random_fit()
        report["uninterrupted"] = arrays(model)
        timer("uninterrupted")
        callbacks = [keras.callbacks.BackupAndRestore(backup), Interrupt(INTERRUPT_AT)]
        _, report["interrupted_logs"] = random_fit(callbacks)
        timer("interrupted")
    elif phase == "resume":
        model, report["resumed_logs"] = random_fit(
            [keras.callbacks.BackupAndRestore(backup)]
        )
        report["resumed"] = arrays(model)
        timer("resumed")
        directory = workdir if chief else tempfile.mkdtemp()
        report["saved"] = os.path.join(directory, "cluster.keras")
        model.save(report["saved"])
        report["saved_bytes"] = os.path.getsize(report["saved"])
        if not chief:
            shutil.rmtree(directory)
        # every process: an operation on the cluster's arrays runs on all of them
        report["record"] = saved_record(model)
        timer("saved")
    else:
        raise SystemExit(f"unknown phase {phase!r}")
    with open(out, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
