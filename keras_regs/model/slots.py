"""Where a penalty can go, and how it is set so that it counts and is saved.

A weight penalty counts once it is on the variable (`variable.regularizer`, which
the trainer reads, for every trainable weight however deep). For a layer whose
config is saved as such (a layer listed in a Functional or Sequential model's
config), it is also set on the layer's config attribute (`kernel_regularizer`,
..., which `get_config` saves and `build` copies back onto the new variable after
loading): such a slot is *native*. `TABLE` says, for each known layer class, which
weights it has and which attribute saves each one's penalty; `register_layer`
adds a user's class. Every other weight (the sublayers of composite layers, the
layers of a KerasHub backbone, LoRA factors, a custom layer's weights) gets its
penalty on the variable alone, and the model keeps it through the record that
`keras_regs.model.persist` writes into its config.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import keras

from keras_regs import _keras
from keras_regs.regularizers.penalties import Penalties

KERNEL, BIAS, NORMALIZATION, OTHER = "kernel", "bias", "normalization", "other"

_KERNEL_AND_BIAS = (
    ("kernel", "kernel_regularizer", KERNEL),
    ("bias", "bias_regularizer", BIAS),
)
_RECURRENT = (
    ("kernel", "kernel_regularizer", KERNEL),
    ("recurrent_kernel", "recurrent_regularizer", KERNEL),
    ("bias", "bias_regularizer", BIAS),
)
_NORMALIZATION = (
    ("gamma", "gamma_regularizer", NORMALIZATION),
    ("beta", "beta_regularizer", NORMALIZATION),
)

L = keras.layers
# (layer classes, the attribute holding the weights' owner ("" = the layer itself),
#  ((variable name, config attribute on the owner, kind), ...))
TABLE = (
    (
        (L.Dense, L.EinsumDense, L.Conv1D, L.Conv2D, L.Conv3D)
        + (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose),
        "",
        _KERNEL_AND_BIAS,
    ),
    (
        (L.DepthwiseConv1D, L.DepthwiseConv2D),
        "",
        # the variable is named "kernel"; its penalty is saved as depthwise_...
        (("kernel", "depthwise_regularizer", KERNEL), _KERNEL_AND_BIAS[1]),
    ),
    (
        (L.SeparableConv1D, L.SeparableConv2D),
        "",
        (
            ("depthwise_kernel", "depthwise_regularizer", KERNEL),
            ("pointwise_kernel", "pointwise_regularizer", KERNEL),
            _KERNEL_AND_BIAS[1],
        ),
    ),
    ((L.Embedding,), "", (("embeddings", "embeddings_regularizer", KERNEL),)),
    (
        (L.SimpleRNN, L.LSTM, L.GRU, L.ConvLSTM1D, L.ConvLSTM2D, L.ConvLSTM3D),
        "cell",
        _RECURRENT,
    ),
    (
        (L.BatchNormalization, L.LayerNormalization, L.GroupNormalization),
        "",
        _NORMALIZATION,
    ),
    ((L.PReLU,), "", (("alpha", "alpha_regularizer", NORMALIZATION),)),
)
del L

# MultiHeadAttention saves one kernel and one bias regularizer for its four
# projections: its config reads the private attributes below, and `build` passes
# them to the internal EinsumDense layers that own the variables.


_KERAS_SIMPLE_RNN = keras.layers.SimpleRNN


@keras.saving.register_keras_serializable(package="keras_regs", name="SimpleRNN")
class SimpleRNN(_KERAS_SIMPLE_RNN):
    """Keras' `SimpleRNN`, whose constructor keeps `activity_regularizer`.

    Keras' own (3.14 to 3.16 at least) takes the argument and drops it: its
    `__init__` does not pass it on to `Layer.__init__`, as `LSTM` and `GRU` do,
    so a SimpleRNN built with one has none. A penalty set afterwards, as
    `layer.activity_regularizer`, counts and `get_config` saves it, but every
    copy made from the config (`.keras` and JSON loading, `from_config`,
    `keras.models.clone_model`, `Bidirectional`'s two directions) comes back
    without it (<https://keras-regs.readthedocs.io/en/latest/recurrent.html>
    holds the report to file upstream).
    `ActivitySlot.set` gives a SimpleRNN this class while it holds what
    `regularize_model` attaches (a `Penalties`, with any regularizer set before
    as its base), and Keras' class back when `strip_regularization` takes it
    off. Saved as `keras_regs>SimpleRNN`, loaded after `import keras_regs`,
    which the `Penalties` needs anyway.
    """

    def __init__(self, *args, activity_regularizer=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.activity_regularizer = keras.regularizers.get(activity_regularizer)


def _keeps_activity(layer):
    """Whether the copies of `layer` made from its config keep what
    `regularize_model` puts on its output: every layer but Keras' SimpleRNN, and
    exactly that class gets `SimpleRNN` above then. A subclass of it may have a
    constructor of its own: the model's record keeps its penalty instead."""
    if not isinstance(layer, _KERAS_SIMPLE_RNN):
        return True
    return type(layer) in (_KERAS_SIMPLE_RNN, SimpleRNN)


@dataclasses.dataclass(eq=False)
class WeightSlot:
    """One weight of one layer and the attributes that save its penalty.

    `layer` is the layer that owns the variable (a sublayer of a composite layer,
    the Bidirectional around an LSTM); `config` lists `(object, attribute)` pairs,
    empty where no config attribute saves the penalty (it then lives on the
    variable, and the model's record keeps it). The first pair is read back, all
    are written. Slots sharing their first pair (MultiHeadAttention's
    projections) must hold the same penalty to be saved.
    """

    layer: keras.layers.Layer
    variable: keras.Variable
    config: tuple
    kind: str
    native: bool = True  # the layer's own saved config holds the penalty
    undeclared: bool = False  # a listed layer of a class no table declares

    @property
    def path(self):
        return self.variable.path

    @property
    def group(self):
        if not self.config:
            return id(self.variable), "regularizer"
        owner, attribute = self.config[0]
        return id(owner), attribute

    def get(self):
        if not self.config:
            return self.variable.regularizer
        owner, attribute = self.config[0]
        return getattr(owner, attribute)

    def set(self, regularizer):
        for owner, attribute in self.config:
            setattr(owner, attribute, regularizer)
        self.variable.regularizer = regularizer


@dataclasses.dataclass(eq=False)
class ActivitySlot:
    """A layer's output: `owner.activity_regularizer` (counted and saved).

    `owner` is the layer itself, or one direction's RNN inside a Bidirectional
    `layer` (whose config saves each direction's activity regularizer).
    """

    layer: keras.layers.Layer
    owner: keras.layers.Layer = None
    listed: bool = True  # the layer's config is saved as such (not rebuilt)

    def __post_init__(self):
        if self.owner is None:
            self.owner = self.layer

    @property
    def target(self):
        if self.owner is self.layer:
            return "activity"
        return f"activity of {self.owner.name}"

    @property
    def group(self):
        return id(self.owner), "activity_regularizer"

    @property
    def native(self):
        """Whether the layer's own config saves the activity penalty."""
        return self.listed and _keeps_activity(self.owner)

    def get(self):
        return self.owner.activity_regularizer

    def set(self, regularizer):
        owner = self.owner
        # a SimpleRNN keeps what keras_regs puts on it (see `SimpleRNN`), and
        # gets Keras' class back with what it had before (strip_regularization)
        if isinstance(regularizer, Penalties) and type(owner) is _KERAS_SIMPLE_RNN:
            owner.__class__ = SimpleRNN
        elif not isinstance(regularizer, Penalties) and type(owner) is SimpleRNN:
            owner.__class__ = _KERAS_SIMPLE_RNN
        owner.activity_regularizer = regularizer


def activity_slots(layer, listed=True):
    """The layer's own output, and each direction's inside a Bidirectional."""
    slots = [ActivitySlot(layer, listed=listed)]
    if isinstance(layer, keras.layers.Bidirectional):
        slots += [
            ActivitySlot(layer, layer.forward_layer, listed),
            ActivitySlot(layer, layer.backward_layer, listed),
        ]
    return slots


_CONV_RNN = (keras.layers.ConvLSTM1D, keras.layers.ConvLSTM2D, keras.layers.ConvLSTM3D)


def returns_sequences(layer):
    """Recurrent layers (also Bidirectional) whose output is one (batch, time,
    units) sequence: return_sequences=True, not ConvLSTM (4-D or 5-D)."""
    if isinstance(layer, keras.layers.Bidirectional):
        layer = layer.forward_layer
    return (
        isinstance(layer, keras.layers.RNN)
        and not isinstance(layer, _CONV_RNN)
        and bool(layer.return_sequences)
    )


def _own_variables(owner):
    return _keras.own_variables(owner)


def _own_variable(owner, name):
    for variable in _own_variables(owner):
        if variable.name == name:
            return variable
    return None


def _entry(layer):
    """The table entry of `layer`'s class: `(owner attribute, weights)`, or None."""
    for classes, owner_attribute, weights in (*_REGISTERED, *TABLE):
        if isinstance(layer, classes):
            return owner_attribute, weights
    return None


def _table_slots(layer, owner, listed):
    """The slots `TABLE` knows on `owner` (`layer` itself, or the layer a
    TimeDistributed or Bidirectional wraps); `None` when its class is unknown."""
    entry = _entry(owner)
    if entry is None:
        return None
    owner_attribute, weights = entry
    holder = getattr(owner, owner_attribute) if owner_attribute else owner
    slots = []
    for name, attribute, kind in weights:
        variable = _own_variable(holder, name)
        if variable is not None and not hasattr(holder, attribute):
            raise ValueError(
                f"keras_regs.register_layer({type(owner).__name__}, ...) declares "
                f"that attribute {attribute!r} saves the penalty of weight {name!r}, "
                f"but layer {owner.name!r} has no attribute {attribute!r}. Declare "
                "the attribute its constructor takes and get_config saves."
            )
        if variable is not None:
            config = ((holder, attribute),)
            slots.append(WeightSlot(layer, variable, config, kind, native=listed))
    return slots


def _kind(variable, known=None):
    """A weight's kind: the table's, else by its name and shape."""
    if known is not None:
        return known
    if "bias" in variable.name:
        return BIAS
    if len(variable.shape) > 1:
        return KERNEL
    return OTHER


def _generic_slots(layer, skip=()):
    """Every own variable of `layer` not in `skip`, on the variable alone."""
    entry = _entry(layer)
    known = {}  # variable name -> (attribute, kind), for the layer's own weights
    if entry is not None and not entry[0]:
        known = {name: (attribute, kind) for name, attribute, kind in entry[1]}
    skip = {id(v) for v in skip}
    slots = []
    for v in _own_variables(layer):
        if id(v) in skip:
            continue
        attribute, kind = known.get(v.name, (None, None))
        # the attribute too (as `build` would copy it), though no saved config
        # holds it here: the model's record does
        config = ((layer, attribute),) if attribute else ()
        slots.append(WeightSlot(layer, v, config, _kind(v, kind), native=False))
    return slots


def _skipped(layer):
    from keras_regs.model.graph import inserted_by

    return isinstance(layer, keras.Model) or inserted_by(layer) is not None


def _deep_slots(layer):
    """`layer`'s variables and its sublayers', each on the variable alone."""
    slots = _generic_slots(layer)
    for sublayer in _keras.sublayers(layer):
        if not _skipped(sublayer):
            slots += _deep_slots(sublayer)
    return slots


def _covered(slots):
    return [slot.variable for slot in slots]


def weight_slots(layer, listed=True):
    """Every weight slot of `layer`, its sublayers' included (each once).

    `listed`: whether `layer`'s config is saved as such (a layer of a Functional
    or Sequential model's config); only then do its slots get config attributes.
    """
    if not listed:
        return _unique(_deep_slots(layer))
    if isinstance(layer, keras.layers.TimeDistributed):  # saves the inner layer
        slots = _table_slots(layer, layer.layer, listed)
        return _unique(_deep_slots(layer) if slots is None else slots)
    if isinstance(layer, keras.layers.Bidirectional):
        forward = _table_slots(layer, layer.forward_layer, listed)
        backward = _table_slots(layer, layer.backward_layer, listed)
        if forward is None or backward is None:
            return _unique(_deep_slots(layer))
        return _unique(forward + backward)
    if isinstance(layer, keras.layers.MultiHeadAttention):
        slots = []
        for projection in _keras.MHA_PROJECTIONS:
            dense = getattr(layer, projection, None)
            if dense is None:
                continue
            for name, kind in (("kernel", KERNEL), ("bias", BIAS)):
                variable = _own_variable(dense, name)
                if variable is not None:
                    config = (
                        (layer, _keras.MHA_REGULARIZER_ATTRIBUTES[name]),
                        (dense, f"{name}_regularizer"),
                    )
                    slots.append(WeightSlot(layer, variable, config, kind))
        for dense in _keras.sublayers(layer):  # LoRA factors, a subclass's extra layers
            if not _skipped(dense):
                slots += _deep_slots(dense)
        return _unique(slots)
    slots = _table_slots(layer, layer, listed)
    if slots is None:  # a class no table declares: on the variables alone
        slots = _unique(_deep_slots(layer))
        for slot in slots:
            slot.undeclared = slot.layer is layer
        return slots
    if _entry(layer)[0]:  # the weights live on an inner object (an RNN's cell)
        return _unique(slots)
    # LoRA factors and any other variable the table does not name
    slots += _generic_slots(layer, skip=_covered(slots))
    for sublayer in _keras.sublayers(layer):
        if not _skipped(sublayer):
            slots += _deep_slots(sublayer)
    return _unique(slots)


def _unique(slots):
    seen, result = set(), []
    for slot in slots:
        if id(slot.variable) not in seen:
            seen.add(id(slot.variable))
            result.append(slot)
    return result


def owns_kernel(layer, listed=True):
    """Whether `layer` (or a sublayer) has a kernel-like weight, trainable or
    not: a frozen layer (a LoRA base) is still a hidden layer, so that the same
    call inserts the same layers whatever is frozen (and a reload matches)."""
    return any(s.kind == KERNEL for s in weight_slots(layer, listed))


# Layer classes declared with `register_layer`, looked up before `TABLE`.
_REGISTERED = []
LayerT = TypeVar("LayerT", bound=keras.layers.Layer)


def register_layer(
    cls: type[LayerT], weights: dict[str, str], owner: str | None = None
) -> type[LayerT]:
    """Declare a custom layer class: its weights and the config attributes that
    save each one's penalty (the `TABLE` of built-in layers, for your own).

    `regularize_model` then attaches weight penalties to the class's layers
    through these attributes, so that the layer's own config saves them, as it
    does for Keras' `Dense`. A class that is not declared still gets its
    penalties (on the variables, kept through the model's record, see
    <https://keras-regs.readthedocs.io/en/latest/kerashub.html>), but its own config
    does not hold them.

    Args:
        cls: a `keras.layers.Layer` subclass.
        weights: `{variable name: config attribute}`, for example
            `{"kernel": "kernel_regularizer", "bias": "bias_regularizer"}`. The
            attribute must be a constructor argument saved by `get_config`, and
            `build` must pass it to `add_weight(regularizer=...)`. A name
            containing "bias" is a bias (penalized only with
            `include_bias=True`); others are kernels.
        owner: the attribute holding the object that owns the variables and
            attributes (`"cell"` for an RNN), or `None` for the layer itself.

    Returns:
        `cls`, unchanged.

    Example:

    ```python
    @keras.saving.register_keras_serializable(package="my_project")
    class MyDense(keras.layers.Layer):
        def __init__(self, units, w_regularizer=None, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.w_regularizer = keras.regularizers.get(w_regularizer)

        def build(self, input_shape):
            self.w = self.add_weight(
                shape=(input_shape[-1], self.units),
                name="w",
                regularizer=self.w_regularizer,
            )

        def call(self, x):
            return keras.ops.matmul(x, self.w)

        def get_config(self):
            return {
                **super().get_config(),
                "units": self.units,
                "w_regularizer": keras.regularizers.serialize(self.w_regularizer),
            }

    keras_regs.register_layer(MyDense, {"w": "w_regularizer"})
    model = keras.Sequential([keras.Input((4,)), MyDense(3, name="mine")])
    model = keras_regs.regularize_model(model, weight_l2=1e-4)
    config = model.get_layer("mine").get_config()  # saves the penalty
    assert config["w_regularizer"]["class_name"] == "Penalties"
    ```
    """
    if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
        raise TypeError(
            "Invalid type for argument `cls`. Expected a keras.layers.Layer "
            f"subclass. Received: cls={cls!r}"
        )
    if not isinstance(weights, dict) or not weights:
        raise TypeError(
            "Invalid type for argument `weights`. Expected a non-empty dict "
            f"{{variable name: config attribute}}. Received: weights={weights!r}"
        )
    for name, attribute in weights.items():
        if not (isinstance(name, str) and isinstance(attribute, str)):
            raise TypeError(
                "Invalid type for argument `weights`: keys and values must be "
                f"strings. Received: weights={weights!r}"
            )
    if owner is not None and not isinstance(owner, str):
        raise TypeError(
            "Invalid type for argument `owner`. Expected an attribute name or "
            f"None. Received: owner={owner!r}"
        )
    entry = tuple(
        (name, attribute, BIAS if "bias" in name else KERNEL)
        for name, attribute in weights.items()
    )
    _REGISTERED[:] = [r for r in _REGISTERED if r[0] != (cls,)]
    _REGISTERED.insert(0, ((cls,), owner or "", entry))
    return cls
