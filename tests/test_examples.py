"""Every script in examples/ runs, in a short mode, and reports success."""

import os
import subprocess
import sys

import pytest

from helpers import TESTS_DIR

EXAMPLES = os.path.join(os.path.dirname(TESTS_DIR), "examples")


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


@pytest.mark.slow
def test_quickstart_runs_and_its_reload_check_passes():
    output = run_example("quickstart.py", "--epochs", "1")
    assert "predictions identical: True" in output
    assert "penalties identical:   True" in output


@pytest.mark.slow
def test_contractive_autoencoder_shows_a_smaller_jacobian_at_similar_error():
    # the script exits 1 unless the Jacobian norm is smaller at an error within 1.25x
    output = run_example("contractive_autoencoder.py", "--epochs", "15")
    assert "mean ||J||_F^2" in output
