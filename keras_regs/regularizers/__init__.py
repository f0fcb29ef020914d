"""Penalties: `keras.regularizers.Regularizer` subclasses, and the keyword registry."""

from keras_regs.regularizers.base import Regularizer, keywords, lookup
from keras_regs.regularizers.hidden_l1 import HiddenL1
from keras_regs.regularizers.hidden_l2 import HiddenL2
from keras_regs.regularizers.penalties import Penalties
from keras_regs.regularizers.recurrent_norm import RecurrentNorm
from keras_regs.regularizers.recurrent_state import RecurrentState
from keras_regs.regularizers.weight_l1 import WeightL1
from keras_regs.regularizers.weight_l2 import WeightL2

__all__ = [
    "HiddenL1",
    "HiddenL2",
    "Penalties",
    "RecurrentNorm",
    "RecurrentState",
    "Regularizer",
    "WeightL1",
    "WeightL2",
    "keywords",
    "lookup",
]
