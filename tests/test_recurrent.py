"""RecurrentNorm and RecurrentState: formulas, masks, fit, regularize_model."""

import keras
import numpy as np
import pytest

import keras_regs
from helpers import layer_configs, to_numpy

RNG = np.random.default_rng(0)


def state_numpy(h, real, s, reduction):
    pairs = real[:, 1:] & real[:, :-1]
    terms = (h[:, 1:] - h[:, :-1]) ** 2 * pairs[..., None]
    if reduction == "sum":
        return s * terms.sum() / len(h)
    return s * terms.sum() / (pairs.sum() * h.shape[2])


def norm_numpy(h, real, s, reduction):
    pairs = real[:, 1:] & real[:, :-1]
    n = np.linalg.norm(h, axis=-1)
    terms = (n[:, 1:] - n[:, :-1]) ** 2 * pairs
    return s * terms.sum() / (len(h) if reduction == "sum" else pairs.sum())


PENALTIES = [
    (keras_regs.RecurrentState, state_numpy),
    (keras_regs.RecurrentNorm, norm_numpy),
]


def as_loss(penalty, h):
    """The value as it reaches the loss: Keras divides by the batch size."""
    return float(to_numpy(penalty(h.astype("float32")))) / len(h)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize(("cls", "reference"), PENALTIES)
def test_match_numpy_without_padding(cls, reference, reduction):
    for shape in [(4, 7, 3), (2, 2, 5), (3, 9, 1)]:
        h = RNG.normal(size=shape)
        real = np.ones(shape[:2], bool)
        np.testing.assert_allclose(
            as_loss(cls(0.3, reduction=reduction), h),
            reference(h, real, 0.3, reduction),
            rtol=1e-5,
        )


@pytest.mark.parametrize("cls", [keras_regs.RecurrentState, keras_regs.RecurrentNorm])
def test_not_three_dimensional_raises_with_the_shape(cls):
    with pytest.raises(ValueError, match=r"shape \(4, 8\)"):
        cls(0.1)(np.ones((4, 8), "float32"))


def masked_lstm(length=6):
    tokens = keras.Input((length,), dtype="int32")
    embedded = keras.layers.Embedding(20, 4, mask_zero=True, name="embed")(tokens)
    outputs = keras.layers.LSTM(5, return_sequences=True, name="lstm")(embedded)
    return keras.Model(tokens, outputs)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize(("cls", "reference"), PENALTIES)
def test_padded_steps_do_not_count(cls, reference, reduction):
    """A padded sequence costs what the same sequence costs unpadded."""
    model = masked_lstm()
    penalty = cls(1.0, reduction=reduction)
    real_tokens = np.array([[3, 4, 5, 6]], "int32")
    unpadded = to_numpy(masked_lstm_from(model, 4)(real_tokens))
    expected = as_loss(penalty, unpadded)
    post = to_numpy(model(np.array([[3, 4, 5, 6, 0, 0]], "int32")))
    pre = to_numpy(model(np.array([[0, 0, 3, 4, 5, 6]], "int32")))
    np.testing.assert_allclose(as_loss(penalty, post), expected, rtol=1e-5)
    np.testing.assert_allclose(as_loss(penalty, pre), expected, rtol=1e-5)
    # and the masked formula in NumPy, on a batch mixing both paddings
    batch = np.array([[3, 4, 5, 0, 0, 0], [0, 0, 7, 8, 9, 2], [1, 2, 3, 4, 5, 6]])
    h = to_numpy(model(batch.astype("int32"))).astype("float64")
    np.testing.assert_allclose(
        as_loss(penalty, h), reference(h, batch != 0, 1.0, reduction), rtol=1e-5
    )


def masked_lstm_from(model, length):
    """The same embedding and LSTM (shared weights) on inputs of another length."""
    tokens = keras.Input((length,), dtype="int32")
    lstm = model.get_layer("lstm")
    return keras.Model(tokens, lstm(model.get_layer("embed")(tokens)))


@pytest.mark.parametrize(("cls", "reference"), PENALTIES)
def test_inside_fit_with_a_mask(cls, reference):
    tokens = keras.Input((6,), dtype="int32")
    embedded = keras.layers.Embedding(20, 4, mask_zero=True)(tokens)
    lstm = keras.layers.LSTM(5, return_sequences=True, activity_regularizer=cls(0.5))
    model = keras.Model(tokens, lstm(embedded))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x = np.array(
        [[3, 4, 5, 0, 0, 0], [0, 0, 7, 8, 9, 2], [1, 2, 3, 4, 5, 6], [9, 0, 0, 0, 0, 0]]
    )
    y = np.zeros((4, 6, 5), "float32")
    loss = model.fit(x, y, batch_size=4, verbose=0).history["loss"][0]
    h = to_numpy(model.predict(x, verbose=0)).astype("float64")
    # Keras' masked mse: the mean over real steps of the mean over units
    real = x != 0
    data = np.sum(np.mean(h**2, axis=-1) * real) / real.sum()
    np.testing.assert_allclose(loss, data + reference(h, real, 0.5, "sum"), rtol=1e-5)
    trained = keras.Model(tokens, lstm(embedded))
    trained.compile(optimizer="adam", loss="mse")
    history = trained.fit(x, y + 0.3, epochs=3, verbose=0).history["loss"]
    assert np.all(np.isfinite(history))


def recurrent_model():
    tokens = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 4, mask_zero=True, name="embed")(tokens)
    x = keras.layers.Bidirectional(
        keras.layers.LSTM(3, return_sequences=True), name="bi"
    )(x)
    x = keras.layers.GRU(3, return_sequences=True, name="gru")(x)
    x = keras.layers.LSTM(2, name="last")(x)
    return keras.Model(tokens, keras.layers.Dense(1, name="head")(x))


def test_regularize_model_targets_every_sequence_layer(tmp_path):
    model = keras_regs.regularize_model(
        recurrent_model(),
        recurrent_norm=0.1,
        recurrent_state={"strength": 0.2, "reduction": "mean"},
    )
    bi = model.get_layer("bi")
    owners = [bi.forward_layer, bi.backward_layer, model.get_layer("gru")]
    for owner in owners:
        penalties = owner.activity_regularizer.penalties
        assert penalties["recurrent_norm"].strength == 0.1
        # mean: s / |Omega| over the three sequence outputs
        assert penalties["recurrent_state"].strength == pytest.approx(0.2 / 3)
    assert model.get_layer("last").activity_regularizer is None
    x = np.array([[3, 4, 5, 0, 0, 0], [1, 2, 3, 4, 5, 6]], "int32")
    model(x)
    before = [float(to_numpy(v)) for v in model.losses]
    assert len(before) == 3 and all(v > 0 for v in before)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert layer_configs(reloaded) == layer_configs(model)
    reloaded(x)
    assert [float(to_numpy(v)) for v in reloaded.losses] == before
    reloaded.compile(optimizer="sgd", loss="mse")
    assert np.isfinite(reloaded.fit(x, np.zeros((2, 1)), verbose=0).history["loss"][0])


def test_regularize_model_errors_for_non_sequences():
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no recurrent layer that returns sequences"):
        keras_regs.regularize_model(plain, recurrent_state=0.1)
    with pytest.raises(
        ValueError, match=r"layer 'last' \(LSTM\) outputs shape \(None, 2\)"
    ):
        keras_regs.regularize_model(
            recurrent_model(), recurrent_norm={"strength": 0.1, "pattern": "last"}
        )


# Regressions found in review: each failed before its fix.


def test_layers_with_states_or_conv_outputs_are_not_selected():
    tokens = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 4, mask_zero=True)(tokens)
    x = keras.layers.LSTM(5, return_sequences=True, return_state=True, name="stateful")(
        x
    )[0]
    x = keras.layers.GRU(3, return_sequences=True, name="gru")(x)
    model = keras.Model(tokens, keras.layers.Dense(1)(x))
    keras_regs.regularize_model(model, recurrent_norm=1.0)
    assert model.get_layer("stateful").activity_regularizer is None
    assert model.get_layer("gru").activity_regularizer is not None
    model(np.array([[3, 5, 7, 2, 0, 0]], "int32"))  # runs: no penalty on 2-D states
    with pytest.raises(ValueError, match="'stateful' has return_state=True"):
        keras_regs.regularize_model(
            model, recurrent_state={"strength": 1.0, "pattern": "stateful"}
        )

    frames = keras.Input((6, 8, 2))
    conv = keras.layers.ConvLSTM1D(3, 3, return_sequences=True, name="conv")(frames)
    conv_model = keras.Model(frames, keras.layers.Dense(1)(conv))
    with pytest.raises(ValueError, match="no recurrent layer that returns sequences"):
        keras_regs.regularize_model(conv_model, recurrent_norm=1.0)
