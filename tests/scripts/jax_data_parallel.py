"""Proximal under keras.distribution.DataParallel over two host CPU devices (JAX).

Prints one JSON line with the weights and losses with and without DataParallel.
"""

import json
import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["KERAS_BACKEND"] = "jax"

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_reg  # noqa: E402

rng = np.random.default_rng(0)
x = rng.normal(size=(64, 6)).astype("float32")
y = (x[:, :2] @ np.array([[1.5], [-2.0]]) + 0.1 * rng.normal(size=(64, 1))).astype("float32")


def train():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(1, kernel_regularizer=keras_reg.L1(0.2))]
    )
    model.compile(keras_reg.Proximal(keras.optimizers.Adam(0.05)), "mse")
    # 40 full-batch steps in one epoch (an epoch of fit costs more than its one step).
    xs, ys = np.tile(x, (40, 1)), np.tile(y, (40, 1))
    history = model.fit(xs, ys, batch_size=64, epochs=1, shuffle=False, verbose=0)
    return keras.ops.convert_to_numpy(model.layers[0].kernel).ravel().tolist(), history.history[
        "loss"
    ]


single_w, single_loss = train()
devices = jax.devices("cpu")
keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
multi_w, multi_loss = train()
print(
    "RESULT"
    + json.dumps(
        {"devices": len(devices), "single": [single_w, single_loss], "multi": [multi_w, multi_loss]}
    )
)
