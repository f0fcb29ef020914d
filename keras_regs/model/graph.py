"""Walking a model: every layer once, nested models included, with its role."""

import dataclasses

import keras

from keras_regs.layers._seeded import SeededLayer


@dataclasses.dataclass(eq=False)
class LayerInfo:
    """A layer of the model, and whether it produces one of the model's outputs.

    `is_output` is `None` where the model has no graph to tell (subclassed models).
    """

    layer: keras.layers.Layer
    is_output: bool | None


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
    """The regularize_model keyword that inserted `layer`, or None."""
    return layer.inserted_by if isinstance(layer, SeededLayer) else None


def anchor_of(operation):
    """The layer a chain of inserted layers follows (itself if not inserted).

    Private API: an inserted layer's first inbound node, which every rebuild repeats.
    """
    while inserted_by(operation) is not None:
        tensor = operation._inbound_nodes[0].input_tensors[0]
        operation = tensor._keras_history.operation
    return operation


def output_operations(model):
    """The layers that produce the model's outputs, looking through inserted ones."""
    return {id(anchor_of(t._keras_history.operation)) for t in model.outputs}


def walk(model):
    """Every layer of `model` once (shared layers too), depth first.

    Nested models are walked; the nested model itself is not listed.
    """
    seen, infos = set(), []

    def visit(current, produces_output):
        graph = has_graph(current)
        outputs = output_operations(current) if graph else set()
        for layer in current.layers:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            if not graph:
                is_output = None
            else:
                is_output = produces_output and id(layer) in outputs
            if isinstance(layer, keras.Model):
                visit(layer, is_output)
            elif not isinstance(layer, keras.layers.InputLayer):
                infos.append(LayerInfo(layer, is_output))

    visit(model, True)
    return infos
