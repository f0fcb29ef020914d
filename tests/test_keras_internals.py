"""The Keras internals in keras_regs/_keras.py: each still there and as used.

A Keras release that renames or changes one fails here, naming it, before the
behaviour that depends on it breaks somewhere less clear.
"""

import inspect

import keras
import numpy as np
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


# -- layers, variables, graph history --------------------------------------------


def test_flatten_layers_reaches_a_nested_models_layers_once():
    inner = functional()
    inputs = keras.Input((3,))
    outer = keras.Model(inputs, inner(inputs))
    found = _keras.flatten_layers(outer)
    assert [id(x) for x in found].count(id(inner.layers[1])) == 1
    assert inner in found and outer not in found
    assert outer in _keras.flatten_layers(outer, include_self=True)


def test_sublayers_and_own_variables_of_a_composite_layer():
    dense = keras.layers.Dense(4)
    dense.build((None, 3))
    dense.enable_lora(2)  # a LoRA Dense holds its factors as its own variables
    names = {v.path.split("/")[-1] for v in _keras.own_variables(dense)}
    assert {"kernel", "bias", "lora_kernel_a", "lora_kernel_b"} <= names
    model = functional()
    assert list(_keras.sublayers(model)) == list(model.layers)


def test_inbound_nodes_and_history_lead_back_through_the_graph():
    model = functional()
    dense = model.layers[2]
    (node,) = _keras.inbound_nodes(dense)
    assert _keras.history_operation(node.input_tensors[0]) is model.layers[1]
    operation, node_index, tensor_index = _keras.history(model.outputs[0])
    assert (operation, node_index, tensor_index) == (dense, 0, 0)
    assert _keras.inbound_nodes(keras.layers.Dense(2)) == []


def test_unpickle_model_is_what_keras_pickles_a_model_with():
    reduced = functional().__reduce__()
    assert reduced[0].__func__ is _keras.UNPICKLE_MODEL.__func__


# -- training integration --------------------------------------------------------


def test_callbacks_find_a_direction_in_a_metrics_lists_entries():
    from keras.src.callbacks.monitor_callback import MonitorCallback

    source = inspect.getsource(MonitorCallback._set_monitor_op)
    assert "MetricsList" in source and "_direction" in source, (
        "MonitorCallback no longer reads `_direction` from a MetricsList's metrics"
    )
    assert issubclass(_keras.METRICS_LIST, keras.metrics.Metric)


def compiled():
    model = functional()
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_set_tracked_adds_a_metric_to_a_model_whose_tracker_is_locked():
    model = compiled()
    model._tracker.lock()  # as Keras locks a model's state once it is built
    metric = keras.metrics.Mean(name="extra")
    with pytest.raises(ValueError):
        model._extra = metric  # what the lock is for
    _keras.set_tracked(model, "_extra", metric)
    assert metric in model.metrics and model._tracker.locked
    _keras.untrack(model, metric)
    _keras.set_tracked(model, "_extra", None)
    assert metric not in model.metrics and model._tracker.locked


def test_compute_loss_adds_the_aggregated_losses():
    source = inspect.getsource(keras.Model.compute_loss)
    assert "_aggregate_additional_loss" in source, (
        "Trainer.compute_loss no longer calls _aggregate_additional_loss"
    )
    bound = _keras.aggregate_additional_loss(compiled())
    assert callable(bound) and bound.__name__ == "_aggregate_additional_loss"


def test_keras_asks_whether_compute_loss_takes_training():
    model = compiled()
    assert model._compute_loss_has_training_arg is True
    assert "_compute_loss_has_training_arg" in inspect.getsource(
        keras.Model._compute_loss
    )

    def old(x, y, y_pred, sample_weight):
        return 0

    def new(x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return 0

    assert not _keras.takes_training(old) and _keras.takes_training(new)


def test_install_steps_replaces_the_steps_of_one_model_only():
    model, other = compiled(), compiled()
    calls = []

    def step(data):
        calls.append(data)
        return {}

    _keras.install_steps(
        model, step, step, model.compute_loss, False, lambda loss: loss
    )
    model.train_step("data")
    assert calls == ["data"] and other.train_step.__func__ is keras.Model.train_step
    assert model._compute_loss_has_training_arg is False


def test_the_optimizer_step_counter_and_its_place_in_a_jax_state():
    model = compiled()
    model.optimizer.build(model.trainable_variables)
    counter = _keras.iterations_variable(model.optimizer)
    assert counter is model.optimizer.iterations or (
        counter.path == model.optimizer.iterations.path
    )
    assert any(v is counter for v in model.optimizer.variables)
    state = ("trainable", "non_trainable", "optimizer", "metrics")
    assert _keras.jax_optimizer_values(state) == "optimizer"
    if keras.backend.backend() == "jax":  # the JAX trainer is keras.Model's base
        source = inspect.getsource(keras.Model.train_step)
        assert "optimizer_variables," in source and "metrics_variables," in source


def test_retrace_makes_new_step_functions_and_sync_state_is_public():
    model = compiled()
    model.make_train_function()
    first = model.train_function
    _keras.retrace(model)
    assert model.train_function is not None and model.train_function is not first
    assert model.predict_function is None  # none made: none made now
    if keras.backend.backend() == "jax":
        assert callable(model.jax_state_sync)


def test_multi_head_attention_keeps_its_projections_and_regularizer_attributes():
    layer = keras.layers.MultiHeadAttention(2, 4, kernel_regularizer="l2")
    x = keras.ops.ones((1, 3, 8))
    layer(x, x)
    for name in _keras.MHA_PROJECTIONS:
        assert isinstance(getattr(layer, name, None), keras.layers.EinsumDense), name
    for attribute in _keras.MHA_REGULARIZER_ATTRIBUTES.values():
        assert hasattr(layer, attribute), f"MultiHeadAttention.{attribute} is gone"
    layer._kernel_regularizer = None  # what get_config writes out
    assert layer.get_config()["kernel_regularizer"] is None


def test_unscale_undoes_keras_loss_scaling_and_metric_names_resolve():
    from keras.src.losses.loss import scale_loss_for_distribution

    value = keras.ops.convert_to_tensor(3.0)
    unscaled = _keras.unscale_for_replicas(scale_loss_for_distribution(value))
    assert float(keras.ops.convert_to_numpy(unscaled)) == 3.0
    _keras.register_metric_name("keras_regs_test_name", keras.metrics.Mean)
    assert isinstance(
        keras.metrics.deserialize("keras_regs_test_name"), keras.metrics.Mean
    )


def test_only_keras_node_lists_and_model_graphs_hold_a_node():
    """`references_beyond_graph` counts one reference per model whose graph
    holds a node (its `_nodes_by_depth`) and none for tensors: what lets
    keras_regs tell a node nothing uses from one a model built by hand holds."""
    import gc

    model = functional()
    dense = model.layers[1]
    assert _keras.references_beyond_graph(dense, 0) == 1
    second = keras.Model(model.input, dense.output)  # the same node, held twice
    assert _keras.references_beyond_graph(dense, 0) == 2
    del second, model
    gc.collect()
    assert _keras.references_beyond_graph(dense, 0) == 0


def test_a_node_after_a_nested_model_is_counted_the_same():
    """On TensorFlow a model's node lists may be TensorFlow `ListWrapper`s,
    which hold each node twice (the list and its snapshot): counted as Keras'
    own lists all the same."""
    import gc

    inner = functional()
    inputs = keras.Input((3,))
    top = keras.layers.Dense(1)
    outer = keras.Model(inputs, top(inner(inputs)))
    assert _keras.references_beyond_graph(top, 0) == 1
    del outer
    gc.collect()
    assert _keras.references_beyond_graph(top, 0) == 0


def test_a_node_moved_keeps_its_tensors_and_models_keys_right():
    """`set_inbound_nodes` gives the tensors of a moved node their new position
    (`KerasHistory.node_index`) and `rekey` the model's `_nodes` keys, which
    `Functional.get_config` reads."""
    inputs = keras.Input((3,), name="x")
    dense = keras.layers.Dense(2, name="d")
    first = keras.Model(inputs, dense(inputs), name="first")
    other = keras.Input((3,), name="y")
    second = keras.Model(other, dense(other), name="second")
    config = second.get_config()
    nodes = list(_keras.inbound_node_list(dense))
    _keras.set_inbound_nodes(dense, [nodes[1], nodes[0]])
    assert dense.output is second.outputs[0]
    assert _keras.history(second.outputs[0]).node_index == 0
    assert _keras.history(first.outputs[0]).node_index == 1
    _keras.rekey(first)
    _keras.rekey(second)
    assert second.get_config() == config
    assert first.get_config()["layers"][1]["inbound_nodes"]
    _keras.set_inbound_nodes(dense, [nodes[1]], removed=[nodes[0]])
    assert all(node is not nodes[0] for node in first.layers[0]._outbound_nodes)


def test_a_layer_called_inside_a_call_takes_and_writes_the_call_context():
    """Keras' call context: a layer called without `training` inside another
    layer's call takes the context's value and writes its own back (which
    `call_context_value` restores)."""
    seen = []

    class Probe(keras.layers.Layer):
        def call(self, x, training=None):
            seen.append(training)
            return x

    probe = Probe()

    class Outer(keras.layers.Layer):
        def call(self, x, training=None):
            with _keras.call_context_value("training", False):
                probe(x)
            probe(x)  # the outer call's value again
            probe(x, training=False)  # explicit: written into the context
            probe(x)
            return x

    Outer()(np.ones((1, 2), "float32"), training=True)
    assert seen == [False, True, False, False]


def test_a_layer_keeping_its_inputs_gets_keyword_tensors_uncast():
    """Under mixed_float16 Keras casts a layer's floating keyword tensors to
    float16 unless `_convert_input_args` is off (`keep_inputs_as_given`)."""
    seen = {}

    class Probe(keras.layers.Layer):
        def call(self, x, source=None):
            seen[self.name] = keras.backend.standardize_dtype(source.dtype)
            return x

    keras.config.set_dtype_policy("mixed_float16")
    x = keras.ops.ones((1, 2), "float32")
    Probe(name="cast")(x, source=x)
    kept = Probe(name="kept")
    _keras.keep_inputs_as_given(kept)
    kept(x, source=x)
    assert seen == {"cast": "float16", "kept": "float32"}


def test_keras_mask_reads_the_mask_keras_attached():
    x = np.array([[[1.0], [0.0]]], "float32")
    masked = keras.layers.Masking(0.0)(x)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(_keras.keras_mask(masked)), [[True, False]]
    )
    assert _keras.keras_mask(keras.ops.convert_to_tensor(x)) is None
