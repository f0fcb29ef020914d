"""Schedules: strengths, dropout rates and noise stddevs that follow the
optimizer's step inside the compiled train step, saved and resumed with the model.

Each run trains one batch per epoch, so History's epoch `e` entry is the step `e`
term, computed from the weights as they were at the start of that epoch. The
reference schedule is NumPy's straight line, not Keras' PolynomialDecay.
"""

import keras
import numpy as np
import pytest

import keras_regs
from helpers import mlp, to_numpy
from keras_regs import _schedule

BACKEND = keras.backend.backend()
N = 16
RNG = np.random.default_rng(3)
X = RNG.normal(size=(N, 5)).astype("float32")
Y = RNG.normal(size=(N, 2)).astype("float32")
END, RAMP = 0.05, 4  # weight_l2 warms up linearly from 0 to END over RAMP steps


def warmup(end=END, steps=RAMP):
    """A linear warm-up from 0 (PolynomialDecay with power 1 rising to `end`)."""
    return keras.optimizers.schedules.PolynomialDecay(
        0.0, steps, end_learning_rate=end, power=1.0
    )


def ramp(step, end=END, steps=RAMP):
    return end * min(step, steps) / steps


def kernels(model):
    """The kernels that carry a penalty."""
    return [to_numpy(w) for w in model.weights if w.regularizer is not None]


class KernelsAtEpochStart(keras.callbacks.Callback):
    """The kernels as each epoch (one step) starts: what its penalty reads."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(kernels(self.model))


def train(model, epochs, initial_epoch=0):
    grab = KernelsAtEpochStart()
    history = model.fit(
        X,
        Y,
        batch_size=N,
        epochs=initial_epoch + epochs,
        initial_epoch=initial_epoch,
        shuffle=False,
        verbose=0,
        callbacks=[grab],
    ).history
    return history, grab.seen


def assert_follows_ramp(history, seen, first_step):
    for i, ks in enumerate(seen):
        step = first_step + i
        expected = ramp(step) * sum(float(np.sum(k**2)) for k in ks)
        np.testing.assert_allclose(
            history["weight_l2"][i], expected, rtol=1e-5, atol=1e-12
        )


def by_keyword():
    return keras_regs.regularize_model(mlp(), weight_l2=warmup())


def by_constructor():
    model = mlp(kernel_regularizer=keras_regs.WeightL2(warmup()))
    return keras_regs.log_penalties(model)


@pytest.mark.parametrize("build", [by_keyword, by_constructor])
def test_linear_warmup_of_weight_l2_gives_the_expected_penalty_at_each_step(build):
    model = build()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    history, seen = train(model, epochs=RAMP + 2)
    assert history["weight_l2"][0] == 0.0  # step 0 of the warm-up
    assert_follows_ramp(history, seen, first_step=0)
    # the terms still add up to the loss
    np.testing.assert_allclose(
        np.add(history["data_loss"], history["weight_l2"]), history["loss"], rtol=1e-5
    )


class CountingWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """A warm-up that counts how often it is evaluated (traced, when compiled)."""

    calls = 0

    def __call__(self, step):
        CountingWarmup.calls += 1
        return warmup()(step)

    def get_config(self):
        return {}


@pytest.mark.skipif(
    BACKEND == "torch", reason="PyTorch steps are not traced: there is no retrace"
)
def test_the_compiled_step_is_not_traced_again_as_the_step_advances():
    model = keras_regs.regularize_model(mlp(), weight_l2=CountingWarmup())
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    train(model, epochs=1)
    traced = CountingWarmup.calls
    train_function = model.train_function
    history, seen = train(model, epochs=RAMP + 1, initial_epoch=1)
    assert CountingWarmup.calls == traced
    assert model.train_function is train_function
    assert_follows_ramp(history, seen, first_step=1)


def test_validation_and_evaluate_use_the_optimizer_step():
    model = by_keyword()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    history = model.fit(
        X, Y, batch_size=N, epochs=3, verbose=0, validation_data=(X, Y)
    ).history
    # validation after epoch e runs at step e + 1; the final weights serve the last
    expected = ramp(3) * sum(float(np.sum(k**2)) for k in kernels(model))
    np.testing.assert_allclose(history["val_weight_l2"][-1], expected, rtol=1e-5)
    for steps in (3, 4):  # evaluate again after one more step: not a stale step
        if steps == 4:
            train(model, epochs=1)
        result = model.evaluate(X, Y, verbose=0, return_dict=True)
        expected = ramp(steps) * sum(float(np.sum(k**2)) for k in kernels(model))
        np.testing.assert_allclose(result["weight_l2"], expected, rtol=1e-5)


def trained_and_reloaded(model, epochs, tmp_path):
    """`model` compiled, trained `epochs` steps, saved to `.keras` and loaded."""
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    train(model, epochs=epochs)
    path = str(tmp_path / "scheduled.keras")
    model.save(path)
    return keras.saving.load_model(path)


@pytest.mark.slow
def test_saved_and_loaded_model_resumes_the_schedule_at_its_step(tmp_path):
    keras.utils.set_random_seed(0)
    uninterrupted = by_keyword()
    uninterrupted.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    straight, _ = train(uninterrupted, epochs=6)

    loaded = trained_and_reloaded(by_keyword(), 3, tmp_path)
    assert int(to_numpy(loaded.optimizer.iterations)) == 3
    history, seen = train(loaded, epochs=3, initial_epoch=3)
    assert_follows_ramp(history, seen, first_step=3)
    np.testing.assert_allclose(history["weight_l2"], straight["weight_l2"][3:], 1e-6)


@pytest.mark.parametrize("build", [by_keyword, by_constructor])
def test_a_loaded_model_reads_its_optimizers_step_with_no_extra_call(build, tmp_path):
    loaded = trained_and_reloaded(build(), 2, tmp_path)
    total = sum(float(to_numpy(loss)) for loss in loaded.losses)
    expected = ramp(2) * sum(float(np.sum(k**2)) for k in kernels(loaded))
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    history, seen = train(loaded, epochs=1, initial_epoch=2)
    assert_follows_ramp(history, seen, first_step=2)


def test_a_schedule_bound_to_no_model_stops_fit_with_the_call_to_make():
    model = mlp(kernel_regularizer=keras_regs.WeightL2(warmup()))
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    before = [to_numpy(w) for w in model.weights]
    with pytest.raises(RuntimeError, match=r"bind_schedules\(model\)"):
        model.fit(X, Y, batch_size=N, epochs=1, verbose=0)
    for old, new in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(old, to_numpy(new))
    keras_regs.bind_schedules(model)  # schedules only: no log entries
    history, _ = train(model, epochs=2)
    assert sorted(history) == ["loss"]
    total = sum(float(to_numpy(loss)) for loss in model.losses)
    expected = ramp(2) * sum(float(np.sum(k**2)) for k in kernels(model))
    np.testing.assert_allclose(total, expected, rtol=1e-5)


def test_model_level_mean_reduction_divides_the_schedule_among_the_tensors():
    model = keras_regs.regularize_model(mlp(), weight_l2=warmup(), reduction="mean")
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    history, seen = train(model, epochs=3)
    for step, ks in enumerate(seen):
        expected = ramp(step) / len(ks) * sum(float(np.mean(k**2)) for k in ks)
        np.testing.assert_allclose(history["weight_l2"][step], expected, rtol=1e-5)
    config = model.layers[1].get_config()["kernel_regularizer"]
    again = keras.regularizers.deserialize(config)
    assert isinstance(again.penalties["weight_l2"].strength, _schedule.Scaled)


SCHEDULED_PENALTIES = [
    (keras_regs.WeightL1, (3, 4)),
    (keras_regs.WeightL2, (3, 4)),
    (keras_regs.HiddenL1, (2, 3)),
    (keras_regs.RecurrentNorm, (2, 5, 3)),
    (keras_regs.RecurrentState, (2, 5, 3)),
]


@pytest.mark.parametrize(
    "cls, shape", SCHEDULED_PENALTIES, ids=lambda p: getattr(p, "__name__", "")
)
def test_each_penalty_takes_a_schedule_and_saves_it(cls, shape):
    x = RNG.normal(size=shape).astype("float32")
    penalty = cls(warmup(), reduction="mean")
    again = cls.from_config(penalty.get_config())
    assert again.get_config() == penalty.get_config()
    for step in (0, 1, 3, 9):
        fixed = float(to_numpy(cls(ramp(step), reduction="mean")(x)))
        for p in (penalty, again):
            with _schedule.stepping(lambda step=step: step):
                value = float(to_numpy(p(x)))
            np.testing.assert_allclose(value, fixed, rtol=1e-6)


def test_contractive_takes_a_schedule_and_saves_it():
    x = RNG.normal(size=(4, 5)).astype("float32")

    def wrapped(strength):
        dense = keras.layers.Dense(
            3, activation="tanh", kernel_initializer=keras.initializers.Ones()
        )
        return keras_regs.layers.Contractive(dense, strength)

    layer = wrapped(warmup())
    again = keras_regs.layers.Contractive.from_config(layer.get_config())
    for step in (1, 2, 6):
        fixed = wrapped(ramp(step))
        fixed(x)
        for scheduled in (layer, again):
            with _schedule.stepping(lambda step=step: step):
                scheduled(x)
            np.testing.assert_allclose(
                to_numpy(scheduled.losses[-1]), to_numpy(fixed.losses[-1]), rtol=1e-6
            )


@pytest.mark.parametrize(
    "cls, amount",
    [(keras_regs.layers.BernoulliDropout, 0.6), (keras_regs.layers.GaussianNoise, 2)],
)
def test_dropout_rate_and_noise_stddev_follow_the_step_in_fit(cls, amount):
    """A frozen linear model (learning rate 0) behind a scheduled layer: each
    step's loss equals the same layer's output with the number the schedule gives
    at that step, drawn from the same seeded sequence."""
    schedule = warmup(end=amount, steps=3)
    inputs = keras.Input((5,))
    noisy = cls(schedule, seed=7)(inputs)
    outputs = keras.layers.Dense(2, kernel_initializer="ones", use_bias=False)(noisy)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    keras_regs.log_penalties(model)
    history, _ = train(model, epochs=5)
    assert cls.from_config(model.layers[1].get_config()).get_config() == (
        model.layers[1].get_config()
    )

    reference = cls(0.0, seed=7)
    for step, loss in enumerate(history["loss"]):
        setattr(reference, reference.held, ramp(step, end=amount, steps=3))
        out = to_numpy(reference(X, training=True)).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(loss, np.mean((out - Y) ** 2), rtol=1e-5)


@pytest.mark.parametrize(
    "value",
    [
        lambda step: 0.1,
        {"class_name": "L2", "config": {"l2": 0.1}},
        {"class_name": "NoSuchSchedule", "config": {}},
        "warmup",
    ],
    ids=["function", "regularizer-config", "unknown-class", "string"],
)
def test_what_is_not_a_schedule_is_refused_naming_the_argument(value):
    with pytest.raises(TypeError, match="strength"):
        keras_regs.WeightL2(value)
    with pytest.raises(TypeError, match="rate"):
        keras_regs.layers.BernoulliDropout(value)
    model = mlp()
    before = model.get_config()
    with pytest.raises(TypeError, match="weight_l2"):
        keras_regs.regularize_model(model, weight_l2={"strength": value})
    assert model.get_config() == before


def test_a_subclassed_model_with_the_mixin_replays_its_schedule(tmp_path):
    from custom_models import Net

    model = Net()
    model(X)
    keras_regs.regularize_model(model, weight_l2=warmup())
    loaded = trained_and_reloaded(model, 2, tmp_path)
    strength = loaded.hidden.kernel_regularizer.penalties["weight_l2"].strength
    assert keras.optimizers.schedules.serialize(strength) == (
        keras.optimizers.schedules.serialize(warmup())
    )
    history, seen = train(loaded, epochs=2, initial_epoch=2)
    assert_follows_ramp(history, seen, first_step=2)


def test_summary_and_preview_show_the_schedule_and_its_value_now():
    model = by_keyword()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    train(model, epochs=2)
    printed = []
    keras_regs.summary(model, print_fn=printed.append)
    assert "PolynomialDecay(step)" in printed[0]
    rows = [row for row in keras_regs.summary_rows(model) if row["skipped"] is None]
    for row, kernel in zip(rows, kernels(model), strict=True):
        expected = ramp(2) * float(np.sum(kernel**2))
        np.testing.assert_allclose(row["value"], expected, rtol=1e-5)
    rows = keras_regs.preview_rows(mlp(), weight_l1=warmup())
    assert [row["value"] for row in rows] == [0.0] * 3  # step 0: not compiled
