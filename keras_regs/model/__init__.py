"""The model-level helper: one regularization spec for a whole model."""

from keras_regs.model.graph import layer_output
from keras_regs.model.logs import bind_schedules, log_penalties
from keras_regs.model.loss import regularization_loss
from keras_regs.model.mixin import RegularizationMixin
from keras_regs.model.regularize import regularize_model, strip_regularization
from keras_regs.model.report import preview, preview_rows, summary, summary_rows
from keras_regs.model.slots import register_layer

__all__ = [
    "bind_schedules",
    "layer_output",
    "log_penalties",
    "RegularizationMixin",
    "preview",
    "preview_rows",
    "regularization_loss",
    "register_layer",
    "regularize_model",
    "strip_regularization",
    "summary",
    "summary_rows",
]
