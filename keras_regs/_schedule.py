"""Schedules: strengths, rates and stddevs that follow the optimizer's step.

A penalty's `strength`, a dropout `rate` and a noise `stddev` accept a
`keras.optimizers.schedules.LearningRateSchedule` in place of a number. It is
evaluated where the value is used, inside the step Keras compiles, at the step of
the model's optimizer, the same step its learning-rate schedule sees:

- TensorFlow and PyTorch read `optimizer.iterations`, a variable, so the compiled
  step sees each new value without being traced again.
- On JAX the jitted step receives the optimizer's variables as its state:
  `keras_regs.log_penalties` (which `regularize_model` calls) wraps the model's
  `train_step` so that the schedule reads the step from that state. The jitted
  test step holds no optimizer state; it reads the step through a host callback.

Outside a step (an eager call, `model.losses`, `predict`), a schedule bound to a
model reads the optimizer's current step. A schedule that was never bound
(`keras_regs.bind_schedules`, which `log_penalties` and `regularize_model` call
and which a loaded model gets again) raises an error where it is evaluated:
there is no step to evaluate it at.

The step of the step being traced is the thread's own (see `_terms`), so two
models trained at once in two threads each read their own optimizer's step.

A schedule's values cannot be checked when it is given (it is a function of the
step) and an error cannot be raised inside a compiled step on every backend: its
value is clipped where it is used, NaN to 0 and into `[0, maximum]` (float32's
largest for a strength or a stddev, the largest float32 below 1 for a rate).
"""

import contextlib
import threading
import weakref

import keras
import numpy as np
from keras import ops

from keras_regs import _backend, _keras
from keras_regs._validation import (
    FLOAT32_MAX,
    ArgumentTypeError,
    check_config_keys,
    check_non_negative,
)

Schedule = keras.optimizers.schedules.LearningRateSchedule
_BOUND = "_keras_regs_model"  # the weakref to the model a scheduled object serves


class _Stacks(threading.local):
    def __init__(self):
        self.steps = []  # [compute, value]: the step of each step being traced


_local = _Stacks()


def is_schedule(value):
    return isinstance(value, Schedule)


def check(value, name, check_number):
    """A number checked by `check_number(value, name)`, or a schedule.

    A schedule's config (a dict, as a saved model holds it) is deserialized; what
    it names must be a `LearningRateSchedule`, anything else (a function, a
    lambda, another class) is refused before it is ever called.
    """
    if isinstance(value, dict):
        config, value = value, None
        try:
            value = keras.optimizers.schedules.deserialize(config)
        except (KeyError, TypeError, ValueError) as error:
            problem = error
        else:
            problem = None
        if not is_schedule(value):
            raise ArgumentTypeError(
                f"Invalid type for argument `{name}`. Expected a number or a "
                "keras.optimizers.schedules.LearningRateSchedule (or its config). "
                f"Received: {name}={config!r}"
            ) from problem
    if is_schedule(value):
        return value
    return check_number(value, name)


def to_config(value):
    """What `get_config` stores: the number, or the schedule's config."""
    if is_schedule(value):
        return keras.optimizers.schedules.serialize(value)
    return value


@contextlib.contextmanager
def stepping(compute):
    """Within the block, schedules are evaluated at `compute()`, called once
    (lazily: a step without schedules reads nothing)."""
    _local.steps.append([compute, None])
    try:
        yield
    finally:
        _local.steps.pop()


def _current_step():
    if not _local.steps:
        return None
    entry = _local.steps[-1]
    if entry[1] is None:
        entry[1] = entry[0]()
    return entry[1]


def optimizer_step(optimizer, iterations=None):
    """`optimizer.iterations` (the step its learning-rate schedule sees), from
    `iterations`, the value of its counter variable, when given."""
    if iterations is None:
        return optimizer.iterations
    steps = getattr(optimizer, "gradient_accumulation_steps", None)
    if steps:
        return ops.floor_divide(iterations, steps)
    return iterations


def model_step(model):
    """The step of `model.optimizer` (0 for a model not compiled)."""
    optimizer = getattr(model, "optimizer", None)
    return 0 if optimizer is None else optimizer_step(optimizer)


def train_step_of(model, args):
    """The optimizer's step inside `model.train_step(*args)`: on JAX, from the
    optimizer's variables in the step's state (`args[0][2]`)."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and _backend.backend() == "jax" and args:
        counter = _keras.iterations_variable(optimizer)
        values = _keras.jax_optimizer_values(args[0])
        for variable, value in zip(optimizer.variables, values, strict=True):
            if variable is counter:
                return optimizer_step(optimizer, value)
    return model_step(model)


def test_step_of(model):
    """The optimizer's step inside `model.test_step` (JAX: read from the host)."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and _backend.backend() == "jax":
        counter = _keras.iterations_variable(optimizer)
        return optimizer_step(optimizer, _backend.host_value(counter))
    return model_step(model)


def bind(model, objects):
    """Bind scheduled `objects` (penalties, layers) to `model`'s optimizer."""
    reference = weakref.ref(model)
    for item in objects:
        object.__setattr__(item, _BOUND, reference)


def clip(amount, maximum=FLOAT32_MAX):
    """A float32 tensor as a step uses a schedule's value: NaN as 0, then
    clipped into `[0, maximum]`."""
    amount = ops.cast(amount, "float32")
    clipped = ops.clip(amount, 0.0, maximum)
    return ops.where(ops.isnan(amount), ops.zeros_like(amount), clipped)


def clip_number(amount, maximum=FLOAT32_MAX):
    """`clip` for a Python number."""
    if np.isnan(amount):
        return 0.0
    return float(min(max(float(amount), 0.0), maximum))


def value(amount, owner, name, maximum=FLOAT32_MAX):
    """`amount` as used in a step: the number, or the schedule at the step,
    clipped into `[0, maximum]` (NaN as 0)."""
    if not is_schedule(amount):
        return amount
    step = _current_step()
    if step is None:
        reference = getattr(owner, _BOUND, None)
        model = reference() if reference is not None else None
        if model is None:
            raise RuntimeError(
                f"The `{name}` of {_describe(owner)} is a schedule, but no model's "
                "optimizer step is bound to it, so there is no step to evaluate "
                "it at. Call `keras_regs.bind_schedules(model)` (or "
                "`keras_regs.log_penalties(model)`) on the model it belongs to "
                "before `fit`; `regularize_model` does it for you, and a model "
                "saved after it is bound again when loaded (a file saved by an "
                "earlier keras_regs, without the record, needs the call once)."
            )
        if getattr(model, "optimizer", None) is None:
            raise RuntimeError(
                f"The `{name}` of {_describe(owner)} is a schedule bound to model "
                f"{model.name!r}, which has no optimizer (it is not compiled, or "
                "another model that contains it is the one trained), so there is "
                "no step to evaluate it at. Compile it, or call "
                "`keras_regs.bind_schedules(model)` (or `log_penalties`, or "
                "`regularize_model`) on the model you train."
            )
        step = model_step(model)
    return clip(amount(step), maximum)


def _describe(owner):
    """`WeightL2`, or `BernoulliDropout 'dense_1_dropout'` for a named layer."""
    name = getattr(owner, "name", None)
    return type(owner).__name__ + (f" {name!r}" if name else "")


@keras.saving.register_keras_serializable(package="keras_regs")
class Scaled(Schedule):
    """`factor * schedule(step)`: what `regularize_model(..., reduction="mean")`
    gives each of the |Omega| tensors a scheduled keyword selects."""

    def __init__(self, schedule, factor):
        self.schedule = check(schedule, "schedule", _not_a_schedule)
        self.factor = check_non_negative(factor, "factor")

    def __call__(self, step):
        return ops.cast(self.schedule(step), "float32") * self.factor

    def get_config(self):
        return {"schedule": to_config(self.schedule), "factor": self.factor}

    @classmethod
    def from_config(cls, config):
        check_config_keys(cls, config)
        return cls(**config)


def _not_a_schedule(value, name):
    raise ArgumentTypeError(
        f"Invalid type for argument `{name}`. Expected a "
        "keras.optimizers.schedules.LearningRateSchedule. "
        f"Received: {name}={value!r} (of type {type(value).__name__})"
    )


def divided(amount, count):
    """`amount / count` for a number or a schedule."""
    if is_schedule(amount):
        return Scaled(amount, 1 / count)
    return amount / count
