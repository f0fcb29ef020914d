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
