"""summary and preview print as `model.summary()` does and return None;
summary_rows and preview_rows return the rows. Totals and skipped weights."""

import code
import re

import keras
import numpy as np
import pytest

import keras_regs
from helpers import to_numpy

# Printing and rows do not depend on the backend: the TensorFlow and JAX
# passes run them, not again the PyTorch pass.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="backend-independent: the TensorFlow and JAX passes run it",
)

X = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
L1_OWN, L2, HIDDEN = 0.5, 0.1, 0.01


def model_with_everything(**spec):
    """x -> Dense(4, tanh, own L1) -> BatchNormalization -> Dense(1), with
    weight_l2, hidden_l1 (on the block's end: the normalization's output) and
    input noise attached by regularize_model."""
    inputs = keras.Input((5,), name="x")
    h = keras.layers.Dense(
        4,
        activation="tanh",
        name="dense_0",
        kernel_regularizer=keras.regularizers.L1(L1_OWN),
    )(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(h))
    spec = {"weight_l2": L2, "hidden_l1": HIDDEN, "input_noise": 0.2, **spec}
    return keras_regs.regularize_model(model, **spec)


def numpy_terms(model):
    """Each keyword's term in NumPy, on X (inference: the noise is off)."""
    dense, bn, out = (model.get_layer(n) for n in ("dense_0", "bn", "out"))
    k0, k1 = to_numpy(dense.kernel).astype("float64"), to_numpy(out.kernel)
    h = np.tanh(X @ k0 + to_numpy(dense.bias))
    mean, var = to_numpy(bn.moving_mean), to_numpy(bn.moving_variance)
    normalized = (h - mean) / np.sqrt(var + bn.epsilon)
    h = to_numpy(bn.gamma) * normalized + to_numpy(bn.beta)
    return {
        "weight_l2": L2 * (np.sum(k0**2) + np.sum(k1**2)),
        "(own)": L1_OWN * np.sum(np.abs(k0)),
        "hidden_l1": HIDDEN * np.sum(np.abs(h)) / len(X),
    }


def printed_totals(text):
    """`{keyword: value}` from the ` Total <keyword>: <value>` lines, and
    `{None: value}` from ` Total: <value>` (a value not evaluated, `-`, as None)."""
    found = {}
    for keyword, value in re.findall(r"^ Total ?(\S*): (\S+)", text, re.MULTILINE):
        found[keyword or None] = None if value == "-" else float(value)
    return found


def captured(function, *args, **kwargs):
    printed = []
    result = function(*args, print_fn=printed.append, **kwargs)
    assert result is None  # nothing for a REPL to echo
    assert len(printed) == 1  # the whole text at once, as model.summary's
    return printed[0]


def test_summary_prints_a_table_and_totals_equal_to_numpy():
    model = model_with_everything()
    text = captured(keras_regs.summary, model, x=X)
    assert text.startswith(f'Regularization of "{model.name}"')
    for header in ("Layer", "Target", "Keyword", "Penalty", "Value"):
        assert header in text.splitlines()[2]
    assert "WeightL2(0.1)" in text and "GaussianNoise(0.2)" in text
    expected = numpy_terms(model)
    totals = printed_totals(text)
    assert set(totals) == {*expected, None}
    for keyword, value in expected.items():
        np.testing.assert_allclose(totals[keyword], value, rtol=1e-5)
    np.testing.assert_allclose(totals[None], sum(expected.values()), rtol=1e-5)
    # and what Keras adds to the loss on the same call
    model(X, training=False)
    keras_total = sum(float(to_numpy(v)) for v in model.losses)
    np.testing.assert_allclose(totals[None], keras_total, rtol=1e-5)


def test_without_x_the_activity_totals_say_they_are_not_evaluated():
    model = model_with_everything()
    text = captured(keras_regs.summary, model)
    assert " Total hidden_l1: - (activity penalties not evaluated: pass x)" in text
    totals = printed_totals(text)
    assert totals["hidden_l1"] is None
    expected = numpy_terms(model)
    weights_only = expected["weight_l2"] + expected["(own)"]
    np.testing.assert_allclose(totals[None], weights_only, rtol=1e-5)
    assert re.search(r"^ Total: \S+ \(activity penalties not evaluated", text, re.M)


def test_the_weights_no_penalty_covers_are_listed_with_why():
    model = model_with_everything()
    rows = keras_regs.summary_rows(model)
    skipped = {row["target"]: row["skipped"] for row in rows if row["skipped"]}
    # Keras' own view: the trainable variables that hold no regularizer
    unpenalized = {v.path for v in model.trainable_weights if v.regularizer is None}
    assert set(skipped) == unpenalized
    assert unpenalized == {"dense_0/bias", "bn/gamma", "bn/beta", "out/bias"}
    assert "include_bias=True" in skipped["dense_0/bias"]
    assert "normalization weight" in skipped["bn/gamma"]
    text = captured(keras_regs.summary, model)
    listed = text.split("Not penalized")[1]
    assert re.search(r"│ bn\s+│ gamma, beta\s+│ a normalization weight", listed)
    assert re.search(r"│ out\s+│ bias\s+│ a bias", listed)
    # with include_bias=True the biases are covered, and no longer listed
    keras_regs.regularize_model(model, weight_l2=L2, include_bias=True)
    rows = keras_regs.summary_rows(model)
    assert {row["target"] for row in rows if row["skipped"]} == {"bn/gamma", "bn/beta"}


def test_summary_prints_to_stdout_and_a_repl_echoes_nothing(capsys):
    model = model_with_everything()
    console = code.InteractiveConsole({"keras_regs": keras_regs, "model": model})
    console.push("keras_regs.summary(model)")  # as typed at the >>> prompt
    out = capsys.readouterr().out
    assert f'Regularization of "{model.name}"' in out and "weight_l2" in out
    assert "{'layer'" not in out and "None" not in out  # no echoed return value


def test_summary_rows_returns_the_rows_and_prints_nothing(capsys):
    model = model_with_everything()
    rows = keras_regs.summary_rows(model, x=X)
    assert capsys.readouterr().out == ""
    expected = numpy_terms(model)
    for keyword, value in expected.items():
        total = sum(row["value"] for row in rows if row["keyword"] == keyword)
        np.testing.assert_allclose(total, value, rtol=1e-5)
    (noise,) = [row for row in rows if row["keyword"] == "input_noise"]
    assert noise["target"] == "after x" and noise["strength"] == 0.2
    assert all(
        set(row) == {*keras_regs.model.report.COLUMNS, "skipped"} for row in rows
    )


def test_line_length_bounds_every_line_and_cuts_nothing():
    model = model_with_everything()
    text = captured(keras_regs.summary, model, x=X, line_length=60)
    assert max(len(line) for line in text.splitlines()) <= 60
    totals = printed_totals(text)
    np.testing.assert_allclose(totals[None], sum(numpy_terms(model).values()), 1e-5)


def test_with_interactive_logging_off_the_summary_goes_to_the_log(capsys, monkeypatch):
    """As Keras' print_msg does: to absl's log, not to stdout."""
    from absl import logging as absl_logging

    logged = []
    monkeypatch.setattr(absl_logging, "info", logged.append)
    model = model_with_everything()
    keras.config.disable_interactive_logging()
    try:
        keras_regs.summary(model)
    finally:
        keras.config.enable_interactive_logging()
    assert capsys.readouterr().out == ""
    (text,) = logged
    assert text.startswith(f'Regularization of "{model.name}"')


def test_preview_prints_what_the_call_would_add_and_preview_rows_returns_it():
    model = model_with_everything()
    before = [(v.path, v.regularizer) for v in model.weights]
    text = captured(keras_regs.preview, model, weight_l1=0.3, hidden_dropout=0.1)
    assert text.startswith(f'Preview of regularize_model on "{model.name}"')
    kernels = [model.get_layer(n).kernel for n in ("dense_0", "out")]
    expected = 0.3 * sum(np.sum(np.abs(to_numpy(k))) for k in kernels)
    totals = printed_totals(text)
    assert set(totals) == {"weight_l1", None}  # only the call's keywords
    np.testing.assert_allclose(totals["weight_l1"], expected, rtol=1e-5)
    np.testing.assert_allclose(totals[None], expected, rtol=1e-5)
    assert "BernoulliDropout(0.1)" in text and "after bn" in text
    rows = keras_regs.preview_rows(model, weight_l1=0.3, hidden_dropout=0.1)
    shown = sum(row["value"] for row in rows if row["keyword"] == "weight_l1")
    np.testing.assert_allclose(shown, expected, rtol=1e-5)
    (dropout,) = [row for row in rows if row["keyword"] == "hidden_dropout"]
    assert (dropout["target"], dropout["strength"]) == ("after bn", 0.1)
    assert [(v.path, v.regularizer) for v in model.weights] == before


@pytest.mark.parametrize("function", ["summary", "preview"])
@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"print_fn": "stdout"}, TypeError, "print_fn='stdout'"),
        ({"line_length": "80"}, TypeError, "line_length='80'"),
        ({"line_length": True}, TypeError, "line_length=True"),
        ({"line_length": 0}, ValueError, "line_length=0"),
    ],
)
def test_bad_printing_arguments_are_named(function, kwargs, error, fragment):
    model = model_with_everything()
    call = getattr(keras_regs, function)
    spec = {"weight_l2": 0.2} if function == "preview" else {}
    with pytest.raises(error, match=re.escape(fragment)) as info:
        call(model, **kwargs, **spec)
    assert f"argument `{next(iter(kwargs))}`" in str(info.value)
