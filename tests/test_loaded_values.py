"""What a layer reports is what it uses: after `load_weights`, after a `.keras`
round trip, and when a schedule's values leave the argument's range.

Loaded weights win: a noise or dropout layer whose variable is loaded from a file
uses the loaded value and reports it (`rate`, `get_config`, `keras_regs.summary`).
Schedules are clipped where they are used (NaN as 0, into [0, 1) for a rate,
>= 0 for a strength or a stddev), checked against NumPy inside compiled `fit`.

Statistical checks use fixed seeds and a tolerance of 5 standard errors of the
estimator, so a correct layer fails with probability below 1e-6 for any seed.
"""

import json
import zipfile

import keras
import numpy as np
from keras import ops

import keras_regs
from helpers import mlp, to_numpy
from keras_regs.layers import BernoulliDropout, GaussianNoise

JIT = keras.backend.backend() != "torch"  # as in test_layers.py
N = 200_000
SIGMAS = 5
RATE_MAX = float(np.nextafter(np.float32(1), np.float32(0)))  # below 1 in float32


def dropout_model(rate):
    inputs = keras.Input((100,))
    return keras.Model(inputs, BernoulliDropout(rate, seed=5, name="drop")(inputs))


def noise_model(stddev):
    inputs = keras.Input((100,))
    return keras.Model(inputs, GaussianNoise(stddev, seed=5, name="noise")(inputs))


def dropped_fraction(layer):
    """The fraction of N ones that the layer zeroes in training."""
    y = to_numpy(layer(np.ones((N // 100, 100), "float32"), training=True))
    return float(np.mean(y == 0))


def noise_std(layer):
    y = to_numpy(layer(np.zeros((N // 100, 100), "float32"), training=True))
    return float(np.std(y.astype("float64")))


def summary_strength(model, name):
    rows = keras_regs.summary_rows(model)
    return next(row["strength"] for row in rows if row["layer"] == name)


def assert_reports_what_it_uses_rate(model, rate):
    layer = model.get_layer("drop")
    assert layer.rate == rate
    assert layer.get_config()["rate"] == rate
    assert summary_strength(model, "drop") == rate
    measured = dropped_fraction(layer)
    assert abs(measured - rate) < SIGMAS * np.sqrt(rate * (1 - rate) / N), measured


def test_load_weights_the_dropout_uses_and_reports_the_loaded_rate(tmp_path):
    dropout_model(0.5).save_weights(tmp_path / "half.weights.h5")
    model = dropout_model(0.1)
    model.load_weights(tmp_path / "half.weights.h5")
    assert_reports_what_it_uses_rate(model, 0.5)

    # and it stays so through a .keras round trip
    model.save(tmp_path / "model.keras")
    keras.backend.clear_session()
    assert_reports_what_it_uses_rate(
        keras.saving.load_model(tmp_path / "model.keras"), 0.5
    )

    # a layer that holds a schedule keeps it: the step uses the schedule
    schedule = keras.optimizers.schedules.PolynomialDecay(0.0, 4, 0.2)
    scheduled = dropout_model(schedule)
    scheduled.load_weights(tmp_path / "half.weights.h5")
    assert scheduled.get_layer("drop").rate is schedule


def test_load_weights_the_noise_uses_and_reports_the_loaded_stddev(tmp_path):
    noise_model(2.5).save_weights(tmp_path / "wide.weights.h5")
    model = noise_model(0.1)
    model.load_weights(tmp_path / "wide.weights.h5")
    layer = model.get_layer("noise")
    assert layer.stddev == 2.5 and layer.get_config()["stddev"] == 2.5
    assert summary_strength(model, "noise") == 2.5
    assert abs(noise_std(layer) - 2.5) < SIGMAS * 2.5 / np.sqrt(2 * N)


def test_a_file_whose_config_and_variable_disagree_loads_the_variable(tmp_path):
    """A file written before the fix (config 0.1, variable 0.5) loads as 0.5."""
    dropout_model(0.5).save(tmp_path / "half.keras")
    with zipfile.ZipFile(tmp_path / "half.keras") as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    (layer,) = [c for c in config["config"]["layers"] if c["config"]["name"] == "drop"]
    layer["config"]["rate"] = 0.1
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "disagree.keras", "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    model = keras.saving.load_model(tmp_path / "disagree.keras")
    assert_reports_what_it_uses_rate(model, 0.5)


def test_a_loaded_value_equal_in_float32_keeps_the_python_number(tmp_path):
    """0.1 is held as float32 0.100000001...: loading it back reports 0.1; a
    different loaded value is reported as its shortest float32 decimal."""
    dropout_model(0.1).save_weights(tmp_path / "a.weights.h5")
    model = dropout_model(0.1)
    model.load_weights(tmp_path / "a.weights.h5")
    assert model.get_layer("drop").rate == 0.1
    dropout_model(0.3).save_weights(tmp_path / "b.weights.h5")
    model.load_weights(tmp_path / "b.weights.h5")
    assert model.get_layer("drop").rate == 0.3


# ---- schedules out of range: clipped where they are used ---------------------

# One batch per epoch and SGD(0): the epoch-e entry of History is step e's.
BAD = [-0.5, float("nan"), 5.0, 0.3]  # the schedule's value at steps 0, 1, 2, 3+


@keras.saving.register_keras_serializable(package="keras_regs_tests")
class Steps(keras.optimizers.schedules.LearningRateSchedule):
    """`values[min(step, len - 1)]`, by a gather: Keras' PiecewiseConstantDecay
    sums masked values, so one NaN makes every step NaN on eager backends."""

    def __init__(self, values):
        self.values = list(values)

    def __call__(self, step):
        last = len(self.values) - 1
        index = ops.minimum(ops.cast(step, "int32"), last)
        return ops.take(ops.convert_to_tensor(self.values, "float32"), index)

    def get_config(self):
        return {"values": self.values}


def bad_schedule(values=BAD):
    return Steps(values)


def clipped(values, maximum):
    """NumPy's reference: NaN as 0, then into [0, maximum]."""
    return np.clip(np.nan_to_num(np.asarray(values), nan=0.0), 0.0, maximum)


def frozen_identity(layer, units=100):
    """Input -> layer -> Dense(identity), trained with SGD(0): the weights stay."""
    inputs = keras.Input((units,))
    dense = keras.layers.Dense(units, use_bias=False, kernel_initializer="identity")
    model = keras.Model(inputs, dense(layer(inputs)))
    return keras_regs.bind_schedules(model)


def fit_epochs(model, x, y):
    """One step per value of `BAD`, one batch per epoch."""
    return model.fit(x, y, batch_size=len(x), epochs=len(BAD), verbose=0).history


def zeros_fraction(y_true, y_pred):
    return ops.mean(ops.cast(ops.equal(y_pred, 0.0), "float32"))


def test_a_dropout_schedule_out_of_range_is_clipped_in_fit():
    model = frozen_identity(BernoulliDropout(bad_schedule(), seed=3))
    model.compile(
        keras.optimizers.SGD(0.0),
        loss="mae",
        metrics=[zeros_fraction],
        jit_compile=JIT,
    )
    x = np.ones((1000, 100), "float32")
    history = fit_epochs(model, x, x)
    dropped = history["zeros_fraction"]
    for measured, rate in zip(dropped, clipped(BAD, RATE_MAX), strict=True):
        # the dropped fraction of 100,000 elements, a binomial proportion
        sigma = np.sqrt(rate * (1 - rate) / x.size)
        assert abs(measured - rate) <= SIGMAS * sigma + 1e-7, (measured, rate)


def test_a_noise_schedule_out_of_range_is_clipped_in_fit():
    model = frozen_identity(GaussianNoise(bad_schedule([-2.0, np.nan, 0.5, -1.0])))
    model.compile(keras.optimizers.SGD(0.0), loss="mse", jit_compile=JIT)
    x = np.ones((1000, 100), "float32")
    history = fit_epochs(model, x, x)
    # the mean of squared N(0, s**2) draws: s**2, standard error s**2 sqrt(2/n)
    expected = clipped([-2.0, np.nan, 0.5, -1.0], np.inf) ** 2
    for measured, variance in zip(history["loss"], expected, strict=True):
        assert abs(measured - variance) <= SIGMAS * variance * np.sqrt(2 / x.size)


def test_a_strength_schedule_out_of_range_is_clipped_in_fit():
    values = [-3.0, np.nan, 0.05, 0.02]
    model = mlp(kernel_regularizer=keras_regs.WeightL2(bad_schedule(values)))
    keras_regs.log_penalties(model)
    model.compile(keras.optimizers.SGD(0.0), loss="mse", jit_compile=JIT)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5)).astype("float32")
    y = rng.normal(size=(16, 2)).astype("float32")
    history = fit_epochs(model, x, y)
    squares = sum(
        float(np.sum(to_numpy(w).astype("float64") ** 2))
        for w in model.weights
        if w.regularizer is not None
    )
    expected = clipped(values, np.finfo("float32").max) * squares
    np.testing.assert_allclose(history["weight_l2"], expected, rtol=1e-5, atol=0)


def test_a_scheduled_layer_variable_holds_the_clipped_step_0_value(tmp_path):
    """What a scheduled layer saves is in range, so its file loads back."""
    layer = GaussianNoise(bad_schedule([np.nan, 1.0, 1.0, 1.0]), seed=1)
    assert float(to_numpy(layer.weights[0])) == 0.0
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert keras_regs._schedule.is_schedule(loaded.layers[-1].stddev)
