"""Per-keyword penalty terms of one training or evaluation step.

While a step wrapped by `keras_regs.log_penalties` runs, every keras_regs penalty
records the value it adds to the loss here, under its keyword. The step's
`compute_loss` reads them back in the same trace (TensorFlow's graph, JAX's jit):
no state outlives the step, and outside such a step nothing is recorded.
"""

import contextlib

from keras import ops

_active = []  # a stack of collections: {key: (keyword, value)}


@contextlib.contextmanager
def collecting():
    """Record the penalty terms added while the block runs; yields the record."""
    record = {}
    _active.append(record)
    try:
        yield record
    finally:
        _active.pop()


def current():
    """The record of the step being collected, or None outside such a step."""
    return _active[-1] if _active else None


def record(keyword, value, x, target, owner):
    """Note `value`, the term `owner` (a penalty or a layer) adds for `x`.

    Keras divides an activity penalty by the batch size before adding it; the
    term is recorded divided the same way. A weight penalty is recomputed each
    time Keras reads `model.losses`; keyed by penalty and variable, a second read
    replaces the first instead of counting twice.
    """
    if not _active:
        return
    if callable(keyword):  # computed only while collecting
        keyword = keyword()
    if target == "activity" and len(x.shape) > 0:
        batch = ops.cast(ops.shape(x)[0], value.dtype)
        value = ops.divide_no_nan(value, batch)
    if target == "weights":
        key = ("weights", id(owner), id(x))
    else:
        key = ("call", len(_active[-1]))
    _active[-1][key] = (keyword, value)


def totals(record):
    """`{keyword: summed value}` of a step's record."""
    sums = {}
    for keyword, value in record.values():
        sums[keyword] = value if keyword not in sums else sums[keyword] + value
    return sums
