"""plot_penalties: the stacked terms meet the logged loss, epoch by epoch."""

import sys

import keras
import matplotlib
import numpy as np
import pytest

import keras_regs
from helpers import mlp

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RNG = np.random.default_rng(5)
X = RNG.normal(size=(32, 5)).astype("float32")
Y = RNG.normal(size=(32, 2)).astype("float32")


@pytest.fixture(scope="module")
def history():
    model = keras_regs.regularize_model(mlp(), weight_l2=0.05, hidden_l1=0.02)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model.fit(
        X, Y, batch_size=8, epochs=4, verbose=0, validation_data=(X, Y)
    ).history


def tops(collection):
    """The upper edge of a fill_between band, as {x: y}."""
    edge = {}
    for x, y in collection.get_paths()[0].vertices:
        edge[round(float(x), 6)] = max(edge.get(round(float(x), 6), -np.inf), y)
    return [edge[k] for k in sorted(edge)]


@pytest.mark.parametrize("validation", [False, True])
def test_stacked_terms_add_up_to_the_loss_line(history, validation):
    prefix = "val_" if validation else ""
    fig, ax = plt.subplots()
    try:
        assert keras_regs.plot_penalties(history, ax=ax, validation=validation) is ax
        labels = [c.get_label() for c in ax.collections]
        assert labels[0] == "data_loss"
        assert sorted(labels[1:]) == ["hidden_l1", "weight_l2"]
        running = np.zeros(4)
        for band, name in zip(ax.collections, labels, strict=True):
            running = running + np.asarray(history[prefix + name])
            np.testing.assert_allclose(tops(band), running, rtol=1e-6)
        (line,) = ax.lines
        np.testing.assert_allclose(line.get_ydata(), history[prefix + "loss"])
        np.testing.assert_allclose(tops(ax.collections[-1]), line.get_ydata(), 1e-5)
    finally:
        plt.close(fig)


def test_a_new_figure_when_no_axes_is_given(history):
    ax = keras_regs.plot_penalties(history, title="terms")
    try:
        assert ax.get_title() == "terms" and len(ax.collections) == 3
    finally:
        plt.close(ax.figure)


def test_a_history_without_the_terms_is_refused_naming_what_it_has():
    # a model with penalties set by hand and no log_penalties logs `loss` only:
    # the message names what is missing, not what is there
    with pytest.raises(ValueError) as error:
        keras_regs.plot_penalties({"loss": [1.0, 0.5]})
    message = str(error.value)
    assert "it has no `data_loss` entry." in message, message
    assert "`loss` entry" not in message and message.endswith("['loss']")
    with pytest.raises(ValueError, match=r"no `val_data_loss` and no `val_loss` entry"):
        keras_regs.plot_penalties({"loss": [1.0], "data_loss": [1.0]}, validation=True)
    with pytest.raises(TypeError, match="history=3"):
        keras_regs.plot_penalties(3)
    with pytest.raises(TypeError, match=r"history\['loss'\]"):
        keras_regs.plot_penalties({"loss": "a", "data_loss": [1.0]})


def test_without_matplotlib_the_error_says_how_to_install_it(history, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"keras_regs\[plot\]"):
        keras_regs.plot_penalties(history)
