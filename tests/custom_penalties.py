"""The seeds' custom regularizer, written as a keras_regs.Regularizer subclass.

theanets' guide defines `WeightInverse`, a penalty that pushes every column of a
weight matrix away from zero norm: `sum_j 1 / sum_i W_ij**2`. Kept in its own
module so a fresh Python process can import it before loading a saved model.
"""

import keras
from keras import ops

import keras_regs


@keras.saving.register_keras_serializable(package="keras_regs_tests")
class WeightInverse(keras_regs.Regularizer):
    target = "weights"

    def call(self, x):
        return 1 / ops.sum(x * x, axis=0)
