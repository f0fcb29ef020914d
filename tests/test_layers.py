"""GaussianNoise and BernoulliDropout: statistics, inference, seeds, compiled steps.

Statistical checks draw N = 200,000 values with fixed seeds; each tolerance is
stated as a multiple of the estimator's standard error (5 sigma), so a correct
layer fails with probability below 1e-6 for any seed.
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_regs
from helpers import to_numpy
from keras_regs.layers import BernoulliDropout, GaussianNoise

# XLA on TensorFlow and JAX; PyTorch's counterpart (torch.compile) is not what
# these tests are about and takes minutes on a CPU: its eager step there.
JIT = keras.backend.backend() != "torch"

N = 200_000
SIGMAS = 5


@pytest.mark.parametrize(
    "layer", [GaussianNoise(3.0, seed=1), BernoulliDropout(0.4, seed=1)]
)
def test_inference_returns_the_input_bit_for_bit(layer):
    x = ops.convert_to_tensor(np.random.default_rng(0).normal(size=(16, 9)), "float32")
    assert layer(x) is x
    assert layer(x, training=False) is x
    model = keras.Sequential([keras.Input((9,)), layer])
    np.testing.assert_array_equal(model.predict(x, verbose=0), to_numpy(x))


@pytest.mark.parametrize("stddev", [0.1, 1.0, 7.5])
def test_gaussian_noise_is_additive_normal(stddev):
    x = np.random.default_rng(0).normal(size=(N // 100, 100)).astype("float32")
    noise = (to_numpy(GaussianNoise(stddev, seed=3)(x, training=True)) - x).ravel()
    noise = noise.astype("float64")
    # mean: standard error stddev / sqrt(N)
    assert abs(noise.mean()) < SIGMAS * stddev / np.sqrt(N)
    # standard deviation: standard error stddev / sqrt(2N)
    assert abs(noise.std() - stddev) < SIGMAS * stddev / np.sqrt(2 * N)
    # shape: the fraction within one stddev is a binomial proportion, p = 0.6827
    p = 0.682689
    within = np.mean(np.abs(noise) < stddev)
    assert abs(within - p) < SIGMAS * np.sqrt(p * (1 - p) / N)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_bernoulli_dropout_is_inverted_dropout(rate):
    x = np.random.default_rng(1).uniform(0.5, 2.0, size=(N // 100, 100))
    x = x.astype("float32")
    y = to_numpy(BernoulliDropout(rate, seed=4)(x, training=True))
    dropped = y == 0
    # the dropped fraction is a binomial proportion
    assert abs(dropped.mean() - rate) < SIGMAS * np.sqrt(rate * (1 - rate) / N)
    # kept values are divided by 1 - rate (the rate is held as a float32)
    np.testing.assert_allclose(y[~dropped], x[~dropped] / (1 - rate), rtol=1e-6)


def test_rate_zero_and_stddev_zero_are_identities_in_training():
    x = np.random.default_rng(2).normal(size=(32, 8)).astype("float32")
    np.testing.assert_array_equal(to_numpy(BernoulliDropout(0.0)(x, training=True)), x)
    np.testing.assert_array_equal(to_numpy(GaussianNoise(0.0)(x, training=True)), x)


def test_same_seed_same_noise_and_sequence_advances():
    x = np.ones((64, 16), "float32")
    for cls, value in ((GaussianNoise, 1.0), (BernoulliDropout, 0.5)):
        a, b, c = cls(value, seed=11), cls(value, seed=11), cls(value, seed=12)
        first_a = to_numpy(a(x, training=True))
        np.testing.assert_array_equal(first_a, to_numpy(b(x, training=True)))
        assert not np.array_equal(first_a, to_numpy(c(x, training=True)))
        # a second call draws new values from the same generator
        assert not np.array_equal(first_a, to_numpy(a(x, training=True)))


def test_large_stddev_is_accepted():
    """Keras' own GaussianNoise refuses stddev > 1; any finite value works here."""
    layer = GaussianNoise(25.0, seed=5)
    noise = to_numpy(layer(np.zeros((400, 250), "float32"), training=True))
    assert abs(noise.std() - 25.0) < SIGMAS * 25.0 / np.sqrt(2 * noise.size)


def identity_model(layer, units=256):
    """Input -> layer -> Dense(identity, frozen by learning rate 0)."""
    inputs = keras.Input((units,))
    outputs = keras.layers.Dense(units, use_bias=False, kernel_initializer="identity")(
        layer(inputs)
    )
    model = keras.Model(inputs, outputs)
    return model


def test_new_rate_takes_effect_in_the_compiled_train_step():
    """Dropout of ones against a target of ones: the MAE is exactly 2 * rate.

    A dropped element errs by 1, a kept one by rate / (1 - rate); at rate 0.5 both
    are 1, so the loss is exactly 1.0 whatever the mask.
    """
    layer = BernoulliDropout(0.0, seed=6)
    model = identity_model(layer)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mae", jit_compile=JIT)
    x = np.ones((64, 256), "float32")
    assert model.fit(x, x, batch_size=64, verbose=0).history["loss"] == [0.0]
    train_function = model.train_function
    layer.rate = 0.5
    assert model.fit(x, x, batch_size=64, verbose=0).history["loss"] == [1.0]
    layer.rate = 0.25
    loss = model.fit(x, x, batch_size=64, verbose=0).history["loss"][0]
    # per element: 1 with probability 0.25, 1/3 otherwise; N = 16384 elements
    assert abs(loss - 0.5) < SIGMAS * np.sqrt(0.25 * 0.75 * (2 / 3) ** 2 / x.size)
    assert model.train_function is train_function  # not retraced


def test_new_stddev_takes_effect_in_the_compiled_train_step():
    layer = GaussianNoise(0.0, seed=7)
    model = identity_model(layer)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse", jit_compile=JIT)
    x = np.ones((64, 256), "float32")
    assert model.fit(x, x, batch_size=64, verbose=0).history["loss"] == [0.0]
    train_function = model.train_function
    layer.stddev = 2.0
    loss = model.fit(x, x, batch_size=64, verbose=0).history["loss"][0]
    # the mean of N squared N(0, 4) draws: mean 4, standard error 4 * sqrt(2 / N)
    assert abs(loss - 4.0) < SIGMAS * 4.0 * np.sqrt(2 / x.size)
    assert model.train_function is train_function


@pytest.mark.parametrize(
    "make", [lambda: GaussianNoise(0.5, seed=1), lambda: BernoulliDropout(0.5, seed=1)]
)
def test_trains_inside_fit_and_evaluate_is_deterministic(make):
    inputs = keras.Input((6,))
    x = keras.layers.Dense(16, activation="relu")(inputs)
    x = make()(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(optimizer="adam", loss="mse")
    data = np.random.default_rng(3).normal(size=(64, 6)).astype("float32")
    target = data[:, :1] * 2
    history = model.fit(data, target, epochs=3, batch_size=16, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    first = model.evaluate(data, target, verbose=0)
    assert model.evaluate(data, target, verbose=0) == first


@pytest.mark.parametrize("layer", [GaussianNoise(0.3), BernoulliDropout(0.3)])
def test_compute_output_shape(layer):
    for shape in [(None, 4), (2, 3, 5), (None, None, 7, 3)]:
        assert layer.compute_output_shape(shape) == shape
        assert layer.compute_output_spec(keras.KerasTensor(shape)).shape == shape


@pytest.mark.parametrize("cls", [GaussianNoise, BernoulliDropout])
def test_masks_pass_through(cls):
    """A masked mean after the layer averages only the real steps."""
    tokens = np.array([[3, 4, 0, 0], [5, 0, 0, 0]])
    inputs = keras.Input((4,), dtype="int32")
    embedding = keras.layers.Embedding(10, 3, mask_zero=True)
    pooled = keras.layers.GlobalAveragePooling1D()(cls(0.3, seed=2)(embedding(inputs)))
    model = keras.Model(inputs, pooled)
    table = to_numpy(embedding.embeddings)
    expected = np.stack([table[[3, 4]].mean(0), table[[5]].mean(0)])
    np.testing.assert_allclose(to_numpy(model(tokens)), expected, rtol=1e-6)
    out = cls(0.3, seed=2)(embedding(tokens), training=True)
    np.testing.assert_array_equal(to_numpy(out._keras_mask), tokens != 0)


def test_public_namespace():
    assert keras_regs.layers.GaussianNoise is GaussianNoise
    assert keras_regs.layers.BernoulliDropout is BernoulliDropout
