"""Random small Functional graphs and specs for tests/test_properties.py.

A drawn case is a `Recipe` (a plain, printable description of a graph) and a
`Template` (a `regularize_model` spec whose patterns are picks, resolved against
the names of the built model). `build(recipe)` makes the same seeded model every
time; `layout(model)` reads what the oracles need from the Keras objects
themselves (names, paths, dtypes of every call, weights), and the oracles say,
from the documentation alone (docs/regularize-model.md, docs/reductions.md),
whether a spec must be refused and what its weight penalty must be.

Every model is tiny (inputs of 8 values, widths of at most 6): the properties
are about the graph, not about the numbers.
"""

import dataclasses
import fnmatch

import keras
import numpy as np
from hypothesis import strategies as st

from helpers import to_numpy

L = keras.layers

# ---------------------------------------------------------------------------
# Recipes and the builder


@dataclasses.dataclass(frozen=True)
class Block:
    """One piece of the dense part of the graph, on a tensor of width `w`.

    - "chain": Dense(units) -> [BatchNormalization] -> [activation layer]
    - "shared_seq": one Dense(w) called twice in a row (an activation between)
    - "shared_par": one Dense(units) called on two branches, merged with Add
    - "branch": two chains side by side, merged with `merge` (Add or Concatenate)
    - "nested": a Functional model (a chain then a Dense) used as a layer,
      called `calls` times (twice only when it keeps the width)
    - "sequential": a Sequential model (Dense -> [BatchNormalization] -> Dense)
    """

    kind: str
    units: int
    norm: bool
    act: str | None  # None, "in_layer" (Dense(activation=)), "relu", "tanh"
    merge: str = "add"  # "add" or "concat" (branch)
    calls: int = 1  # nested


@dataclasses.dataclass(frozen=True)
class Recipe:
    stem: str  # "dense", "conv1d", "conv2d"
    conv_blocks: tuple  # of Block (kind "chain"): Conv -> [BN] -> [activation]
    blocks: tuple  # of Block
    int_path: str | None  # None, "embedding", "identity", "reshape"
    aux_output: bool  # a second output head after the first block
    policy: str  # the dtype policy the model is built under


BLOCK_KINDS = ["chain", "shared_seq", "shared_par", "branch", "nested", "sequential"]
ACTS = [None, "in_layer", "relu", "tanh"]


@st.composite
def blocks(draw, conv=False):
    kind = "chain" if conv else draw(st.sampled_from(BLOCK_KINDS))
    return Block(
        kind=kind,
        units=draw(st.integers(2, 6)),
        norm=draw(st.booleans()),
        act=draw(st.sampled_from(ACTS)),
        merge=draw(st.sampled_from(["add", "concat"])),
        calls=draw(st.sampled_from([1, 2])) if kind == "nested" else 1,
    )


@st.composite
def recipes(draw):
    stem = draw(st.sampled_from(["dense", "conv1d", "conv2d"]))
    conv_blocks = ()
    if stem != "dense":
        conv_blocks = tuple(draw(st.lists(blocks(conv=True), min_size=1, max_size=2)))
    return Recipe(
        stem=stem,
        conv_blocks=conv_blocks,
        blocks=tuple(draw(st.lists(blocks(), min_size=1, max_size=3))),
        int_path=draw(
            st.sampled_from([None, None, "embedding", "identity", "reshape"])
        ),
        aux_output=draw(st.booleans()),
        policy=draw(
            st.sampled_from(["float32", "float32", "mixed_float16", "mixed_bfloat16"])
        ),
    )


class _Builder:
    """Builds a recipe with seeded initializers and unique, explicit names."""

    def __init__(self):
        self.n = 0

    def seed(self):
        self.n += 1
        return self.n

    def dense(self, units, name, activation=None):
        return L.Dense(
            units,
            activation=activation,
            kernel_initializer=keras.initializers.GlorotUniform(seed=self.seed()),
            bias_initializer=keras.initializers.RandomNormal(0.0, 0.5, self.seed()),
            name=name,
        )

    def norm(self, name):
        return L.BatchNormalization(
            gamma_initializer=keras.initializers.RandomUniform(0.5, 1.5, self.seed()),
            beta_initializer=keras.initializers.RandomNormal(0.0, 0.5, self.seed()),
            moving_mean_initializer=keras.initializers.RandomNormal(
                0.0, 0.5, self.seed()
            ),
            moving_variance_initializer=keras.initializers.RandomUniform(
                0.5, 1.5, self.seed()
            ),
            name=name,
        )

    def activation(self, act, name):
        if act == "relu":
            return L.ReLU(name=name)
        if act == "tanh":
            return L.Activation("tanh", name=name)
        return None

    def chain(self, h, block, k, make=None):
        """kernel layer -> [BN] -> [activation layer]; `make(units, name, act)`
        builds the kernel layer (a Dense by default)."""
        make = make or (lambda units, name, act: self.dense(units, name, act))
        inner_act = "tanh" if block.act == "in_layer" else None
        h = make(block.units, f"dense_{k}", inner_act)(h)
        if block.norm:
            h = self.norm(f"bn_{k}")(h)
        act = self.activation(block.act, f"act_{k}")
        return act(h) if act is not None else h

    def block(self, h, width, block, k):
        """The block on `h` (of width `width`); returns (tensor, width)."""
        if block.kind == "chain":
            return self.chain(h, block, k), block.units
        if block.kind == "shared_seq":
            shared = self.dense(width, f"shared_{k}")
            h = L.Activation("tanh", name=f"act_{k}")(shared(h))
            return shared(h), width
        if block.kind == "shared_par":
            shared = self.dense(block.units, f"shared_{k}")
            side = self.dense(width, f"dense_{k}", "tanh")(h)
            return L.Add(name=f"add_{k}")([shared(h), shared(side)]), block.units
        if block.kind == "branch":
            a = self.chain(h, block, f"{k}a")
            b = self.chain(h, dataclasses.replace(block, norm=False), f"{k}b")
            if block.merge == "add":
                return L.Add(name=f"add_{k}")([a, b]), block.units
            return L.Concatenate(name=f"cat_{k}")([a, b]), 2 * block.units
        if block.kind == "nested":
            out_units = width if block.calls == 2 else block.units
            inner_in = keras.Input((width,), name=f"inner_{k}_in")
            t = self.chain(inner_in, block, k)
            t = self.dense(out_units, f"dense_{k}_out")(t)
            inner = keras.Model(inner_in, t, name=f"inner_{k}")
            for _ in range(block.calls):
                h = inner(h)
            return h, out_units
        if block.kind == "sequential":
            layers = [keras.Input((width,), name=f"seq_{k}_in")]
            layers.append(self.dense(block.units, f"dense_{k}", "tanh"))
            if block.norm:
                layers.append(self.norm(f"bn_{k}"))
            layers.append(self.dense(block.units, f"dense_{k}_out"))
            return keras.Sequential(layers, name=f"seq_{k}")(h), block.units
        raise ValueError(block.kind)

    def conv(self, h, stem, block, k):
        def make(units, name, act):
            cls, size = (L.Conv1D, 3) if stem == "conv1d" else (L.Conv2D, 2)
            return cls(
                units,
                size,
                padding="same",
                activation=act,
                kernel_initializer=keras.initializers.GlorotUniform(seed=self.seed()),
                bias_initializer=keras.initializers.RandomNormal(0.0, 0.5, self.seed()),
                name=f"conv_{k}",
            )

        return self.chain(h, block, f"c{k}", make)

    def model(self, recipe):
        x_in = keras.Input((8,), name="x")
        inputs, h, width = [x_in], x_in, 8
        if recipe.stem != "dense":
            shape = (8, 1) if recipe.stem == "conv1d" else (4, 2, 1)
            h = L.Reshape(shape, name="to_grid")(h)
            for k, block in enumerate(recipe.conv_blocks):
                h = self.conv(h, recipe.stem, block, k)
            pool = L.GlobalAveragePooling1D if recipe.stem == "conv1d" else None
            pool = pool or L.GlobalAveragePooling2D
            h, width = pool(name="grid_pool")(h), recipe.conv_blocks[-1].units
        aux = None
        for k, block in enumerate(recipe.blocks):
            h, width = self.block(h, width, block, k)
            if aux is None and recipe.aux_output:
                aux = self.dense(1, "aux")(h)
        if recipe.int_path is not None:
            ids = keras.Input((4,), dtype="int32", name="ids")
            inputs.append(ids)
            t = ids
            if recipe.int_path == "identity":
                t = L.Identity(name="ids_path")(t)
            elif recipe.int_path == "reshape":
                t = L.Reshape((4,), name="ids_path")(t)
            t = L.Embedding(
                10,
                3,
                embeddings_initializer=keras.initializers.RandomUniform(
                    -1.0, 1.0, self.seed()
                ),
                name="emb",
            )(t)
            t = L.GlobalAveragePooling1D(name="emb_pool")(t)
            h = L.Concatenate(name="join")([h, t])
        out = self.dense(2, "out")(h)
        outputs = [out, aux] if aux is not None else out
        return keras.Model(inputs, outputs, name="graph")


def build(recipe):
    """A seeded Functional model from a recipe; the same recipe, the same model.

    Built under the recipe's dtype policy; the global policy is float32 again
    afterwards (as conftest.py leaves it). Every layer, input and model is
    named, so no `clear_session` is needed (it costs half a second a call).
    """
    keras.config.set_dtype_policy(recipe.policy)
    try:
        return _Builder().model(recipe)
    finally:
        keras.config.set_dtype_policy("float32")


def data(model, n=6, seed=0):
    """Inputs (a list in the order of `model.inputs`) and targets."""
    rng = np.random.default_rng(seed)
    x = []
    for tensor in model.inputs:
        shape = (n, *tensor.shape[1:])
        if "int" in str(tensor.dtype):
            x.append(rng.integers(0, 10, size=shape).astype("int32"))
        else:
            x.append(rng.normal(size=shape).astype("float32"))
    y = [rng.normal(size=(n, *t.shape[1:])).astype("float32") for t in model.outputs]
    return x, y if len(y) > 1 else y[0]


# ---------------------------------------------------------------------------
# What the oracles read: the model's names, dtypes and weights, from Keras


@dataclasses.dataclass
class Node:
    """A layer (or input) of the model, as the oracles see it."""

    name: str
    path: str  # through the nested models: "inner_1/dense_1"
    layer: object
    is_input: bool = False
    is_model: bool = False  # a nested model
    int_in: bool = False  # some call takes an integer tensor
    int_out: bool = False  # some call produces an integer tensor
    many_in: bool = False  # some call takes several tensors (Add, Concatenate)
    weights: list = dataclasses.field(default_factory=list)  # (kind, short, var)


def _is_int(tensor):
    return "int" in str(tensor.dtype)


def _weights(layer):
    """(kind, short name, variable) for the trainable weights the layer owns."""
    found = []
    for variable in layer.trainable_weights:
        short = variable.path.rsplit("/", 1)[-1]
        if short == "bias":
            kind = "bias"
        elif short in ("gamma", "beta"):
            kind = "norm"
        elif len(variable.shape) > 1:
            kind = "kernel"
        else:
            kind = "other"
        found.append((kind, short, variable))
    return found


def layout(model):
    """`{path: Node}` for every input and layer of `model` and its nested models,
    each once, read before any regularization (a fresh build)."""
    found = {}

    def visit(current, prefix):
        inputs = {id(t._keras_history.operation) for t in current.inputs}
        for layer in current.layers:
            path = prefix + layer.name
            if path in found or any(n.layer is layer for n in found.values()):
                continue
            node = Node(layer.name, path, layer)
            if isinstance(layer, L.InputLayer):
                if prefix or id(layer) not in inputs:
                    continue  # a nested model's own input: not the model's input
                node.is_input = True
                node.int_out = _is_int(layer.output)
            else:
                for call in layer._inbound_nodes:
                    tensors = list(keras.tree.flatten(call.input_tensors))
                    outs = list(keras.tree.flatten(call.output_tensors))
                    node.int_in |= any(_is_int(t) for t in tensors)
                    node.int_out |= any(_is_int(t) for t in outs)
                    node.many_in |= len(tensors) > 1
            found[path] = node
            if isinstance(layer, keras.Model):
                node.is_model = True
                visit(layer, f"{path}/")
            elif not node.is_input:
                node.weights = _weights(layer)

    visit(model, "")
    return found


# ---------------------------------------------------------------------------
# Specs: drawn as templates, resolved against a layout

PENALTY_ALIASES = {
    "weight_l1": ["weight_l1", "weight_sparsity"],
    "weight_l2": ["weight_l2", "weight_decay"],
    "hidden_l1": ["hidden_l1", "hidden_sparsity"],
}
ROLE_KEYWORDS = [
    f"{role}_{kind}"
    for role in ("input", "hidden", "output")
    for kind in ("noise", "dropout")
]
ALL_KEYWORDS = [*PENALTY_ALIASES, *ROLE_KEYWORDS, "contractive", "noise", "dropout"]
WEIGHT_KEYWORDS = ["weight_l1", "weight_l2", *ROLE_KEYWORDS, "noise", "dropout"]

# Pattern picks: (kind, index); the index picks among the layout's candidates.
# "kernel": a layer owning a kernel (exact name); "bn": a BatchNormalization
# (exact name: its gamma and beta); "any": any layer or input (exact name);
# "nested": a nested model's layers by path ("inner_1/*"); and fixed globs.
WEIGHT_GLOBS = ["*/kernel", "*/bias", "dense_*", "conv_*", "*_out"]
LAYER_GLOBS = ["*", "dense_*", "ids*", "*_path", "*_out", "act_*", "bn_*"]


@dataclasses.dataclass(frozen=True)
class Template:
    """A spec with picks in place of pattern strings (see `resolve`)."""

    entries: tuple  # (argument, canonical keyword, value, form, pick, reduction)
    include_bias: bool
    reduction: str
    seed: int | None


def _picks(kinds, globs):
    return st.one_of(
        st.tuples(st.sampled_from(kinds), st.integers(0, 99)),
        st.tuples(st.just("glob"), st.sampled_from(globs)),
    )


@st.composite
def templates(draw, keywords=ALL_KEYWORDS, required=()):
    """A spec template of one to four keywords among `keywords`, one of them
    among `required` when given."""
    chosen = draw(
        st.lists(st.sampled_from(keywords), min_size=1, max_size=4, unique=True)
    )
    if required and not any(k in required for k in chosen):
        chosen = [draw(st.sampled_from(required)), *chosen[:3]]
    entries = []
    for keyword in chosen:
        argument = keyword
        reduction = None
        if keyword in PENALTY_ALIASES:
            argument = draw(st.sampled_from(PENALTY_ALIASES[keyword]))
            value = draw(st.floats(1e-4, 1.0))
            form = draw(st.sampled_from([None, "strength", "weight"]))
            pick = None
            if form is not None:
                if keyword == "hidden_l1":
                    pick = draw(st.one_of(st.none(), _picks(["kernel"], ["dense_*"])))
                else:
                    pick = draw(
                        st.one_of(
                            st.none(), _picks(["kernel", "bn", "nested"], WEIGHT_GLOBS)
                        )
                    )
                reduction = draw(st.sampled_from([None, "sum", "mean"]))
        elif keyword == "contractive":
            value = draw(st.floats(1e-3, 1.0))
            form = draw(st.sampled_from([None, "strength"]))
            pick = None
            if form is not None:
                pick = draw(
                    st.one_of(st.none(), _picks(["any", "kernel"], LAYER_GLOBS))
                )
                reduction = draw(st.sampled_from([None, "sum", "mean"]))
        elif keyword in ("noise", "dropout"):
            value = draw(
                st.floats(0.0, 0.5) if keyword == "dropout" else st.floats(0.0, 1.0)
            )
            form = "map"
            pick = draw(_picks(["any", "kernel", "nested"], LAYER_GLOBS))
        else:  # a role keyword
            kind = keyword.split("_")[1]
            value = draw(
                st.floats(0.0, 0.5) if kind == "dropout" else st.floats(0.0, 1.0)
            )
            form = draw(
                st.sampled_from([None, "rate" if kind == "dropout" else "stddev"])
            )
            pick = None
            if form is not None:
                pick = draw(
                    st.one_of(st.none(), _picks(["any", "kernel"], LAYER_GLOBS))
                )
        entries.append((argument, keyword, value, form, pick, reduction))
    return Template(
        entries=tuple(entries),
        include_bias=draw(st.booleans()),
        reduction=draw(st.sampled_from(["sum", "mean"])),
        seed=draw(st.sampled_from([None, 0, 7])),
    )


def _candidates(nodes, kind):
    layers = [n for n in nodes.values() if not n.is_model]
    if kind == "kernel":
        return sorted(
            n.path for n in layers if any(w[0] == "kernel" for w in n.weights)
        )
    if kind == "bn":
        return sorted(
            n.name for n in layers if isinstance(n.layer, L.BatchNormalization)
        )
    if kind == "nested":
        return sorted(f"{n.path}/*" for n in nodes.values() if n.is_model)
    return sorted(n.name for n in layers)  # "any"


def _pattern(nodes, pick):
    kind, index = pick
    if kind == "glob":
        return index
    names = _candidates(nodes, kind) or _candidates(nodes, "kernel")
    name = names[index % len(names)]
    # a kernel layer inside a nested model: by its path or by its name
    return name.rsplit("/", 1)[-1] if index % 2 and kind == "kernel" else name


def resolve(template, nodes):
    """The keyword arguments of `regularize_model` for a built model's layout."""
    spec = {"include_bias": template.include_bias, "reduction": template.reduction}
    if template.seed is not None:
        spec["seed"] = template.seed
    for argument, _keyword, value, form, pick, reduction in template.entries:
        if form is None:
            spec[argument] = value
        elif form == "map":
            spec[argument] = {_pattern(nodes, pick): value}
        else:
            entry = {form: value}
            if pick is not None:
                entry["pattern"] = _pattern(nodes, pick)
            if reduction is not None:
                entry["reduction"] = reduction
            spec[argument] = entry
    return spec


# ---------------------------------------------------------------------------
# Oracles, from the documentation


def _canonical(argument):
    for keyword, aliases in PENALTY_ALIASES.items():
        if argument in aliases:
            return keyword
    return argument


def _requests(spec):
    """(keyword, value, pattern, reduction) for each keyword of a spec; the
    `noise`/`dropout` maps give one per pattern."""
    for argument, value in spec.items():
        if argument in ("include_bias", "reduction", "seed"):
            continue
        if argument in ("noise", "dropout"):
            for pattern, amount in value.items():
                yield argument, amount, pattern, None
            continue
        if isinstance(value, dict):
            amount = next(
                v for k, v in value.items() if k not in ("pattern", "reduction")
            )
            yield (
                _canonical(argument),
                amount,
                value.get("pattern"),
                value.get("reduction", spec["reduction"]),
            )
        else:
            yield _canonical(argument), value, None, spec["reduction"]


def _matches(node, pattern):
    return fnmatch.fnmatchcase(node.name, pattern) or fnmatch.fnmatchcase(
        node.path, pattern
    )


def _names_weight(pattern):
    """`*/gamma`, `bn/beta`: a pattern whose last part is a weight's own name."""
    return "/" in pattern and not any(c in pattern.rsplit("/", 1)[1] for c in "*?[")


def selected_weights(nodes, pattern, include_bias):
    """The variables a weight penalty goes on (docs/regularize-model.md, "What is
    selected"): kernels (and biases with include_bias) where the pattern
    matches a layer's name or path or a variable's path; a weight the pattern
    names itself; gamma and beta of a normalization layer named exactly."""
    kinds = {"kernel", "bias"} if include_bias else {"kernel"}
    found = []
    for node in nodes.values():
        if node.is_model or node.is_input:
            continue
        prefix = node.path[: -len(node.name)]
        for kind, short, variable in node.weights:
            if pattern is None:
                chosen = kind in kinds
            else:
                path = f"{node.name}/{short}"
                by_path = fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(
                    prefix + path, pattern
                )
                chosen = (by_path or _matches(node, pattern)) and (
                    kind in kinds
                    or (by_path and _names_weight(pattern))
                    or (kind == "norm" and pattern in (node.name, node.path))
                )
            if chosen and all(v is not variable for v in found):
                found.append(variable)
    return found


def refusals(nodes, spec):
    """What `regularize_model(model, **spec)` must refuse with a ValueError:
    a list of `(why, names)`, where the message must name one of `names`
    (empty when it need not name a layer). A second list: the keywords that
    may instead skip an integer input (`input_noise`, `input_dropout`)."""
    refused, may_skip = [], []
    layers = [n for n in nodes.values() if not n.is_model]
    for keyword, _value, pattern, _reduction in _requests(spec):
        if keyword in ("weight_l1", "weight_l2"):
            if pattern is not None and not selected_weights(
                nodes, pattern, spec["include_bias"]
            ):
                refused.append((f"{keyword}: {pattern!r} selects no weight", []))
            continue
        if keyword == "hidden_l1":
            if pattern is not None and not any(
                _matches(n, pattern) for n in layers if not n.is_input
            ):
                refused.append((f"{keyword}: {pattern!r} matches nothing", []))
            continue
        if keyword == "contractive":
            if pattern is None:
                continue
            matched = [n for n in layers if not n.is_input and _matches(n, pattern)]
            if not matched:
                refused.append((f"contractive: {pattern!r} matches nothing", []))
            bad = [n.name for n in matched if n.many_in or n.int_in]
            if bad:
                refused.append(("contractive on several or integer inputs", bad))
            continue
        # noise and dropout: role keywords or patterns
        if pattern is None:
            role = keyword.split("_")[0]
            if role == "input":
                ints = [n.name for n in layers if n.is_input and n.int_out]
                if ints:
                    may_skip.append((keyword, ints))
            continue
        matched = [n for n in layers if _matches(n, pattern)]
        if not matched:
            refused.append((f"{keyword}: {pattern!r} matches nothing", []))
        ints = [n.name for n in matched if n.int_out]
        if ints:
            refused.append((f"{keyword} after an integer tensor", ints))
    return refused, may_skip


def weight_penalty(nodes, spec):
    """The weight penalty of a spec, in NumPy (float64): for each weight keyword,
    `s * sum(f(W))` over the selected tensors (`f` = abs for weight_l1, square
    for weight_l2), or with reduction "mean" `s / |Omega| * sum_i mean(f(W_i))`
    (docs/reductions.md, docs/regularize-model.md)."""
    total = 0.0
    for keyword, strength, pattern, reduction in _requests(spec):
        if keyword not in ("weight_l1", "weight_l2"):
            continue
        f = np.abs if keyword == "weight_l1" else np.square
        chosen = [
            to_numpy(v).astype("float64")
            for v in selected_weights(nodes, pattern, spec["include_bias"])
        ]
        if reduction == "mean":
            total += strength / len(chosen) * sum(float(np.mean(f(w))) for w in chosen)
        else:
            total += strength * sum(float(np.sum(f(w))) for w in chosen)
    return total
