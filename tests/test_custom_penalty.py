"""A custom penalty (the seeds' WeightInverse) and the keyword registry."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_regs
from custom_penalties import WeightInverse
from helpers import (
    assert_snapshots_equal,
    dense_model,
    load_in_fresh_process,
    numpy_forward,
    regression_data,
    snapshot,
    to_numpy,
)


def weight_inverse_numpy(w):
    return np.sum(1.0 / np.sum(w.astype("float64") ** 2, axis=0))


def test_value_matches_numpy():
    w = np.random.default_rng(0).normal(size=(7, 5)).astype("float32")
    np.testing.assert_allclose(
        float(to_numpy(WeightInverse(0.1)(w))), 0.1 * weight_inverse_numpy(w), rtol=1e-6
    )
    np.testing.assert_allclose(
        float(to_numpy(WeightInverse(0.1, reduction="mean")(w))),
        0.1 * weight_inverse_numpy(w) / 5,
        rtol=1e-6,
    )


def test_trains_and_the_fit_loss_holds_the_numpy_penalty():
    model = dense_model(kernel_regularizer=WeightInverse(0.01))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x, y = regression_data()
    loss = model.fit(x, y, batch_size=64, verbose=0).history["loss"][0]
    kernel, _, prediction = numpy_forward(model, x)
    penalty = 0.01 * weight_inverse_numpy(kernel)
    np.testing.assert_allclose(float(to_numpy(model.losses[0])), penalty, rtol=1e-5)
    np.testing.assert_allclose(
        loss, np.mean((prediction - y) ** 2) + penalty, rtol=1e-5
    )
    # and it trains: the penalty pushes column norms up, the penalty falls
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    history = model.fit(x, y, epochs=5, batch_size=16, verbose=0).history["loss"]
    assert history[-1] < history[0]


@pytest.mark.slow
def test_saves_and_reloads_in_a_fresh_process(tmp_path):
    model = dense_model(kernel_regularizer=WeightInverse(0.01, reduction="mean"))
    x, _ = regression_data()
    path = tmp_path / "custom.keras"
    model.save(path)
    imports = ("import keras_regs", "import custom_penalties")
    assert_snapshots_equal(snapshot(model, x), load_in_fresh_process(path, x, imports))


def test_registered_keywords():
    lookup = keras_regs.regularizers.lookup
    assert lookup("weight_inverse") is WeightInverse
    assert lookup("weight_l2") is lookup("weight_decay") is keras_regs.WeightL2
    assert lookup("weight_l1") is lookup("weight_sparsity") is keras_regs.WeightL1
    assert lookup("hidden_l1") is lookup("hidden_sparsity") is keras_regs.HiddenL1
    assert "weight_inverse" in keras_regs.regularizers.keywords()
    with pytest.raises(ValueError, match=r"'weight_l3'.*Did you mean `weight_l2`"):
        lookup("weight_l3")
    with pytest.raises(TypeError, match=r"`keyword`.*Received: keyword=3"):
        lookup(3)


def test_aliases_targets_and_collisions():
    class SquaredActivity(keras_regs.Regularizer):
        target = "activity"
        aliases = ("activity_l2_test",)

        def call(self, x):
            return ops.square(x)

    lookup = keras_regs.regularizers.lookup
    assert lookup("squared_activity") is lookup("activity_l2_test") is SquaredActivity
    # mean reduction of an activity penalty: the mean survives Keras' division by B
    h = np.random.default_rng(1).normal(size=(4, 3)).astype("float32")
    value = float(to_numpy(SquaredActivity(2.0, reduction="mean")(h))) / 4
    np.testing.assert_allclose(
        value, 2.0 * np.mean(h.astype("float64") ** 2), rtol=1e-6
    )

    with pytest.raises(ValueError, match="`weight_decay`.*already taken"):

        class Decay(keras_regs.Regularizer):
            aliases = ("weight_decay",)

            def call(self, x):
                return x

    with pytest.raises(ValueError, match=r"`Bad.target`.*Received: target='bias'"):

        class Bad(keras_regs.Regularizer):
            target = "bias"

            def call(self, x):
                return x


def test_base_class_without_call_is_not_a_keyword_and_cannot_run():
    class Intermediate(keras_regs.Regularizer):
        pass

    assert "intermediate" not in keras_regs.regularizers.keywords()
    with pytest.raises(NotImplementedError, match="must implement `call"):
        Intermediate(1.0)(np.ones((2, 2), "float32"))
