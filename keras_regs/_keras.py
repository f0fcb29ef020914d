"""Every Keras internal keras_regs touches, in one place.

Each name below is private to Keras; the comment says why it is needed.
`tests/test_keras_internals.py` fails naming the attribute when a Keras release
removes or changes one.
"""

import contextlib
import functools

import keras
from keras.src.backend.common import global_state
from keras.src.models.functional import Functional
from keras.src.trainers.compile_utils import MetricsList

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


@contextlib.contextmanager
def call_context_value(name, value):
    """Keras' call context (`current_call_ctx`, the `CallContext` of the
    outermost layer call running) holding `value` for `name` ("training") while
    the block runs, restored afterwards. A layer called without an explicit
    `training` takes the context's, and writes the one it resolved back into
    it: run inside another layer's call, layers at inference would otherwise
    leave the layers called after them at inference too."""
    context = global_state.get_global_attribute("current_call_ctx")
    if context is None:
        yield
        return
    before = context.get_value(name)
    context.set_value(name, value)
    try:
        yield
    finally:
        context.set_value(name, before)


def keep_inputs_as_given(layer):
    """Keras converts a layer's floating-point arguments, keyword arguments
    included, to its compute dtype before the call (`Layer._convert_input_args`):
    under `mixed_float16` a tensor passed as `source=` becomes a new Cast tensor
    that no graph path leads to. Off, the layer gets the tensors it is given."""
    layer._convert_input_args = False


def keras_mask(tensor):
    """The mask Keras attached to `tensor` (`None` if none): Keras hands a
    layer's `call` the mask of its only tensor argument, not with two."""
    from keras.src.backend.common.masking import get_keras_mask

    return get_keras_mask(tensor)


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
    retrace(model)
    return before


def graph_state(model):
    """What `replace_graph` changes, for `restore_graph`."""
    state = {name: getattr(model, name) for name in GRAPH_ATTRIBUTES}
    state["_layers"] = list(model._layers)
    return state


def state_nodes(state):
    """The nodes of a graph state saved by `replace_graph`."""
    return [node for nodes in state["_nodes_by_depth"].values() for node in nodes]


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
    retrace(model)


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


def nodes_by_depth(model):
    """`{depth: [node, ...]}` of a Functional or Sequential model's graph
    (`Function._nodes_by_depth`; deeper is nearer the inputs)."""
    if isinstance(model, keras.Sequential):
        model = getattr(model, "_functional", None)
        if model is None:
            return {}
    return dict(model._nodes_by_depth)


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


# ---------------------------------------------------------------------------
# Layers, variables and graph history
# ---------------------------------------------------------------------------


def flatten_layers(layer, include_self=False):
    """`Layer._flatten_layers`: every layer tracked inside `layer`, each once,
    nested models and the sublayers of composite layers included (public
    `model.layers` lists only a model's direct layers)."""
    return list(layer._flatten_layers(include_self=include_self))


def sublayers(layer):
    """`Layer._layers`: the layers a layer tracks directly (public `layers`
    exists only on models; a composite layer, a LoRA Dense, a KerasHub
    `TransformerEncoder` hold theirs here)."""
    return layer._layers


def own_variables(layer):
    """The variables a layer created itself, without its sublayers'
    (`Layer._trainable_variables` + `_non_trainable_variables`; public
    `weights` includes every sublayer's)."""
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def inbound_nodes(layer):
    """`Operation._inbound_nodes`: the calls of a layer, in every graph it is in
    (`[]` for a layer never called symbolically)."""
    return list(getattr(layer, "_inbound_nodes", None) or [])


def history_operation(tensor):
    """The operation that produced a symbolic tensor
    (`KerasTensor._keras_history.operation`)."""
    return tensor._keras_history.operation


def history(tensor):
    """`KerasTensor._keras_history`: (operation, node index, tensor index)."""
    return tensor._keras_history


# ---------------------------------------------------------------------------
# Node bookkeeping (a rebuild's calls leave nodes on the layers it reuses)
# ---------------------------------------------------------------------------
#
# Every symbolic call appends a `Node` to `op._inbound_nodes` and to the
# `_outbound_nodes` of the operations that produced its inputs; Keras never
# removes one. A tensor names its node by position (`KerasHistory.node_index`),
# and a Functional model names its nodes by position too (`Function._nodes`:
# `make_node_key(op, index)` keys, read by `Functional.get_config`). Moving or
# removing a node therefore means giving every tensor and model that names a
# node after it the new position: `set_inbound_nodes` and `rekey` do.


def inbound_node_list(operation):
    """`Operation._inbound_nodes`, the list itself (to read positions)."""
    return operation._inbound_nodes


def outbound_node_list(operation):
    """`Operation._outbound_nodes`, the list itself."""
    return operation._outbound_nodes


def references_beyond_graph(operation, index):
    """How many references to `operation._inbound_nodes[index]` exist besides
    Keras' own node lists (`_inbound_nodes` of its operation, `_outbound_nodes`
    of the operations that produced its inputs): one per `_nodes_by_depth` of a
    live model whose graph holds it, plus any other holder. A tensor does not
    hold its node (its history names the operation and a position).

    `sys.getrefcount` counts its own argument and this frame's `node`: the
    caller must hold no reference to the node (pinned by
    `tests/test_keras_internals.py`)."""
    import sys

    node = operation._inbound_nodes[index]
    count = sys.getrefcount(node) - 2
    count -= _occurrences(operation._inbound_nodes, node)
    producers = {}
    for tensor in node.arguments.keras_tensors:
        producer = getattr(tensor, "_keras_history", None)
        if producer is not None and producer.operation is not None:
            producers[id(producer.operation)] = producer.operation
    for producer in producers.values():
        count -= _occurrences(producer._outbound_nodes, node)
    return count


def _occurrences(nodes, node):
    """The references a node list holds to `node`. On TensorFlow a layer's list
    attribute may be a `ListWrapper` (TensorFlow's tracking of a model's
    attributes), which holds its elements twice: in the list and in a copy it
    compares against (`_last_wrapped_list_snapshot`)."""
    count = sum(1 for n in nodes if n is node)
    snapshot = getattr(nodes, "_last_wrapped_list_snapshot", None)
    if isinstance(snapshot, list):
        count += sum(1 for n in snapshot if n is node)
    return count


def set_inbound_nodes(operation, nodes, removed=()):
    """Give `operation` the node list `nodes` (a reordering of its nodes, less
    `removed`): the tensors each node produced get their new position, and the
    removed nodes leave the `_outbound_nodes` of the operations they read."""
    from keras.src.ops.node import KerasHistory

    operation._inbound_nodes[:] = nodes
    for index, node in enumerate(nodes):
        for position, tensor in enumerate(node.outputs):
            history = getattr(tensor, "_keras_history", None)
            if history is not None and history.operation is operation:
                if history.node_index != index:
                    tensor._keras_history = KerasHistory(operation, index, position)
    gone = {id(node) for node in removed}
    if gone:
        for node in removed:
            for tensor in node.arguments.keras_tensors:
                history = getattr(tensor, "_keras_history", None)
                if history is not None and history.operation is not None:
                    outbound = history.operation._outbound_nodes
                    outbound[:] = [n for n in outbound if id(n) not in gone]


def rekey(model):
    """Recompute a Functional (or Sequential) model's node keys
    (`Function._nodes`, `make_node_key(op, position)`) from the nodes its graph
    holds, after positions changed."""
    from keras.src.ops.function import make_node_key

    if isinstance(model, keras.Sequential):
        model = getattr(model, "_functional", None)
        if model is None:
            return
    keys = set()
    for node in graph_nodes(model):
        positions = node.operation._inbound_nodes
        index = next(i for i, n in enumerate(positions) if n is node)
        keys.add(make_node_key(node.operation, index))
    object.__setattr__(model, "_nodes", keys)


def forget_graph(model):
    """Empty the node table of a model built and then discarded by keras_regs
    (so that its nodes are held by nothing and can be removed at once)."""
    if isinstance(model, keras.Sequential):
        model = getattr(model, "_functional", None)
        if model is None:
            return
    object.__setattr__(model, "_nodes_by_depth", {})


# Keras pickles a model as its `.keras` bytes plus this classmethod
# (`Model.__reduce__`); a class made at run time names it instead of its own.
UNPICKLE_MODEL = keras.Model._unpickle_model


# ---------------------------------------------------------------------------
# Training integration
# ---------------------------------------------------------------------------

# A metric whose `metrics` are searched by name by `MonitorCallback` (the base
# of EarlyStopping, ModelCheckpoint, ReduceLROnPlateau) for a `_direction`
# ("up"/"down"), the only way Keras infers `mode="auto"` for a name that is not
# `loss` (`keras/src/callbacks/monitor_callback.py`).
METRICS_LIST = MetricsList
DIRECTION = "_direction"


def untrack(model, metric):
    """Stop `model` tracking `metric` (so it leaves `model.metrics`).

    `Layer._tracker` is what puts a metric set as an attribute into
    `model.metrics`; after `compile` it is locked (Keras refuses new state on
    a compiled model), so it is unlocked for the change and locked again.
    """
    tracker = model._tracker
    locked = tracker.locked
    tracker.unlock()
    try:
        tracker.untrack(metric)
    finally:
        if locked:
            tracker.lock()


def set_tracked(model, name, value):
    """`setattr(model, name, value)` on a model whose tracker may be locked."""
    tracker = model._tracker
    locked = tracker.locked
    tracker.unlock()
    try:
        setattr(model, name, value)
    finally:
        if locked:
            tracker.lock()


def aggregate_additional_loss(model):
    """`Trainer._aggregate_additional_loss(loss)`: how `compute_loss` scales the
    sum of `model.losses` (per replica, dtype) before adding it; the bound
    method, replaced by `install_steps` to read off what it adds."""
    return model._aggregate_additional_loss


STEP_MARK = "_keras_regs_step"


def install_steps(model, train_step, test_step, compute_loss, training_arg, aggregate):
    """Replace the model's step methods on the instance (not its class).

    `fit` and `evaluate` call `self.train_step`, `self.test_step` (and these
    call `self.compute_loss`, which calls `self._aggregate_additional_loss`)
    through the instance, when the step function is made; an instance attribute
    therefore takes effect for this model only, whatever its class (a
    Functional or Sequential model, a KerasHub task, a subclass with its own
    steps), and leaves the class and other models alone.
    """
    object.__setattr__(model, "_aggregate_additional_loss", aggregate)
    for name, step in (("train_step", train_step), ("test_step", test_step)):
        step = functools.partial(step)
        setattr(step, STEP_MARK, True)
        object.__setattr__(model, name, step)
    object.__setattr__(model, "compute_loss", compute_loss)
    # Keras decides once, in `Trainer.__init__`, whether to pass `training` to
    # `compute_loss` (`Trainer._compute_loss`): it must answer for the method
    # the replacement passes its arguments on to.
    object.__setattr__(model, "_compute_loss_has_training_arg", training_arg)


def takes_training(method):
    """Whether `compute_loss` accepts `training` (Keras passes it only then:
    `Trainer._compute_loss`; an override written before Keras 3.3 has none)."""
    import inspect

    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(
        p.name == "training" or p.kind is inspect.Parameter.VAR_KEYWORD
        for p in parameters
    )


def iterations_variable(optimizer):
    """The variable behind `optimizer.iterations` (public; a
    `LossScaleOptimizer`'s is its inner optimizer's, whose counter moves), to
    find it among `optimizer.variables`."""
    return optimizer.iterations


def jax_optimizer_values(state):
    """The optimizer's variable values in a JAX train step's state, the first
    argument of `train_step(state, data)`: `(trainable, non_trainable,
    optimizer, metrics)` (`keras/src/backend/jax/trainer.py`)."""
    return state[2]


def unscale_for_replicas(value):
    """`keras.src.losses.loss.unscale_loss_for_distribution`: what Keras' loss
    tracker applies to the loss `compute_loss` returns under `tf.distribute`
    (each replica's compiled loss and additional losses are divided by the
    number of replicas there), so that a logged part of it reads as one
    device's value."""
    from keras.src.losses.loss import unscale_loss_for_distribution

    return unscale_loss_for_distribution(value)


def register_metric_name(name, cls):
    """Let `keras.metrics.deserialize(name)` give `cls`, unless the name is
    taken: `keras.src.metrics.ALL_OBJECTS_DICT` is the table it looks names up
    in (only metrics: not initializers, losses or regularizers, as a global
    custom object would be). KerasTuner infers a string objective's direction
    from it."""
    from keras.src import metrics

    metrics.ALL_OBJECTS_DICT.setdefault(name, cls)


# `MultiHeadAttention` keeps its four projections as private attributes, and
# writes its `kernel_regularizer`/`bias_regularizer` config from private
# attributes of its own (`MultiHeadAttention.get_config`): the weight slots of
# an attention layer are these.
MHA_PROJECTIONS = ("_query_dense", "_key_dense", "_value_dense", "_output_dense")
MHA_REGULARIZER_ATTRIBUTES = {
    "kernel": "_kernel_regularizer",
    "bias": "_bias_regularizer",
}


def sync_state(model):
    """On JAX, put the values a running `fit` holds in its state back into the
    model's variables (`Trainer.jax_state_sync`, public), and make the loop
    read its state from the variables again at the next step, so that a change
    made from a callback (a new metric, a new variable) is seen by it."""
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()


def retrace(model):
    """The next step of `fit`, `evaluate` and `predict` is traced anew.

    A step function made before is replaced by a new one (`make_*_function(
    force=True)`, public), never set to `None`: `fit` reads
    `self.train_function` before each step, and a callback that changes the
    model during `fit` would otherwise leave it nothing to call.
    """
    # A step installed by `install_steps` is given anew (the same function in
    # a new `functools.partial`): `jax.jit` keeps its traces per function
    # object, and would reuse the trace made before the change.
    for name in ("train_step", "test_step"):
        step = model.__dict__.get(name)
        if getattr(step, STEP_MARK, False):
            fresh = functools.partial(getattr(step, "func", step))
            setattr(fresh, STEP_MARK, True)
            object.__setattr__(model, name, fresh)
    for name, make in (
        ("train_function", "make_train_function"),
        ("test_function", "make_test_function"),
        ("predict_function", "make_predict_function"),
    ):
        if getattr(model, name, None) is not None:
            getattr(model, make)(force=True)
