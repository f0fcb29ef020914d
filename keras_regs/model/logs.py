"""log_penalties: the data loss and each penalty keyword in fit's logs."""

from __future__ import annotations

import contextlib
import warnings

import keras
import numpy as np
from keras import ops

from keras_regs import _keras, _schedule, _terms
from keras_regs._validation import KerasRegsWarning
from keras_regs.layers._seeded import SeededLayer
from keras_regs.layers.contractive import Contractive
from keras_regs.model import persist
from keras_regs.model.graph import check_model
from keras_regs.regularizers.base import Regularizer, snake_case
from keras_regs.regularizers.penalties import Penalties

DATA = "data_loss"
OTHER = "other_penalties"
_TRACKERS = "_keras_regs_trackers"
_WRAPPED = "_keras_regs_wrapped"
_EXTRA = "__every_penalty__"  # the record's key for what compute_loss added
for _name in (DATA, OTHER, "contractive"):
    _terms.register_name(_name)


def _regularizers(model):
    """Every regularizer on the model's weights and activity slots."""
    found = []
    for layer in _keras.flatten_layers(model):
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
        for layer in _keras.flatten_layers(model)
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


class _Name:
    """One logged term as `MonitorCallback` looks it up: a name and a direction
    (every term is a loss: lower is better)."""

    _direction = "down"

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"<term {self.name}>"


class _Terms(_keras.METRICS_LIST):
    """The epoch means of the loss's terms, one entry each in the logs.

    One float32 vector holds every term's weighted total and, last, the summed
    weight; it is updated once per step, instead of one `keras.metrics.Mean` (two
    variables, two updates) per term: one array carried through the compiled step
    (`benchmarks/logs_step.py`). Each term is weighted by the batch size, as Keras
    weights `loss`.

    It is a Keras `MetricsList` whose `metrics` name the terms, each with
    `_direction = "down"`: that is where `EarlyStopping`, `ModelCheckpoint` and
    `ReduceLROnPlateau` look for the direction of `monitor="val_data_loss"` (or
    any term) when no `mode` is given.
    """

    def __init__(self, names, name="keras_regs_terms"):
        super().__init__([_Name(n) for n in names], name=name)
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

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def names(model):
    """The entries `log_penalties` gives `model`'s logs, in order."""
    keywords, other = _keywords(model)
    return [DATA, *keywords, *([OTHER] if other else [])]


def log_penalties(model: keras.Model, enabled: bool = True) -> keras.Model:
    """Log the data loss and each penalty keyword's term during fit and evaluate.

    After this call, `fit` and `evaluate` report, beside `loss`, `data_loss` (the
    compiled loss), one entry per penalty keyword on the model (`weight_l2`,
    `hidden_l1`, `contractive`, ...) and, when the model also holds penalties that
    are not keras_regs' (a Keras `L2`, a `Penalties` base), `other_penalties`.
    Each is a mean over the epoch's batches weighted as Keras weights `loss`, so
    the entries add up to `loss`. Validation gives `val_` twins. History, the
    progress bar and `keras.callbacks.TensorBoard` show them like any metric, and
    `EarlyStopping`, `ModelCheckpoint`, `ReduceLROnPlateau` and KerasTuner
    know that each is minimized (`monitor="val_data_loss"` needs no `mode`).

    The same call connects schedules to the model (`keras_regs.bind_schedules`).

    `keras_regs.regularize_model` calls it for you, and a model saved after it
    (to `.keras` or JSON) comes back with its logs and schedules connected.
    Call it yourself for a model whose keras_regs penalties were set by hand
    (`Dense(..., kernel_regularizer=keras_regs.WeightL2(1e-4))`). Calling it
    again updates the entries to the penalties now on the model; it may be
    called from a callback during `fit` (the entries change from the next step).

    With these entries `model.evaluate(x, y)` returns a list (as with any
    compiled metric); `evaluate(..., return_dict=True)["loss"]` reads the loss.
    `log_penalties(model, enabled=False)` removes them (schedules stay
    connected; later `regularize_model` calls keep them off).

    Works on TensorFlow, JAX and PyTorch, in compiled and eager steps, with a
    model's own `train_step`, `test_step` and `compute_loss` (the terms are
    read where `compute_loss` runs). Two models may train at once in two
    threads. Under a `tf.distribute` strategy each entry reads as on one
    device (as Keras' `loss` does).

    Args:
        model: a built `keras.Model`.
        enabled: `False` removes the entries.

    Returns:
        The model.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(1, kernel_regularizer=keras_regs.WeightL2(1e-4)),
    ])
    model = keras_regs.log_penalties(model)
    model.compile("sgd", "mse")
    history = model.fit(np.random.rand(16, 8), np.random.rand(16, 1), verbose=0)
    assert sorted(history.history) == ["data_loss", "loss", "weight_l2"]
    ```
    """
    check_model(model)
    if not isinstance(enabled, bool):
        raise TypeError(
            "Invalid type for argument `enabled`. Expected a bool. "
            f"Received: enabled={enabled!r} (of type {type(enabled).__name__})"
        )
    persist.set_logs(model, enabled)
    connect(model)
    persist.mark(model)
    return model


def holds_any(model):
    """Whether the model holds a keras_regs penalty or layer (what logs and
    schedules are about)."""
    return bool(_ours(model))


def connected(model):
    """Whether `log_penalties` or `bind_schedules` has wrapped the model."""
    return model.__dict__.get(_WRAPPED, False)


def connect(model):
    """Bind the model's schedules and bring its log entries up to date (on
    unless `log_penalties(model, enabled=False)` said otherwise). Called by
    `log_penalties`, by `regularize_model` and `strip_regularization` after a
    change, and when a saved model is loaded or cloned.
    """
    _keras.sync_state(model)  # a change from a callback during a JAX fit
    bind_schedules(model)
    current = getattr(model, _TRACKERS, None)
    wanted = names(model) if persist.logs_enabled(model) else None
    if (current.names if current is not None else None) == wanted:
        return model
    new = None if wanted is None else _Terms(wanted)
    if current is not None and new is not None:
        _carry(current, new)
    _set_trackers(model, new)
    _keras.retrace(model)
    return model


def _carry(old, new):
    """Keep the epoch's running sums of the entries both trackers log (a
    change from a callback mid-epoch): a new entry starts at 0, so its epoch
    mean counts the steps before it as 0."""
    sums = np.asarray(keras.ops.convert_to_numpy(old.sums))
    values = np.zeros(len(new.names) + 1, "float32")
    for i, name in enumerate(new.names):
        if name in old.names:
            values[i] = sums[old.names.index(name)]
    values[-1] = sums[-1]
    new.sums.assign(values)


def bind_schedules(model: keras.Model) -> keras.Model:
    """Connect the model's scheduled strengths, rates and stddevs to its optimizer.

    A `keras.optimizers.schedules.LearningRateSchedule` given as a strength, a
    dropout rate or a noise stddev is then evaluated at the step of
    `model.optimizer`: inside the compiled train and test steps (without
    retracing them) and outside them. A schedule not bound to any model raises
    an error where it is evaluated, instead of training at step 0.

    `log_penalties` and `regularize_model` call it, and a model saved after
    either comes back bound. Call it yourself for a model whose scheduled
    penalties or layers were set by hand and whose logs you do not want.

    Args:
        model: a built `keras.Model`.

    Returns:
        The model.
    """
    check_model(model)
    _schedule.bind(model, _ours(model))
    _wrap(model)
    return model


def _set_trackers(model, trackers):
    """Replace the model's trackers (the old ones leave `model.metrics`)."""
    old = getattr(model, _TRACKERS, None)
    if old is not None:
        _keras.untrack(model, old)
    _keras.set_tracked(model, _TRACKERS, trackers)


def _values(terms, record, total):
    """The vector `terms.update_state` takes: data loss, each term, other
    (`total`: what compute_loss returned, if it ran)."""
    sums = _terms.totals(record)
    used = record.read
    # every penalty as compute_loss added it (read off, not recomputed)
    extra = sums.pop(_EXTRA, None)
    known = ops.zeros((), "float32")
    values = []
    for name in terms.names[1:]:
        if name == OTHER:  # always the last entry
            values.append(None)
            continue
        value = ops.cast(sums.get(name, ops.zeros(())), "float32")
        known = known + value
        values.append(value)
    nan = ops.full((), float("nan"), "float32")
    if used and extra is not None:
        # compute_loss's total and what it added, as one device sees them (under
        # tf.distribute both are divided by the replicas; the terms are not)
        extra = _keras.unscale_for_replicas(ops.cast(extra, "float32"))
        data = _keras.unscale_for_replicas(ops.cast(total, "float32")) - extra
        other = extra - known
    elif used:  # a compute_loss of the model's own that adds the penalties itself
        data = _keras.unscale_for_replicas(ops.cast(total, "float32")) - known
        other = nan  # what it added besides keras_regs' terms is not known
    else:  # the step never called compute_loss: the data loss is not known
        data = other = nan
    values = [data, *(other if v is None else v for v in values)]
    return ops.stack(values)


def _batch_size(*structures):
    for structure in structures:
        if structure is not None:
            leaves = [x for x in keras.tree.flatten(structure) if x is not None]
            if leaves and len(leaves[0].shape):
                return ops.shape(leaves[0])[0]
    return 1


def _wrap(model):
    """Wrap the model's steps (once): evaluate schedules at the optimizer's step,
    and, while trackers are set, collect the terms and update the trackers."""
    if connected(model):
        return
    train_step, test_step = model.train_step, model.test_step
    compute_loss = model.compute_loss
    aggregate = _keras.aggregate_additional_loss(model)

    def recorded_aggregate(loss):
        value = aggregate(loss)
        record = _terms.current()
        if record is not None:
            record[(_EXTRA, len(record))] = (_EXTRA, value)
        return value

    def stepped(step, step_of):
        def wrapped(*args, **kwargs):
            terms = getattr(model, _TRACKERS, None)
            collect = _terms.collecting() if terms else contextlib.nullcontext()
            with _schedule.stepping(lambda: step_of(args)), collect as record:
                outputs = step(*args, **kwargs)
                if terms and record is not None and not record.read:
                    _not_read(model, terms, record)
            return outputs

        return wrapped

    def logged_compute_loss(*args, **kwargs):
        total = compute_loss(*args, **kwargs)
        terms = getattr(model, _TRACKERS, None)
        record = _terms.current()
        if not terms or record is None or record.read:
            return total
        record.read = True
        bound = dict(zip(("x", "y", "y_pred", "sample_weight"), args, strict=False))
        bound.update(kwargs)
        batch = _batch_size(bound.get("x"), bound.get("y_pred"), bound.get("y"))
        terms.update_state(_values(terms, record, total), batch)
        return total

    _keras.install_steps(
        model,
        train_step=stepped(
            train_step, lambda args: _schedule.train_step_of(model, args)
        ),
        test_step=stepped(test_step, lambda args: _schedule.test_step_of(model)),
        compute_loss=logged_compute_loss,
        training_arg=_keras.takes_training(compute_loss),
        aggregate=recorded_aggregate,
    )
    object.__setattr__(model, _WRAPPED, True)


def _not_read(model, terms, record):
    """A step that never called `compute_loss`: log the terms it recorded, and
    the data loss as NaN (it is not known), saying so once."""
    if not model.__dict__.get("_keras_regs_said_no_compute_loss"):
        object.__setattr__(model, "_keras_regs_said_no_compute_loss", True)
        warnings.warn(
            f"keras_regs: the train or test step of {type(model).__name__} "
            f"{model.name!r} does not call `self.compute_loss`, so the data loss "
            "is not known: `data_loss` (and `other_penalties`) are logged as "
            "NaN; each penalty's own term is logged. Call `self.compute_loss(x, "
            "y, y_pred, sample_weight)` in the step, or turn the entries off with "
            "`keras_regs.log_penalties(model, enabled=False)`.",
            KerasRegsWarning,
            stacklevel=4,
        )
    terms.update_state(_values(terms, record, None), 1)
