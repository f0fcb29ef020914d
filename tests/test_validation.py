"""Bad arguments: the right error type, naming the argument and the value received."""

import math

import keras
import numpy as np
import pytest

import keras_regs
from keras_regs.layers import BernoulliDropout, GaussianNoise

PENALTIES = [keras_regs.WeightL1, keras_regs.WeightL2, keras_regs.HiddenL1]
FLOAT32_MAX = float(np.finfo("float32").max)
WARMUP = keras.optimizers.schedules.PolynomialDecay(0.0, 4, end_learning_rate=0.1)

# (constructor, kwargs, error, message fragment)
CASES = [
    *[
        (cls, {"strength": value}, error, f"strength={value!r}")
        for cls in PENALTIES
        for value, error in [
            (-1.0, ValueError),
            (math.nan, ValueError),
            (math.inf, ValueError),
            (-math.inf, ValueError),
            (True, TypeError),
            ("abc", TypeError),  # None is the default, 0.01, as in Keras
            ([0.1], TypeError),
            (1e39, ValueError),  # inf in float32
        ]
    ],
    *[
        (cls, {"strength": 0.1, "reduction": value}, error, f"reduction={value!r}")
        for cls in PENALTIES
        for value, error in [("avg", ValueError), ("SUM", ValueError), (1, TypeError)]
    ],
    *[
        (BernoulliDropout, {"rate": value}, error, f"rate={value!r}")
        for value, error in [
            (1.0, ValueError),
            (1.5, ValueError),
            (-0.1, ValueError),
            (math.nan, ValueError),
            (0.99999999, ValueError),  # 1.0 in float32: a division by 0
            ("0.5", TypeError),
            (False, TypeError),
            (None, TypeError),
        ]
    ],
    *[
        (GaussianNoise, {"stddev": value}, error, f"stddev={value!r}")
        for value, error in [
            (-0.5, ValueError),
            (math.inf, ValueError),
            (math.nan, ValueError),
            (1e39, ValueError),
            (FLOAT32_MAX * 1.0000001, ValueError),
            ("1", TypeError),
            (True, TypeError),
        ]
    ],
    *[
        (cls, {first: 0.1, "seed": value}, error, f"seed={value!r}")
        for cls, first in [(BernoulliDropout, "rate"), (GaussianNoise, "stddev")]
        for value, error in [
            (-1, ValueError),
            (2**31, ValueError),  # past int32: PyTorch's seed state
            (2**32, ValueError),  # past uint32: JAX's
            (2**63, ValueError),  # past int64: TensorFlow's
            (1.5, TypeError),
            ("7", TypeError),
        ]
    ],
    (
        keras_regs._schedule.Scaled,
        {"schedule": WARMUP, "factor": -2},
        ValueError,
        "factor=-2.0",
    ),
    (
        keras_regs._schedule.Scaled,
        {"schedule": WARMUP, "factor": "x"},
        TypeError,
        "factor='x'",
    ),
    (
        keras_regs._schedule.Scaled,
        {"schedule": WARMUP, "factor": 1e39},
        ValueError,
        "factor=1e+39",
    ),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "error", "received"),
    CASES,
    ids=[f"{c[0].__name__}-{c[3]}" for c in CASES],
)
def test_bad_arguments_raise_naming_argument_and_value(cls, kwargs, error, received):
    argument = received.split("=")[0]
    with pytest.raises(error) as info:
        cls(**kwargs)
    message = str(info.value)
    assert f"argument `{argument}`" in message
    assert f"Received: {received}" in message


def test_the_limits_are_what_float32_and_every_seed_state_hold():
    """The largest accepted values are float32's largest, the largest float32
    below 1 and int32's largest; the next ones up are refused."""
    above = float(np.nextafter(FLOAT32_MAX, np.inf))
    assert keras_regs.WeightL2(FLOAT32_MAX).strength == FLOAT32_MAX
    assert GaussianNoise(FLOAT32_MAX).stddev == FLOAT32_MAX
    for make in (keras_regs.WeightL2, GaussianNoise):
        with pytest.raises(ValueError, match="float32"):
            make(above)
    largest_rate = float(np.nextafter(np.float32(1), np.float32(0)))
    layer = BernoulliDropout(largest_rate, seed=2**31 - 1)
    assert layer.rate == largest_rate and layer.seed == 2**31 - 1
    assert float(np.array(layer.weights[0].numpy())) < 1.0
    with pytest.raises(ValueError, match="float32"):
        BernoulliDropout(float(np.nextafter(largest_rate, 1.0)))
    with pytest.raises(ValueError, match=r"argument `seed`.*seed=2147483648"):
        BernoulliDropout(0.1, seed=2**31)


def test_numpy_scalars_and_ints_are_accepted_and_stored_as_floats():
    penalty = keras_regs.WeightL2(np.float32(0.5))
    assert penalty.strength == 0.5 and type(penalty.strength) is float
    assert type(keras_regs.HiddenL1(2).strength) is float
    assert BernoulliDropout(np.float64(0.25)).rate == 0.25
    assert GaussianNoise(3).stddev == 3.0


@pytest.mark.parametrize(
    ("layer", "attribute", "bad"),
    [(BernoulliDropout(0.2), "rate", 1.0), (GaussianNoise(0.2), "stddev", -1.0)],
)
def test_setting_a_bad_value_raises_and_changes_nothing(layer, attribute, bad):
    with pytest.raises(ValueError, match=f"Received: {attribute}={bad!r}"):
        setattr(layer, attribute, bad)
    assert getattr(layer, attribute) == 0.2
    assert float(np.array(layer.weights[0].numpy())) == pytest.approx(0.2)


def test_tampered_config_is_refused_on_load():
    config = keras_regs.WeightL2(0.1).get_config()
    with pytest.raises(TypeError, match="strength='abc'"):
        keras_regs.WeightL2.from_config({**config, "strength": "abc"})
    with pytest.raises(ValueError, match="reduction='median'"):
        keras_regs.WeightL2.from_config({**config, "reduction": "median"})
    with pytest.raises(TypeError, match=r"config of WeightL2: 'l3'.*Received: l3=1"):
        keras_regs.WeightL2.from_config({**config, "l3": 1})


@pytest.mark.parametrize(
    "make",
    [
        lambda v: BernoulliDropout(0.1, inserted_by=v),
        lambda v: GaussianNoise(0.1, inserted_by=v),
        lambda v: keras_regs.layers.Contractive(
            keras.layers.Dense(2), 0.1, inserted_by=v
        ),
    ],
)
def test_inserted_by_must_be_a_keyword(make):
    with pytest.raises(
        TypeError, match=r"argument `inserted_by`.*Received: inserted_by=3"
    ):
        make(3)
    assert make("hidden_dropout").inserted_by == "hidden_dropout"
