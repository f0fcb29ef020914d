"""Training on many devices: the same losses and weights as on one (1e-5).

Each check runs in a new Python (tests/scripts/), because the devices must be
configured before TensorFlow or JAX starts: TensorFlow's MirroredStrategy on 2
logical CPU devices, JAX's keras.distribution.DataParallel on 2 host CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=2).
"""

import json
import os

import keras
import numpy as np
import pytest

import keras_regs
from helpers import TESTS_DIR, mlp, run_file, to_numpy

SCRIPTS = os.path.join(TESTS_DIR, "scripts")


def run_script(name):
    """Run tests/scripts/`name`; the JSON line it prints last."""
    stdout = run_file(os.path.join(SCRIPTS, name))
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute")
def test_mirrored_strategy_matches_one_device_in_fit_and_a_custom_loop():
    report = run_script("mirrored.py")
    assert report["replicas"] == 2
    np.testing.assert_allclose(report["fit_mirrored"], report["fit_one"], rtol=1e-5)
    assert report["fit_weights"] < 1e-5
    # every per-term entry reads as on one device, and they add up to the loss
    one, mirrored = report["logs_one"], report["logs_mirrored"]
    assert sorted(one) == sorted(mirrored) and "data_loss" in one
    for key in one:
        np.testing.assert_allclose(mirrored[key], one[key], rtol=1e-5, err_msg=key)
    parts = sum(np.array(mirrored[k]) for k in mirrored if k != "loss")
    np.testing.assert_allclose(parts, mirrored["loss"], rtol=1e-5)
    # keras_regs.regularization_loss scales each replica's share: like fit.
    assert report["loop_weights"] < 1e-5
    # The raw sum(model.losses) counts the penalties once per replica.
    assert report["raw_loop_weights"] > 1e-3


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX distribution")
def test_jax_data_and_model_parallel_match_one_device():
    report = run_script("data_parallel.py")
    assert report["devices"] == 2 and report["data_axes"][0] == "batch"
    np.testing.assert_allclose(report["fit_parallel"], report["fit_one"], rtol=1e-5)
    assert report["weights"] < 1e-5
    # ModelParallel: each Dense kernel split in two along its output axis
    assert report["kernel_shards"] == 2 and report["kernel_shard_shape"] == [5, 4]
    np.testing.assert_allclose(
        report["fit_model_parallel"], report["fit_one"], rtol=1e-5
    )
    assert report["model_parallel_weights"] < 1e-5
    for key in ("penalty_parallel", "penalty_model_parallel"):
        np.testing.assert_allclose(report[key], report["penalty_one"], rtol=1e-5)


def test_regularization_loss_is_the_float32_sum_of_the_penalties():
    model = keras_regs.regularize_model(
        mlp(), weight_l2=0.1, weight_l1=0.01, hidden_l1=0.05
    )
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    model(x)
    value = keras_regs.regularization_loss(model)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    kernels = [
        to_numpy(model.get_layer(name).kernel) for name in ("dense_0", "dense_1", "out")
    ]
    expected = sum(0.1 * np.sum(k**2) + 0.01 * np.abs(k).sum() for k in kernels)
    h = x.astype("float64")
    for name in ("dense_0", "dense_1"):
        layer = model.get_layer(name)
        h = np.tanh(h @ to_numpy(layer.kernel) + to_numpy(layer.bias))
        expected += 0.05 * np.abs(h).sum() / len(x)
    np.testing.assert_allclose(float(to_numpy(value)), expected, rtol=1e-5)
    assert float(to_numpy(keras_regs.regularization_loss(mlp()))) == 0.0
