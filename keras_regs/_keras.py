"""Keras internals keras_regs touches to keep a model's class, in one place.

Each name below is private to Keras; the comment says why it is needed.
`tests/test_keras_internals.py` fails naming the attribute when a Keras release
removes or changes one.
"""

import keras
from keras.src.models.functional import Functional

# The class of models built with `keras.Model(inputs, outputs)`: the test of
# whether a Functional subclass (a KerasHub backbone) writes its own config.
FUNCTIONAL = Functional

# The attributes of a Functional model that hold its graph (set once by
# `keras.src.ops.function.Function.__init__`, which cannot be called again on a
# built model: it re-initializes the whole layer). Copied from a new graph to
# give a KerasHub backbone or task new nodes while it stays the same object.
GRAPH_ATTRIBUTES = (
    "_inputs_struct",
    "_outputs_struct",
    "_inputs",
    "_outputs",
    "_nodes",
    "_nodes_by_depth",
    "_operations",
    "_operations_by_depth",
)


def same_method(obj, base, name):
    """Whether `obj`'s own class (the one keras_regs' record subclasses, if any)
    uses `base`'s method `name` (does not override it)."""
    cls = getattr(type(obj), "_keras_regs_original", type(obj))
    return getattr(cls, name, None) is getattr(base, name, None)


def run_through_graph(model, inputs, operation_fn, call_fn):
    """`Function._run_through_graph`: what `keras.models.clone_model` uses to call
    every operation of a Functional model on new inputs (public `clone_model`
    would construct the model's class anew, which a KerasHub model refuses)."""
    return model._run_through_graph(inputs, operation_fn=operation_fn, call_fn=call_fn)


def replace_graph(model, inputs, outputs, removable):
    """Give the Functional `model` the graph from `inputs` to `outputs`, in place.

    The layers new to the graph are tracked by the model (so their weights are
    the model's and are saved); those that left it and are `removable(layer)`
    (inserted by keras_regs) are no longer tracked.
    """
    new = keras.Model(inputs, outputs, name=model.name)
    before = graph_state(model)
    for name in GRAPH_ATTRIBUTES:
        object.__setattr__(model, name, getattr(new, name))
    # The graph's layers in graph order (as `Functional.__init__` tracks them,
    # so that `weights` is ordered as in a Functional built from this graph),
    # then what the model tracks outside its graph.
    in_graph = {id(layer) for layer in new.layers}
    model._layers[:] = list(new.layers) + [
        layer
        for layer in model._layers
        if id(layer) not in in_graph and not removable(layer)
    ]
    if hasattr(model, "_functional_layer_ids"):  # KerasHub's record of its layers
        object.__setattr__(
            model,
            "_functional_layer_ids",
            {id(layer) for layer in model._flatten_layers()},
        )
    _reset_functions(model)
    return before


def graph_state(model):
    """What `replace_graph` changes, for `restore_graph`."""
    state = {name: getattr(model, name) for name in GRAPH_ATTRIBUTES}
    state["_layers"] = list(model._layers)
    return state


def restore_graph(model, state):
    for name in GRAPH_ATTRIBUTES:
        object.__setattr__(model, name, state[name])
    model._layers[:] = state["_layers"]
    if hasattr(model, "_functional_layer_ids"):
        object.__setattr__(
            model,
            "_functional_layer_ids",
            {id(layer) for layer in model._flatten_layers()},
        )
    _reset_functions(model)


def _reset_functions(model):
    for name in ("train_function", "test_function", "predict_function"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)


def graph_nodes(model):
    """The call events (`keras.src.ops.node.Node`) of a Functional or Sequential
    model's graph: `_nodes_by_depth` is the only record of which calls of a
    layer belong to this model (a layer may be called in several models). A
    Sequential model keeps its graph in `_functional`."""
    if isinstance(model, keras.Sequential):
        model = getattr(model, "_functional", None)
        if model is None:
            return []
    return [node for nodes in model._nodes_by_depth.values() for node in nodes]


def call_order(model):
    """`{id(operation): [node, ...]}`: each operation's calls in the order
    `Function._run_through_graph` makes them (depth by depth, deepest first),
    so that a rebuild can tell which call of a shared layer it is making."""
    order = {}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.operation is not None and not node.is_input:
                order.setdefault(id(node.operation), []).append(node)
    return order


def node_keywords(node):
    """The keyword arguments of a call (`Node.arguments.kwargs`)."""
    return dict(node.arguments.kwargs)


def node_positional_inputs(node):
    """The symbolic tensors among a call's positional arguments
    (`Node.arguments.args`)."""
    return [
        x
        for x in keras.tree.flatten(node.arguments.args)
        if isinstance(x, keras.KerasTensor)
    ]


def node_inputs(node):
    """The symbolic tensors a call took (`Node.arguments.keras_tensors`)."""
    return list(node.arguments.keras_tensors)


def node_outputs(node):
    return list(node.outputs)
