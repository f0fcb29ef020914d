"""keras_regs: regularization for Keras 3, per layer or for a whole model at once."""

from keras_regs import layers, regularizers
from keras_regs._validation import ArgumentTypeError, KerasRegsWarning
from keras_regs.model import (
    RegularizationMixin,
    bind_schedules,
    layer_output,
    log_penalties,
    preview,
    preview_rows,
    register_layer,
    regularization_loss,
    regularize_model,
    strip_regularization,
    summary,
    summary_rows,
)
from keras_regs.plot import plot_penalties
from keras_regs.regularizers import (
    HiddenL1,
    HiddenL2,
    RecurrentNorm,
    RecurrentState,
    Regularizer,
    WeightL1,
    WeightL2,
)

__version__ = "0.2.0"

__all__ = [
    "ArgumentTypeError",
    "KerasRegsWarning",
    "HiddenL1",
    "HiddenL2",
    "RecurrentNorm",
    "RecurrentState",
    "RegularizationMixin",
    "Regularizer",
    "WeightL1",
    "WeightL2",
    "bind_schedules",
    "layer_output",
    "layers",
    "log_penalties",
    "plot_penalties",
    "preview",
    "preview_rows",
    "regularization_loss",
    "register_layer",
    "regularize_model",
    "regularizers",
    "strip_regularization",
    "summary",
    "summary_rows",
]
