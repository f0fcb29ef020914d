"""Everything in keras_regs that depends on the Keras backend, in one place.

- `replicas()` and `scale_for_replicas(value)`: under TensorFlow's
  `tf.distribute`, each replica computes the model's penalties on its own copy of
  the weights and the gradients are summed across replicas, so a penalty added
  in full on every replica counts `num_replicas` times. Keras' `fit` divides each
  replica's penalties by the number of replicas; a custom loop must do the same.
  JAX (`keras.distribution`) and PyTorch run one program over the global batch:
  nothing to scale.
- `host_value(variable)` (JAX): a variable's current value read from the host
  when the jitted function runs, not when it is traced (for a variable that is
  not part of the function's state, such as the optimizer's step in a test step).
- `has_jvp()`: whether `keras.ops.jvp` exists for the backend (Contractive's
  fallback for layers without a closed form).
"""

import keras
from keras import ops


def backend():
    return keras.backend.backend()


def replicas():
    """The number of replicas a penalty is computed on, once each."""
    if backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def scale_for_replicas(value):
    """`value / replicas()`, what each replica adds so the sum counts once."""
    count = replicas()
    if count == 1:
        return value
    return ops.multiply(value, ops.cast(1.0 / count, value.dtype))


def has_jvp():
    return hasattr(ops, "jvp")


def host_value(variable):
    """The value `variable` holds when the (jitted) JAX function runs."""
    import jax
    import numpy as np

    dtype = jax.numpy.asarray(variable.value).dtype

    def read():
        return np.asarray(variable.value, dtype=dtype)

    return jax.pure_callback(read, jax.ShapeDtypeStruct((), dtype))
