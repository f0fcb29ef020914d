"""JAX keras.distribution on 2 host CPU devices against one device.

DataParallel (the batch split over the devices) and ModelParallel (every kernel
split over the devices along its output axis, the batch whole). Prints one JSON
line: fit's losses and the largest weight difference for each, how the batch and
a kernel were laid out, and the regularization_loss of each model.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras  # noqa: E402
from common import fitted, weight_difference  # noqa: E402

import keras_regs  # noqa: E402

one, one_losses = fitted()
devices = keras.distribution.list_devices("cpu")
distribution = keras.distribution.DataParallel(devices=devices)
keras.distribution.set_distribution(distribution)
parallel, parallel_losses = fitted()
layout = distribution.get_data_layout((16, 5))

mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"], devices)
layout_map = keras.distribution.LayoutMap(mesh)
layout_map[".*kernel"] = (None, "model")
keras.distribution.set_distribution(
    keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
)
sharded, sharded_losses = fitted()
kernel = sharded.get_layer("dense_0").kernel.value
print(
    json.dumps(
        {
            "devices": len(devices),
            "data_axes": list(layout.axes),
            "fit_one": one_losses,
            "fit_parallel": parallel_losses,
            "weights": weight_difference(one, parallel),
            "penalty_one": float(keras_regs.regularization_loss(one)),
            "penalty_parallel": float(keras_regs.regularization_loss(parallel)),
            "fit_model_parallel": sharded_losses,
            "model_parallel_weights": weight_difference(one, sharded),
            "kernel_shards": len(kernel.addressable_shards),
            "kernel_shard_shape": list(kernel.addressable_shards[0].data.shape),
            "penalty_model_parallel": float(keras_regs.regularization_loss(sharded)),
        }
    )
)
