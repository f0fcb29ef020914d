"""KerasHub models, composite layers and LoRA: every weight, saved, class kept.

Tiny configs only (never `from_preset`: nothing is downloaded). The reference
for weight penalties is independent of keras_regs' own selection: NumPy's sum
over the model's trainable weights with more than one dimension whose name is
not a bias, as Keras lists them (`model.trainable_weights`).
"""

import textwrap
import warnings

import keras
import numpy as np
import pytest

import keras_regs
from custom_models import Block
from helpers import (
    TESTS_DIR,
    assert_snapshots_equal,
    assert_states_equal,
    load_all_in_fresh_process,
    model_state,
    run_python,
    save_inputs,
    seed_states,
    snapshot,
    to_numpy,
)

try:
    import keras_hub
except ImportError as error:  # a Keras KerasHub does not support yet
    if ".dev" not in keras.__version__:
        raise  # the test extra installs keras-hub: a real failure
    pytest.skip(
        f"keras_hub does not import with Keras {keras.__version__}: {error}",
        allow_module_level=True,
    )

S = 1e-3  # the weight_l2 strength
SEQ = 8
VOCAB = 40
HUB = ("import keras_regs", "import keras_hub", "import custom_models")


def bert():
    return keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB,
        num_layers=2,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=SEQ,
    )


def gpt2():
    return keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB,
        num_layers=2,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=SEQ,
    )


def vit():
    return keras_hub.models.ViTBackbone(
        image_shape=(8, 8, 3),
        patch_size=4,
        num_layers=2,
        num_heads=2,
        hidden_dim=8,
        mlp_dim=16,
    )


def classifier():
    return keras_hub.models.BertTextClassifier(
        backbone=bert(), num_classes=3, preprocessor=None
    )


def composite():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, name="dense_in")(inputs)
    x = Block(12, name="block")(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs)


def token_inputs(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "token_ids": rng.integers(1, VOCAB, size=(n, SEQ)).astype("int32"),
        "segment_ids": np.zeros((n, SEQ), "int32"),
        "padding_mask": np.ones((n, SEQ), "int32"),
    }


def inputs_of(name, n=4):
    rng = np.random.default_rng(1)
    if name == "vit":
        return rng.normal(size=(n, 8, 8, 3)).astype("float32")
    if name == "composite":
        return rng.normal(size=(n, 6)).astype("float32")
    x = token_inputs(n)
    if name == "gpt2":
        del x["segment_ids"]
    return x


def targets_of(model, x):
    """Zeros shaped like the model's outputs (a dict for BERT's backbone)."""
    return keras.tree.map_structure(
        lambda y: np.zeros(y.shape, "float32"), model(x, training=False)
    )


MODELS = {
    "bert": bert,
    "classifier": classifier,
    "gpt2": gpt2,
    "vit": vit,
    "composite": composite,
}


def penalized(model):
    """The reference: trainable, more than one dimension, not a bias."""
    return [
        v for v in model.trainable_weights if len(v.shape) > 1 and "bias" not in v.name
    ]


def l2_reference(model, strength=S):
    return strength * sum(float(np.sum(to_numpy(v) ** 2)) for v in penalized(model))


def fit_logs(model, x, y=None):
    """One compiled fit step that leaves the weights as they are (SGD, rate 0):
    the logs hold the terms as the step computed them."""
    y = targets_of(model, x) if y is None else y
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse", metrics=[])
    history = model.fit(x, y, batch_size=len(keras.tree.flatten(x)[0]), verbose=0)
    return {key: values[0] for key, values in history.history.items()}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_weight_l2_reaches_every_trainable_kernel_however_deep(name):
    model = MODELS[name]()
    x = inputs_of(name)
    expected = l2_reference(model)
    deep = [v for v in penalized(model) if v.path.count("/") > 1]
    assert deep or name == "composite"  # kernels inside composite layers
    result = keras_regs.regularize_model(model, weight_l2=S)
    assert result is model
    logs = fit_logs(model, x)
    np.testing.assert_allclose(logs["weight_l2"], expected, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"] - logs["data_loss"], expected, rtol=1e-4)
    # each counted once: one penalty per weight
    np.testing.assert_allclose(
        float(to_numpy(keras_regs.regularization_loss(model))), expected, rtol=1e-5
    )
    assert len(model.losses) == len(penalized(model))


def test_patterns_match_full_variable_paths_and_sublayer_names():
    model = bert()
    keras_regs.regularize_model(
        model, weight_l2={"strength": S, "pattern": "transformer_layer_0/*"}
    )
    chosen = [v for v in penalized(model) if v.path.startswith("transformer_layer_0/")]
    assert len(chosen) == 6  # query, key, value, attention_output, two FF kernels
    expected = S * sum(float(np.sum(to_numpy(v) ** 2)) for v in chosen)
    np.testing.assert_allclose(
        float(to_numpy(keras_regs.regularization_loss(model))), expected, rtol=1e-5
    )
    keras_regs.regularize_model(
        model, weight_l2={"strength": S, "pattern": "*/query/kernel"}
    )
    queries = [v for v in model.weights if v.path.endswith("/query/kernel")]
    assert [v.path for v in queries] == [
        f"transformer_layer_{i}/self_attention_layer/query/kernel" for i in (0, 1)
    ]
    assert {id(v) for v in model.weights if v.regularizer is not None} == {
        id(v) for v in queries
    }
    # a sublayer's name
    keras_regs.regularize_model(
        model, weight_l2={"strength": S, "pattern": "feedforward_output_dense"}
    )
    names = sorted(v.path for v in model.weights if v.regularizer is not None)
    assert names == [
        f"transformer_layer_{i}/feedforward_output_dense/kernel" for i in (0, 1)
    ]


def test_lora_factors_get_the_penalty_and_frozen_kernels_are_reported():
    model = bert()
    model.enable_lora(2)
    with pytest.warns(keras_regs.KerasRegsWarning) as record:
        keras_regs.regularize_model(model, weight_l2=S)
    messages = [str(w.message) for w in record if "frozen" in str(w.message)]
    assert len(messages) == 1
    lines = messages[0].splitlines()
    # one line per layer: every frozen kernel-like weight, LoRA base kernels too
    frozen = [
        v
        for v in model.weights
        if not v.trainable and len(v.shape) > 1 and "bias" not in v.name
    ]
    assert any(
        "transformer_layer_0/self_attention_layer/query: kernel" in line
        for line in lines
    )
    assert len(lines) - 1 == len({v.path.rsplit("/", 1)[0] for v in frozen})
    factors = [v for v in model.trainable_weights if "lora_kernel" in v.name]
    assert len(factors) == 8 and set(map(id, penalized(model))) == set(map(id, factors))
    expected = l2_reference(model)
    x = inputs_of("bert")
    logs = fit_logs(model, x)
    np.testing.assert_allclose(logs["weight_l2"], expected, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"] - logs["data_loss"], expected, rtol=1e-4)
    total = float(to_numpy(keras_regs.regularization_loss(model)))
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    rows = keras_regs.summary_rows(model)
    shown = sum(r["value"] for r in rows if r["keyword"] == "weight_l2")
    np.testing.assert_allclose(shown, expected, rtol=1e-5)


def test_lora_enabled_after_the_penalty_summary_agrees_with_the_loss():
    """Frozen by LoRA after regularize_model: Keras no longer counts the base
    kernels' penalties, and neither do summary, logs and regularization_loss."""
    model = bert()
    keras_regs.regularize_model(model, weight_l2=S)
    model.enable_lora(2)
    counted = float(to_numpy(keras_regs.regularization_loss(model)))
    expected = S * sum(
        float(np.sum(to_numpy(v) ** 2))
        for v in model.trainable_weights
        if v.regularizer is not None
    )
    np.testing.assert_allclose(counted, expected, rtol=1e-6, atol=1e-12)
    rows = keras_regs.summary_rows(model)
    shown = sum(r["value"] for r in rows if r["keyword"] == "weight_l2")
    np.testing.assert_allclose(shown, counted, rtol=1e-5, atol=1e-12)
    assert any("frozen: not counted" in r["target"] for r in rows)
    logs = fit_logs(model, inputs_of("bert"))
    np.testing.assert_allclose(logs["weight_l2"], counted, rtol=1e-5, atol=1e-9)


def regularized(name):
    """The model with weight_l2 and an inserted layer, trained one step, so that
    the inserted layers' random state has moved from its seed."""
    model = MODELS[name]()
    spec = {"weight_l2": S}
    spec["input_noise" if name in ("vit", "composite") else "hidden_dropout"] = 0.1
    model = keras_regs.regularize_model(model, **spec)
    x = inputs_of(name)
    model.compile(optimizer="adam", loss="mse", metrics=[])
    model.fit(x, targets_of(model, x), batch_size=2, epochs=1, verbose=0)
    return model, x


@pytest.mark.slow
def test_keras_files_keep_everything_in_a_fresh_process(tmp_path):
    """Saved, then loaded in a new Python that imports only keras_regs and
    keras_hub: config, weights, the inserted layers' random state, penalties and
    predictions identical, and the model's class kept."""
    items, before = [], []
    for name in sorted(MODELS):
        model, x = regularized(name)
        assert len(seed_states(model)) > 0
        path = tmp_path / f"{name}.keras"
        model.save(path)
        items.append((path, x))
        before.append(snapshot(model, x))
    after = load_all_in_fresh_process(items, imports=HUB)
    for name, a, b in zip(sorted(MODELS), before, after, strict=True):
        # A KerasHub task overrides `compile` and compiles itself in its
        # constructor, so Keras does not restore its compile settings (with or
        # without keras_regs): everything else must be equal.
        a["config"].pop("compile_config", None), b["config"].pop("compile_config", None)
        try:
            assert_snapshots_equal(a, b)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from error
        assert len(a["losses"]) > 0


def test_insertion_keeps_a_task_its_class_backbone_and_preprocessor():
    tokenizer = keras_hub.models.BertTokenizer(
        vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "a"]
    )
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer, sequence_length=SEQ
    )
    task = keras_hub.models.BertTextClassifier(
        backbone=bert(), num_classes=2, preprocessor=preprocessor
    )
    backbone = task.backbone
    texts = np.array(["good a", "bad a", "a good", "a bad"])
    labels = np.array([1, 0, 1, 0])
    before = task.predict(texts, verbose=0)
    result = keras_regs.regularize_model(task, hidden_dropout=0.2, weight_l2=S)
    assert result is task
    assert isinstance(task, keras_hub.models.BertTextClassifier)
    assert task.backbone is backbone and task.preprocessor is preprocessor
    assert any(getattr(layer, "inserted_by", None) for layer in backbone.layers)
    np.testing.assert_array_equal(task.predict(texts, verbose=0), before)
    task.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = task.fit(texts, labels, batch_size=2, epochs=1, verbose=0)
    assert history.history["weight_l2"][0] > 0


def test_gpt2_generate_gives_the_same_tokens_after_insertion():
    lm = keras_hub.models.GPT2CausalLM(backbone=gpt2(), preprocessor=None)
    lm.compile(sampler="greedy")  # the same tokens for the same weights
    prompt = {
        "token_ids": np.array([[5, 6, 7, 0, 0, 0, 0, 0]] * 2, "int32"),
        "padding_mask": np.array([[1, 1, 1, 0, 0, 0, 0, 0]] * 2, bool),
    }
    before = lm.generate(prompt, stop_token_ids=None)
    result = keras_regs.regularize_model(lm, hidden_dropout=0.3, weight_l2=S)
    assert result is lm and isinstance(lm, keras_hub.models.GPT2CausalLM)
    assert any(getattr(layer, "inserted_by", None) for layer in lm.backbone.layers)
    after = lm.generate(prompt, stop_token_ids=None)
    np.testing.assert_array_equal(after["token_ids"], before["token_ids"])
    assert len(lm.losses) == len(penalized(lm))


@pytest.mark.slow
def test_stripped_vit_saves_and_loads_without_keras_regs(tmp_path):
    model, x = regularized("vit")
    stripped = keras_regs.strip_regularization(model)
    assert type(stripped) is keras_hub.models.ViTBackbone
    assert stripped.losses == [] and not any(
        getattr(layer, "inserted_by", None) for layer in stripped.layers
    )
    path = tmp_path / "stripped.keras"
    stripped.save(path)
    save_inputs(tmp_path / "x.npz", x)
    expected = to_numpy(stripped(x, training=False))
    np.save(tmp_path / "expected.npy", expected)
    output = run_python(
        textwrap.dedent(
            f"""
        import sys
        sys.path.insert(0, {TESTS_DIR!r})
        import numpy as np
        import keras, keras_hub
        model = keras.saving.load_model(sys.argv[1])
        assert "keras_regs" not in sys.modules
        from helpers import load_inputs
        x = load_inputs(sys.argv[2])
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(model(x, training=False)), np.load(sys.argv[3])
        )
        print(type(model).__name__, len(model.losses))
        """
        ),
        str(path),
        str(tmp_path / "x.npz"),
        str(tmp_path / "expected.npy"),
    )
    assert output.split() == ["ViTBackbone", "0"]


def test_bad_input_frozen_only_and_weightless_composite_name_the_layer():
    model = bert()
    model.enable_lora(2)
    before = model_state(model)
    with pytest.raises(ValueError, match=r"only frozen weights.*'token_embedding'"):
        keras_regs.regularize_model(
            model, weight_l2={"strength": S, "pattern": "token_embedding"}
        )
    assert_states_equal(model_state(model), before)
    model = bert()
    before = model_state(model)
    with pytest.raises(ValueError, match=r"'embeddings_add' \(Add\).*no trainable"):
        keras_regs.regularize_model(
            model, weight_l2={"strength": S, "pattern": "embeddings_add"}
        )
    assert_states_equal(model_state(model), before)


def test_a_plain_functional_model_of_known_layers_records_no_call():
    """No call to replay where every penalty is in a layer's own config: the
    record only says that logs and schedules are connected again on load."""
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2)(keras.layers.Dense(3)(inputs))
    model = keras.Model(inputs, outputs)
    keras_regs.regularize_model(model, weight_l2=S)
    assert isinstance(model, keras_regs._keras.FUNCTIONAL)
    assert type(model).__name__ == "Functional"
    config = model.get_config()
    assert config["keras_regs"]["calls"] == [] and config["keras_regs"]["logs"]
    dense = config["layers"][1]["config"]
    assert dense["kernel_regularizer"]["class_name"] == "Penalties"


def test_strip_gives_back_the_class_and_the_same_object_for_kerashub():
    model = bert()
    keras_regs.regularize_model(model, weight_l2=S, hidden_dropout=0.1)
    assert type(model) is not keras_hub.models.BertBackbone
    assert isinstance(model, keras_hub.models.BertBackbone)
    stripped = keras_regs.strip_regularization(model)
    assert stripped is model and type(model) is keras_hub.models.BertBackbone
    assert "keras_regs" not in model.get_config()
    assert model.losses == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [layer.name for layer in model.layers] == [
            layer.name for layer in bert().layers
        ]


def test_a_second_call_on_a_recorded_functional_model_keeps_both(tmp_path):
    """A plain Functional model with a composite layer carries the record; a
    later call that rebuilds it (insertion) carries the earlier calls along."""
    model = composite()
    keras_regs.regularize_model(model, weight_l2=S)
    assert "keras_regs" in model.get_config()
    new = keras_regs.regularize_model(model, input_noise=0.1)
    assert new is not model
    calls = new.get_config()["keras_regs"]["calls"]
    assert [
        sorted(k for k in call if k.endswith(("_l2", "_noise"))) for call in calls
    ] == [
        ["weight_l2"],
        ["input_noise"],
    ]
    x = inputs_of("composite")
    new.save(tmp_path / "twice.keras")
    loaded = keras.saving.load_model(tmp_path / "twice.keras")
    assert_snapshots_equal(snapshot(new, x), snapshot(loaded, x))
    np.testing.assert_allclose(
        sum(float(to_numpy(v)) for v in loaded.losses), l2_reference(new), rtol=1e-5
    )


def test_preview_lists_insertions_and_leaves_a_kerashub_model_as_it_was():
    model = bert()
    before = model_state(model)
    rows = keras_regs.preview_rows(model, weight_l2=S, hidden_dropout=0.1)
    dropouts = [r["layer"] for r in rows if r["keyword"] == "hidden_dropout"]
    assert dropouts == [
        "token_embedding_dropout",
        "position_embedding_dropout",
        "segment_embedding_dropout",
        "transformer_layer_0_dropout",
    ]
    assert_states_equal(model_state(model), before)
    assert type(model) is keras_hub.models.BertBackbone


def test_what_cannot_be_saved_is_said_when_regularize_model_is_called():
    class Odd(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(2, name="dense")

        def call(self, x):
            return self.dense(x)

        def get_config(self):
            return {**super().get_config(), "keras_regs": "its own"}

    model = Odd()
    model(np.zeros((1, 3), "float32"))
    with pytest.warns(
        keras_regs.KerasRegsWarning, match=r"'odd' \(Odd\) counts.*cannot be saved"
    ):
        keras_regs.regularize_model(model, weight_l2=S)
    assert type(model) is Odd and model.get_config()["keras_regs"] == "its own"
    assert len(model.losses) == 1


def causal_lm():
    lm = keras_hub.models.GPT2CausalLM(backbone=gpt2(), preprocessor=None)
    x = {
        "token_ids": np.ones((2, SEQ), "int32"),
        "padding_mask": np.ones((2, SEQ), "int32"),
    }
    return lm, x


def test_tied_embeddings_are_an_output_layer_for_the_role_keywords():
    """GPT-2's token embedding also computes the logits (reverse call): hidden
    keywords leave it alone, output ones go after the logits call only."""
    lm, x = causal_lm()
    keras_regs.regularize_model(lm, hidden_dropout=0.5, hidden_l1=1.0)
    logits = lm.outputs[0]._keras_history.operation
    assert logits.name == "token_embedding"
    assert lm.backbone.token_embedding.activity_regularizer is None
    keras.utils.set_random_seed(0)
    train = to_numpy(lm(x, training=True))
    assert np.mean(train == 0) < 0.05  # no dropout on the logits
    lm, x = causal_lm()
    keras_regs.regularize_model(lm, output_dropout=0.5)
    (layer,) = [
        layer
        for model in (lm, lm.backbone)
        for layer in model.layers
        if getattr(layer, "inserted_by", None)
    ]
    assert lm.outputs[0]._keras_history.operation is layer  # after the logits
    assert all(  # not after the embedding's input call inside the backbone
        not getattr(layer, "inserted_by", None) for layer in lm.backbone.layers
    )
    keras.utils.set_random_seed(0)
    assert 0.3 < np.mean(to_numpy(lm(x, training=True)) == 0) < 0.7


def test_strip_on_a_task_clears_a_record_its_backbone_carries(tmp_path):
    backbone = bert()
    keras_regs.regularize_model(backbone, weight_l2=S, hidden_dropout=0.1)
    task = keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=3, preprocessor=None
    )
    keras_regs.strip_regularization(task)
    assert type(task.backbone) is keras_hub.models.BertBackbone
    assert "keras_regs" not in task.backbone.get_config()
    assert task.losses == []
    task.save(tmp_path / "task.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # KerasHub: compile() is custom
        loaded = keras.saving.load_model(tmp_path / "task.keras")
    assert type(loaded.backbone) is keras_hub.models.BertBackbone
    assert loaded.losses == []


def test_clone_model_of_a_recorded_model_saves_and_loads(tmp_path):
    """Keras' clone rebuilds layers from their configs (the composite layer's
    sublayers without their penalties, as Keras clones a KerasHub model); what
    it has, it saves and loads."""
    model = composite()
    keras_regs.regularize_model(model, weight_l2=S)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.save(tmp_path / "clone.keras")
    loaded = keras.saving.load_model(tmp_path / "clone.keras")
    x = inputs_of("composite")
    before, after = snapshot(clone, x), snapshot(loaded, x)
    for state in (before, after):  # an empty record: no call
        assert state["config"]["config"].pop("keras_regs")["calls"] == []
    assert_snapshots_equal(before, after, config=False)
    assert isinstance(loaded, keras_regs._keras.FUNCTIONAL)


def test_a_regularized_kerashub_model_pickles_with_everything():
    import pickle

    model = bert()
    keras_regs.regularize_model(model, weight_l2=S, hidden_dropout=0.1)
    copy = pickle.loads(pickle.dumps(model))
    assert isinstance(copy, keras_hub.models.BertBackbone)
    x = inputs_of("bert")
    assert_snapshots_equal(snapshot(model, x), snapshot(copy, x))


def test_contractive_skips_blocks_it_cannot_wrap_and_refuses_them_by_name():
    model = bert()
    before = model_state(model)
    with pytest.raises(ValueError, match=r"'transformer_layer_0' is called with"):
        keras_regs.regularize_model(
            model, contractive={"strength": 0.1, "pattern": "transformer_layer_0"}
        )
    assert_states_equal(model_state(model), before)
    keras_regs.regularize_model(model, contractive=0.1)
    wrapped = [
        layer.layer.name
        for layer in model.layers
        if isinstance(layer, keras_regs.layers.Contractive)
    ]
    assert "transformer_layer_0" not in wrapped


def test_a_lora_model_with_inserted_layers_saves_and_loads(tmp_path):
    """Frozen layers are hidden layers too, so that the replay on the loaded
    model (KerasHub does not save LoRA: every weight comes back trainable)
    inserts the very layers the file holds."""
    model = bert()
    model.enable_lora(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the frozen weights' note
        keras_regs.regularize_model(model, hidden_dropout=0.1)
    names = sorted(layer.name for layer in inserted_layers(model))
    assert "token_embedding_dropout" in names  # after a frozen embedding too
    model.save(tmp_path / "lora.keras")
    loaded = keras.saving.load_model(tmp_path / "lora.keras")
    assert sorted(layer.name for layer in inserted_layers(loaded)) == names
    np.testing.assert_array_equal(seed_states(loaded), seed_states(model))


def inserted_layers(model):
    return [layer for layer in model.layers if getattr(layer, "inserted_by", None)]


@pytest.mark.parametrize("name", ["bert", "classifier"])
def test_a_loaded_kerashub_model_logs_its_terms_with_no_extra_call(name, tmp_path):
    model = keras_regs.regularize_model(MODELS[name](), weight_l2=S)
    model.save(tmp_path / "model.keras")
    with warnings.catch_warnings():  # a task compiles itself: Keras says so
        warnings.filterwarnings("ignore", message=r"`compile\(\)` was not called")
        loaded = keras.saving.load_model(tmp_path / "model.keras")
    kind = {"bert": keras_hub.models.BertBackbone}.get(
        name, keras_hub.models.BertTextClassifier
    )
    assert isinstance(loaded, kind)
    logs = fit_logs(loaded, inputs_of(name))
    np.testing.assert_allclose(logs["weight_l2"], l2_reference(loaded), rtol=1e-5)
    np.testing.assert_allclose(
        logs["data_loss"] + logs["weight_l2"], logs["loss"], rtol=1e-5
    )
