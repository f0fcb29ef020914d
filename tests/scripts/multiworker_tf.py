"""One worker of a TensorFlow MultiWorkerMirroredStrategy cluster.

tests/test_multiworker.py starts two of these on 127.0.0.1, each with its own
TF_CONFIG (`{"cluster": {"worker": [...]}, "task": {"type": "worker", "index":
i}}`; worker 0 is the chief), twice:

    multiworker_tf.py train  OUT.json WORKDIR
    multiworker_tf.py resume OUT.json WORKDIR

`train`: fit on the deterministic model (penalties only); the same model in a
custom loop adding `keras_regs.regularization_loss`, and again adding the raw
`sum(model.losses)` (what the check would catch); then the random model (noise
and dropout inserted) for RESUME_EPOCHS epochs uninterrupted, and again with
`keras.callbacks.BackupAndRestore`, interrupted as epoch INTERRUPT_AT begins:
the process then ends, as a preempted job does.

`resume`: new processes, a new cluster, the random model built afresh and fit
with the same BackupAndRestore, which restores it and runs the remaining
epochs; what one noise and one dropout layer draw on each replica; then every
worker saves the model (the chief to WORKDIR/cluster.keras, the other to a
temporary directory it deletes, as TensorFlow's multi-worker guide does) and
records what the saved model must give back.

Each writes its results to OUT.json. The functions are also what the test's
one-process reference runs (under the default strategy, on the global batch).
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
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # imported by the test, not run
    sys.path.append(HERE)
import keras  # noqa: E402
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
    watchdog,
)

import keras_regs  # noqa: E402


def split_between_workers(dataset):
    """Each global batch split between the workers (rows 0-7 to worker 0,
    8-15 to worker 1), as fit splits arrays."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options)


def fit_run(strategy):
    """fit on the global batch of GLOBAL_BATCH rows: every History entry
    (loss, data_loss, each penalty keyword) and the final weights."""
    with strategy.scope():
        model = compiled(deterministic_model())
    x, y = data()
    h = model.fit(
        x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0
    )
    return {"history": history(h), "weights": arrays(model)}


def loop_run(strategy, penalty):
    """The tf.distribute custom-loop recipe with `penalty(model)` added in each
    replica: each step's data loss and penalty summed over the replicas (what
    one process computes on the global batch), the final weights and optimizer
    state, and the rows of the first global batch this worker trained on."""
    with strategy.scope():
        model = deterministic_model()
        sgd = optimizer()
        sgd.build(model.trainable_variables)
    x, y = data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    dataset = strategy.experimental_distribute_dataset(
        split_between_workers(dataset.repeat(EPOCHS))
    )

    @tf.function
    def step(xb, yb):
        def replica_step(xb, yb):
            with tf.GradientTape() as tape:
                predictions = model(xb, training=True)
                data_loss = tf.nn.compute_average_loss(
                    keras.losses.mean_squared_error(yb, predictions),
                    global_batch_size=GLOBAL_BATCH,
                )
                penalty_loss = penalty(model)
                loss = data_loss + penalty_loss
            variables = model.trainable_variables
            gradients = tape.gradient(loss, variables)
            sgd.apply_gradients(zip(gradients, variables, strict=True))
            return tf.stack([data_loss, penalty_loss])

        per_replica = strategy.run(replica_step, args=(xb, yb))
        return strategy.reduce("SUM", per_replica, axis=None)

    data_losses, penalties, first_rows = [], [], None
    for xb, yb in dataset:
        if first_rows is None:  # this worker's replica's rows (one replica)
            first_rows = strategy.experimental_local_results(xb)[0].numpy().tolist()
        data_loss, penalty_loss = step(xb, yb).numpy().tolist()
        data_losses.append(data_loss)
        penalties.append(penalty_loss)
    return {
        "data": data_losses,
        "penalty": penalties,
        "weights": arrays(model, sgd),
        "first_rows": first_rows,
    }


def raw_penalty(model):
    """What a loop written for one device adds: every penalty, in full."""
    return tf.add_n([tf.cast(loss, "float32") for loss in model.losses])


def random_fit(strategy, callbacks=()):
    """The random model on the global batch for RESUME_EPOCHS epochs (or until
    a callback stops it): the model and each epoch's logs."""
    with strategy.scope():
        model = compiled(random_model())
    x, y = data()
    logs = EpochLogs()
    try:
        model.fit(
            x,
            y,
            batch_size=GLOBAL_BATCH,
            epochs=RESUME_EPOCHS,
            shuffle=False,
            verbose=0,
            callbacks=[*callbacks, logs],
        )
    except Interrupted:
        pass
    return model, {str(epoch): value for epoch, value in logs.epochs.items()}


def replica_draws(strategy):
    """One training call of a BernoulliDropout and a GaussianNoise layer on an
    all-ones global batch (zeros for the noise), each replica on its rows:
    the outputs gathered in row order, `[dropout rows, noise rows]`."""
    with strategy.scope():
        dropout = keras_regs.layers.BernoulliDropout(0.5, seed=3)
        noise = keras_regs.layers.GaussianNoise(1.0, seed=4)
    ones = np.ones((GLOBAL_BATCH, 6), "float32")
    dataset = tf.data.Dataset.from_tensor_slices(ones).batch(GLOBAL_BATCH)
    batch = next(
        iter(strategy.experimental_distribute_dataset(split_between_workers(dataset)))
    )

    @tf.function
    def draw(batch):
        def replica_draw(rows):
            return tf.stack(
                [dropout(rows, training=True), noise(rows * 0, training=True)]
            )

        return strategy.gather(strategy.run(replica_draw, args=(batch,)), axis=1)

    return draw(batch).numpy().tolist()


# Two fixes to Keras 3.15's TensorFlow trainer, without which `fit` fails under
# MultiWorkerMirroredStrategy, with or without keras_regs (keras-team/keras#20585,
# tensorflow/tensorflow#72388): `_maybe_symbolic_build` reduces the first batch,
# a tuple of per-replica values, in one `strategy.reduce` call ("Attempt to
# convert a value (PerReplica...)"): here the model is built on this worker's own
# rows of that batch instead, with no communication (any dtype, any split); the
# train step reduces each logged scalar along axis 0 ("Invalid reduction
# dimension 0 for input with 0 dimensions"): here the mean over the replicas, what
# "auto" means for every other strategy (each replica's running mean over its
# rows: with equal per-replica batches, the global batch's). docs/scaling-out.md
# prints this function; the test checks the two copies are the same.
def patch_keras_fit_for_multiworker():
    """Mend Keras 3.15's `fit` under MultiWorkerMirroredStrategy (a no-op for
    every other strategy)."""
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    def multi_worker(strategy):
        return trainer._collective_all_reduce_multi_worker(strategy)

    reduce_per_replica = trainer.reduce_per_replica

    def reduce_each(values, strategy, reduction):
        # each replica's own metric results: their mean, as "auto" means elsewhere
        if reduction == "auto" and multi_worker(strategy):
            return tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None), values
            )
        return reduce_per_replica(values, strategy, reduction)

    symbolic_build = trainer.TensorFlowTrainer._maybe_symbolic_build

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is None or strategy is None or not multi_worker(strategy):
            return symbolic_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:  # the first batch: this worker's own rows
            data_batch = tree.map_structure(
                lambda v: strategy.experimental_local_results(v)[0], next(it)
            )
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    trainer.reduce_per_replica = reduce_each
    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build


def main():
    watchdog()
    patch_keras_fit_for_multiworker()
    phase, out, workdir = sys.argv[1:4]
    seconds = {"import": round(time.monotonic() - STARTED, 2)}
    last = time.monotonic()

    def timer(name):
        nonlocal last
        seconds[name] = round(time.monotonic() - last, 2)
        last = time.monotonic()

    cluster = json.loads(os.environ["TF_CONFIG"])
    index = cluster["task"]["index"]
    chief = index == 0
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    # each worker its own backup directory: Keras' BackupAndRestore writes its
    # files from every worker that runs it
    backup = os.path.join(workdir, f"backup-{index}")
    report = {
        "index": index,
        "workers": len(cluster["cluster"]["worker"]),
        "replicas": strategy.num_replicas_in_sync,
        "seconds": seconds,
    }
    timer("cluster")
    if phase == "train":
        report["fit"] = fit_run(strategy)
        timer("fit")
        report["loop"] = loop_run(strategy, keras_regs.regularization_loss)
        report["raw_loop"] = loop_run(strategy, raw_penalty)
        timer("loops")
        model, report["uninterrupted_logs"] = random_fit(strategy)
        report["uninterrupted"] = arrays(model)
        timer("uninterrupted")
        callbacks = [keras.callbacks.BackupAndRestore(backup), Interrupt(INTERRUPT_AT)]
        _, report["interrupted_logs"] = random_fit(strategy, callbacks)
        timer("interrupted")
    elif phase == "resume":
        callbacks = [keras.callbacks.BackupAndRestore(backup)]
        model, report["resumed_logs"] = random_fit(strategy, callbacks)
        report["resumed"] = arrays(model)
        timer("resumed")
        report["draws"] = replica_draws(strategy)
        timer("draws")
        directory = workdir if chief else tempfile.mkdtemp()
        report["saved"] = os.path.join(directory, "cluster.keras")
        model.save(report["saved"])
        report["saved_bytes"] = os.path.getsize(report["saved"])
        if not chief:
            shutil.rmtree(directory)
        report["record"] = saved_record(model)
        timer("saved")
    else:
        raise SystemExit(f"unknown phase {phase!r}")
    with open(out, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
