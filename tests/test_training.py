"""Training integration: per-model state, callbacks that change the spec during
`fit`, models with their own steps, loaded models, monitors by name.

Every run uses SGD at learning rate 0 unless it says otherwise, so the weights
stay where NumPy reads them and each logged term has a closed form.
"""

import threading

import keras
import numpy as np
import pytest

import keras_regs
from helpers import mlp, mlp_numpy, to_numpy

BACKEND = keras.backend.backend()
N, BATCH = 32, 8
RNG = np.random.default_rng(7)
X = RNG.normal(size=(N, 5)).astype("float32")
Y = RNG.normal(size=(N, 2)).astype("float32")
XV = RNG.normal(size=(16, 5)).astype("float32")
YV = RNG.normal(size=(16, 2)).astype("float32")


def kernel_squares(model):
    return sum(float(np.sum(to_numpy(w) ** 2)) for w in model.weights if w.regularizer)


def data_loss(model, x=X, y=Y):
    return float(np.mean((mlp_numpy(model, x)[1] - y) ** 2))


def compiled(model, learning_rate=0.0, **kwargs):
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse", **kwargs)
    return model


def fit(model, callbacks=(), epochs=2, **kwargs):
    return model.fit(
        X,
        Y,
        batch_size=BATCH,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=list(callbacks),
        **kwargs,
    ).history


# -- 1. per-model state --------------------------------------------------------


def two_models(eager):
    """Two models that log different terms at different scales."""
    first = keras_regs.regularize_model(mlp(seed=1), weight_l2=1e-5)
    second = keras_regs.regularize_model(mlp(seed=2), weight_l2=2.0, hidden_l1=0.5)
    for model in (first, second):
        compiled(model, learning_rate=0.01, run_eagerly=eager)
    return first, second


class Together(keras.callbacks.Callback):
    """Both fits wait for each other before every batch: their steps interleave."""

    def __init__(self, barrier):
        super().__init__()
        self.barrier = barrier

    def on_train_batch_begin(self, batch, logs=None):
        self.barrier.wait(timeout=60)


@pytest.mark.parametrize("eager", [False, True], ids=["compiled", "eager"])
def test_two_models_fitted_at_once_in_two_threads_log_what_they_log_alone(
    eager, request
):
    if eager and keras.backend.backend() == "jax":
        # Still run, and reported: XPASS when equal, XFAIL when not.
        request.applymarker(
            pytest.mark.xfail(
                strict=False,
                reason="a race under load, seen 2026-11-30 twice in ~6 runs with "
                "pytest -n 2 (Keras 3.15.1 and 3.14.0): one of the second epoch's "
                "logged values 0.3% off (2.2289 vs 2.2355); not reproduced alone "
                "(3 of 3 pass); under investigation",
            )
        )
    alone = [fit(model, epochs=2) for model in two_models(eager)]
    models = two_models(eager)
    barrier = threading.Barrier(2)
    histories, errors = [None, None], []

    def run(i):
        try:
            histories[i] = fit(models[i], [Together(barrier)], epochs=2)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    for together, by_itself in zip(histories, alone, strict=True):
        assert sorted(together) == sorted(by_itself)
        for key in by_itself:
            np.testing.assert_allclose(together[key], by_itself[key], rtol=1e-5)
    assert sorted(alone[0]) == ["data_loss", "loss", "weight_l2"]
    assert alone[0]["weight_l2"][0] < 1e-3 < alone[1]["weight_l2"][0]


# -- 2. callbacks and a model's own steps ---------------------------------------


class NewStrength(keras.callbacks.Callback):
    """Calls regularize_model with weight_l2=0.5 from one hook, once."""

    def __init__(self, hook, when):
        super().__init__()
        self.hook, self.when, self.done = hook, when, False

    def _maybe(self, index):
        if index == self.when and not self.done:
            self.done = True
            keras_regs.regularize_model(self.model, weight_l2=0.5, hidden_l1=0.05)

    def on_epoch_begin(self, epoch, logs=None):
        if self.hook == "on_epoch_begin":
            self._maybe(epoch)

    def on_epoch_end(self, epoch, logs=None):
        if self.hook == "on_epoch_end":
            self._maybe(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.hook == "on_train_batch_begin":
            self._maybe(batch)

    def on_train_batch_end(self, batch, logs=None):
        if self.hook == "on_train_batch_end":
            self._maybe(batch)


STEPS = N // BATCH  # 4 steps an epoch
# hook, when: the share of epoch 0's steps at the new strength, and epoch 1's
HOOKS = {
    "on_epoch_end": (0, 0.0, 1.0),
    "on_epoch_begin": (1, 0.0, 1.0),
    "on_train_batch_end": (0, (STEPS - 1) / STEPS, 1.0),
    "on_train_batch_begin": (1, (STEPS - 1) / STEPS, 1.0),
}


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_a_new_strength_from_any_callback_takes_effect_from_the_next_step(hook):
    when, share_0, share_1 = HOOKS[hook]
    model = keras_regs.regularize_model(mlp(), weight_l2=0.1, hidden_l1=0.05)
    compiled(model)
    history = fit(model, [NewStrength(hook, when)], validation_data=(XV, YV))
    squares = kernel_squares(model)
    for epoch, share in enumerate((share_0, share_1)):
        strength = 0.1 * (1 - share) + 0.5 * share
        np.testing.assert_allclose(
            history["weight_l2"][epoch], strength * squares, rtol=1e-5
        )
        np.testing.assert_allclose(
            history["data_loss"][epoch], data_loss(model), rtol=1e-5
        )
    # validation runs after the epoch's steps: at the new strength
    np.testing.assert_allclose(history["val_weight_l2"][1], 0.5 * squares, rtol=1e-5)
    loss = np.array(history["data_loss"]) + history["weight_l2"] + history["hidden_l1"]
    np.testing.assert_allclose(history["loss"], loss, rtol=1e-5)


def test_a_new_keyword_from_a_callback_gets_its_entry_from_the_next_epoch():
    class AddL1(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                keras_regs.regularize_model(self.model, weight_l1=0.01)

    model = compiled(keras_regs.regularize_model(mlp(), weight_l2=0.1))
    history = fit(model, [AddL1()], epochs=2)
    assert len(history["weight_l1"]) == 1 and len(history["data_loss"]) == 2
    l1 = 0.01 * sum(
        float(np.sum(np.abs(to_numpy(layer.kernel))))
        for layer in model.layers
        if hasattr(layer, "kernel")
    )
    np.testing.assert_allclose(history["weight_l1"][-1], l1, rtol=1e-5)


def test_a_keyword_added_mid_epoch_keeps_the_epochs_running_means():
    class AddL1(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                keras_regs.regularize_model(self.model, weight_l1=0.01)

    model = compiled(keras_regs.regularize_model(mlp(), weight_l2=0.1))
    history = fit(model, [AddL1()], epochs=1)
    np.testing.assert_allclose(history["data_loss"][0], data_loss(model), rtol=1e-5)
    l1 = 0.01 * sum(
        float(np.sum(np.abs(to_numpy(layer.kernel))))
        for layer in model.layers
        if hasattr(layer, "kernel")
    )
    # steps 2 and 3 of 4 carry it: the epoch mean counts steps 0 and 1 as 0
    np.testing.assert_allclose(history["weight_l1"][0], l1 * 2 / STEPS, rtol=1e-5)


def test_a_schedule_follows_the_step_under_mixed_precision():
    """A loss-scaled optimizer (mixed_float16) counts its steps in its inner
    optimizer: the schedule reads that one."""
    keras.config.set_dtype_policy("mixed_float16")
    ramp = keras.optimizers.schedules.PolynomialDecay(0.0, 4, 0.4, power=1.0)
    model = keras_regs.regularize_model(mlp(), weight_l2=ramp)
    compiled(model)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    history = model.fit(X, Y, batch_size=N, epochs=3, verbose=0).history
    squares = kernel_squares(model)
    for epoch in range(3):
        np.testing.assert_allclose(
            history["weight_l2"][epoch], 0.1 * epoch * squares, rtol=1e-3, atol=1e-7
        )
    logs = model.evaluate(X, Y, batch_size=N, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["weight_l2"], 0.3 * squares, rtol=1e-3)


class Wrapper(keras.Model):
    """A subclassed model around `mlp()`, for the models with steps of their own."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.net = mlp()

    def call(self, x):
        return self.net(x)


class NoTrainingArgument(Wrapper):
    """`compute_loss` as Keras accepted it before 3.3: no `training`."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        return super().compute_loss(x, y, y_pred, sample_weight)


class KeywordsOnly(Wrapper):
    def compute_loss(self, *args, **kwargs):
        return super().compute_loss(*args, **kwargs)


class OwnComputeLoss(Wrapper):
    """A compute_loss of its own, as Keras' guide writes one: the data loss
    plus `sum(self.losses)`, no call to Keras' compute_loss."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        loss = keras.ops.mean(keras.ops.square(y_pred - y))
        return loss + sum(self.losses)


@pytest.mark.parametrize("cls", [NoTrainingArgument, KeywordsOnly, OwnComputeLoss])
def test_a_compute_loss_override_in_any_signature_logs_its_terms(cls):
    model = cls()
    model(X[:1])
    keras_regs.regularize_model(model, weight_l2=0.1)
    compiled(model)
    history = fit(model, epochs=1, validation_data=(XV, YV))
    np.testing.assert_allclose(
        history["weight_l2"][0], 0.1 * kernel_squares(model), rtol=1e-5
    )
    np.testing.assert_allclose(history["data_loss"][0], data_loss(model.net), 1e-5)
    np.testing.assert_allclose(
        history["val_data_loss"][0], data_loss(model.net, XV, YV), 1e-5
    )


@pytest.mark.skipif(BACKEND != "tensorflow", reason="a TensorFlow train_step")
def test_a_models_own_train_and_test_steps_log_and_follow_schedules():
    import tensorflow as tf

    class OwnSteps(Wrapper):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.tracker = keras.metrics.Mean(name="own_loss")

        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compute_loss(y=y, y_pred=y_pred)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            self.tracker.update_state(loss)
            return self.get_metrics_result()

        def test_step(self, data):
            x, y = data
            loss = self.compute_loss(x, y, self(x, training=False), None, False)
            self.tracker.update_state(loss)
            return self.get_metrics_result()

    model = OwnSteps()
    model(X[:1])
    ramp = keras.optimizers.schedules.PolynomialDecay(0.0, 4, 0.4, power=1.0)
    keras_regs.regularize_model(model, weight_l2=ramp)
    compiled(model)
    history = model.fit(X, Y, batch_size=N, epochs=3, verbose=0).history
    squares = kernel_squares(model)
    for epoch in range(3):  # one step an epoch: step e's term is 0.1 * e * squares
        np.testing.assert_allclose(
            history["weight_l2"][epoch], 0.1 * epoch * squares, rtol=1e-5, atol=1e-9
        )
        np.testing.assert_allclose(
            history["data_loss"][epoch], data_loss(model.net), 1e-5
        )
    logs = model.evaluate(X, Y, batch_size=N, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["weight_l2"], 0.1 * 3 * squares, rtol=1e-5)
    np.testing.assert_allclose(logs["data_loss"], data_loss(model.net), rtol=1e-5)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="a TensorFlow train_step")
def test_a_train_step_without_compute_loss_logs_its_terms_and_says_why_not_data():
    import tensorflow as tf

    class ByHand(Wrapper):
        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((self(x, training=True) - y) ** 2)
                loss += tf.add_n(self.losses)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            return self.get_metrics_result()

    model = ByHand()
    model(X[:1])
    keras_regs.regularize_model(model, weight_l2=0.1)
    compiled(model)
    with pytest.warns(
        keras_regs.KerasRegsWarning, match="does not call `self.compute_loss`"
    ):
        history = fit(model, epochs=1)
    assert np.isnan(history["data_loss"][0])
    np.testing.assert_allclose(
        history["weight_l2"][0], 0.1 * kernel_squares(model), rtol=1e-5
    )


# -- 3. loaded models -------------------------------------------------------------


def functional():
    return mlp()


def sequential():
    return keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(6, activation="tanh"),
            keras.layers.Dense(2),
        ]
    )


def with_the_mixin():
    from custom_models import Net

    model = Net()
    model(X[:1])
    return model


@pytest.mark.parametrize("build", [functional, sequential, with_the_mixin])
def test_a_loaded_model_logs_its_terms_and_follows_its_schedule(build, tmp_path):
    ramp = keras.optimizers.schedules.PolynomialDecay(0.0, 4, 0.4, power=1.0)
    # (a subclassed model's hidden layers are named: it has no graph)
    hidden = {"strength": 0.01, "pattern": "hidden" if build is with_the_mixin else "*"}
    model = keras_regs.regularize_model(build(), weight_l2=ramp, hidden_l1=hidden)
    compiled(model, learning_rate=0.01)
    model.fit(X, Y, batch_size=N, epochs=2, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    # the same spec again leaves it as it is (and connected)
    assert keras_regs.regularize_model(loaded, weight_l2=ramp, hidden_l1=hidden) is (
        loaded
    )
    loaded.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    loaded.optimizer.iterations.assign(2)
    history = loaded.fit(X, Y, batch_size=N, epochs=1, verbose=0).history
    assert {"data_loss", "weight_l2", "hidden_l1"} <= set(history)
    np.testing.assert_allclose(
        history["weight_l2"][0], 0.2 * kernel_squares(loaded), rtol=1e-5
    )


def test_a_loaded_model_keeps_its_logs_off(tmp_path):
    model = keras_regs.regularize_model(mlp(), weight_l2=0.1)
    keras_regs.log_penalties(model, enabled=False)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    history = fit(compiled(loaded), epochs=1)
    assert sorted(history) == ["loss"]
    keras_regs.regularize_model(loaded, weight_l2=0.2)  # still off
    assert sorted(fit(loaded, epochs=1)) == ["loss"]


def test_a_json_config_round_trip_connects_the_rebuilt_model():
    model = keras_regs.regularize_model(mlp(), weight_l2=0.1)
    rebuilt = keras.models.model_from_json(model.to_json())
    rebuilt.set_weights(model.get_weights())
    history = fit(compiled(rebuilt), epochs=1)
    np.testing.assert_allclose(
        history["weight_l2"][0], 0.1 * kernel_squares(rebuilt), rtol=1e-5
    )


def test_a_clone_of_a_regularized_model_is_connected():
    model = keras_regs.regularize_model(mlp(), weight_l2=0.1)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    history = fit(compiled(clone), epochs=1)
    np.testing.assert_allclose(
        history["weight_l2"][0], 0.1 * kernel_squares(clone), rtol=1e-5
    )


def test_a_schedule_on_an_inner_model_stops_the_outer_fit_until_it_is_bound():
    ramp = keras.optimizers.schedules.PolynomialDecay(0.0, 4, 0.4, power=1.0)
    inner = keras_regs.regularize_model(mlp(), weight_l2=ramp)
    inputs = keras.Input((5,))
    outer = compiled(keras.Model(inputs, inner(inputs)))
    with pytest.raises(RuntimeError, match="no optimizer"):
        outer.fit(X, Y, batch_size=N, epochs=1, verbose=0)
    keras_regs.bind_schedules(outer)
    outer.optimizer.iterations.assign(2)
    outer.fit(X, Y, batch_size=N, epochs=1, verbose=0)
    total = sum(float(to_numpy(loss)) for loss in outer.losses)  # at step 3
    np.testing.assert_allclose(total, 0.3 * kernel_squares(inner), rtol=1e-5)


def mixin_net():
    from custom_models import Net

    model = Net()
    model(X[:1])
    return model


def test_a_mixin_model_comes_back_with_its_logs_off(tmp_path):
    model = keras_regs.regularize_model(mixin_net(), weight_l2=0.1)
    keras_regs.log_penalties(model, enabled=False)
    model.save(tmp_path / "off.keras")
    loaded = keras.saving.load_model(tmp_path / "off.keras")
    assert sorted(fit(compiled(loaded), epochs=1)) == ["loss"]
    assert loaded.losses  # the penalty is back


def test_a_mixin_model_with_hand_set_penalties_comes_back_logging(tmp_path):
    from custom_models import Net

    model = Net()
    model(X[:1])
    model.hidden.kernel.regularizer = keras_regs.WeightL2(0.1)  # by hand
    keras_regs.log_penalties(model)
    assert sorted(fit(compiled(model), epochs=1)) == ["data_loss", "loss", "weight_l2"]
    model.save(tmp_path / "hand.keras")
    assert model.get_config()["keras_regs"] == {"calls": [], "logs": True}
    loaded = keras.saving.load_model(tmp_path / "hand.keras")
    history = fit(compiled(loaded), epochs=1)
    # Net's config does not save a hand-set penalty: the loaded model logs
    # what it has, its data loss
    assert sorted(history) == ["data_loss", "loss"]


def test_the_names_kerastuner_looks_up_are_only_metric_names():
    assert isinstance(keras.metrics.deserialize("data_loss"), keras.metrics.Mean)
    for get in (keras.initializers.get, keras.losses.get, keras.regularizers.get):
        with pytest.raises(ValueError):
            get("weight_l2")


def test_contractive_alone_logs_the_data_loss_and_its_term():
    model = compiled(keras_regs.regularize_model(mlp(), contractive=0.1))
    history = fit(model, epochs=1)
    assert sorted(history) == ["contractive", "data_loss", "loss"]
    np.testing.assert_allclose(
        history["data_loss"][0] + history["contractive"][0], history["loss"][0], 1e-5
    )
    assert history["contractive"][0] > 0


# -- 4. monitors by name ---------------------------------------------------------


@pytest.mark.parametrize("monitor", ["val_data_loss", "val_weight_l2", "data_loss"])
def test_keras_callbacks_know_every_term_is_minimized(monitor, tmp_path):
    model = compiled(
        keras_regs.regularize_model(mlp(), weight_l2=0.1), learning_rate=0.05
    )
    callbacks = [
        keras.callbacks.EarlyStopping(monitor=monitor, patience=5),
        keras.callbacks.ModelCheckpoint(
            tmp_path / "best.keras", monitor=monitor, save_best_only=True
        ),
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, patience=5),
    ]
    history = fit(model, callbacks, epochs=3, validation_data=(XV, YV))
    for callback in callbacks:
        assert callback.monitor_op is keras.ops.less
    best = min(history[monitor])
    assert callbacks[0].best == pytest.approx(best)
    assert callbacks[1].best == pytest.approx(best)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # KerasTuner's own
def test_a_keras_tuner_objective_names_a_term():
    keras_tuner = pytest.importorskip("keras_tuner")
    import tempfile

    def build(hp):
        strength = hp.Choice("weight_l2", [0.01, 0.1])
        model = keras_regs.regularize_model(mlp(), weight_l2=strength)
        return compiled(model, learning_rate=0.05)

    with tempfile.TemporaryDirectory() as directory:
        tuner = keras_tuner.RandomSearch(
            build,
            objective="val_data_loss",
            max_trials=2,
            seed=1,
            directory=directory,
            project_name="terms",
        )
        assert tuner.oracle.objective.direction == "min"
        tuner.search(
            X, Y, epochs=2, batch_size=BATCH, validation_data=(XV, YV), verbose=0
        )
        trials = tuner.oracle.get_best_trials(2)
    scores = [trial.score for trial in trials]
    assert scores == sorted(scores) and all(np.isfinite(scores))
