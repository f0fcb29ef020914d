"""The nodes a rebuild leaves on the user's layers, and who owns `layer.output`.

Inserting noise, dropout or a wrapper builds a new graph over the very same layer
objects, and every call in it appends a node to each layer (Keras never removes
one). Left alone, each `regularize_model`, `strip_regularization` or `preview`
would leave a node on every layer, and with it the inserted layers and tensors
of models long gone. Here:

- `recording(model)` notes every node a rebuild adds (also one that fails);
- `discard(model)` lets go of a model built and not returned (`preview`, the
  same spec again, an error);
- `tidy(front)` removes the nodes keras_regs made that nothing holds any more
  (the graphs of dropped models, once Python has collected them), and puts the
  nodes of `front` (the model just returned) first on each of its layers, so
  that Keras' `layer.output` (the layer's first call) is `front`'s: the
  feature-extractor idiom `keras.Model(m.input, m.get_layer(name).output)`
  works on the model keras_regs returned.

A node is moved or removed only when every model that holds it is one whose node
keys keras_regs can recompute (a model it returned or was given); a node held by
any other model (one built by hand from these tensors) stays where it is, and so
does every node before it.
"""

import contextlib
import weakref

import keras

from keras_regs import _keras

# Nodes keras_regs created: removed once nothing but Keras' own lists holds them.
_CREATED = weakref.WeakSet()
# The graph models keras_regs returned or was given: {id: weakref}.
_KNOWN = {}


def graph_models(model):
    """`model` and the graph models nested in it."""
    from keras_regs.model.graph import has_graph

    found = [model] if has_graph(model) else []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model):
            found += graph_models(layer)
    return found


def know(*models):
    """Note models whose node keys keras_regs may recompute."""
    for model in models:
        for graph in graph_models(model):
            _KNOWN[id(graph)] = weakref.ref(graph)


def _operations(model):
    from keras_regs.model.graph import has_graph

    operations = _keras.flatten_layers(model)
    for graph in graph_models(model):
        if has_graph(graph) and not isinstance(graph, keras.Sequential):
            operations += [_keras.history_operation(t) for t in graph.inputs]
        elif isinstance(graph, keras.Sequential):
            functional = getattr(graph, "_functional", None)
            if functional is not None:
                operations += [_keras.history_operation(t) for t in functional.inputs]
    return {id(op): op for op in operations}


@contextlib.contextmanager
def recording(model):
    """Note, as keras_regs', every node added while the block runs on the
    operations of `model` and on every operation downstream of them."""
    before = {
        key: (op, len(_keras.inbound_node_list(op)), len(_keras.outbound_node_list(op)))
        for key, op in _operations(model).items()
    }
    try:
        yield
    finally:
        _CREATED.update(_added(before))


def _added(before):
    found, stack = {}, []
    for op, inbound, outbound in before.values():
        stack += _keras.inbound_node_list(op)[inbound:]
        stack += _keras.outbound_node_list(op)[outbound:]
    while stack:
        node = stack.pop()
        if id(node) in found:
            continue
        found[id(node)] = node
        op = node.operation
        if id(op) not in before:  # new: every call of it and after it is new
            stack += _keras.inbound_node_list(op)
            stack += _keras.outbound_node_list(op)
        for tensor in _keras.node_inputs(node):  # a new Input before it
            producer = _keras.history(tensor).operation
            if producer is not None and id(producer) not in before:
                stack += _keras.inbound_node_list(producer)
        for tensor in node.outputs:  # whatever took this node's outputs
            for consumer in _keras.outbound_node_list(op):
                if any(t is tensor for t in _keras.node_inputs(consumer)):
                    stack.append(consumer)
    return list(found.values())


def discard(model, keep):
    """Let go of `model`, built by keras_regs and not returned: its graphs (and
    those of its nested models) that are not in `keep` (the model given) hold
    their nodes no more."""
    kept = {id(graph) for graph in graph_models(keep)}
    for graph in graph_models(model):
        if id(graph) not in kept:
            _KNOWN.pop(id(graph), None)
            _keras.forget_graph(graph)


def release(nodes):
    """Nodes of a graph replaced in place (a KerasHub model's old graph): they
    go once nothing holds them."""
    _CREATED.update(nodes)


def _live_models():
    live = []
    for key, ref in list(_KNOWN.items()):
        model = ref()
        if model is None:
            del _KNOWN[key]
        else:
            live.append(model)
    return live


def tidy(front=None):
    """Remove keras_regs' nodes that nothing holds; put `front`'s first."""
    if front is not None:
        know(front)
    models = _live_models()
    holders = {}
    for model in models:
        for node in _keras.graph_nodes(model):
            holders[id(node)] = holders.get(id(node), 0) + 1
    first = set()
    if front is not None:
        for graph in graph_models(front):
            first.update(id(node) for node in _keras.graph_nodes(graph))
    operations, created = {}, set()
    for node in list(_CREATED):
        created.add(id(node))
        operations[id(node.operation)] = node.operation
    if front is not None:
        operations.update(_operations(front))
    node = None  # hold no node while references are counted
    del node
    # Which nodes go: per operation, those nothing holds after its last node
    # held by a model keras_regs cannot re-key (its position must not move).
    plans = {}
    for key, op in operations.items():
        plans[key] = _survey(op, holders, created)
    going = {}
    for key, (ids, _safe, removable) in plans.items():
        nodes = _keras.inbound_node_list(operations[key])
        going.update({ids[i]: nodes[i] for i in removable})
    _keep_what_stays_used(going)
    changed = False
    for key, op in operations.items():
        ids, safe, _ = plans[key]
        changed |= _apply(op, ids, safe, going, first)
    if changed:
        for model in models:
            _keras.rekey(model)


def _survey(op, holders, created):
    """`(ids, safe, removable)` for `op`'s nodes: `safe[i]` when every holder
    of node i is a model whose keys keras_regs recomputes; `removable`: the
    positions of keras_regs' nodes nothing holds, after the last unsafe one."""
    ids = [id(n) for n in _keras.inbound_node_list(op)]
    safe, dead = [], []
    for index in range(len(ids)):
        beyond = _keras.references_beyond_graph(op, index)
        safe.append(beyond == holders.get(ids[index], 0))
        dead.append(beyond == 0 and ids[index] in created)
    unsafe = [i for i, ok in enumerate(safe) if not ok]
    last_unsafe = unsafe[-1] if unsafe else -1
    removable = [i for i in range(len(ids)) if dead[i] and i > last_unsafe]
    return ids, safe, removable


def _keep_what_stays_used(going):
    """Keep every node whose outputs a node that stays takes (its tensors must
    keep naming a call that exists), and so on upstream."""
    changed = True
    while changed:
        changed = False
        for key, node in list(going.items()):
            outputs = {id(t) for t in node.outputs}
            for consumer in _keras.outbound_node_list(node.operation):
                if id(consumer) in going:
                    continue
                if any(id(t) in outputs for t in _keras.node_inputs(consumer)):
                    del going[key]
                    changed = True
                    break


def _apply(op, ids, safe, going, first):
    nodes = _keras.inbound_node_list(op)
    order = [i for i in range(len(ids)) if ids[i] not in going]
    promoted = [i for i in order if ids[i] in first] + [
        i for i in order if ids[i] not in first
    ]
    moved = [i for position, i in enumerate(promoted) if position != i]
    if all(safe[i] for i in moved) and not isinstance(op, keras.Model):
        order = promoted  # (a nested model's first call is its own business)
    if order == list(range(len(ids))):
        return False
    kept = set(order)
    removed = [nodes[i] for i in range(len(ids)) if i not in kept]
    _keras.set_inbound_nodes(op, [nodes[i] for i in order], removed)
    return True
