"""An L2 penalty and decoupled weight decay: equal under SGD, different under
Adam, and a warning when both are asked for."""

import warnings

import keras
import numpy as np
import pytest

import keras_regs
from helpers import mlp, regression_data, to_numpy

STRENGTH = 0.05


def trained(optimizer, weight_l2=None):
    """`mlp` trained 3 epochs; the optimizer leaves biases alone, as
    regularize_model does by default."""
    keras.utils.set_random_seed(0)
    model = mlp(outputs=1)
    if weight_l2 is not None:
        keras_regs.regularize_model(model, weight_l2=weight_l2)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    model.compile(optimizer=optimizer, loss="mse")
    x, y = regression_data()
    model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    return [to_numpy(v) for v in model.weights]


def largest_difference(a, b):
    return max(float(np.abs(u - v).max()) for u, v in zip(a, b, strict=True))


def test_with_sgd_weight_l2_s_is_weight_decay_2s():
    """L2 adds 2 s w to the gradient, so SGD steps by -lr 2 s w; decoupled
    decay steps by -lr wd w. Equal when wd = 2 s."""
    penalty = trained(keras.optimizers.SGD(0.05), weight_l2=STRENGTH)
    decay = trained(keras.optimizers.SGD(0.05, weight_decay=2 * STRENGTH))
    plain = trained(keras.optimizers.SGD(0.05))
    assert largest_difference(penalty, decay) < 1e-5
    assert largest_difference(penalty, plain) > 1e-2


def test_with_adam_they_differ():
    """Adam rescales the penalty's gradient by its adaptive step; AdamW's
    decay is applied as is (Loshchilov and Hutter)."""
    penalty = trained(keras.optimizers.Adam(0.01), weight_l2=STRENGTH)
    decay = trained(keras.optimizers.AdamW(0.01, weight_decay=2 * STRENGTH))
    assert largest_difference(penalty, decay) > 1e-3


@pytest.mark.parametrize(
    ("optimizer", "spec", "warns"),
    [
        (lambda: keras.optimizers.AdamW(weight_decay=0.01), {"weight_l2": 1e-4}, True),
        (lambda: keras.optimizers.SGD(weight_decay=0.1), {"weight_decay": 1e-4}, True),
        (lambda: keras.optimizers.AdamW(weight_decay=0.01), {"weight_l1": 1e-4}, False),
        (lambda: keras.optimizers.Adam(), {"weight_l2": 1e-4}, False),
        (None, {"weight_l2": 1e-4}, False),
    ],
    ids=["adamw", "sgd-alias", "l1-only", "adam", "not-compiled"],
)
def test_warning_when_the_optimizer_already_decays(optimizer, spec, warns):
    model = mlp()
    if optimizer is not None:
        model.compile(optimizer=optimizer(), loss="mse")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        keras_regs.regularize_model(model, **spec)
    messages = [str(w.message) for w in record if "weight decay" in str(w.message)]
    assert bool(messages) is warns
    if warns:
        assert "weight_decay=" in messages[0]
        assert (
            "https://keras-regs.readthedocs.io/en/latest/weight-decay.html"
            in messages[0]
        ), messages
        # the penalty is still attached: the warning does not refuse
        assert model.get_layer("dense_0").kernel_regularizer is not None
