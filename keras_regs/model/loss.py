"""regularization_loss: the penalties of a model, for custom training loops."""

from __future__ import annotations

import keras
from keras import ops

from keras_regs import _backend
from keras_regs._types import Tensor
from keras_regs.model.graph import check_model


def regularization_loss(model: keras.Model) -> Tensor:
    """The model's penalties as one float32 scalar, scaled for the strategy.

    The sum of `model.losses` (weight penalties, and the activity penalties and
    `add_loss` terms of the model's last call), each in float32, divided by the
    number of replicas when called inside a TensorFlow `tf.distribute` strategy,
    exactly as Keras' `fit` does. Add it to the data loss in a custom training
    loop, after the forward pass:

    ```python
    import tensorflow as tf

    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(1, kernel_regularizer=keras_regs.WeightL2(1e-4)),
    ])
    x, y = np.random.rand(8, 4), np.random.rand(8, 1)
    GLOBAL_BATCH = 8  # the batch size over all replicas
    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)
        loss = tf.nn.compute_average_loss(
            keras.losses.mean_squared_error(y, y_pred),
            global_batch_size=GLOBAL_BATCH,
        )
        loss += keras_regs.regularization_loss(model)
    gradients = tape.gradient(loss, model.trainable_weights)
    ```

    Under `tf.distribute.MirroredStrategy` each replica then adds `1 / replicas`
    of the penalty and the summed gradients count it once: the loop matches `fit`.
    Adding the raw `sum(model.losses)` instead counts it once per replica. On JAX
    and PyTorch, and outside any strategy, it is the plain sum.

    Args:
        model: a `keras.Model` (or any built Keras model) whose `losses` to add.

    Returns:
        A float32 scalar tensor (zero when the model has no penalties).
    """
    check_model(model)
    terms = [ops.sum(ops.cast(loss, "float32")) for loss in model.losses]
    if not terms:
        return ops.zeros((), "float32")
    total = terms[0] if len(terms) == 1 else ops.sum(ops.stack(terms))
    return _backend.scale_for_replicas(total)
