"""Pruning under tf.distribute.MirroredStrategy on two logical CPUs.

Prints one JSON line: the kernels after full-batch training on one device and on two
replicas, with the same schedule. Run by tests/test_pruning.py.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

import keras_reg  # noqa: E402

rng = np.random.default_rng(0)
x = rng.normal(size=(64, 12)).astype("float32")
y = (x[:, :3].sum(axis=1) > 0).astype("int32")


def train(strategy, steps=12):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((12,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)]
        )
        schedule = keras_reg.PolynomialDecay(0.0, 0.8, begin_step=2, end_step=8, frequency=3)
        keras_reg.prune_low_magnitude(model, schedule)
        model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    # `steps` full-batch steps in one epoch (an epoch of fit costs more than its one step).
    xs, ys = np.tile(x, (steps, 1)), np.tile(y, steps)
    model.fit(xs, ys, batch_size=64, epochs=1, shuffle=False, verbose=0)
    return {
        "kernels": [layer.kernel.numpy().ravel().tolist() for layer in model.layers],
        "iterations": int(model.optimizer.iterations.numpy()),
        "replicas": strategy.num_replicas_in_sync,
    }


result = {
    "single": train(tf.distribute.OneDeviceStrategy("/cpu:0")),
    "mirrored": train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])),
}
print("RESULT" + json.dumps(result))
