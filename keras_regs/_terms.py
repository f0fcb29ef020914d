"""Per-keyword penalty terms of one training or evaluation step.

While a step wrapped by `keras_regs.log_penalties` runs, every keras_regs penalty
records the value it adds to the loss here, under its keyword. The step's
`compute_loss` reads them back in the same trace (TensorFlow's graph, JAX's jit):
no state outlives the step, and outside such a step nothing is recorded.

The record belongs to the step being traced, and a step is traced in one
thread (TensorFlow traces each replica of a `tf.distribute` strategy in a
thread of its own, which runs the whole step): the stack of records is the
thread's own, so two models trained at once in two threads never see each
other's terms.
"""

import contextlib
import threading

import keras
from keras import ops

from keras_regs import _keras


class Record(dict):
    """One step's terms, `{key: (keyword, value)}`; `read` says whether the
    step's `compute_loss` has read them (once a step)."""

    read = False


class _Stacks(threading.local):
    def __init__(self):
        self.records = []  # {key: (keyword, value)}, innermost step last
        self.aside = 0  # how many `set_aside` blocks are running


_local = _Stacks()


@contextlib.contextmanager
def collecting():
    """Record the penalty terms added while the block runs; yields the record."""
    record = Record()
    _local.records.append(record)
    try:
        yield record
    finally:
        _local.records.pop()


@contextlib.contextmanager
def set_aside():
    """Layers called again inside a penalty's own computation (the contractive
    penalty's Jacobian-vector products): what their penalties record while the
    block runs is not the step's, and goes; `is_aside()` tells other
    observers (`keras_regs.summary`'s) to look away too."""
    _local.aside += 1
    try:
        with collecting():
            yield
    finally:
        _local.aside -= 1


def is_aside():
    return _local.aside > 0


def current():
    """The record of the step being collected, or None outside such a step."""
    records = _local.records
    return records[-1] if records else None


def record(keyword, value, x, target, owner):
    """Note `value`, the term `owner` (a penalty or a layer) adds for `x`.

    Keras divides an activity penalty by the batch size before adding it; the
    term is recorded divided the same way. A weight penalty is recomputed each
    time Keras reads `model.losses`; keyed by penalty and variable, a second read
    replaces the first instead of counting twice.
    """
    active = current()
    if active is None:
        return
    if callable(keyword):  # computed only while collecting
        keyword = keyword()
    if target == "activity" and len(x.shape) > 0:
        batch = ops.cast(ops.shape(x)[0], value.dtype)
        value = ops.divide_no_nan(value, batch)
    if target == "weights":
        key = ("weights", id(owner), id(x))
    else:
        key = ("call", len(active))
    active[key] = (keyword, value)


def register_name(name):
    """Let a logged term's name be looked up as a metric that is minimized.

    KerasTuner infers an objective's direction (`objective="val_data_loss"`)
    before any model exists, from `keras.metrics.deserialize(name)`: each
    logged name is registered (unless taken) among Keras' metric names as
    `keras.metrics.Mean`, which is what a logged term is: a mean over the
    epoch's batches, lower is better.
    """
    _keras.register_metric_name(name, keras.metrics.Mean)


def totals(record):
    """`{keyword: summed value}` of a step's record."""
    sums = {}
    for keyword, value in record.values():
        sums[keyword] = value if keyword not in sums else sums[keyword] + value
    return sums
