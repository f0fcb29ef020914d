"""TensorFlow MirroredStrategy on 2 logical CPUs against one device.

Prints one JSON line: fit's losses on one device and mirrored, the largest weight
difference after fit, after a custom loop using keras_regs.regularization_loss,
and after the same loop adding the raw sum(model.losses).
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras  # noqa: E402
from common import (  # noqa: E402
    BATCH,
    EPOCHS,
    LEARNING_RATE,
    build,
    data,
    fitted,
    weight_difference,
)

import keras_regs  # noqa: E402

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def custom_loop(penalty):
    """The tf.distribute custom-loop recipe, with `penalty(model)` added."""
    with strategy.scope():
        model = build()
        optimizer = keras.optimizers.SGD(LEARNING_RATE)
        optimizer.build(model.trainable_variables)
    x, y = data()
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    )

    @tf.function
    def step(xb, yb):
        def replica_step(xb, yb):
            with tf.GradientTape() as tape:
                predictions = model(xb, training=True)
                loss = tf.nn.compute_average_loss(
                    keras.losses.mean_squared_error(yb, predictions),
                    global_batch_size=BATCH,
                )
                loss += penalty(model)
            variables = model.trainable_variables
            gradients = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(gradients, variables, strict=True))

        strategy.run(replica_step, args=(xb, yb))

    for _ in range(EPOCHS):
        for xb, yb in dataset:
            step(xb, yb)
    return model


one_logs, mirrored_logs = {}, {}
one, one_losses = fitted(one_logs)
with strategy.scope():
    mirrored, mirrored_losses = fitted(mirrored_logs)
helper = custom_loop(keras_regs.regularization_loss)
raw = custom_loop(lambda model: tf.add_n(model.losses))
print(
    json.dumps(
        {
            "replicas": strategy.num_replicas_in_sync,
            "fit_one": one_losses,
            "fit_mirrored": mirrored_losses,
            "fit_weights": weight_difference(one, mirrored),
            "logs_one": one_logs,
            "logs_mirrored": mirrored_logs,
            "loop_weights": weight_difference(one, helper),
            "raw_loop_weights": weight_difference(one, raw),
        }
    )
)
