"""keras_regs' type hints accept typed user code, and reject a wrong type.

mypy checks a small user script that uses the public API the way the README and
the docs do, with explicitly typed variables (`dict[str, float]`, `list[str]`,
schedules, the regularizers and layers, `summary_rows`' rows, ...): it must report
nothing. A second script has three type errors (a reduction that is not one, a list
where a dict goes, rows assigned to a `list[str]`): mypy must flag each, so the
check cannot pass by checking nothing (keras_regs not found, everything `Any`).

Keras ships no type hints, so its names are `Any` to mypy (`--ignore-missing-imports`);
keras_regs' own (it ships `py.typed`) are what is checked. Typing does not depend on
the backend: the TensorFlow pass runs it.
"""

import os
import subprocess
import sys
import textwrap

import keras
import pytest

from helpers import TESTS_DIR

ROOT = os.path.dirname(TESTS_DIR)

pytestmark = [
    pytest.mark.skipif(
        keras.backend.backend() != "tensorflow",
        reason="type hints do not depend on the backend: checked in the TensorFlow "
        "pass",
    ),
    pytest.mark.slow,  # mypy starts cold: about 10 s
]

USER_CODE = textwrap.dedent(
    '''
    """A user's typed script: every call here is one the docs show."""

    from collections.abc import Sequence
    from typing import Any

    import keras
    import numpy as np

    import keras_regs
    from keras_regs.layers import BernoulliDropout, Contractive, GaussianNoise
    from keras_regs.regularizers import Penalties, keywords, lookup

    model = keras.Sequential(
        [
            keras.Input((8,)),
            GaussianNoise(0.1, seed=13),
            keras.layers.Dense(
                16,
                activation="relu",
                kernel_regularizer=keras_regs.WeightL2(1e-4),
                activity_regularizer=keras_regs.HiddenL1(1e-4, reduction="mean"),
            ),
            BernoulliDropout(0.3, seed=13),
            keras.layers.Dense(1),
        ]
    )
    strength: float = 1e-4
    noise: dict[str, float] = {"dense*": 0.1}
    dropout: dict[str, float] = {"dense": 0.3}
    rates: dict[str, dict[str, Any]] = {"dense": {"rate": 0.3}}
    patterned: dict[str, float | str] = {"strength": 1e-4, "pattern": "dense*"}
    spec: dict[str, Any] = {"weight_l2": 1e-4, "hidden_l1": 1e-5}  # not float: **
    schedule = keras.optimizers.schedules.PolynomialDecay(0.0, 1000, 1e-4)

    model = keras_regs.regularize_model(
        model,
        weight_l2=strength,
        hidden_dropout=0.3,
        noise=noise,
        dropout=dropout,
        reduction="mean",
        include_bias=True,
        seed=7,
    )
    model = keras_regs.regularize_model(model, dropout=rates, weight_l1=patterned)
    model = keras_regs.regularize_model(model, **spec)
    model = keras_regs.regularize_model(model, hidden_l2=schedule, contractive=0.1)
    keras_regs.preview(model, weight_l2=1e-4, noise=noise)
    previewed: list[dict[str, Any]] = keras_regs.preview_rows(model, dropout=dropout)
    rows: list[dict[str, Any]] = keras_regs.summary_rows(model, x=np.zeros((2, 8)))
    total: float = sum(r["value"] for r in rows if r["keyword"] == "weight_l2")
    keras_regs.summary(model)
    model = keras_regs.log_penalties(model)
    model = keras_regs.bind_schedules(model)
    loss = keras_regs.regularization_loss(model)
    model = keras_regs.strip_regularization(model)

    penalties: list[keras_regs.Regularizer] = [
        keras_regs.WeightL1(1e-5),
        keras_regs.WeightL2(schedule),
        keras_regs.HiddenL2(strength, reduction="sum"),
        keras_regs.RecurrentNorm(1e-3),
        keras_regs.RecurrentState(1e-3, reduction="mean"),
    ]
    by_keyword: dict[str, keras_regs.WeightL2] = {"weight_l2": keras_regs.WeightL2()}
    Penalties(by_keyword, base=keras.regularizers.L2(0.01))
    names: list[str] = sorted(keywords())
    cls: type[keras_regs.Regularizer] = lookup("weight_decay")
    shape: Sequence[int | None] = (None, 1, 16)
    layers: list[keras.layers.Layer] = [
        BernoulliDropout(0.3, noise_shape=shape, seed=1),
        GaussianNoise(schedule),
        keras_regs.layers.SpatialDropout1D(0.2),
        Contractive(keras.layers.Dense(4), 0.1, estimator="hutchinson", samples=2),
    ]


    class WeightInverse(keras_regs.Regularizer):
        target = "weights"

        def call(self, x: Any) -> Any:
            return 1 / keras.ops.sum(x * x, axis=0)


    WeightInverse(1e-3)
    '''
)

# `WeightL2(strength="big")` is not flagged: a strength is `float |
# LearningRateSchedule`, and Keras' LearningRateSchedule is `Any` to mypy.
WRONG_CODE = textwrap.dedent(
    """
    import keras

    import keras_regs

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    keras_regs.WeightL2(1e-4, reduction="median")
    keras_regs.regularize_model(model, noise=["dense"])
    names: list[str] = keras_regs.summary_rows(model)
    """
)


def mypy(tmp_path, name, code):
    """mypy's exit status and report on `code`, written into `tmp_path/name`."""
    path = tmp_path / name
    path.write_text(code)
    env = {**os.environ, "MYPYPATH": ROOT}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--ignore-missing-imports",  # keras, numpy's keras use: no hints
            "--follow-imports=silent",  # check keras_regs' hints, report ours
            "--no-incremental",  # no cache written into the tree
            "--cache-dir=" + os.devnull,
            "--strict-equality",
            "--warn-unused-ignores",
            "--no-error-summary",
            str(path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return result.returncode, result.stdout + result.stderr


def test_typed_user_code_type_checks(tmp_path):
    status, report = mypy(tmp_path, "user.py", USER_CODE)
    assert status == 0 and not report.strip(), report


def test_a_wrong_type_is_flagged(tmp_path):
    status, report = mypy(tmp_path, "wrong.py", WRONG_CODE)
    assert status == 1, report
    lines = [line for line in report.splitlines() if ": error: " in line]
    assert [line.split(": error: ")[0] for line in lines] == [
        "wrong.py:7",
        "wrong.py:8",
        "wrong.py:9",
    ], report
    assert '"reduction" to "WeightL2"' in lines[0], report
    assert '"noise" to "regularize_model"' in lines[1], report
