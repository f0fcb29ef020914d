"""Inserting noise and dropout layers: a new graph over the very same layers.

Functional models are rebuilt with `keras.models.clone_model`, whose
`clone_function` returns each layer itself (so every weight is shared) and whose
`call_function` adds the inserted layers after their anchor's call. Sequential
models are rebuilt from their layer list and stay Sequential. Nested models are
rebuilt the same way, level by level. Layers inserted by an earlier call
(`inserted_by` set) are taken out and put back in a fixed order, reusing the same
layer objects where the keyword, anchor and seed are unchanged, so a repeated call
changes nothing and a new value replaces the old one.
"""

import contextlib
import dataclasses
import fnmatch
import inspect
import zlib

import keras

from keras_regs import _keras, _schedule
from keras_regs.layers._seeded import SeededLayer
from keras_regs.layers.bernoulli_dropout import BernoulliDropout, mask_shape_problem
from keras_regs.layers.contractive import Contractive, differentiable_input
from keras_regs.layers.gaussian_noise import GaussianNoise
from keras_regs.model import nodes
from keras_regs.model.graph import (
    anchor_of,
    has_graph,
    hidden_ends,
    inserted_by,
    lists_layers,
    unwrap,
    walk,
)
from keras_regs.model.slots import owns_kernel
from keras_regs.model.spec import LAYER_KEYWORDS

CLASSES = {"noise": GaussianNoise, "dropout": BernoulliDropout}
# The wrapper first (it replaces the layer's call), then noise, then dropout.
_ORDER = {"contractive": -1, "noise": 0, "dropout": 1}


@dataclasses.dataclass
class Insertion:
    argument: str
    kind: str
    value: float
    keep: bool = False  # inserted by an earlier call for a keyword not given now
    reduction: str = "sum"  # contractive only
    role: str | None = None  # "output" or "hidden": only after such calls
    noise_shape: tuple | None = None  # dropout only: the mask's shape
    wrt: str = "layer"  # contractive only: "layer" or "input"
    estimator: str = "exact"  # contractive only
    samples: int = 1  # contractive only: "hutchinson"'s random vectors

    def __post_init__(self):
        if self.role is None and self.argument in LAYER_KEYWORDS:
            self.role = LAYER_KEYWORDS[self.argument][1]

    def follows(self, produces_output):
        """Whether it goes after a call that does (True) or does not (False)
        produce an output of the model (None: the layer's only call)."""
        if produces_output is None or self.role not in ("output", "hidden"):
            return True
        return produces_output == (self.role == "output")


def _layer_seed(seed, name):
    """A seed per inserted layer, derived from `seed` and its name (stable)."""
    return zlib.crc32(f"{seed}/{name}".encode()) & 0x7FFFFFFF


def _input_layers(model):
    return [_keras.history_operation(t) for t in model.inputs]


def _refuse_subclassed(model, argument):
    raise TypeError(
        f"Invalid value for argument `{argument}`: regularize_model cannot insert "
        f"layers into the subclassed model {model.name!r} "
        f"({type(model).__name__}): it has no graph to rebuild. Penalties work on "
        "it; for noise and dropout, add keras_regs.layers.GaussianNoise or "
        "keras_regs.layers.BernoulliDropout in its `call`, or build it as a "
        "Functional or Sequential model."
    )


def _received(request):
    """The value as the user gave it (the map form for `noise=`, `dropout=`)."""
    key = {"noise": "stddev", "dropout": "rate"}.get(request.kind, "strength")
    if request.role is None:  # noise={pattern: value}, dropout={...}
        if request.noise_shape is not None:
            value = {key: request.value, "noise_shape": request.noise_shape}
            return {request.pattern: value}
        return {request.pattern: request.value}
    value = {key: request.value}
    if request.pattern is not None:
        value["pattern"] = request.pattern
    if request.noise_shape is not None:
        value["noise_shape"] = request.noise_shape
    if request.kind == "contractive":
        defaults = {"wrt": "layer", "estimator": "exact", "samples": 1}
        for option, default in defaults.items():
            if getattr(request, option) != default:
                value[option] = getattr(request, option)
    return value if len(value) > 1 else request.value


def select_anchors(model, requests):
    """`{id(anchor): [Insertion, ...]}`; raises if a request selects nothing."""
    if not has_graph(model):
        _refuse_subclassed(model, requests[0].argument)
    infos = [i for i in walk(model) if inserted_by(i.layer) is None]
    containers = {id(i.layer): i.model for i in infos}
    # a wrapped layer is called through its wrapper (after a reload, only)
    callers = {id(i.layer): i.wrapper or i.layer for i in infos}
    for info in infos:
        if isinstance(info.layer, keras.Model) and not has_graph(info.layer):
            _refuse_subclassed(info.layer, requests[0].argument)
    inputs = _input_layers(model)
    paths = {id(i.layer): i.path for i in infos}
    floating = {
        id(layer)
        for layer, tensor in zip(inputs, model.inputs, strict=True)
        if "float" in str(tensor.dtype)
    }
    wanted = {}
    for request in requests:
        if request.pattern is not None:  # a pattern replaces the role's default
            candidates = [i.layer for i in infos]
            if request.kind != "contractive":  # a wrapper needs a layer
                candidates = inputs + candidates
            anchors = [
                a
                for a in candidates
                if fnmatch.fnmatchcase(a.name, request.pattern)
                or fnmatch.fnmatchcase(paths.get(id(a), a.name), request.pattern)
            ]
        elif request.role == "input":
            anchors = inputs
        elif request.role == "hidden":
            # after the block the layer ends: Conv -> BN -> ReLU -> here
            ends = hidden_ends(infos)
            anchors = []
            for info in infos:
                end = ends[id(info.layer)]
                if not end.is_output and owns_kernel(info.layer, info.listed):
                    # a wrapper wraps the layer with the kernel (its Jacobian),
                    # never the normalization or activation that ends its block
                    anchor = info.layer if request.kind == "contractive" else end.layer
                    if anchor not in anchors:
                        anchors.append(anchor)
        else:
            anchors = [i.layer for i in infos if i.is_output]
        if not anchors:
            what = (
                f"the pattern {request.pattern!r} matches no layer or input name "
                "(noise and dropout go between the model's layers, not inside a "
                "composite layer)"
                if request.pattern is not None
                else f"the model has no {request.role} layer"
            )
            raise ValueError(
                f"Invalid value for argument `{request.argument}`: {what}. "
                f"Received: {request.argument}={_received(request)!r}"
            )
        if request.kind == "contractive":
            reasons = {
                id(a): _unwrappable(
                    a, request.wrt, containers.get(id(a)), callers.get(id(a), a)
                )
                for a in anchors
            }
            if request.pattern is None:  # by default, the layers it can wrap
                if all(reasons.values()):
                    anchor = anchors[0]
                    raise ValueError(
                        f"Invalid value for argument `{request.argument}`: no "
                        "hidden layer can be wrapped; the first, "
                        f"{anchor.name!r}, {reasons[id(anchor)]}. Received: "
                        f"{request.argument}={_received(request)!r}"
                    )
                anchors = [a for a in anchors if reasons[id(a)] is None]
            else:
                for anchor in anchors:
                    reason = reasons[id(anchor)]
                    if reason is not None:
                        raise ValueError(
                            f"Invalid value for argument `{request.argument}`: "
                            f"layer {anchor.name!r} {reason}. Received: "
                            f"{request.argument}={_received(request)!r}"
                        )
        integer = [
            a.name
            for a in anchors
            if a not in inputs and request.kind != "contractive" and not _floating(a)
        ]
        if integer:
            raise ValueError(
                f"Invalid value for argument `{request.argument}`: noise and dropout "
                f"need floating-point tensors, and layer {integer[0]!r} returns "
                f"{_output_dtype(integer[0], anchors)} (a Discretization or "
                "lookup layer, say). Put the noise or dropout after the layer "
                "that embeds or casts it. "
                f"Received: {request.argument}={_received(request)!r}"
            )
        integer = [a.name for a in anchors if a in inputs and id(a) not in floating]
        if integer:
            raise ValueError(
                f"Invalid value for argument `{request.argument}`: noise and dropout "
                f"need floating-point inputs, and input {integer[0]!r} is not (token "
                "ids, say). Put the noise or dropout after the layer that embeds it, "
                f"with a pattern: {request.kind}={{'embedding_name': value}}. "
                f"Received: {request.argument}={_received(request)!r}"
            )
        if request.noise_shape is not None:
            _check_mask_rank(request, anchors, model)
        value = request.value
        if request.kind == "contractive" and request.reduction == "mean":
            # each of the |Omega| layers wrapped gets s / |Omega|, as the
            # penalty keywords' tensors do (docs/reductions.md)
            value = _schedule.divided(value, len(anchors))
        for anchor in anchors:
            insertions = wanted.setdefault(id(anchor), [])
            # one layer per keyword at an anchor: a later pattern replaces an earlier
            insertions[:] = [i for i in insertions if i.argument != request.argument]
            insertions.append(
                Insertion(
                    request.argument,
                    request.kind,
                    value,
                    reduction=request.reduction,
                    role=request.role,
                    noise_shape=request.noise_shape,
                    wrt=request.wrt,
                    estimator=request.estimator,
                    samples=request.samples,
                )
            )
    return wanted


def _check_mask_rank(request, anchors, model):
    """A dropout `noise_shape` has the rank of every tensor it goes after."""
    inputs = dict(zip(map(id, _input_layers(model)), model.inputs, strict=True))
    for anchor in anchors:
        if id(anchor) in inputs:
            tensors = [inputs[id(anchor)]]
        else:
            tensors = _main_outputs(anchor)
        for tensor in tensors:
            problem = mask_shape_problem(request.noise_shape, tensor.shape)
            if problem is not None:
                raise ValueError(
                    f"Invalid value for argument `{request.argument}`: its "
                    f"noise_shape does not fit the output of {anchor.name!r}: "
                    f"{problem}. Give a noise_shape per shape with a pattern: "
                    "dropout={pattern: {'rate': r, 'noise_shape': ...}}. "
                    f"Received: {request.argument}={_received(request)!r}"
                )


def existing_insertions(model):
    """`{id(anchor): [inserted layer, ...]}` for the layers inserted earlier."""
    found = {}

    def visit(current):
        if isinstance(current, keras.Sequential):
            anchor = _input_layers(current)[0]
            for layer in current.layers:
                if isinstance(layer, SeededLayer) and layer.inserted_by is not None:
                    found.setdefault(id(anchor), []).append(layer)
                    continue
                anchor = unwrap(layer)
                if inserted_by(layer) is not None:  # a wrapper regularize_model made
                    found.setdefault(id(anchor), []).append(layer)
                if isinstance(layer, keras.Model):
                    visit(layer)
            return
        for layer in current.layers:
            if isinstance(layer, keras.Model) and has_graph(layer):
                visit(layer)
            elif isinstance(layer, Contractive) and layer.inserted_by is not None:
                found.setdefault(id(layer.layer), []).append(layer)
            elif inserted_by(layer) is not None:
                found.setdefault(id(anchor_of(layer)), []).append(layer)

    visit(model)
    return found


class _Builder:
    """Rebuilds a model with the insertions of `plan` at their anchors."""

    def __init__(self, model, plan, seed, reusable):
        self.plan, self.seed = plan, seed
        self.reusable = {k: list(v) for k, v in reusable.items()}
        self.names = {layer.name for layer in _every_layer(model)}
        self.updates = []  # (layer, {attribute: value}): set once the rebuild worked
        self.wrappers = {}  # id(layer) -> its Contractive wrapper in the new graph
        self.replaced = []  # (model, inputs, outputs): graphs to set in place
        self.mirrors = []  # (new node, the node of the old graph it repeats)
        # how often each layer is called, over the model and its nested models
        self.calls = {}
        for level in [model, *(m for m in _every_layer(model) if has_graph(m))]:
            if isinstance(level, keras.Model) and not isinstance(
                level, keras.Sequential
            ):
                for key, nodes in _keras.call_order(level).items():
                    self.calls[key] = self.calls.get(key, 0) + len(nodes)

    def _unique(self, name):
        candidate, n = name, 0
        while candidate in self.names:
            n += 1
            candidate = f"{name}_{n}"
        self.names.add(candidate)
        return candidate

    def _make(self, anchor, insertion, call=0):
        """The layer for `insertion` after the anchor's call of rank `call` (its
        place among the anchor's calls in the model, in the order they were
        made): named `{anchor}_{kind}`, then `_1`, `_2` for further calls, so
        that the same spec again finds the same layer at the same call."""
        cls = CLASSES[insertion.kind]
        base = f"{anchor.name}_{insertion.kind}" + (f"_{call}" if call else "")
        pool = self.reusable.get(id(anchor), [])
        fitting = [
            layer
            for layer in pool
            if type(layer) is cls
            and layer.inserted_by == insertion.argument
            and (insertion.keep or layer.seed == _layer_seed(self.seed, layer.name))
        ]
        fitting.sort(key=lambda layer: layer.name != base)  # its own first
        for layer in fitting:
            pool.remove(layer)
            if layer._held_value != insertion.value:
                self.updates.append((layer, {layer.held: insertion.value}))
            if cls is BernoulliDropout and layer.noise_shape != insertion.noise_shape:
                self.updates.append((layer, {"noise_shape": insertion.noise_shape}))
            return layer
        name = self._unique(base)
        options = {}
        if cls is BernoulliDropout:
            options["noise_shape"] = insertion.noise_shape
        return cls(
            insertion.value,
            seed=_layer_seed(self.seed, name),
            inserted_by=insertion.argument,
            name=name,
            dtype=_policy_of(anchor),
            **options,
        )

    def wrapped(self, layer):
        """The layer, or its Contractive wrapper where the plan wraps it (one wrapper
        per layer: a shared layer's calls share it)."""
        plan = [i for i in self.plan.get(id(layer), []) if i.kind == "contractive"]
        if not plan:
            return layer
        if id(layer) in self.wrappers:
            return self.wrappers[id(layer)]
        insertion = plan[-1]
        wrapper = None
        for old in self.reusable.get(id(layer), []):
            if (
                isinstance(old, Contractive)
                and old.inserted_by == insertion.argument
                # another wrt or estimator: another wrapper
                and (old.wrt, old.estimator) == (insertion.wrt, insertion.estimator)
            ):
                wrapper = old
                new = {
                    "strength": insertion.value,
                    "reduction": insertion.reduction,
                    "samples": insertion.samples,
                }
                if {k: getattr(old, k) for k in new} != new:
                    self.updates.append((old, new))
                break
        if wrapper is None:
            name = self._unique(f"{layer.name}_{insertion.kind}")
            seed = None
            if insertion.estimator == "hutchinson":
                seed = _layer_seed(self.seed, name)
            wrapper = Contractive(
                layer,
                insertion.value,
                reduction=insertion.reduction,
                wrt=insertion.wrt,
                estimator=insertion.estimator,
                samples=insertion.samples,
                seed=seed,
                inserted_by=insertion.argument,
                name=name,
                dtype=layer.dtype_policy,
            )
        self.wrappers[id(layer)] = wrapper
        return wrapper

    def after(self, anchor, outputs, produces_output=None, call=0):
        insertions = [
            i
            for i in self.plan.get(id(anchor), [])
            if i.kind != "contractive" and i.follows(produces_output)
        ]
        if not insertions:
            return outputs
        multiple = isinstance(outputs, (list, tuple))
        tensor = outputs[0] if multiple else outputs
        for insertion in insertions:
            tensor = self._make(anchor, insertion, call)(tensor)
        if multiple:  # the main output only; states and scores pass unchanged
            return type(outputs)([tensor, *outputs[1:]])
        return tensor

    def _mirror(self, target, made, node):
        """Note the call `target` just made as repeating `node` (a method of
        its own, so that no frame of a call that fails holds the new node)."""
        new = _keras.inbound_node_list(target)[made:]
        if node is not None and len(new) == 1:
            self.mirrors.append((new[0], node))

    def finish(self, result):
        """Give the new calls of each layer the order of the calls they repeat
        (a shared layer's calls were made in Keras' execution order), so that
        the new model's config lists them as the old one did."""
        by_operation = {}
        for new, old in self.mirrors:
            by_operation.setdefault(id(new.operation), []).append((new, old))
        changed = False
        for pairs in by_operation.values():
            if len(pairs) < 2:
                continue
            operation = pairs[0][0].operation
            listed = list(_keras.inbound_node_list(operation))
            position = {id(n): i for i, n in enumerate(listed)}

            slots = sorted(position[id(new)] for new, _ in pairs)
            ordered = sorted(pairs, key=lambda pair: _position(pair[1]))
            for slot, (new, _) in zip(slots, ordered, strict=True):
                listed[slot] = new
            if listed != list(_keras.inbound_node_list(operation)):
                _keras.set_inbound_nodes(operation, listed)
                changed = True
        self.mirrors = []
        if changed:
            for graph in nodes.graph_models(result):
                _keras.rekey(graph)

    def rebuild(self, model):
        # Keras gives a new model (and the optimizer `compile` makes for it:
        # a LossScaleOptimizer under mixed_float16) the global policy: the
        # rebuild runs under the model's own, whatever the global one is now.
        with _global_policy(model.dtype_policy):
            new = self._rebuild(model)
        if not model.trainable:  # a frozen nested model stays frozen
            new.trainable = False
        return new

    def _rebuild(self, model):
        if isinstance(model, keras.Sequential):
            return self._sequential(model)
        in_place = not lists_layers(model)  # a KerasHub backbone or task
        new_inputs = keras.tree.map_structure(_fresh_input, model.input)
        originals = _input_layers(model)
        wrapped = {
            id(new): self.after(original, new)
            for new, original in zip(
                keras.tree.flatten(new_inputs), originals, strict=True
            )
        }

        # A layer called several times (tied embeddings) gets output noise or
        # dropout only after the calls that produce the model's outputs, and
        # hidden ones only after the others.
        order, counts = _keras.call_order(model), {}
        level_outputs = {id(t) for t in model.outputs}
        # each call's rank among its layer's calls in this model, in the order
        # they were made (the order of the layer's node list), which Keras'
        # execution order (depth by depth) need not follow
        rank = {}
        for calls in order.values():
            made = sorted(calls, key=_position)
            rank.update({id(node): i for i, node in enumerate(made)})

        def original_call(layer):
            """The node of `model`'s graph this call of `layer` repeats."""
            index = counts[id(layer)] = counts.get(id(layer), -1) + 1
            nodes = order.get(id(layer), [])
            return nodes[index] if index < len(nodes) else None

        def produces_output(layer, node):
            if self.calls.get(id(layer), 0) < 2 or node is None:
                return None
            return any(id(t) in level_outputs for t in node.outputs)

        def call_function(layer, *args, **kwargs):
            node = original_call(layer)
            produces = produces_output(layer, node)
            call = 0 if node is None else rank[id(node)]
            args, kwargs = keras.tree.map_structure(
                lambda t: wrapped.get(id(t), t), (args, kwargs)
            )
            if isinstance(layer, Contractive) and layer.inserted_by is not None:
                layer = layer.layer  # unwrapped; wrapped again if the plan says so
                kwargs = {k: v for k, v in kwargs.items() if k != "source"}
            elif inserted_by(layer) is not None:
                return args[0]  # taken out; put back after its anchor
            target = self.wrapped(layer)
            if "mask" in kwargs and not _takes_mask(target):
                kwargs = {k: v for k, v in kwargs.items() if k != "mask"}
            if isinstance(target, Contractive) and target.wrt == "input":
                # the model's input, before any noise inserted after it
                kwargs = {**kwargs, "source": keras.tree.flatten(new_inputs)[0]}
            made = len(_keras.inbound_node_list(target))
            outputs = target(*args, **kwargs)
            self._mirror(target, made, node)
            return self.after(unwrap(layer), outputs, produces, call)

        def clone_function(layer):
            return self.rebuild(layer) if isinstance(layer, keras.Model) else layer

        if in_place:
            # Its class builds its graph from constructor arguments: it keeps its
            # class, attributes and methods (`backbone`, `generate`), and gets
            # the new nodes as the same object.
            outputs = _keras.run_through_graph(
                model, new_inputs, clone_function, call_function
            )
            self.replaced.append((model, new_inputs, outputs))
            return model
        return keras.models.clone_model(
            model,
            input_tensors=new_inputs,
            clone_function=clone_function,
            call_function=call_function,
        )

    def _sequential(self, model):
        input_layer = _input_layers(model)[0]
        new_input = _fresh_input(model.inputs[0])
        layers = [
            self._make(input_layer, i) for i in self.plan.get(id(input_layer), [])
        ]
        for layer in model.layers:
            if isinstance(layer, Contractive) and layer.inserted_by is not None:
                layer = layer.layer
            elif inserted_by(layer) is not None:
                continue
            if isinstance(layer, keras.Model):
                layers.append(self.rebuild(layer))
            else:
                layers.append(self.wrapped(layer))
            anchor = unwrap(layer)
            layers.extend(
                self._make(anchor, i)
                for i in self.plan.get(id(anchor), [])
                if i.kind != "contractive"
            )
        new = keras.Sequential([new_input, *layers], name=model.name)
        if model.compiled:
            new.compile_from_config(model.get_compile_config())
        return new


@contextlib.contextmanager
def _global_policy(policy):
    """`keras.config.set_dtype_policy(policy)` while the block runs."""
    before = keras.config.dtype_policy()
    plain = isinstance(policy, keras.DTypePolicy) and policy.quantization_mode is None
    if plain:
        keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        if plain:
            keras.config.set_dtype_policy(before)


def _policy_of(anchor):
    """The dtype policy of a layer inserted after `anchor`: the anchor's own
    (not the global one, which may have changed since the model was built), or
    for an input, the input's dtype, so that inference is bit-identical."""
    if isinstance(anchor, keras.layers.InputLayer):
        dtypes = {str(t.dtype) for t in _main_outputs(anchor)}
        if len(dtypes) == 1 and "float" in next(iter(dtypes)):
            return keras.DTypePolicy(dtypes.pop())
    return anchor.dtype_policy


def _unwrappable(layer, wrt="layer", container=None, caller=None):
    """Why the Contractive wrapper cannot wrap `layer` (None if it can): a
    pattern that selects such a layer is refused, the default skips it (and
    refuses when it skips them all). With `wrt="input"` the layer must be called
    once, in the graph of a Functional model (`container`) with one
    floating-point input."""
    if wrt == "input":
        reason = _no_input_path(caller or layer, container)
        if reason is not None:
            return reason
    if not _wrappable(layer):
        return (
            "is called with more than one input tensor or with keyword arguments "
            "(a transformer block's `padding_mask`), which the Contractive wrapper "
            "cannot pass on; it wraps layers of one tensor"
        )
    if not _single_output(layer):
        return (
            "returns several tensors (an RNN with `return_state=True`, say); the "
            "Contractive wrapper penalizes the Jacobian of one output"
        )
    if not differentiable_input(layer) or not _floating(layer):
        return "takes or returns integer tensors, which have no Jacobian"
    return None


def _no_input_path(layer, container):
    if isinstance(container, keras.Sequential) or not has_graph(container):
        return (
            f"is in the {type(container).__name__} model {container.name!r}, and "
            "wrt='input' reads the path from the input to the layer off a "
            "Functional graph: regularize keras.Model(model.inputs, "
            "model.outputs) instead (the same layers, as a Functional model)"
        )
    if len(_keras.inbound_nodes(layer)) != 1:
        return (
            "is called more than once (a shared layer): wrt='input' needs the one "
            "path from the input to the layer"
        )
    inputs = container.inputs
    if len(inputs) != 1 or "float" not in str(inputs[0].dtype):
        has = (
            f"{len(inputs)} inputs"
            if len(inputs) != 1
            else f"an input of dtype {inputs[0].dtype}"
        )
        return (
            f"is in the model {container.name!r}, which has {has}: wrt='input' "
            "differentiates with respect to a model's one floating-point input"
        )
    return None


def _main_outputs(layer):
    """The main output tensor (the first) of each call of `layer`."""
    return [
        outputs[0]
        for outputs in map(_keras.node_outputs, _keras.inbound_nodes(layer))
        if outputs
    ]


def _floating(layer):
    """Whether every call of `layer` returns a floating-point main output
    (noise and dropout go after it)."""
    return all("float" in str(t.dtype) for t in _main_outputs(layer))


def _output_dtype(name, anchors):
    layer = next(a for a in anchors if a.name == name)
    kinds = sorted({str(t.dtype) for t in _main_outputs(layer)})
    return " or ".join(kinds)


def _single_output(layer):
    """Whether every call of `layer` returns one tensor."""
    return all(
        len(_keras.node_outputs(node)) == 1 for node in _keras.inbound_nodes(layer)
    )


def _position(node):
    """Where `node` is in its operation's node list."""
    listed = _keras.inbound_node_list(node.operation)
    return next(i for i, n in enumerate(listed) if n is node)


def _fresh_input(tensor):
    """A new input like the one that made `tensor`: the same layer name (an
    auto-named `input_layer` stays `input_layer`), shape, dtype, sparseness,
    raggedness and optionality (what `InputLayer.get_config` holds)."""
    layer = _keras.history_operation(tensor)
    config = {"batch_shape": tensor.shape, "dtype": tensor.dtype, "name": tensor.name}
    if isinstance(layer, keras.layers.InputLayer):
        config.update(layer.get_config())
        config["name"] = layer.name
    known = ("batch_shape", "dtype", "sparse", "ragged", "name", "optional")
    return keras.Input(**{k: v for k, v in config.items() if k in known})


def _wrappable(layer):
    """Whether every call of `layer` takes one tensor and at most `mask` and
    `training` keywords: what the Contractive wrapper passes on."""
    for node in _keras.inbound_nodes(layer):
        extra = set(_keras.node_keywords(node)) - {"mask", "training"}
        if extra or len(_keras.node_positional_inputs(node)) != 1:
            return False
    return True


def _takes_mask(layer):
    """Whether `layer.call` has a `mask` argument (a node of a Contractive wrapper
    records `mask=`; the layer it wrapped may not take one)."""
    return "mask" in inspect.signature(layer.call).parameters


def _every_layer(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _every_layer(layer)
    if has_graph(model):
        yield from _input_layers(model)


class Pending:
    """What a rebuild changes on existing objects, applied once all else worked:
    new values of reused inserted layers (`attributes`: `(layer, {name: value})`)
    and new graphs of models that keep their class (`graphs`)."""

    def __init__(self, attributes=(), graphs=()):
        self.attributes, self.graphs = list(attributes), list(graphs)
        self._undo = []
        self._replaced = []  # the graph states replaced, for `commit`

    def __bool__(self):
        return bool(self.attributes or self.graphs)

    def apply(self):
        try:
            for layer, values in self.attributes:
                old = {name: getattr(layer, name) for name in values}
                for name, value in values.items():
                    setattr(layer, name, value)
                self._undo.append(lambda layer=layer, old=old: _set(layer, old))
            # the innermost model first: an outer graph calls the inner model
            for model, inputs, outputs in reversed(self.graphs):
                state = _keras.replace_graph(model, inputs, outputs, _removable)
                self._replaced.append(state)
                self._undo.append(
                    lambda model=model, state=state: _keras.restore_graph(model, state)
                )
        except BaseException:
            self.undo()
            raise

    def undo(self):
        while self._undo:
            self._undo.pop()()
        self._replaced = []

    def commit(self):
        """The changes stay: the graphs replaced in place are let go (their
        nodes are removed once nothing holds them)."""
        self._undo = []
        for state in self._replaced:
            nodes.release(_keras.state_nodes(state))
        self._replaced = []


def _set(layer, values):
    for name, value in values.items():
        setattr(layer, name, value)


def _removable(layer):
    return inserted_by(layer) is not None


def insert(model, requests, seed):
    """The model with the requested layers inserted (replacing earlier ones).

    Returns `(new_model, pending)`: `pending` (a `Pending`) holds the changes to
    existing objects, to apply once everything else has succeeded. A model whose
    class builds its own graph (a KerasHub backbone or task) is its own
    `new_model`: it gets its new graph from `pending.apply()`.
    """
    requested = {request.argument for request in requests}
    plan = select_anchors(model, requests)
    existing = existing_insertions(model)
    # Keep what earlier calls inserted for other keywords, with their values.
    # A shared anchor holds one inserted layer per call: one insertion each.
    for anchor, layers in existing.items():
        carried = {}
        for layer in layers:
            if layer.inserted_by in requested:
                continue
            if isinstance(layer, Contractive):
                key = (layer.inserted_by, "contractive")
                options = {
                    "wrt": layer.wrt,
                    "estimator": layer.estimator,
                    "samples": layer.samples,
                }
                carried[key] = (layer.strength, layer.reduction, options)
            else:
                kind = "noise" if isinstance(layer, GaussianNoise) else "dropout"
                shape = {"noise_shape": getattr(layer, "noise_shape", None)}
                carried[(layer.inserted_by, kind)] = (layer._held_value, "sum", shape)
        for (argument, kind), (value, reduction, options) in carried.items():
            plan.setdefault(anchor, []).append(
                Insertion(argument, kind, value, True, reduction, **options)
            )
    for insertions in plan.values():
        insertions.sort(key=lambda i: (_ORDER[i.kind], i.argument))
    builder = _Builder(model, plan, seed, existing)
    try:
        result = builder.rebuild(model)
    except BaseException:
        builder.mirrors = []  # the traceback holds the builder: not the nodes
        raise
    builder.finish(result)
    return result, Pending(builder.updates, builder.replaced)


@contextlib.contextmanager
def trial(model, requests, seed):
    """`insert` for a look (`preview`): yields `(new_model, pending)`, and then
    lets go of all of it (the nodes the rebuild made are removed)."""
    result = model
    try:
        with nodes.recording(model):
            result, pending = insert(model, requests, seed)
        yield result, pending
    finally:
        if result is not model:
            nodes.discard(result, model)
        nodes.tidy()


def strip(model):
    """The model without any inserted layer (the same model if it has none)."""
    if not existing_insertions(model):
        return model
    result = model
    try:
        with nodes.recording(model):
            builder = _Builder(model, {}, 0, {})
            try:
                result = builder.rebuild(model)
            except BaseException:
                builder.mirrors = []
                raise
            builder.finish(result)
        pending = Pending(graphs=builder.replaced)
        pending.apply()
        pending.commit()
    except BaseException:
        if result is not model:
            nodes.discard(result, model)
        nodes.tidy()
        raise
    return result
