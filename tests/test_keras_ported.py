"""Keras' own tests, run against keras_regs: drop-in to the letter.

Keras 3's regularizer, dropout and spatial-dropout test cases are imported from
the installed Keras and run unchanged (their inputs, numbers and assertions), with
the name they test pointed at keras_regs' class: `regularizers.L1` is
`keras_regs.WeightL1` (and `HiddenL1`), `layers.Dropout` is
`keras_regs.layers.BernoulliDropout`, `layers.SpatialDropout2D` is
`keras_regs.layers.SpatialDropout2D`. The few cases left out are listed with
the reason.
"""

import inspect
import types
import unittest
import warnings

import keras
import numpy as np
import pytest

import keras_regs
from keras_regs.layers import (
    BernoulliDropout,
    SpatialDropout1D,
    SpatialDropout2D,
    SpatialDropout3D,
)

pytestmark = pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="Keras' own tests: the TensorFlow and JAX passes (CI time)",
)

keras_dropout = pytest.importorskip("keras.src.layers.regularization.dropout_test")
keras_spatial = pytest.importorskip(
    "keras.src.layers.regularization.spatial_dropout_test"
)
keras_regularizers = pytest.importorskip("keras.src.regularizers.regularizers_test")


# Keras' layer-test harness trains a model of the layer alone, and Keras warns
# that it has no trainable weights (Keras' own Dropout too); this suite turns
# warnings into errors.
NO_WEIGHTS = "The model does not have any trainable weights"


def run_keras_case(case_class, name):
    """Run one of Keras' test methods; fail with its own failure message."""
    result = unittest.TestResult()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", NO_WEIGHTS)
        case_class(name).run(result)
    problems = result.failures + result.errors
    assert not problems, problems[0][1]
    assert not result.skipped, result.skipped
    assert result.testsRun == 1


def keras_tests(case_class, leave_out=()):
    names = unittest.TestLoader().getTestCaseNames(case_class)
    assert set(leave_out) <= set(names)  # a renamed case is noticed
    return [name for name in names if name not in leave_out]


# --- regularizers: keras/src/regularizers/regularizers_test.py ---------------

# The cases of L1L2 and OrthogonalRegularizer test classes keras_regs does not
# have; `test_config` serializes those too (Keras' serialization check is run
# on every keras_regs penalty below); `test_get_method` looks up Keras' own
# string identifiers ("l1"), which name Keras' classes.
REGULARIZER_CASES = keras_tests(
    keras_regularizers.RegularizersTest,
    leave_out=[
        "test_config",
        "test_get_method",
        "test_l1_l2",
        "test_l1l2_get_config",
        "test_l1l2_only_l1",
        "test_l1l2_only_l2",
        "test_l1l2_with_zero_weights",
        "test_l1l2_zero_coefficients",
        "test_orthogonal_regularizer",
        "test_orthogonal_regularizer_get_config",
        "test_orthogonal_regularizer_input_rank_validation",
        "test_orthogonal_regularizer_mode_validation",
    ],
)
SHIMS = {
    "weights": types.SimpleNamespace(L1=keras_regs.WeightL1, L2=keras_regs.WeightL2),
    "activity": types.SimpleNamespace(L1=keras_regs.HiddenL1, L2=keras_regs.HiddenL2),
}


@pytest.mark.parametrize("target", sorted(SHIMS))
@pytest.mark.parametrize("name", REGULARIZER_CASES)
def test_keras_regularizer_tests_pass(name, target, monkeypatch):
    monkeypatch.setattr(keras_regularizers, "regularizers", SHIMS[target])
    run_keras_case(keras_regularizers.RegularizersTest, name)


PENALTIES = [
    keras_regs.WeightL1,
    keras_regs.WeightL2,
    keras_regs.HiddenL1,
    keras_regs.HiddenL2,
    keras_regs.RecurrentNorm,
    keras_regs.RecurrentState,
]


@pytest.mark.parametrize("cls", PENALTIES, ids=lambda c: c.__name__)
def test_keras_class_serialization_check_passes(cls):
    """Keras' `run_class_serialization_test` (what its `test_config` runs)."""
    keras.src.testing.TestCase().run_class_serialization_test(cls(0.1))


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (keras_regs.WeightL1, keras.regularizers.L1),
        (keras_regs.WeightL2, keras.regularizers.L2),
        (keras_regs.HiddenL1, keras.regularizers.L1),
        (keras_regs.HiddenL2, keras.regularizers.L2),
    ],
    ids=lambda c: c.__name__,
)
def test_default_strength_is_keras_default(ours, theirs):
    """No strength, `None` and `keras.regularizers.get(cls)` give Keras' default
    (0.01), and the same value as Keras' class made without an argument."""
    (parameter,) = inspect.signature(theirs).parameters.values()
    assert parameter.default == 0.01
    for made in (ours(), ours(None), keras.regularizers.get(ours)):
        assert type(made) is ours
        assert made.strength == parameter.default
    assert theirs(None).get_config() == theirs().get_config()
    w = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours()(w)),
        keras.ops.convert_to_numpy(theirs()(w)),
        rtol=1e-6,
    )


# Every bad value of Keras' `ValidateFloatArgTest` (None means the default in
# `L1(None)`, so it is valid for both), and a dict (to keras_regs, the config of a
# schedule: this one is not).
BAD_STRENGTHS = [
    "not_a_number",
    {},
    float("nan"),
    float("inf"),
    -float("inf"),
    -1,
    -0.001,
    [0.1],
]


@pytest.mark.parametrize("cls", PENALTIES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("bad", BAD_STRENGTHS, ids=repr)
def test_bad_strength_raises_what_keras_raises(cls, bad):
    """The exception Keras' L1 raises for the same value, whatever it is (a
    ValueError, also for a string or a list, where keras_regs' TypeError is also
    a ValueError), naming the argument and the value."""
    with pytest.raises(Exception) as keras_error:
        keras.regularizers.L1(bad)
    with pytest.raises(type(keras_error.value)) as ours:
        cls(bad)
    assert "`strength`" in str(ours.value)
    assert f"strength={bad!r}" in str(ours.value)
    if isinstance(bad, (str, list, dict)):  # a wrong type: Python's convention too
        assert isinstance(ours.value, TypeError)
        assert isinstance(ours.value, keras_regs.ArgumentTypeError)


@pytest.mark.parametrize("good", [1, 1.0, 0, 0.0, 1e-10, 1e6])
def test_good_strengths_are_kept_as_floats(good):
    """Keras' `validate_float_arg` valid cases: stored as a Python float."""
    made = keras_regs.WeightL1(good)
    assert made.strength == float(good)
    assert type(made.strength) is float
    # Keras holds it in float32
    assert np.float32(made.strength) == keras.regularizers.L1(good).get_config()["l1"]


# --- dropout: keras/src/layers/regularization/dropout_test.py ----------------

# `test_dropout_basics` expects no non-trainable weight: BernoulliDropout holds
# its rate in one (so a compiled step sees a new rate, docs/noise-and-dropout.md).
DROPOUT_CASES = keras_tests(
    keras_dropout.DropoutTest, leave_out=["test_dropout_basics"]
)


@pytest.mark.parametrize("name", DROPOUT_CASES)
def test_keras_dropout_tests_pass(name, monkeypatch):
    monkeypatch.setattr(
        keras_dropout, "layers", types.SimpleNamespace(Dropout=BernoulliDropout)
    )
    run_keras_case(keras_dropout.DropoutTest, name)


def test_dropout_basics_but_the_rate_variable():
    """Keras' `test_dropout_basics`, with the one non-trainable weight (the rate)."""
    warnings.filterwarnings("ignore", NO_WEIGHTS)
    keras.src.testing.TestCase().run_layer_test(
        BernoulliDropout,
        init_kwargs={"rate": 0.2},
        input_shape=(2, 3),
        call_kwargs={"training": True},
        expected_output_shape=(2, 3),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=1,
        expected_num_seed_generators=1,
        expected_num_losses=0,
        supports_masking=True,
        assert_built_after_instantiation=True,
    )


SPATIAL = types.SimpleNamespace(
    SpatialDropout1D=SpatialDropout1D,
    SpatialDropout2D=SpatialDropout2D,
    SpatialDropout3D=SpatialDropout3D,
    Input=keras.layers.Input,
)


@pytest.mark.parametrize("name", keras_tests(keras_spatial.SpatialDropoutTest))
def test_keras_spatial_dropout_tests_pass(name, monkeypatch):
    monkeypatch.setattr(keras_spatial, "layers", SPATIAL)
    run_keras_case(keras_spatial.SpatialDropoutTest, name)
