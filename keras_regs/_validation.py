"""Argument checks shared by every public constructor.

Every check raises with one template, so errors read the same everywhere:

    Invalid value for argument `seed`. Expected ... Received: seed=-1

`ArgumentTypeError` for a value of the wrong type, `ValueError` for a value of the
right type that is out of range. Each check returns the value as a plain Python
scalar, which is what constructors store and what `get_config` returns.

`ArgumentTypeError` is both a `TypeError` and a `ValueError`: Python's convention
(and keras_regs') is a `TypeError` for a wrong type, while Keras raises
`ValueError` for the same arguments (`keras.regularizers.L1("a")`,
`keras.layers.Dropout(0.5, noise_shape=(2, 1.5))`), so code written for either
catches it.

The messages of `rate` and `noise_shape` use Keras' `Dropout` wording ("Invalid
value received for argument `rate`. Expected a float value between 0 and 1"), so
that code and tests written against Keras' messages match them too.
"""

import inspect
import math
import numbers

REDUCTIONS = ("sum", "mean")
ESTIMATORS = ("exact", "hutchinson")
# The largest float32, numpy.finfo("float32").max: strengths and stddevs are
# held and used in float32, where anything larger is inf.
FLOAT32_MAX = 3.4028234663852886e38
# The seeds Keras' SeedGenerator holds on every backend: its state variable is
# int64 on TensorFlow, uint32 on JAX and int32 on PyTorch
# (`keras.backend.random_seed_dtype()`), and a saved model loads on any of them.
SEED_MAX = 2**31 - 1
# The largest float32 below 1, 1 - 2**-24: a rate above it rounds to 1 in float32.
RATE_MAX = 1.0 - 2.0**-24


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type: a `TypeError` (Python's convention) that is
    also a `ValueError` (what Keras raises for the same arguments)."""


class KerasRegsWarning(UserWarning):
    """The category of every warning keras_regs gives (a `UserWarning`): a
    penalty that cannot be saved, a layer's weights that cannot be told apart,
    weight decay applied twice, a step that does not call `compute_loss`.

    Silence them, or turn them into errors, by category:

    ```python
    import warnings
    warnings.filterwarnings("ignore", category=keras_regs.KerasRegsWarning)
    ```
    """


def _fail(error, name, expected, value, received=""):
    kind = "type" if error is TypeError else "value"
    suffix = f" (of type {type(value).__name__})" if error is TypeError else ""
    if error is TypeError:
        error = ArgumentTypeError
    raise error(
        f"Invalid {kind}{received} for argument `{name}`. Expected {expected}. "
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
    """A strength or a noise stddev: any finite number >= 0 that float32 holds."""
    expected = "a finite number >= 0"
    value = check_float(name, value, expected)
    if value < 0:
        _fail(ValueError, name, expected, value)
    if value > FLOAT32_MAX:
        expected = f"a finite number >= 0 that float32 can hold (<= {FLOAT32_MAX:.8g})"
        _fail(ValueError, name, expected, value)
    return value


def check_rate(value, name="rate"):
    """A dropout rate: in [0, 1), also once rounded to float32 (where it is held:
    0.99999999 would be 1.0, and dropout would divide by 0). Keras' wording."""
    expected = "a float value between 0 and 1 (0 <= rate < 1)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        _fail(TypeError, name, expected, value, " received")
    value = float(value)
    if not 0.0 <= value < 1.0:  # NaN too
        _fail(ValueError, name, expected, value, " received")
    if value > RATE_MAX:
        expected += f" that stays below 1 in float32 (<= {RATE_MAX!r})"
        _fail(ValueError, name, expected, value, " received")
    return value


def check_choice(value, name, choices):
    """One of the strings `choices`."""
    expected = "one of " + ", ".join(f'"{choice}"' for choice in choices)
    if not isinstance(value, str):
        _fail(TypeError, name, expected, value)
    if value not in choices:
        _fail(ValueError, name, expected, value)
    return value


def check_estimator(value, name="estimator"):
    return check_choice(value, name, ESTIMATORS)


def check_samples(value, name="samples"):
    expected = "an integer >= 1"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(TypeError, name, expected, value)
    value = int(value)
    if value < 1:
        _fail(ValueError, name, expected, value)
    return value


def check_wrt(value, name="wrt"):
    """What the contractive penalty differentiates with respect to."""
    return check_choice(value, name, ("layer", "input"))


def check_data_format(value, name="data_format"):
    """`"channels_last"` or `"channels_first"`; `None` is Keras' configured
    `keras.config.image_data_format()`."""
    if value is None:
        import keras

        return keras.config.image_data_format()
    expected = 'one of "channels_last", "channels_first", None'
    if not isinstance(value, str):
        _fail(TypeError, name, expected, value)
    if value.lower() not in ("channels_last", "channels_first"):
        _fail(ValueError, name, expected, value)
    return value.lower()


def check_noise_shape(value, name="noise_shape"):
    """None, or a dropout mask's shape: a tuple of positive integers and `None`s
    (`None` takes the input's size on that axis), as Keras' `Dropout` takes it,
    with its messages. A list or another iterable becomes a tuple."""
    if value is None:
        return None
    start = f"Invalid value received for argument `{name}`. Expected "
    if isinstance(value, (str, bytes, dict)):
        raise ArgumentTypeError(
            f"{start}a tuple or list of integers. Received: {name}={value!r}"
        )
    try:
        shape = tuple(value)
    except TypeError:
        raise ArgumentTypeError(
            f"{start}an iterable of integers (e.g., a tuple or list). "
            f"Received: {name}={value!r}"
        ) from None
    for i, dim in enumerate(shape):
        if dim is None:
            continue
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
            raise ArgumentTypeError(
                f"{start}all elements to be integers or None. Received element at "
                f"index {i}: {dim!r} (type: {type(dim).__name__}). "
                f"Received: {name}={value!r}"
            )
        if dim <= 0:
            raise ValueError(
                f"{start}all dimensions to be positive integers or None. Received "
                f"negative or zero value at index {i}: {dim}. "
                f"Received: {name}={value!r}"
            )
    return tuple(None if dim is None else int(dim) for dim in shape)


def check_reduction(value, name="reduction"):
    return check_choice(value, name, REDUCTIONS)


def check_inserted_by(value, name="inserted_by"):
    """None, or the regularize_model keyword that inserted or wrapped a layer."""
    if value is not None and not isinstance(value, str):
        _fail(TypeError, name, "None or a regularize_model keyword", value)
    return value


def check_seed(value, name="seed"):
    """None, or a seed that Keras' SeedGenerator holds on every backend."""
    expected = "None or a non-negative integer"
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(TypeError, name, expected, value)
    value = int(value)
    if not 0 <= value <= SEED_MAX:
        expected = f"None or an integer in [0, 2**31 - 1] = [0, {SEED_MAX}]"
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
