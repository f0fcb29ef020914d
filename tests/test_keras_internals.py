"""The Keras internals in keras_regs/_keras.py: each still there and as used.

A Keras release that renames or changes one fails here, naming it, before the
behaviour that depends on it breaks somewhere less clear.
"""

import inspect

import keras
import pytest

from keras_regs import _keras


def functional():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(4)(inputs)))


def test_functional_is_the_class_of_keras_model_graphs():
    assert type(functional()) is _keras.FUNCTIONAL
    assert "get_config" in vars(_keras.FUNCTIONAL)


@pytest.mark.parametrize("name", _keras.GRAPH_ATTRIBUTES + ("_layers",))
def test_a_functional_model_holds_its_graph_in(name):
    assert hasattr(functional(), name), f"Functional.{name} is gone"


def test_run_through_graph_takes_an_operation_and_a_call_function():
    parameters = inspect.signature(_keras.FUNCTIONAL._run_through_graph).parameters
    assert {"inputs", "operation_fn", "call_fn"} <= set(parameters)


def test_nodes_of_a_graph_and_of_a_sequential_model():
    model = functional()
    nodes = _keras.graph_nodes(model)
    layers = {id(node.operation) for node in nodes}
    assert all(id(layer) in layers for layer in model.layers)
    dense = model.layers[1]
    (node,) = [n for n in nodes if n.operation is dense]
    assert _keras.node_inputs(node)[0] is model.inputs[0]
    assert _keras.node_outputs(node)[0] is dense.output
    sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert {id(n.operation) for n in _keras.graph_nodes(sequential)} >= {
        id(sequential.layers[0])
    }


def test_replace_graph_and_restore_graph_round_trip():
    model = functional()
    before = _keras.graph_state(model)
    inputs = keras.Input((3,))
    extra = keras.layers.Dropout(0.1)
    outputs = model.layers[2](extra(model.layers[1](inputs)))
    state = _keras.replace_graph(model, inputs, outputs, lambda layer: False)
    assert extra in model.layers and extra in model._layers
    _keras.restore_graph(model, state)
    assert extra not in model.layers
    assert [id(x) for x in model._layers] == [id(x) for x in before["_layers"]]
