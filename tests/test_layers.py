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


# ---- a subclass's build, the input's dtype, integer inputs -----------------


@keras.saving.register_keras_serializable(package="keras_regs_tests")
class ScaledDropout(BernoulliDropout):
    """A subclass with shape-dependent state: a per-feature scale made in build."""

    def build(self, input_shape):
        self.seen_shape = tuple(input_shape)
        self.scale = self.add_weight(
            name="scale", shape=(input_shape[-1],), initializer="ones"
        )

    def call(self, inputs, training=False):
        return super().call(inputs, training=training) * self.scale


def test_a_subclass_build_runs_with_the_input_shape_and_survives_saving(tmp_path):
    layer = ScaledDropout(0.5, seed=3)
    assert not layer.built
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layer(inputs))
    assert layer.built and layer.seen_shape == (None, 4)
    layer.scale.assign(np.array([1.0, 2.0, 3.0, 4.0], "float32"))
    x = np.ones((2, 4), "float32")
    np.testing.assert_array_equal(to_numpy(model(x)), np.tile([1, 2, 3, 4], (2, 1)))
    layer(x, training=True)  # the seed state moves on
    state = to_numpy(layer.seed_generator.state)

    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    twin = loaded.layers[-1]
    assert isinstance(twin, ScaledDropout) and twin.seen_shape == (None, 4)
    np.testing.assert_array_equal(to_numpy(twin.scale), [1, 2, 3, 4])
    np.testing.assert_array_equal(to_numpy(twin.seed_generator.state), state)
    assert twin.rate == 0.5
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))

    model.save_weights(tmp_path / "m.weights.h5")
    fresh_inputs = keras.Input((4,))
    fresh = ScaledDropout(0.5, seed=9)
    keras.Model(fresh_inputs, fresh(fresh_inputs)).load_weights(
        tmp_path / "m.weights.h5"
    )
    np.testing.assert_array_equal(to_numpy(fresh.scale), [1, 2, 3, 4])
    np.testing.assert_array_equal(to_numpy(fresh.seed_generator.state), state)


# (dtype of the input, global dtype policy): the output keeps the input's dtype
DTYPES = [("float16", "float32"), ("float32", "mixed_float16"), ("float64", "float32")]
DTYPE_IDS = [f"{d}-under-{p}" for d, p in DTYPES]


def skip_float64_on_jax(dtype):
    if dtype == "float64" and keras.backend.backend() == "jax":
        pytest.skip("JAX (without jax_enable_x64) holds no float64 arrays")


@pytest.mark.parametrize(("dtype", "policy"), DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cls", [GaussianNoise, BernoulliDropout])
def test_the_output_keeps_the_input_dtype_eagerly(cls, dtype, policy):
    skip_float64_on_jax(dtype)
    keras.config.set_dtype_policy(policy)
    x = np.random.default_rng(5).uniform(0.5, 2.0, size=(400, 50)).astype(dtype)
    tensor = ops.convert_to_tensor(x, dtype)
    layer = cls(0.5, seed=4)
    assert layer(tensor, training=False) is tensor  # the very same tensor
    y = layer(tensor, training=True)
    assert keras.backend.standardize_dtype(y.dtype) == dtype
    y = to_numpy(y)
    if cls is BernoulliDropout:
        kept = y != 0
        # 1 - rate computed in max(float32, input dtype), then in the input's
        wide = "float64" if dtype == "float64" else "float32"
        scale = (1 - np.asarray(np.float32(0.5), wide)).astype(dtype)
        np.testing.assert_array_equal(y[kept], (x[kept] / scale).astype(dtype))
        assert abs(kept.mean() - 0.5) < SIGMAS * np.sqrt(0.25 / x.size)
    else:
        noise = y.astype("float64") - x.astype("float64")
        # float16 rounds each output (< 4) by at most half its spacing, 2**-10
        rounding = 2.0**-10 if dtype == "float16" else 0.0
        assert abs(noise.std() - 0.5) < SIGMAS * 0.5 / np.sqrt(2 * x.size) + rounding


@pytest.mark.parametrize(("dtype", "policy"), DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cls", [GaussianNoise, BernoulliDropout])
def test_the_output_keeps_the_input_dtype_in_a_compiled_model(cls, dtype, policy):
    """Identity through the layer (rate 0, stddev 0) in a compiled `fit`, then a
    float32 Dense: a value that `dtype` holds and a cast would round (1 + 2**-12
    in float32 under mixed_float16; 1 + 1e-10 in float64) reaches the loss
    unrounded, so the loss is exactly 0; `predict` returns the input bit for bit."""
    skip_float64_on_jax(dtype)
    keras.config.set_dtype_policy(policy)
    floatx = keras.config.floatx()
    if dtype == "float64":  # else `fit` and `predict` cast the data to float32
        keras.config.set_floatx("float64")
    try:
        fit_and_predict_identity(cls, dtype)
    finally:
        keras.config.set_floatx(floatx)


def fit_and_predict_identity(cls, dtype):
    delta = {"float16": 2.0**-8, "float32": 2.0**-12, "float64": 1e-10}[dtype]
    x = np.full((8, 4), 1 + delta, dtype)
    inputs = keras.Input((4,), dtype=dtype)
    noisy = cls(0.0, seed=2)(inputs)
    assert noisy.dtype == dtype
    wide = "float64" if dtype == "float64" else "float32"
    dense = keras.layers.Dense(
        4, use_bias=False, kernel_initializer="identity", dtype=wide
    )
    model = keras.Model(inputs, dense(noisy))
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=keras.losses.MeanAbsoluteError(dtype=wide),
        jit_compile=JIT,
    )
    target = x.astype(wide)
    # (on PyTorch, Keras reports the float64 loss of an exact identity as 1e-10)
    zero = 1e-9 if keras.backend.backend() == "torch" else 0.0
    (loss,) = model.fit(x, target, batch_size=8, verbose=0).history["loss"]
    assert loss <= zero
    assert model.evaluate(x, target, verbose=0) <= zero
    alone = keras.Model(inputs, noisy)
    out = alone.predict(x, verbose=0)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("dtype", ["int32", "uint8", "bool"])
@pytest.mark.parametrize("cls", [GaussianNoise, BernoulliDropout])
def test_integer_input_is_refused_naming_layer_and_dtype(cls, dtype):
    layer = cls(0.5, seed=1, name="corrupt")
    fragments = [cls.__name__, "'corrupt'", dtype]
    with pytest.raises(TypeError) as info:
        layer(keras.Input((3,), dtype=dtype))
    assert all(f in str(info.value) for f in fragments), str(info.value)
    x = ops.convert_to_tensor(np.arange(6).reshape(2, 3), dtype)
    for training in (True, False):
        with pytest.raises(TypeError) as info:
            layer(x, training=training)
        assert all(f in str(info.value) for f in fragments), str(info.value)
