"""Every script in examples/ runs, in a short mode, and reports success."""

import os
import subprocess
import sys

import keras
import pytest

from helpers import TESTS_DIR

EXAMPLES = os.path.join(os.path.dirname(TESTS_DIR), "examples")
# Each script's short mode: what CI runs. A new script must be added here.
SHORT = {
    "digits.py": ["--short"],
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
def test_digits_demo_trains_all_three_variants_and_reloads_identically(tmp_path):
    output = run_example("digits.py", *SHORT["digits.py"], "--out", str(tmp_path))
    for variant in ("plain", "Keras built-ins", "regularize_model"):
        assert variant in output
    assert "other_penalties" in output and "weight_l2" in output
    assert "predictions identical: True" in output
    png = tmp_path / "digits.png"
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
