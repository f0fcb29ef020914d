"""Hidden outputs where a block ends: after the BatchNormalization and the ReLU.

A layer's hidden output is the end of the chain of normalization and activation
layers that consume only its output. Hidden noise and dropout go there, and
activity penalties see it; a pattern still places exactly where it says.
"""

import keras
import numpy as np
import pytest

import keras_regs
from helpers import to_numpy

L = keras.layers
X = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype("float32")


def inserted(model):
    found = []

    def visit(current):
        for layer in current.layers:
            if isinstance(layer, keras.Model):
                visit(layer)
            elif getattr(layer, "inserted_by", None):
                found.append(layer)

    visit(model)
    return found


def consumers(model, layer):
    """The layers that take `layer`'s output in `model`'s graph."""
    return [
        op
        for op in model.layers
        for node in op._inbound_nodes
        if any(t._keras_history.operation is layer for t in node.input_tensors)
    ]


def producer(layer):
    return layer._inbound_nodes[0].input_tensors[0]._keras_history.operation


NORMALIZATION = (L.BatchNormalization, L.LayerNormalization)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="graph rewriting is backend-independent: run once, in the TF pass",
)
@pytest.mark.parametrize("name", ["ResNet50", "MobileNetV3Small", "ConvNeXtTiny"])
def test_no_inserted_layer_feeds_the_normalization_of_its_block(name):
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(32, 32, 3), classes=5
    )
    before = to_numpy(model(X, training=False))
    new = keras_regs.regularize_model(model, hidden_dropout=0.1)
    layers = inserted(new)
    assert len(layers) > 10
    for layer in layers:
        anchor = producer(layer)
        # the dropout follows the block's end, never a layer that a
        # normalization or activation layer still completes
        for user in consumers(new, layer):
            assert not isinstance(user, NORMALIZATION), (layer.name, user.name)
        if isinstance(anchor, (L.Conv2D, L.DepthwiseConv2D, L.Dense)):
            assert not any(
                isinstance(user, NORMALIZATION + (L.Activation, L.ReLU))
                for user in consumers(model, anchor)
            ), (layer.name, anchor.name)
    np.testing.assert_array_equal(to_numpy(new(X, training=False)), before)


def dense_block():
    inputs = keras.Input((6,))
    x = L.Dense(8, name="dense")(inputs)
    x = L.LayerNormalization(name="norm")(x)
    x = L.Activation("gelu", name="gelu")(x)
    y = L.Conv1D(4, 2, name="conv")(L.Reshape((8, 1))(x))
    y = L.Activation("relu", name="act")(y)
    outputs = L.Dense(2, name="head")(L.Flatten()(y))
    return keras.Model(inputs, outputs)


def test_dense_layernorm_gelu_and_conv_activation_end_their_blocks():
    model = dense_block()
    x = np.random.default_rng(1).normal(size=(4, 6)).astype("float32")
    new = keras_regs.regularize_model(model, hidden_dropout=0.2, hidden_l1=0.01)
    assert sorted(producer(layer).name for layer in inserted(new)) == ["act", "gelu"]
    # hidden_l1 sees the block's output: after the GELU and the ReLU
    with_penalty = [
        layer.name for layer in new.layers if layer.activity_regularizer is not None
    ]
    assert sorted(with_penalty) == ["act", "gelu"]
    new(x)
    dense, norm = model.get_layer("dense"), model.get_layer("norm")
    h = to_numpy(norm(dense(x)))
    gelu = to_numpy(keras.activations.gelu(h))
    conv = to_numpy(
        keras.activations.relu(model.get_layer("conv")(gelu.reshape(4, 8, 1)))
    )
    expected = 0.01 * (np.abs(gelu).sum() + np.abs(conv).sum()) / 4
    activity = sum(float(to_numpy(v)) for v in new.losses)
    np.testing.assert_allclose(activity, expected, rtol=1e-5)


def test_a_pattern_places_exactly_where_it_says():
    model = dense_block()
    new = keras_regs.regularize_model(model, dropout={"dense": 0.2})
    (layer,) = inserted(new)
    assert producer(layer).name == "dense"
    assert [user.name for user in consumers(new, layer)] == ["norm"]


def test_a_normalization_shared_or_fed_twice_ends_no_block():
    """A chain continues only through a layer that takes this output alone."""
    inputs = keras.Input((6,))
    a = L.Dense(4, name="a")(inputs)
    b = L.Dense(4, name="b")(inputs)
    added = L.Add(name="add")([a, b])
    x = L.Activation("relu", name="relu")(added)
    both = L.Dense(4, name="c")(x)
    branch = L.Activation("tanh", name="t1")(both)
    other = L.Activation("tanh", name="t2")(both)
    outputs = L.Dense(1, name="head")(L.Concatenate()([branch, other]))
    model = keras.Model(inputs, outputs)
    new = keras_regs.regularize_model(model, hidden_dropout=0.1)
    # a and b feed Add (not a block tail); c's output is used twice: all stay
    assert sorted(producer(layer).name for layer in inserted(new)) == ["a", "b", "c"]


def test_again_with_the_same_spec_changes_nothing_and_strip_undoes_it():
    model = dense_block()
    new = keras_regs.regularize_model(model, hidden_dropout=0.2)
    again = keras_regs.regularize_model(new, hidden_dropout=0.2)
    assert again is new
    assert [layer.name for layer in inserted(again)] == [
        layer.name for layer in inserted(new)
    ]
    stripped = keras_regs.strip_regularization(again)
    assert inserted(stripped) == []
