"""log_penalties: the data loss and each penalty keyword in fit's logs."""

import contextlib
import types

import keras
from keras import ops

from keras_regs import _schedule, _terms
from keras_regs.layers._seeded import SeededLayer
from keras_regs.layers.contractive import Contractive
from keras_regs.model.graph import check_model
from keras_regs.regularizers.base import Regularizer, snake_case
from keras_regs.regularizers.penalties import Penalties

DATA = "data_loss"
OTHER = "other_penalties"
_TRACKERS = "_keras_regs_trackers"
_EXTRA = "__every_penalty__"  # the record's key for what compute_loss added


def _regularizers(model):
    """Every regularizer on the model's weights and activity slots."""
    found = []
    for layer in model._flatten_layers(include_self=False):
        if layer.activity_regularizer is not None:
            found.append(layer.activity_regularizer)
        if isinstance(layer, Contractive):
            found.append(layer)
    found += [v.regularizer for v in model.weights if v.regularizer is not None]
    return found


def _ours(model):
    """Every keras_regs penalty and layer of the model (what may hold a schedule)."""
    found = []
    for item in _regularizers(model):
        if isinstance(item, Penalties):
            found += [*item.penalties.values(), item.base]
        else:
            found.append(item)
    found += [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, SeededLayer)
    ]
    return [
        item
        for item in found
        if isinstance(item, Regularizer | Contractive | SeededLayer)
    ]


def _keywords(model):
    """The penalty keywords present on the model, and whether anything else
    (a Keras regularizer, a Penalties' base) adds to its losses."""
    keywords, other = [], False
    for item in _regularizers(model):
        if isinstance(item, Penalties):
            names = [
                name
                for name, penalty in item.penalties.items()
                if isinstance(penalty, Regularizer)
            ]
            other = other or item.base is not None or len(names) < len(item.penalties)
        elif isinstance(item, Regularizer):
            names = [snake_case(type(item).__name__)]
        elif isinstance(item, Contractive):
            names = ["contractive"]
        else:
            names, other = [], True
        keywords += [n for n in names if n not in keywords]
    return keywords, other


class _Terms(keras.metrics.Metric):
    """The epoch means of the loss's terms, one entry each in the logs.

    One float32 vector holds every term's weighted total and, last, the summed
    weight; it is updated once per step, instead of one `keras.metrics.Mean` (two
    variables, two updates) per term: one array carried through the compiled step
    (`benchmarks/logs_step.py`). Each term is weighted by the batch size, as Keras
    weights `loss`.
    """

    def __init__(self, names, name="keras_regs_terms", **kwargs):
        super().__init__(name=name, **kwargs)
        self.names = list(names)
        self.sums = self.add_variable(
            shape=(len(self.names) + 1,), initializer="zeros", name="sums"
        )

    def update_state(self, values, weight):
        weight = ops.reshape(ops.cast(weight, "float32"), (1,))
        values = ops.cast(values, "float32") * weight
        self.sums.assign_add(ops.concatenate([values, weight]))

    def result(self):
        means = ops.divide_no_nan(self.sums[:-1], self.sums[-1])
        return {name: means[i] for i, name in enumerate(self.names)}

    def reset_state(self):
        self.sums.assign(ops.zeros((len(self.names) + 1,), "float32"))

    def get_config(self):
        return {"names": self.names, "name": self.name}


def log_penalties(model, enabled=True):
    """Log the data loss and each penalty keyword's term during fit and evaluate.

    After this call, `fit` and `evaluate` report, beside `loss`, `data_loss` (the
    compiled loss), one entry per penalty keyword on the model (`weight_l2`,
    `hidden_l1`, `contractive`, ...) and, when the model also holds penalties that
    are not keras_regs' (a Keras `L2`, a `Penalties` base), `other_penalties`.
    Each is a mean over the epoch's batches weighted as Keras weights `loss`, so
    the entries add up to `loss`. Validation gives `val_` twins. History, the
    progress bar and `keras.callbacks.TensorBoard` show them like any metric.

    The same call connects schedules to the model: a strength, rate or stddev
    given as a `keras.optimizers.schedules.LearningRateSchedule` is evaluated at
    the step of `model.optimizer` inside the compiled train and test steps
    (without retracing them), and at the optimizer's current step outside them.

    `keras_regs.regularize_model` calls it for you. Call it yourself for a model
    whose keras_regs penalties were set by hand (`Dense(...,
    kernel_regularizer=keras_regs.WeightL2(1e-4))`) and for a model loaded from a
    file, before `fit`. Calling it again updates the entries to the penalties now
    on the model.

    With these entries `model.evaluate(x, y)` returns a list (as with any
    compiled metric); `evaluate(..., return_dict=True)["loss"]` reads the loss.
    `log_penalties(model, enabled=False)` removes them (schedules stay connected).

    Works on TensorFlow, JAX and PyTorch, in compiled and eager steps. Under a
    `tf.distribute` strategy the entries are not scaled per replica: use them on
    one device.

    Args:
        model: a built `keras.Model`.
        enabled: `False` removes the entries.

    Returns:
        The model.
    """
    check_model(model)
    if not isinstance(enabled, bool):
        raise TypeError(
            "Invalid type for argument `enabled`. Expected a bool. "
            f"Received: enabled={enabled!r} (of type {type(enabled).__name__})"
        )
    _schedule.bind(model, _ours(model))
    _wrap(model)
    current = getattr(model, _TRACKERS, None)
    if not enabled:
        if current is not None:
            _set_trackers(model, None)
            _retrace(model)
        return model
    keywords, other = _keywords(model)
    names = [DATA, *keywords, *([OTHER] if other else [])]
    if current is not None and current.names == names:
        return model
    _set_trackers(model, _Terms(names))
    _retrace(model)
    return model


def _retrace(model):
    """The next fit or evaluate traces its step anew (with the new metrics)."""
    model.train_function = model.test_function = None


def _set_trackers(model, trackers):
    """Replace the model's trackers (the old ones leave `model.metrics`)."""
    old = getattr(model, _TRACKERS, None)
    locked = model._tracker.locked
    model._tracker.unlock()
    try:
        if old is not None:
            model._tracker.untrack(old)
        setattr(model, _TRACKERS, trackers)
    finally:
        if locked:
            model._tracker.lock()


def _wrap(model):
    """Wrap the model's steps (once): evaluate schedules at the optimizer's step,
    and, while trackers are set, collect the terms and update the trackers."""
    if getattr(model, "_keras_regs_wrapped", False):
        return
    train_step, test_step = model.train_step, model.test_step
    compute_loss = model.compute_loss
    aggregate = model._aggregate_additional_loss

    def recorded_aggregate(loss):
        value = aggregate(loss)
        record = _terms.current()
        if record is not None:
            record[(_EXTRA, len(record))] = (_EXTRA, value)
        return value

    def stepped(step, step_of):
        def wrapped(*args, **kwargs):
            collect = (
                _terms.collecting()
                if getattr(model, _TRACKERS, None)
                else contextlib.nullcontext()
            )
            with _schedule.stepping(lambda: step_of(args)), collect:
                return step(*args, **kwargs)

        return wrapped

    def logged_compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        total = compute_loss(x, y, y_pred, sample_weight, training=training)
        terms = getattr(self, _TRACKERS, None)
        record = _terms.current()
        if not terms or record is None:
            return total
        sums = _terms.totals(record)
        # every penalty as compute_loss added it (read off, not recomputed)
        extra = ops.cast(sums.pop(_EXTRA, ops.zeros(())), "float32")
        batch = ops.shape(keras.tree.flatten(x)[0])[0]
        values = [ops.cast(total, "float32") - extra]
        known = ops.zeros((), "float32")
        for name in terms.names[1:]:
            if name == OTHER:  # always the last entry
                values.append(extra - known)
                continue
            value = ops.cast(sums.get(name, ops.zeros(())), "float32")
            known = known + value
            values.append(value)
        terms.update_state(ops.stack(values), batch)
        return total

    model._aggregate_additional_loss = recorded_aggregate
    model.train_step = stepped(
        train_step, lambda args: _schedule.train_step_of(model, args)
    )
    model.test_step = stepped(test_step, lambda args: _schedule.test_step_of(model))
    model.compute_loss = types.MethodType(logged_compute_loss, model)
    model._keras_regs_wrapped = True
