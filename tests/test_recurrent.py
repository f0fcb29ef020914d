"""RecurrentNorm and RecurrentState: formulas, masks, fit, regularize_model."""

import json

import keras
import numpy as np
import pytest

import keras_regs
from helpers import layer_configs, run_python, to_numpy

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


# SimpleRNN: Keras' constructor drops `activity_regularizer` (docs/recurrent.md,
# "A Keras bug"), so every copy of a SimpleRNN made from its config lost its
# penalty; keras_regs gives the SimpleRNNs it regularizes a class that keeps it.

STEPS, FEATURES, S_L1, S_NORM = 5, 3, 0.05, 0.3


def simple_rnn_numpy(layer, x):
    """A SimpleRNN's (tanh) output at every step, in NumPy, in processing order."""
    cell = layer.cell
    kernel, recurrent = to_numpy(cell.kernel), to_numpy(cell.recurrent_kernel)
    bias = to_numpy(cell.bias)
    x = x[:, ::-1] if layer.go_backwards else x
    h, outputs = np.zeros((len(x), kernel.shape[1])), []
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ kernel + h @ recurrent + bias)
        outputs.append(h)
    return np.stack(outputs, axis=1)


def simple_rnn_models():
    """SimpleRNN(return_sequences=True) -> SimpleRNN -> Dense: in a Sequential,
    in a Functional (the first inside a Bidirectional), and with the first
    inside a nested model."""
    L = keras.layers

    def first():
        return L.SimpleRNN(4, return_sequences=True, name="rnn")

    def head(h):
        return L.Dense(1, name="out")(L.SimpleRNN(3, name="last")(h))

    sequential = keras.Sequential(
        [keras.Input((STEPS, FEATURES)), first(), L.SimpleRNN(3, name="last")]
        + [L.Dense(1, name="out")]
    )
    inputs = keras.Input((STEPS, FEATURES))
    functional = keras.Model(inputs, head(L.Bidirectional(first(), name="bi")(inputs)))
    inner_inputs = keras.Input((STEPS, FEATURES))
    inner = keras.Model(inner_inputs, first()(inner_inputs), name="inner")
    inputs = keras.Input((STEPS, FEATURES))
    nested = keras.Model(inputs, head(inner(inputs)))
    return {"sequential": sequential, "functional": functional, "nested": nested}


def simple_rnn_reference(model, x):
    """`{hidden_l1, recurrent_norm}` of a `simple_rnn_models` model, in NumPy:
    hidden_l1 on the first layer's output (a Bidirectional's: both directions
    concatenated) and on the last SimpleRNN's; recurrent_norm on each sequence
    that a SimpleRNN outputs."""
    x = x.astype("float64")
    names = [layer.name for layer in model.layers]
    if "bi" in names:
        bi = model.get_layer("bi")
        forward = simple_rnn_numpy(bi.forward_layer, x)
        backward = simple_rnn_numpy(bi.backward_layer, x)  # in its own order
        sequence = np.concatenate([forward, backward[:, ::-1]], axis=-1)
        sequences = [forward, backward]
    else:
        owner = model.get_layer("inner") if "inner" in names else model
        sequence = simple_rnn_numpy(owner.get_layer("rnn"), x)
        sequences = [sequence]
    last = simple_rnn_numpy(model.get_layer("last"), sequence)[:, -1]
    real = np.ones(x.shape[:2], bool)
    return {
        "hidden_l1": S_L1 * (np.abs(sequence).sum() + np.abs(last).sum()) / len(x),
        "recurrent_norm": sum(norm_numpy(h, real, S_NORM, "sum") for h in sequences),
    }


_LOAD_AND_EVALUATE = """
import json, sys
import numpy as np
import keras
import keras_regs  # noqa: F401

folder, names = sys.argv[1], json.loads(sys.argv[2])
data = np.load(folder + "/data.npz")
found = {}
for name in names:
    model = keras.saving.load_model(f"{folder}/{name}.keras", safe_mode=True)
    logs = model.evaluate(
        data["x"], data["y"], batch_size=4, return_dict=True, verbose=0
    )
    model(data["x"])
    losses = sum(float(keras.ops.convert_to_numpy(v)) for v in model.losses)
    found[name] = {"logs": logs, "losses": losses}
print(json.dumps(found))
"""


def losses_sum(model, x):
    model(x)
    return sum(float(to_numpy(v)) for v in model.losses)


def regularized_simple_rnn_models(x):
    """Each `simple_rnn_models` model with hidden_l1 and recurrent_norm, compiled,
    and its penalties in NumPy."""
    models = {}
    for name, model in simple_rnn_models().items():
        keras_regs.regularize_model(model, hidden_l1=S_L1, recurrent_norm=S_NORM)
        model.compile(optimizer="sgd", loss="mse")
        models[name] = model, simple_rnn_reference(model, x)
    return models


def simple_rnn_data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, STEPS, FEATURES)).astype("float32")
    return x, rng.normal(size=(4, 1)).astype("float32")


def test_simple_rnn_penalties_survive_json_clone_and_save(tmp_path):
    """hidden_l1 and recurrent_norm on SimpleRNNs, in a Sequential, a Functional
    with a Bidirectional and a nested model: `model.losses` add up to NumPy's
    values, and so do those of its JSON copy, of its clone, of the model saved
    and loaded, and of the clone saved and loaded; strip_regularization gives
    the layers Keras' class back."""
    x, _ = simple_rnn_data()
    for name, (model, expected) in regularized_simple_rnn_models(x).items():
        total = sum(expected.values())
        clone = keras.models.clone_model(model)
        copies = {
            "model": model,
            "json": keras.models.model_from_json(model.to_json()),
            "clone": clone,
        }
        for copy in copies.values():
            copy.set_weights(model.get_weights())
        for how in ("model", "clone"):
            copies[how].save(tmp_path / f"{how}.keras")
            copies[f"{how} saved"] = keras.saving.load_model(tmp_path / f"{how}.keras")
        for how, copy in copies.items():
            np.testing.assert_allclose(
                losses_sum(copy, x), total, rtol=1e-5, err_msg=f"{name} {how}"
            )
        keras_regs.strip_regularization(model)
        rnns = [
            layer
            for layer in keras_regs._keras.flatten_layers(model)
            if isinstance(layer, keras.layers.SimpleRNN)
        ]
        assert len(rnns) >= 2
        assert all(type(layer) is keras.layers.SimpleRNN for layer in rnns), name
        assert losses_sum(model, x) == 0


@pytest.mark.slow
def test_simple_rnn_penalties_load_in_a_fresh_process(tmp_path):
    """The models above and their clones, saved and loaded in a new Python with
    only `import keras_regs`: the terms `evaluate` logs and `model.losses` equal
    NumPy's values."""
    x, y = simple_rnn_data()
    np.savez(tmp_path / "data.npz", x=x, y=y)
    expected = {}
    for name, (model, expected[name]) in regularized_simple_rnn_models(x).items():
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        clone.compile(optimizer="sgd", loss="mse")
        model.save(tmp_path / f"{name}.keras")
        clone.save(tmp_path / f"{name}_clone.keras")
    names = [f"{name}{suffix}" for name in expected for suffix in ("", "_clone")]
    output = run_python(_LOAD_AND_EVALUATE, str(tmp_path), json.dumps(names))
    loaded = json.loads(output.strip().splitlines()[-1])
    for name, values in expected.items():
        for key, value in values.items():
            np.testing.assert_allclose(
                loaded[name]["logs"][key], value, rtol=1e-5, err_msg=name
            )
        for copy in (name, f"{name}_clone"):
            np.testing.assert_allclose(
                loaded[copy]["losses"], sum(values.values()), rtol=1e-5, err_msg=copy
            )
