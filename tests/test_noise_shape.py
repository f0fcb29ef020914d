"""Dropout masks with a shape: `noise_shape`, spatial dropout, and the keywords."""

import json
import warnings

import keras
import numpy as np
import pytest
from keras import ops

import keras_regs
from helpers import to_numpy
from keras_regs.layers import BernoulliDropout, SpatialDropout1D, SpatialDropout2D

pytestmark = pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="mask shapes: the TensorFlow and JAX passes (CI time)",
)

RATE = 0.25


def shared_mask_model(dropout):
    """ones(B, 5, 8) -> dropout -> [variance over the steps, the output itself]."""
    inputs = keras.Input((5, 8))
    dropped = dropout(inputs)
    spread = keras.layers.Lambda(lambda h: ops.var(h, axis=1), name="spread")(dropped)
    kept = keras.layers.Identity(name="kept")(dropped)
    return keras.Model(inputs, {"spread": spread, "kept": kept})


@pytest.mark.parametrize("noise_shape", [(None, 1, None), None])
def test_mask_shape_inside_compiled_fit(noise_shape):
    """In `fit` (traced with an unknown batch size): with `(None, 1, None)` every
    step shares the mask (its variance over the steps is exactly 0), and the kept
    fraction is `1 - rate`, each kept value `1 / (1 - rate)` (mean square
    `1 / (1 - rate)`, within 5 standard errors of the B * 8 decisions)."""
    model = shared_mask_model(BernoulliDropout(RATE, noise_shape=noise_shape, seed=3))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x = np.ones((256, 5, 8), "float32")
    y = {"spread": np.zeros((256, 8), "float32"), "kept": np.zeros_like(x)}
    with warnings.catch_warnings():  # a model with no weights: Keras warns
        warnings.filterwarnings("ignore", "The model does not have any trainable")
        logs = model.fit(x, y, batch_size=256, epochs=1, verbose=0).history
    spread, kept = logs["spread_loss"][0], logs["kept_loss"][0]
    decisions = 256 * 8 * (5 if noise_shape is None else 1)
    scale = 1 / (1 - RATE)
    # h**2 is scale**2 with probability 1 - rate: mean scale, variance below
    standard_error = np.sqrt((1 - RATE) * RATE * scale**4 / decisions)
    assert abs(kept - scale) < 5 * standard_error
    if noise_shape is None:
        assert spread > 0.01  # element-wise masks differ along the steps
    else:
        assert spread == 0.0


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_spatial_dropout_2d_drops_whole_maps_at_the_rate(data_format):
    """One decision per example and channel: each map is all kept or all zero,
    and the dropped fraction of 4,000 maps is the rate within 5 standard errors."""
    shape = (100, 6, 6, 40) if data_format == "channels_last" else (100, 40, 6, 6)
    layer = SpatialDropout2D(RATE, data_format=data_format, seed=5)
    out = to_numpy(layer(np.ones(shape, "float32"), training=True))
    maps = out.reshape(100, 36, 40) if data_format == "channels_last" else out
    maps = maps if data_format == "channels_last" else out.reshape(100, 40, 36)
    axis = 1 if data_format == "channels_last" else 2
    assert np.all(maps.min(axis=axis) == maps.max(axis=axis))
    np.testing.assert_allclose(np.unique(out), [0.0, 1 / (1 - RATE)], rtol=1e-6)
    dropped = np.mean(maps.max(axis=axis) == 0)
    assert abs(dropped - RATE) < 5 * np.sqrt(RATE * (1 - RATE) / 4000)


def test_bad_rank_is_refused_naming_the_layer():
    layer = BernoulliDropout(0.5, noise_shape=(None, 1))
    with pytest.raises(ValueError, match=r"noise_shape.*has 2 axes.*input has 3"):
        layer(keras.Input((4, 3)))
    with pytest.raises(ValueError, match=r"spatial_dropout1d.*expected ndim=3"):
        SpatialDropout1D(0.5)(np.ones((2, 3), "float32"), training=True)
    with pytest.raises(TypeError, match="takes no `noise_shape`"):
        SpatialDropout1D(0.5, noise_shape=(None, 1, None))
    with pytest.raises(ValueError, match="data_format='nhwc'"):
        SpatialDropout2D(0.5, data_format="nhwc")


def conv_model():
    inputs = keras.Input((8, 8, 2), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(6, activation="tanh", name="dense")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def dropouts(model):
    return {
        layer.name: layer.noise_shape
        for layer in model.layers
        if isinstance(layer, BernoulliDropout)
    }


def test_keywords_take_a_noise_shape_saved_and_reloaded(tmp_path):
    """Per pattern (a noise_shape per rank): spatial dropout after the
    convolution, element-wise after the Dense; the whole call is recorded, the
    file reloads it, and `strip_regularization` removes both."""
    model = keras_regs.regularize_model(
        conv_model(),
        dropout={
            "conv": {"rate": 0.3, "noise_shape": [None, 1, 1, None]},
            "dense": 0.2,
        },
    )
    assert dropouts(model) == {
        "conv_dropout": (None, 1, 1, None),
        "dense_dropout": None,
    }
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 2)).astype("float32")
    y = np.zeros((16, 2), "float32")
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.fit(x, y, epochs=1, verbose=0)
    conv = to_numpy(model.get_layer("conv")(x))
    dropped = to_numpy(model.get_layer("conv_dropout")(conv, training=True))
    # whole maps: an (example, channel) is zero everywhere or kept everywhere
    zero = dropped == 0
    whole = zero.all(axis=(1, 2)) | ~(zero & (conv != 0)).any(axis=(1, 2))
    assert whole.all() and zero.all(axis=(1, 2)).any()
    path = str(tmp_path / "spatial.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert dropouts(restored) == dropouts(model)
    np.testing.assert_allclose(to_numpy(restored(x)), to_numpy(model(x)), rtol=1e-6)
    stripped = keras_regs.strip_regularization(restored)
    assert dropouts(stripped) == {}


def test_a_second_call_changes_the_noise_shape_in_place():
    model = keras_regs.regularize_model(
        conv_model(), hidden_dropout={"rate": 0.3, "pattern": "conv"}
    )
    layer = model.get_layer("conv_dropout")
    again = keras_regs.regularize_model(
        model,
        hidden_dropout={
            "rate": 0.3,
            "pattern": "conv",
            "noise_shape": (None, 1, 1, None),
        },
    )
    assert again.get_layer("conv_dropout") is layer  # the same layer, same seed
    assert layer.noise_shape == (None, 1, 1, None)


def test_a_noise_shape_of_the_wrong_rank_is_refused_and_the_model_kept():
    model = conv_model()
    before = json.dumps(model.get_config(), sort_keys=True)
    with pytest.raises(ValueError) as info:
        keras_regs.regularize_model(
            model, hidden_dropout={"rate": 0.3, "noise_shape": (None, 1, 1, None)}
        )
    message = str(info.value)
    assert "`hidden_dropout`" in message and "'dense'" in message
    assert "noise_shape': (None, 1, 1, None)" in message
    assert json.dumps(model.get_config(), sort_keys=True) == before
    for bad, error in [
        ("spatial", TypeError),
        ((None, 1.5), TypeError),
        ((0,), ValueError),
    ]:
        with pytest.raises(error, match=r"hidden_dropout\['noise_shape'\]"):
            keras_regs.regularize_model(
                model, hidden_dropout={"rate": 0.3, "noise_shape": bad}
            )
    with pytest.raises(ValueError, match=r"unknown key 'noise_shape'"):
        keras_regs.regularize_model(
            model, hidden_noise={"stddev": 0.3, "noise_shape": (None, 1)}
        )
    assert json.dumps(model.get_config(), sort_keys=True) == before


def test_a_mask_size_that_does_not_broadcast_is_refused():
    """Right rank, wrong size: refused where it is given, not in `fit`."""
    inputs = keras.Input((5, 4))
    model = keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs))
    before = json.dumps(model.get_config(), sort_keys=True)
    with pytest.raises(ValueError, match=r"axis 1 has size 3, neither 1 nor.*size 5"):
        keras_regs.regularize_model(
            model, dropout={"dense": {"rate": 0.3, "noise_shape": (None, 3, None)}}
        )
    assert json.dumps(model.get_config(), sort_keys=True) == before
    with pytest.raises(ValueError, match=r"axis 1 has size 3"):
        BernoulliDropout(0.3, noise_shape=(None, 3, None))(inputs)
    # 1 or the input's own size are both fine
    BernoulliDropout(0.3, noise_shape=(None, 5, 1))(inputs)


def test_the_map_form_takes_no_pattern_inside():
    with pytest.raises(ValueError, match=r"unknown key 'pattern'"):
        keras_regs.regularize_model(
            conv_model(), dropout={"conv": {"rate": 0.2, "pattern": "dense"}}
        )
