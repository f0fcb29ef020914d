"""Every script in examples/ runs, in a short mode, and reports success."""

import os
import re
import struct
import subprocess
import sys

import keras
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


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the demo's backend: run once per suite, in the TensorFlow pass (the other "
    "examples run on every backend)",
)
def test_mnist_demo_trains_every_variant_prints_a_sane_table_and_reloads(tmp_path):
    output = run_example("mnist.py", *SHORT["mnist.py"], "--out", str(tmp_path))
    lines = output.splitlines()
    variants = ("plain", "Keras built-ins", "regularize_model")

    # one progress line per run, each with the time so far and the time left
    progress = [line for line in lines if re.match(r"\[ ?\d+/5\] ", line)]
    names = [f"{variant}, seed 0" for variant in variants] + [
        "auto-encoder, plain",
        "auto-encoder, hidden_l1",
    ]
    assert len(progress) == len(names)
    for line, name in zip(progress, names, strict=True):
        assert name in line
        assert re.search(r"elapsed \d+ s, about \d+ s left\)$", line), line
    assert progress[-1].endswith("about 0 s left)")

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
        r"regularize_model (\S+)",
        output,
    )
    assert [float(summary.group(i)) for i in (1, 2, 3)] == [
        float(rows[variant].group(5)) for variant in variants
    ]

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

    assert "predictions identical: True" in output
    for name in ("mnist.png", "mnist-filters.png"):
        with open(tmp_path / name, "rb") as f:
            header = f.read(24)
        assert header[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", header[16:24])
        assert width >= 1000 and height >= 300, (name, width, height)
    assert (tmp_path / "mnist_regularized.keras").stat().st_size > 0
