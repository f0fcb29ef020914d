"""Walking a model: every layer once, nested models included, with its role."""

from __future__ import annotations

import dataclasses
import numbers

import keras

from keras_regs import _keras
from keras_regs.layers._seeded import SeededLayer
from keras_regs.layers.contractive import Contractive


@dataclasses.dataclass(eq=False)
class LayerInfo:
    """A layer of the model, and whether it produces one of the model's outputs.

    `is_output` is `None` where the model has no graph to tell (subclassed models).
    """

    layer: keras.layers.Layer
    is_output: bool | None
    prefix: str = ""  # the enclosing nested models' names: "inner/"
    wrapper: keras.layers.Layer | None = None  # the Contractive wrapping `layer`
    listed: bool = True  # the layer's own config is saved (see `lists_layers`)
    model: keras.Model | None = None  # the model whose graph calls it

    @property
    def path(self):
        return self.prefix + self.layer.name


def check_model(model, name="model"):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Invalid type for argument `{name}`. Expected a keras.Model "
            f"(Sequential, Functional or subclassed). Received: {name}={model!r} "
            f"(of type {type(model).__name__})"
        )
    if not model.built:
        raise ValueError(
            f"Invalid value for argument `{name}`: the model is not built, so it has "
            "no weights to regularize yet. Build it first (call it on data, or "
            "start a Sequential model with `keras.Input`). "
            f"Received: {name}={model.name!r}"
        )


def has_graph(model):
    """Functional and Sequential models have a graph; subclassed ones do not."""
    return isinstance(model, (keras.Sequential, keras.Function))


def lists_layers(model):
    """Whether `model`'s config lists its layers, each with its own config.

    Plain Functional and Sequential models do. A subclass that writes its own
    config (a KerasHub backbone or task: its constructor arguments) and a
    subclassed model do not: loading builds their layers anew.
    """
    from keras_regs import _keras

    if isinstance(model, keras.Sequential):
        return _keras.same_method(model, keras.Sequential, "get_config")
    if isinstance(model, keras.Function):
        return _keras.same_method(model, _keras.FUNCTIONAL, "get_config")
    return False


def inserted_by(layer):
    """The regularize_model keyword that inserted (or wrapped) `layer`, or None."""
    return layer.inserted_by if isinstance(layer, (SeededLayer, Contractive)) else None


def unwrap(operation):
    """The layer inside a Contractive wrapper (the operation itself otherwise)."""
    return operation.layer if isinstance(operation, Contractive) else operation


def anchor_of(operation):
    """The layer a chain of inserted layers follows (itself if not inserted).

    Private API: an inserted layer's first inbound node, which every rebuild repeats.
    """
    while isinstance(operation, SeededLayer) and operation.inserted_by is not None:
        tensor = _keras.inbound_nodes(operation)[0].input_tensors[0]
        operation = _keras.history_operation(tensor)
    return unwrap(operation)


def output_operations(model, indices=None):
    """`{id(layer): output indices}` for the layers that produce the model's outputs
    (all of them, or those at `indices`), looking through inserted layers.

    A nested model is listed with the indices of its own outputs that are used, so
    that its walk can tell which of its layers produce outer outputs.
    """
    found = {}
    for i, tensor in enumerate(model.outputs):
        if indices is not None and i not in indices:
            continue
        history = _keras.history(tensor)
        operation = anchor_of(history.operation)
        index = history.tensor_index if operation is unwrap(history.operation) else 0
        found.setdefault(id(operation), set()).add(index)
    return found


def walk(model):
    """Every layer of `model` once (shared layers too), depth first.

    Nested models are walked; the nested model itself is not listed.
    """
    seen, infos, by_layer = set(), [], {}

    def visit(current, indices, prefix, listed):
        """`indices`: which of `current`'s outputs are outer outputs (None: unknown,
        a subclassed parent); an empty set when none is. `listed`: whether the
        configs of `current`'s layers are saved."""
        graph = has_graph(current)
        listed = listed and lists_layers(current)
        outputs = {}
        if graph and indices is not None and indices:
            outputs = output_operations(current, indices)
        for layer in current.layers:
            inner = unwrap(layer)
            used = None
            if graph and indices is not None:
                used = outputs.get(id(inner), set())
            if id(layer) in seen:
                # called again here (tied embeddings: GPT-2's logits): an
                # output layer if any of its calls produces an output
                if used and id(inner) in by_layer:
                    by_layer[id(inner)].is_output = True
                continue
            seen.add(id(layer))
            if isinstance(layer, keras.Model):
                visit(layer, used, f"{prefix}{layer.name}/", listed)
            elif not isinstance(layer, keras.layers.InputLayer):
                is_output = None if used is None else bool(used)
                wrapper = layer if inner is not layer else None
                info = LayerInfo(inner, is_output, prefix, wrapper, listed, current)
                infos.append(info)
                by_layer[id(inner)] = info

    outputs = set(range(len(model.outputs))) if has_graph(model) else None
    visit(model, outputs, "", True)
    return infos


# What may follow a layer inside its block: its output is the block's output
# only after these (Conv -> BatchNormalization -> ReLU, Dense -> LayerNorm -> GELU).
BLOCK_TAIL = tuple(
    cls
    for cls in (
        getattr(keras.layers, name, None)
        for name in (
            "BatchNormalization",
            "LayerNormalization",
            "GroupNormalization",
            "UnitNormalization",
            "RMSNormalization",
            "Activation",
            "ReLU",
            "LeakyReLU",
            "PReLU",
            "ELU",
            "Softmax",
        )
    )
    if cls is not None
)


def _consumers(model):
    """`{id(tensor): [node, ...]}`: the calls of `model`'s graph taking each tensor."""
    from keras_regs import _keras

    found = {}
    for node in _keras.graph_nodes(model):
        for tensor in _keras.node_inputs(node):
            found.setdefault(id(tensor), []).append(node)
    return found


def block_end(model, layer, consumers=None):
    """The last layer of `layer`'s block in `model`'s graph: follow the chain of
    normalization and activation layers (`BLOCK_TAIL`) that take only its output,
    each called once, and that output is used by nothing else. `layer` itself
    when no such layer follows (or `model` has no graph)."""
    if model is None or not has_graph(model):
        return layer
    consumers = _consumers(model) if consumers is None else consumers
    nodes = {id(n) for n in _keras.graph_nodes(model)}
    outputs = {id(t) for t in model.outputs}

    def single_call(operation):
        calls = [n for n in _keras.inbound_nodes(operation) if id(n) in nodes]
        return calls[0] if len(calls) == 1 else None

    end = probe = layer
    while True:
        call = single_call(probe)
        if call is None:
            return unwrap(end)
        produced = _keras.node_outputs(call)
        if len(produced) != 1 or id(produced[0]) in outputs:
            return unwrap(end)
        users = consumers.get(id(produced[0]), [])
        if len(users) != 1 or len(_keras.node_inputs(users[0])) != 1:
            return unwrap(end)
        follower = users[0].operation
        if inserted_by(follower) is not None and not isinstance(follower, Contractive):
            probe = follower  # inserted by an earlier call: look through it
            continue
        if not isinstance(unwrap(follower), BLOCK_TAIL):
            return unwrap(end)
        end = probe = follower


def hidden_ends(infos):
    """`{id(layer): info of its block's end}` for the walked layers."""
    by_layer = {id(info.layer): info for info in infos}
    cache, ends = {}, {}
    for info in infos:
        model = info.model
        if model is not None and has_graph(model) and id(model) not in cache:
            cache[id(model)] = _consumers(model)
        start = info.wrapper or info.layer
        end = block_end(model, start, cache.get(id(model)))
        ends[id(info.layer)] = by_layer.get(id(end), info)
    return ends


def layer_output(
    model: keras.Model, layer: str | keras.layers.Layer, call: int | None = None
) -> keras.KerasTensor | list[keras.KerasTensor]:
    """The output of `layer` in `model`'s own graph: what
    `model.get_layer(name).output` means, for any model.

    Keras' `layer.output` is the output of the layer's *first* call, in
    whichever model made it. A model built over the same layers as another
    (what `regularize_model` returns when it inserts noise, dropout or
    wrappers, and what `strip_regularization` returns) calls each layer again,
    so `keras.Model(m.input, m.get_layer(name).output)` can mix two graphs.
    keras_regs puts the calls of the model it last returned first, so the idiom
    works on that model; this function works on every model:

    ```python
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model = keras_regs.regularize_model(model, hidden_dropout=0.3)
    features = keras.Model(model.input, keras_regs.layer_output(model, "hidden"))
    ```

    Args:
        model: a Functional or Sequential model.
        layer: the layer's name (as `model.get_layer` takes it) or the layer.
        call: which call of a layer called several times in `model` (shared
            layers, tied embeddings), in graph order; required then.

    Returns:
        The output tensor of that call, or the list of its output tensors when
            the layer returns several (an LSTM with `return_state=True`).

    Raises:
        TypeError: `model` is not a Functional or Sequential model, or `layer`
            is neither a name nor a layer.
        ValueError: no such layer in `model`'s graph (a layer of a nested model
            is in that model's graph: ask it), or `call` is missing or out of
            range for a layer called several times.
    """
    check_model(model)
    if not has_graph(model):
        raise TypeError(
            "Invalid type for argument `model`. Expected a Functional or "
            "Sequential model (a subclassed model has no graph of layer calls). "
            f"Received: model={model.name!r} (of type {type(model).__name__})"
        )
    if isinstance(layer, str):
        name = layer
    elif isinstance(layer, keras.layers.Layer):
        name = layer.name
    else:
        raise TypeError(
            "Invalid type for argument `layer`. Expected a layer name or a "
            f"keras.layers.Layer. Received: layer={layer!r} "
            f"(of type {type(layer).__name__})"
        )
    calls = []
    depths = _keras.nodes_by_depth(model)
    for depth in sorted(depths, reverse=True):
        for node in depths[depth]:
            if node.operation is not None and node.operation.name == name:
                if not isinstance(layer, str) and node.operation is not layer:
                    continue
                calls.append(node)
    if not calls:
        raise ValueError(
            f"Invalid value for argument `layer`: model {model.name!r} calls no "
            f"layer named {name!r} in its own graph (a layer of a nested model "
            "is called in that model's graph: pass the nested model). "
            f"Received: layer={layer!r}"
        )
    if call is None and len(calls) > 1:
        raise ValueError(
            f"Invalid value for argument `call`: layer {name!r} is called "
            f"{len(calls)} times in model {model.name!r}; say which call "
            f"(0 to {len(calls) - 1}). Received: call=None"
        )
    index = 0 if call is None else call
    if isinstance(index, bool) or not isinstance(index, numbers.Integral):
        raise TypeError(
            "Invalid type for argument `call`. Expected None or an integer. "
            f"Received: call={call!r} (of type {type(call).__name__})"
        )
    if not 0 <= index < len(calls):
        raise ValueError(
            f"Invalid value for argument `call`: layer {name!r} is called "
            f"{len(calls)} times in model {model.name!r}. Expected 0 to "
            f"{len(calls) - 1}. Received: call={call!r}"
        )
    outputs = _keras.node_outputs(calls[int(index)])
    return outputs[0] if len(outputs) == 1 else outputs
