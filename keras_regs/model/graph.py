"""Walking a model: every layer once, nested models included, with its role."""

import dataclasses

import keras

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
        tensor = operation._inbound_nodes[0].input_tensors[0]
        operation = tensor._keras_history.operation
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
        history = tensor._keras_history
        operation = anchor_of(history.operation)
        index = history.tensor_index if operation is unwrap(history.operation) else 0
        found.setdefault(id(operation), set()).add(index)
    return found


def walk(model):
    """Every layer of `model` once (shared layers too), depth first.

    Nested models are walked; the nested model itself is not listed.
    """
    seen, infos = set(), []

    def visit(current, indices, prefix):
        """`indices`: which of `current`'s outputs are outer outputs (None: unknown,
        a subclassed parent); an empty set when none is."""
        graph = has_graph(current)
        outputs = {}
        if graph and indices is not None and indices:
            outputs = output_operations(current, indices)
        for layer in current.layers:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            inner = unwrap(layer)
            used = None
            if graph and indices is not None:
                used = outputs.get(id(inner), set())
            if isinstance(layer, keras.Model):
                visit(layer, used, f"{prefix}{layer.name}/")
            elif not isinstance(layer, keras.layers.InputLayer):
                is_output = None if used is None else bool(used)
                wrapper = layer if inner is not layer else None
                infos.append(LayerInfo(inner, is_output, prefix, wrapper))

    visit(model, set(range(len(model.outputs))) if has_graph(model) else None, "")
    return infos
