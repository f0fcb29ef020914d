"""Every script in examples/ runs, in a short mode, and reports success."""

import os
import subprocess
import sys

import pytest

from helpers import TESTS_DIR

EXAMPLES = os.path.join(os.path.dirname(TESTS_DIR), "examples")


@pytest.mark.slow
def test_quickstart_runs_and_its_reload_check_passes():
    result = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "quickstart.py"), "--epochs", "1"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "predictions identical: True" in result.stdout
    assert "penalties identical:   True" in result.stdout


@pytest.mark.slow
def test_contractive_autoencoder_shows_a_smaller_jacobian_at_similar_error():
    script = os.path.join(EXAMPLES, "contractive_autoencoder.py")
    result = subprocess.run(
        [sys.executable, script, "--epochs", "15"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    # the script exits 1 unless the Jacobian norm is smaller at an error within 1.25x
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "mean ||J||_F^2" in result.stdout
