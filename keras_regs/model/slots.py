"""Where a penalty can go, and how it is set so that it counts and is saved.

A weight penalty must be set in two places (see docs/why-per-layer.md): on the
variable (`variable.regularizer`, which the trainer reads) and on the layer's
config attribute (`kernel_regularizer`, ..., which `get_config` saves and `build`
copies back onto the new variable after loading). `TABLE` says, for each supported
layer class, which weights it has and which attribute saves each one's penalty.
A layer class that is not in it gets no weight penalty: its kernel-like weights
are reported as not persistable (`unsupported_weights`), never silently skipped.
"""

import dataclasses

import keras

KERNEL, BIAS, NORMALIZATION = "kernel", "bias", "normalization"

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
_MHA_PROJECTIONS = ("_query_dense", "_key_dense", "_value_dense", "_output_dense")
_MHA_ATTRIBUTES = {"kernel": "_kernel_regularizer", "bias": "_bias_regularizer"}

# Layers whose `__init__` drops `activity_regularizer`, so a reload loses it.
ACTIVITY_NOT_SAVED = (keras.layers.SimpleRNN,)


@dataclasses.dataclass(eq=False)
class WeightSlot:
    """One weight of one layer and the attributes that save its penalty.

    `layer` is the layer of the model (a Bidirectional, not its inner LSTM);
    `config` lists `(object, attribute)` pairs; the first one is read back, all are
    written. Slots sharing their first pair (MultiHeadAttention's projections)
    must hold the same penalty to be saved.
    """

    layer: keras.layers.Layer
    variable: keras.Variable
    config: tuple
    kind: str

    @property
    def path(self):
        return self.variable.path

    @property
    def group(self):
        owner, attribute = self.config[0]
        return id(owner), attribute

    def get(self):
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
    def saved(self):
        return not isinstance(self.owner, ACTIVITY_NOT_SAVED)

    def get(self):
        return self.owner.activity_regularizer

    def set(self, regularizer):
        self.owner.activity_regularizer = regularizer


def activity_slots(layer):
    """The layer's own output, and each direction's inside a Bidirectional."""
    slots = [ActivitySlot(layer)]
    if isinstance(layer, keras.layers.Bidirectional):
        slots += [
            ActivitySlot(layer, layer.forward_layer),
            ActivitySlot(layer, layer.backward_layer),
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


def _own_variable(owner, name):
    for variable in owner._trainable_variables + owner._non_trainable_variables:
        if variable.name == name:
            return variable
    return None


def _table_slots(layer, owner):
    for classes, owner_attribute, weights in TABLE:
        if isinstance(owner, classes):
            holder = getattr(owner, owner_attribute) if owner_attribute else owner
            slots = []
            for name, attribute, kind in weights:
                variable = _own_variable(holder, name)
                if variable is not None:
                    slots.append(
                        WeightSlot(layer, variable, ((holder, attribute),), kind)
                    )
            return slots
    return None


def weight_slots(layer):
    """The weight slots of `layer`, or `None` when its class is not supported."""
    if isinstance(layer, keras.layers.TimeDistributed):  # saves the inner layer
        return _table_slots(layer, layer.layer)
    if isinstance(layer, keras.layers.Bidirectional):
        forward = _table_slots(layer, layer.forward_layer)
        backward = _table_slots(layer, layer.backward_layer)
        return None if forward is None or backward is None else forward + backward
    if isinstance(layer, keras.layers.MultiHeadAttention):
        slots = []
        for projection in _MHA_PROJECTIONS:
            dense = getattr(layer, projection, None)
            if dense is None:
                continue
            for name, kind in (("kernel", KERNEL), ("bias", BIAS)):
                variable = _own_variable(dense, name)
                if variable is not None:
                    config = (
                        (layer, _MHA_ATTRIBUTES[name]),
                        (dense, f"{name}_regularizer"),
                    )
                    slots.append(WeightSlot(layer, variable, config, kind))
        return slots
    return _table_slots(layer, layer)


def unsupported_weights(layer):
    """Trainable kernel-like weights of a layer class that `TABLE` does not know."""
    if isinstance(layer, keras.Model) or weight_slots(layer) is not None:
        return []
    return [
        v for v in layer.trainable_weights if len(v.shape) > 1 and "bias" not in v.name
    ]
