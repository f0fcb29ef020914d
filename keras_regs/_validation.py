"""Argument checks shared by every public constructor.

Every check raises with one template, so errors read the same everywhere:

    Invalid value for argument `rate`. Expected a float in [0, 1). Received: rate=1.5

`TypeError` for a value of the wrong type, `ValueError` for a value of the right
type that is out of range. Each check returns the value as a plain Python scalar,
which is what constructors store and what `get_config` returns.
"""

import inspect
import math
import numbers

REDUCTIONS = ("sum", "mean")


def _fail(error, name, expected, value):
    kind = "type" if error is TypeError else "value"
    suffix = f" (of type {type(value).__name__})" if error is TypeError else ""
    raise error(
        f"Invalid {kind} for argument `{name}`. Expected {expected}. "
        f"Received: {name}={value!r}{suffix}"
    )


def check_float(name, value, expected):
    """Return `value` as a finite Python float; booleans and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        _fail(TypeError, name, expected, value)
    value = float(value)
    if not math.isfinite(value):
        _fail(ValueError, name, expected, value)
    return value


def check_non_negative(value, name):
    """A strength or a noise stddev: any finite number >= 0."""
    expected = "a finite number >= 0"
    value = check_float(name, value, expected)
    if value < 0:
        _fail(ValueError, name, expected, value)
    return value


def check_rate(value, name="rate"):
    expected = "a float in [0, 1)"
    value = check_float(name, value, expected)
    if not 0.0 <= value < 1.0:
        _fail(ValueError, name, expected, value)
    return value


def check_reduction(value, name="reduction"):
    expected = 'one of "sum", "mean"'
    if not isinstance(value, str):
        _fail(TypeError, name, expected, value)
    if value not in REDUCTIONS:
        _fail(ValueError, name, expected, value)
    return value


def check_inserted_by(value, name="inserted_by"):
    """None, or the regularize_model keyword that inserted or wrapped a layer."""
    if value is not None and not isinstance(value, str):
        _fail(TypeError, name, "None or a regularize_model keyword", value)
    return value


def check_seed(value, name="seed"):
    expected = "None or a non-negative integer"
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(TypeError, name, expected, value)
    value = int(value)
    if value < 0:
        _fail(ValueError, name, expected, value)
    return value


def check_config_keys(cls, config):
    """Refuse a config key that `cls`'s constructor does not take, naming it and
    its value (Python's own error names the key but not the value, and only
    after Keras has wrapped it in a generic deserialization message)."""
    if not isinstance(config, dict):
        _fail(TypeError, "config", f"a dict of {cls.__name__}'s arguments", config)
    parameters = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    known = sorted(name for name in parameters if name != "self")
    for key, value in config.items():
        if key not in known:
            raise TypeError(
                f"Unknown key in the config of {cls.__name__}: {key!r}. Expected "
                f"keys among {known}. Received: {key}={value!r}"
            )
