"""keras_regs/_backend.py: the one place where the backend matters."""

import keras
import numpy as np
import pytest
from keras import ops

from helpers import to_numpy
from keras_regs import _backend
from keras_regs.layers import Contractive


def test_outside_any_strategy_there_is_one_replica_and_nothing_to_scale():
    assert _backend.replicas() == 1
    value = ops.convert_to_tensor(np.float32(3.5))
    assert float(to_numpy(_backend.scale_for_replicas(value))) == 3.5


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute")
def test_tensorflow_reads_the_replicas_of_the_current_strategy():
    import tensorflow as tf

    # One device here (two need logical devices set before TensorFlow starts:
    # tests/scripts/mirrored.py); the count is the strategy's.
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        assert _backend.replicas() == 1
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        assert _backend.replicas() == 1


def test_scale_divides_by_the_replica_count(monkeypatch):
    monkeypatch.setattr(_backend, "replicas", lambda: 4)
    value = ops.convert_to_tensor(np.float32(3.0))
    scaled = _backend.scale_for_replicas(value)
    assert keras.backend.standardize_dtype(scaled.dtype) == "float32"
    assert float(to_numpy(scaled)) == 0.75


def test_every_supported_backend_has_jvp():
    assert keras.backend.backend() in ("tensorflow", "jax", "torch")
    assert _backend.has_jvp() is hasattr(ops, "jvp") is True


def test_without_jvp_contractive_names_the_backend(monkeypatch):
    monkeypatch.setattr(_backend, "has_jvp", lambda: False)
    x = ops.convert_to_tensor(np.ones((2, 5, 2), "float32"))
    with pytest.raises(NotImplementedError) as info:
        # hard_sigmoid: no closed form, the jvp path
        Contractive(keras.layers.Conv1D(2, 2, activation="hard_sigmoid"), 0.1)(x)
    assert f"for the {keras.backend.backend()} backend" in str(info.value)
