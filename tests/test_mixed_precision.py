"""Penalties under mixed_float16 and mixed_bfloat16: float32 values, no overflow."""

import keras
import numpy as np
import pytest

import keras_regs
from helpers import to_numpy
from zoo import every_class

POLICIES = ["mixed_float16", "mixed_bfloat16"]


def build(units=64, overflow=False, act=None, kernel=None):
    """Input(32) -> Dense(units, relu) with the penalties -> Dense(1).

    `overflow=True` makes every hidden unit exactly 1.0 (zero kernel, unit bias)
    and the output exactly 0, so the data term is exact in any precision.
    """
    inputs = keras.Input((32,))
    hidden_init = {"kernel_initializer": "zeros", "bias_initializer": "ones"}
    h = keras.layers.Dense(
        units,
        activation="relu",
        activity_regularizer=act or keras_regs.HiddenL1(1e-2),
        kernel_regularizer=kernel or keras_regs.WeightL2(1e-2),
        **(hidden_init if overflow else {}),
    )(inputs)
    out_init = {"kernel_initializer": "zeros"} if overflow else {}
    return keras.Model(inputs, keras.layers.Dense(1, **out_init)(h))


def data(n=128):
    rng = np.random.default_rng(0)
    return (
        rng.normal(size=(n, 32)).astype("float32"),
        rng.normal(size=(n, 1)).astype("float32"),
    )


def fit_loss(model, x, y, learning_rate=0.0, epochs=1):
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    history = model.fit(x, y, epochs=epochs, batch_size=32, shuffle=False, verbose=0)
    return history.history["loss"]


def penalties(model, x):
    model(x, training=False)  # refresh the activity penalties eagerly
    values = [to_numpy(loss) for loss in model.losses]
    assert all(v.dtype == np.float32 for v in values)
    return np.array([float(v) for v in values])


@pytest.mark.parametrize("policy", POLICIES)
def test_fit_loss_and_penalties_equal_float32(policy):
    """Same weights, learning rate 0: the loss inside fit and each penalty.

    The penalties match float32 to ~1e-4. The data term is Keras' forward pass in
    half precision: under bfloat16 (8 mantissa bits) it alone moves the loss by
    1e-5 to 1e-3 depending on the weights, hence the explicit seed.
    """
    keras.utils.set_random_seed(0)
    x, y = data()
    reference = build()
    weights = reference.get_weights()
    reference_loss = fit_loss(reference, x, y)
    reference_penalties = penalties(reference, x)

    keras.config.set_dtype_policy(policy)
    model = build()
    model.set_weights(weights)
    assert model.layers[1].compute_dtype == policy.split("_")[1]
    np.testing.assert_allclose(fit_loss(model, x, y), reference_loss, rtol=1e-3)
    np.testing.assert_allclose(penalties(model, x), reference_penalties, rtol=1e-3)


@pytest.mark.parametrize("policy", POLICIES)
def test_trains_under_mixed_precision(policy):
    keras.config.set_dtype_policy(policy)
    x, y = data()
    losses = fit_loss(build(), x, y, learning_rate=0.01, epochs=4)
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("act", [keras_regs.HiddenL1, keras_regs.HiddenL2])
@pytest.mark.parametrize("policy", POLICIES)
def test_no_overflow_where_the_half_precision_sum_passes_65504(policy, act):
    """1024 units of 1.0 over a batch of 64: the sum is 65536 > float16's max
    (of |h| and of h**2 alike)."""
    x, y = data(64)
    keras.config.set_dtype_policy(policy)
    model = build(units=1024, overflow=True, act=act(1e-2))
    loss = fit_loss(model, x, y)[0]
    penalty = 1e-2 * 1024  # s * sum(|h|) / B = s * sum(h**2) / B = 0.01 * 65536 / 64
    np.testing.assert_allclose(penalties(model, x), [penalty, 0.0], rtol=1e-6)
    np.testing.assert_allclose(
        loss, np.mean(y.astype("float64") ** 2) + penalty, rtol=1e-5
    )


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="TensorFlow's fit is the one that fails",
)
def test_keras_builtin_l1_activity_fails_here_on_tensorflow():
    """Why the float32 cast matters: Keras' own L1 returns float16 and fit breaks."""
    keras.config.set_dtype_policy("mixed_float16")
    x, y = data()
    model = build(act=keras.regularizers.L1(1e-2))
    with pytest.raises(TypeError, match="float16"):
        fit_loss(model, x, y)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_penalty_and_layer_trains_and_matches_float32(policy):
    """The model with every keras_regs class (tests/zoo.py): each penalty,
    computed on the same weights under the policy, within 1e-3 of float32, and
    `fit` trains it (every noise, dropout and Contractive layer included)."""
    x, y = data(64)
    x = x[:, :6]
    y = np.concatenate([y, -y], axis=1)
    keras.utils.set_random_seed(0)
    reference = every_class()
    weights = reference.get_weights()
    reference_penalties = penalties(reference, x)

    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    model = every_class()
    model.set_weights(weights)
    assert model.get_layer("dense_0_contractive").compute_dtype == policy[6:]
    assert len(reference_penalties) == 10
    values = penalties(model, x)
    # The weight penalties see the same float32 weights: equal.
    np.testing.assert_array_equal(values[5:], reference_penalties[5:])
    # The activity and Contractive terms see the half-precision forward pass:
    # their total within 1e-3, each term within 1e-3 under float16; bfloat16's
    # 8-bit mantissa moves single activations by up to 2^-9, and one term here
    # by 1.1e-3, so each term within 2e-3 there.
    np.testing.assert_allclose(values.sum(), reference_penalties.sum(), rtol=1e-3)
    each = 1e-3 if policy == "mixed_float16" else 2e-3
    np.testing.assert_allclose(values, reference_penalties, rtol=each)
    losses = fit_loss(model, x, y, learning_rate=0.05, epochs=4)
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
