"""Real architectures: keras.applications models, an LSTM classifier, a Transformer.

Each gets a penalty on every kernel-like weight (checked against NumPy), trains a
compiled fit step, and goes through a `.keras` round trip with equal penalties.
"""

import keras
import numpy as np
import pytest

import keras_regs
from helpers import layer_configs, to_numpy

L = keras.layers
# What these check (the attach walk, NumPy's sum, a .keras round trip) does not
# depend on the backend: the four run on TensorFlow, ResNet50 (BatchNorm blocks)
# on the others too.
ALL_APPLICATIONS = ["MobileNetV2", "ResNet50", "EfficientNetB0", "DenseNet121"]
APPLICATIONS = (
    ALL_APPLICATIONS if keras.backend.backend() == "tensorflow" else ["ResNet50"]
)


def kernel_like(model):
    """Trainable weights with more than one dimension other than biases."""
    return [v for v in model.trainable_weights if len(v.shape) > 1 and v.name != "bias"]


def penalties(model, x):
    model(x, training=False)
    return [float(to_numpy(loss)) for loss in model.losses]


def check_round_trip(model, x, y, tmp_path):
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3), loss="sparse_categorical_crossentropy"
    )
    loss = model.fit(x, y, batch_size=len(x), epochs=1, verbose=0).history["loss"][0]
    assert np.isfinite(loss)
    before = penalties(model, x)
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert layer_configs(reloaded) == layer_configs(model)
    assert penalties(reloaded, x) == before
    np.testing.assert_array_equal(to_numpy(reloaded(x)), to_numpy(model(x)))


@pytest.mark.slow
@pytest.mark.parametrize("name", APPLICATIONS)
def test_application_gets_a_penalty_on_every_kernel(name, tmp_path):
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(32, 32, 3), classes=10
    )
    keras_regs.regularize_model(model, weight_l2=1e-4)
    kernels = kernel_like(model)
    assert kernels and all(
        isinstance(v.regularizer, keras_regs.regularizers.Penalties) for v in kernels
    )
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    expected = 1e-4 * sum(np.sum(to_numpy(v).astype("float64") ** 2) for v in kernels)
    np.testing.assert_allclose(sum(penalties(model, x)), expected, rtol=1e-5)
    assert len(model.losses) == len(kernels)
    check_round_trip(model, x, np.array([1, 2]), tmp_path)


def test_lstm_text_classifier(tmp_path):
    tokens = keras.Input((12,), dtype="int32", name="tokens")
    x = L.Embedding(50, 8, mask_zero=True, name="embedding")(tokens)
    x = L.Bidirectional(L.LSTM(6, return_sequences=True), name="bilstm")(x)
    x = L.LSTM(6, name="lstm")(x)
    outputs = L.Dense(3, activation="softmax", name="classes")(x)
    model = keras_regs.regularize_model(
        keras.Model(tokens, outputs), weight_l2=1e-3, hidden_l1=1e-3, hidden_dropout=0.2
    )
    assert [layer.name for layer in model.layers if "dropout" in layer.name] == [
        "embedding_dropout",
        "bilstm_dropout",
        "lstm_dropout",
    ]
    kernels = kernel_like(model)
    assert len(kernels) == 8  # embeddings, 2 x 2 bidirectional, 2 lstm, 1 dense
    assert all(
        isinstance(v.regularizer, keras_regs.regularizers.Penalties) for v in kernels
    )
    rng = np.random.default_rng(0)
    x = rng.integers(1, 50, size=(16, 12)).astype("int32")
    x[:, 8:] = 0  # padding, masked
    check_round_trip(model, x, rng.integers(0, 3, size=16), tmp_path)


def test_transformer_encoder_block(tmp_path):
    inputs = keras.Input((10, 16), name="sequence")
    attention = L.MultiHeadAttention(4, 4, name="attention")(inputs, inputs)
    x = L.LayerNormalization(name="norm_1")(L.Add()([inputs, attention]))
    feed = L.Dense(16, name="ff_out")(L.Dense(32, activation="gelu", name="ff_in")(x))
    x = L.LayerNormalization(name="norm_2")(L.Add()([x, feed]))
    outputs = L.Dense(2, activation="softmax", name="classes")(
        L.GlobalAveragePooling1D()(x)
    )
    model = keras_regs.regularize_model(
        keras.Model(inputs, outputs), weight_l2=1e-3, hidden_dropout=0.1
    )
    kernels = kernel_like(model)
    assert len(kernels) == 7  # 4 attention projections, 2 feed-forward, 1 head
    assert {layer.name for layer in model.layers if "dropout" in layer.name} == {
        "attention_dropout",
        "ff_in_dropout",
        "ff_out_dropout",
    }
    x = np.random.default_rng(0).normal(size=(8, 10, 16)).astype("float32")
    expected = 1e-3 * sum(np.sum(to_numpy(v).astype("float64") ** 2) for v in kernels)
    np.testing.assert_allclose(sum(penalties(model, x)), expected, rtol=1e-5)
    check_round_trip(model, x, np.arange(8) % 2, tmp_path)
