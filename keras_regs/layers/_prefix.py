"""The part of a model's graph from its input to a layer, run again at inference.

`Contractive(..., wrt="input")` differentiates a hidden layer's output with respect
to the input of the model it is in (theanets' contractive penalty), so it needs
the function from that input to the layer's input. `Prefix` reads it off the
graph when the wrapper is called symbolically (while the model is built, rebuilt
or loaded) and keeps it as a list of steps: each holds the layer and its call's
arguments with every tensor replaced by a numbered slot. It holds no node and no
tensor of the graph, so graph surgery never finds it pinning one.

`run(x)` calls the layers again on a real `x`, at inference (`training=False`
in Keras' call context, restored afterwards, and in place of a `training` the
graph passes explicitly): no dropout or noise, batch statistics from the moving
averages, no random draw; the penalty is a deterministic function of the input.
A `Contractive` wrapper met on the way runs its wrapped layer only (its own
penalty is added where the model calls it). Run it inside `replay`.

`replay(variables)` is the scope of any layer called again inside a penalty's
own computation (the Jacobian-vector products): a `keras.StatelessScope` that
maps each variable to its current value (on JAX the traced one of the step) and
collects no loss, so that activity penalties and `add_loss` calls of the layers
run again are dropped, as are variable updates; and keras_regs' per-step record
of penalty terms set aside, so that the logs count each term once.
"""

import contextlib

import keras

from keras_regs import _keras, _terms


class _Slot:
    """A tensor's place among the values computed by `Prefix.run`."""

    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index


class Prefix:
    """The graph from `source` to `target` (KerasTensors of one graph).

    Raises:
        ValueError: `target` depends on a tensor other than `source` that is
            not computed from it (a second input of the model).
    """

    def __init__(self, source, target):
        slots = {id(source): 0}
        steps = []
        # depth-first from the target, iteratively (deep models)
        pending = [(target, False)]
        while pending:
            tensor, ready = pending.pop()
            if id(tensor) in slots:
                continue
            operation, node_index, _ = tensor._keras_history
            node = _keras.inbound_node_list(operation)[node_index]
            if node.is_input or not node.operation:
                raise ValueError(
                    f"The tensor {tensor.name!r} is an input other than the one "
                    "the contractive penalty differentiates with respect to."
                )
            if not ready:
                pending.append((tensor, True))
                pending.extend(
                    (t, False) for t in node.input_tensors if id(t) not in slots
                )
                continue
            template = keras.tree.map_structure(
                lambda t: (
                    _Slot(slots[id(t)]) if isinstance(t, keras.KerasTensor) else t
                ),
                (node.arguments.args, node.arguments.kwargs),
            )
            outputs = []
            for output in node.outputs:
                slots[id(output)] = len(slots)
                outputs.append(slots[id(output)])
            steps.append((operation, template, outputs))
        self.steps = steps
        self.target = slots[id(target)]
        self.layers = [operation for operation, _, _ in steps]

    def run(self, x):
        """The target's value for the input value `x` (see the module)."""
        from keras_regs.layers.contractive import Contractive

        values = {0: x}
        with _keras.call_context_value("training", False):
            for operation, template, outputs in self.steps:
                args, kwargs = keras.tree.map_structure(
                    lambda a: values[a.index] if isinstance(a, _Slot) else a,
                    template,
                )
                if isinstance(operation, Contractive):
                    operation = operation.layer
                    kwargs = {k: v for k, v in kwargs.items() if k != "source"}
                if "training" in kwargs:  # given in the graph (MC dropout)
                    kwargs["training"] = False
                result = operation(*args, **kwargs)
                flat = keras.tree.flatten(result)
                for slot, value in zip(outputs, flat, strict=True):
                    values[slot] = value
        return values[self.target]


def variables_of(layers):
    """The variables of `layers`, each once."""
    found, seen = [], set()
    for layer in layers:
        for variable in layer.variables:
            if id(variable) not in seen:
                seen.add(id(variable))
                found.append(variable)
    return found


@contextlib.contextmanager
def replay(variables):
    """The scope of layers called again inside a penalty (see the module)."""
    mapping = [(v, v.value) for v in variables]
    with (
        keras.StatelessScope(state_mapping=mapping, collect_losses=False),
        _terms.set_aside(),
    ):
        yield
