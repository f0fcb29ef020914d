"""The penalties against NumPy formulas, Keras' built-ins and theanets' means."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_regs
from helpers import dense_model, numpy_forward, regression_data, to_numpy

SHAPES = [(7,), (4, 6), (3, 5, 2), (2, 3, 3, 4)]

# name -> (class, NumPy terms)
WEIGHT_PENALTIES = {
    "WeightL1": (keras_regs.WeightL1, np.abs),
    "WeightL2": (keras_regs.WeightL2, np.square),
}
ACTIVITY_PENALTIES = {
    "HiddenL1": (keras_regs.HiddenL1, np.abs),
    "HiddenL2": (keras_regs.HiddenL2, np.square),
}


def as_numpy(x):
    return float(to_numpy(x))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(WEIGHT_PENALTIES))
def test_weight_penalties_match_numpy(name, shape):
    cls, terms = WEIGHT_PENALTIES[name]
    w = np.random.default_rng(0).normal(size=shape).astype("float32")
    expected_sum = 0.3 * terms(w.astype("float64")).sum()
    expected_mean = 0.3 * terms(w.astype("float64")).mean()
    np.testing.assert_allclose(as_numpy(cls(0.3)(w)), expected_sum, rtol=1e-6)
    np.testing.assert_allclose(
        as_numpy(cls(0.3, reduction="mean")(w)), expected_mean, rtol=1e-6
    )


@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 4), (6, 2, 2, 3)])
@pytest.mark.parametrize("name", sorted(ACTIVITY_PENALTIES))
def test_activity_penalties_match_numpy_before_keras_divides(name, shape):
    cls, terms = ACTIVITY_PENALTIES[name]
    h = np.random.default_rng(1).normal(size=shape).astype("float32")
    batch = shape[0]
    # What the regularizer returns; Keras divides it by the batch size.
    np.testing.assert_allclose(as_numpy(cls(0.2)(h)), 0.2 * terms(h).sum(), rtol=1e-6)
    np.testing.assert_allclose(
        as_numpy(cls(0.2, reduction="mean")(h)) / batch,
        0.2 * terms(h).mean(),
        rtol=1e-6,
    )


def test_output_is_a_float32_scalar_for_every_input_dtype():
    dtypes = ["float16", "bfloat16", "float32"]
    if keras.backend.backend() != "jax":  # JAX has float64 only with x64 enabled
        dtypes.append("float64")
    for dtype in dtypes:
        w = ops.cast(np.full((3, 3), 0.5), dtype)
        for cls in (
            keras_regs.WeightL1,
            keras_regs.WeightL2,
            keras_regs.HiddenL1,
            keras_regs.HiddenL2,
        ):
            value = cls(1.0)(w)
            assert ops.shape(value) == ()
            assert keras.backend.standardize_dtype(value.dtype) == "float32"


def test_zero_strength_and_zero_input_give_zero():
    w = np.random.default_rng(2).normal(size=(4, 4)).astype("float32")
    for cls in (keras_regs.WeightL1, keras_regs.WeightL2, keras_regs.HiddenL1):
        assert as_numpy(cls(0.0)(w)) == 0.0
        assert as_numpy(cls(5.0)(np.zeros((4, 4), "float32"))) == 0.0


# --- inside fit: the "sum" reduction is a drop-in for Keras' built-ins ---------

BUILTIN_PAIRS = [
    ("kernel_regularizer", keras_regs.WeightL1, keras.regularizers.L1),
    ("kernel_regularizer", keras_regs.WeightL2, keras.regularizers.L2),
    ("bias_regularizer", keras_regs.WeightL1, keras.regularizers.L1),
    ("bias_regularizer", keras_regs.WeightL2, keras.regularizers.L2),
    ("activity_regularizer", keras_regs.HiddenL1, keras.regularizers.L1),
    ("activity_regularizer", keras_regs.HiddenL2, keras.regularizers.L2),
]


def fit_history(regularizer_kwargs, epochs=3, batch_size=16, learning_rate=0.05):
    model = dense_model(**regularizer_kwargs)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    x, y = regression_data()
    history = model.fit(
        x, y, epochs=epochs, batch_size=batch_size, shuffle=False, verbose=0
    )
    return model, history.history["loss"]


@pytest.mark.parametrize(("argument", "ours", "builtin"), BUILTIN_PAIRS)
def test_sum_reduction_equals_keras_builtin_inside_fit(argument, ours, builtin):
    strength = 0.05
    _, ours_loss = fit_history({argument: ours(strength)})
    _, builtin_loss = fit_history({argument: builtin(strength)})
    _, plain_loss = fit_history({})
    np.testing.assert_allclose(ours_loss, builtin_loss, rtol=1e-5)
    # The penalty is really there: the loss differs from the unregularized one
    # (by 4e-4 for the smallest, the L2 of the biases, on PyTorch's draws).
    assert abs(ours_loss[0] - plain_loss[0]) > 1e-4


def test_fit_loss_equals_numpy_data_loss_plus_penalties():
    model = dense_model(
        kernel_regularizer=keras_regs.WeightL2(0.1),
        activity_regularizer=keras_regs.HiddenL1(0.05),
    )
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x, y = regression_data()
    loss = model.fit(x, y, batch_size=64, epochs=1, verbose=0).history["loss"][0]
    kernel, h, prediction = numpy_forward(model, x)
    expected = (
        np.mean((prediction - y) ** 2)
        + 0.1 * np.sum(kernel**2)
        + 0.05 * np.abs(h).sum() / len(x)
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_activity_penalty_does_not_depend_on_batch_size(reduction):
    """Same epoch loss at batch size 8 and 32, equal to the NumPy figure."""
    x, y = regression_data(n=64)
    losses = {}
    for batch_size in (8, 32):
        model = dense_model(activity_regularizer=keras_regs.HiddenL1(0.5, reduction))
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
        history = model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        losses[batch_size] = history.history["loss"][0]
        penalty_in_eval = model.evaluate(x, y, batch_size=batch_size, verbose=0)
        np.testing.assert_allclose(penalty_in_eval, losses[batch_size], rtol=1e-5)
    _, h, prediction = numpy_forward(model, x)
    per_example = np.abs(h).sum() / len(x) if reduction == "sum" else np.abs(h).mean()
    expected = np.mean((prediction - y) ** 2) + 0.5 * per_example
    np.testing.assert_allclose(losses[8], losses[32], rtol=1e-5)
    np.testing.assert_allclose(losses[8], expected, rtol=1e-5)


def theanets_mean(tensors, terms):
    """theanets: s / |Omega| * sum over the matched tensors of mean(f(W))."""
    return sum(terms(w).mean() for w in tensors) / len(tensors)


@pytest.mark.parametrize("name", sorted(WEIGHT_PENALTIES))
def test_mean_reduction_equals_theanets_mean_inside_fit(name):
    """One tensor (|Omega| = 1): the model's penalty is theanets' s * mean(f(W))."""
    cls, terms = WEIGHT_PENALTIES[name]
    model = dense_model(units=16, kernel_regularizer=cls(0.7, reduction="mean"))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x, y = regression_data()
    loss = model.evaluate(x, y, verbose=0)
    kernel, _, prediction = numpy_forward(model, x)
    expected_penalty = 0.7 * theanets_mean([kernel], terms)
    np.testing.assert_allclose(as_numpy(model.losses[0]), expected_penalty, rtol=1e-6)
    np.testing.assert_allclose(
        loss, np.mean((prediction - y) ** 2) + expected_penalty, rtol=1e-5
    )
