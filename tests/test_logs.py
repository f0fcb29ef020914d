"""Per-term logs: the data loss and each penalty keyword in fit's History, the
progress bar, TensorBoard and evaluate, adding up to the logged loss."""

import glob
import os

import keras
import numpy as np
import pytest

import keras_regs
from helpers import mlp, mlp_numpy, to_numpy

N, BATCH = 64, 16
RNG = np.random.default_rng(0)
X = RNG.normal(size=(N, 5)).astype("float32")
Y = RNG.normal(size=(N, 2)).astype("float32")
XV = RNG.normal(size=(32, 5)).astype("float32")
YV = RNG.normal(size=(32, 2)).astype("float32")


def fitted(model, **kwargs):
    """One epoch at learning rate 0: the weights stay where NumPy reads them."""
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    return model.fit(
        X,
        Y,
        batch_size=BATCH,
        epochs=1,
        shuffle=False,
        validation_data=(XV, YV),
        **{"verbose": 0, **kwargs},
    ).history


def expected_terms(model, x, y):
    hidden, prediction = mlp_numpy(model, x)
    kernels = [
        to_numpy(layer.kernel) for layer in model.layers if hasattr(layer, "kernel")
    ]
    return {
        "data_loss": float(np.mean((prediction - y) ** 2)),
        "weight_l2": 0.1 * sum(float(np.sum(k**2)) for k in kernels),
        "hidden_l1": 0.05 * sum(float(np.abs(h).sum()) for h in hidden) / len(x),
    }


def test_history_has_each_term_and_its_validation_twin():
    model = keras_regs.regularize_model(mlp(), weight_l2=0.1, hidden_l1=0.05)
    history = fitted(model)
    terms = ["data_loss", "weight_l2", "hidden_l1"]
    assert sorted(history) == sorted(
        ["loss", *terms, "val_loss", *[f"val_{t}" for t in terms]]
    )
    for prefix, (x, y) in (("", (X, Y)), ("val_", (XV, YV))):
        expected = expected_terms(model, x, y)
        for term in terms:
            np.testing.assert_allclose(
                history[prefix + term][0], expected[term], rtol=1e-5
            )
        total = sum(history[prefix + term][0] for term in terms)
        np.testing.assert_allclose(total, history[prefix + "loss"][0], rtol=1e-5)


def test_hand_set_penalties_need_one_call():
    model = mlp(
        kernel_regularizer=keras_regs.WeightL2(0.1),
        bias_regularizer=keras.regularizers.L2(0.2),  # not keras_regs: "other"
    )
    assert sorted(fitted(model)) == ["loss", "val_loss"]
    assert keras_regs.log_penalties(model) is model
    history = fitted(model)
    terms = ["data_loss", "weight_l2", "other_penalties"]
    assert sorted(k for k in history if not k.startswith("val_")) == sorted(
        ["loss", *terms]
    )
    biases = [to_numpy(m.bias) for m in model.layers[1:-1]]
    # read as all penalties less the keras_regs ones: float32 rounding of the
    # larger sum, hence 1e-4 on this small term
    np.testing.assert_allclose(
        history["other_penalties"][0],
        0.2 * sum(float(np.sum(b**2)) for b in biases),
        rtol=1e-4,
    )
    total = sum(history[t][0] for t in terms)
    np.testing.assert_allclose(total, history["loss"][0], rtol=1e-5)


def test_progress_bar_tensorboard_and_evaluate_show_the_terms(tmp_path, capsys):
    import tensorflow as tf

    model = keras_regs.regularize_model(mlp(), weight_l2=0.1, hidden_l1=0.05)
    board = keras.callbacks.TensorBoard(log_dir=str(tmp_path))
    fitted(model, verbose=1, callbacks=[board])
    printed = capsys.readouterr().out
    assert "data_loss:" in printed and "weight_l2:" in printed
    assert "val_hidden_l1:" in printed
    tags = set()
    for path in glob.glob(os.path.join(str(tmp_path), "*", "events.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags.update(value.tag for value in event.summary.value)
    assert {"epoch_data_loss", "epoch_weight_l2", "epoch_hidden_l1"} <= tags
    results = model.evaluate(X, Y, batch_size=BATCH, verbose=0, return_dict=True)
    expected = expected_terms(model, X, Y)
    for term, value in expected.items():
        np.testing.assert_allclose(results[term], value, rtol=1e-5)


def test_new_keywords_join_and_logs_can_be_switched_off():
    model = keras_regs.regularize_model(mlp(), weight_l2=0.1)
    assert "weight_l1" not in fitted(model)
    keras_regs.regularize_model(model, weight_l1=0.01)
    assert {"weight_l1", "weight_l2"} <= set(fitted(model))
    keras_regs.log_penalties(model, enabled=False)
    assert sorted(fitted(model)) == ["loss", "val_loss"]
    assert isinstance(model.evaluate(X, Y, verbose=0), float)
    with pytest.raises(TypeError, match="enabled='no'"):
        keras_regs.log_penalties(model, enabled="no")
