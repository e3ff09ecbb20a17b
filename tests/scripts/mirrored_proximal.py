"""Proximal under tf.distribute.MirroredStrategy on two logical CPUs.

Prints one JSON line: the weights after full-batch training on one device and on
two replicas, and the penalty in the reported loss. Run by tests/test_distribute.py.
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
x = rng.normal(size=(64, 6)).astype("float32")
y = (x[:, :2] @ np.array([[1.5], [-2.0]]) + 0.1 * rng.normal(size=(64, 1))).astype("float32")


def train(strategy, steps=40):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(1, kernel_regularizer=keras_reg.L1(0.2))]
        )
        model.compile(keras_reg.Proximal(keras.optimizers.Adam(0.05)), "mse")
    w0 = model.layers[0].kernel.numpy()
    first = model.evaluate(x, y, batch_size=64, verbose=0)
    # `steps` full-batch steps in one epoch (an epoch of fit costs more than its one step).
    xs, ys = np.tile(x, (steps, 1)), np.tile(y, (steps, 1))
    history = model.fit(xs, ys, batch_size=64, epochs=1, shuffle=False, verbose=0)
    return {
        "w0": w0.ravel().tolist(),
        "w": model.layers[0].kernel.numpy().ravel().tolist(),
        "first_loss": float(first),
        "loss": history.history["loss"],
        "iterations": int(model.optimizer.iterations.numpy()),
        "replicas": strategy.num_replicas_in_sync,
    }


devices = ["/cpu:0", "/cpu:1"]
result = {
    "single": train(tf.distribute.OneDeviceStrategy("/cpu:0")),
    "mirrored": train(tf.distribute.MirroredStrategy(devices)),
}
print("RESULT" + json.dumps(result))
