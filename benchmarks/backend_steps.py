"""`Proximal(SGD)` / `Proximal(Adam)` train steps against the plain optimizer on any backend.

Run as a child process of `benchmarks.run` (section `backends`) with the
interpreter of a virtualenv that has the backend, KERAS_BACKEND set:

    KERAS_BACKEND=jax .venv-jax/bin/python -m benchmarks.backend_steps ROUNDS SEED QUICK

It prints one JSON line: the per-round durations of every variant. A timing is
`steps` calls of `model.train_on_batch` on one fixed batch (the same Python
overhead on both sides of a ratio), variants interleaved as in `_harness`.
"""

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_reg  # noqa: E402
from benchmarks._harness import interleave  # noqa: E402

STRENGTH = 1e-4


def build(optimizer, layers, units, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((units,))]
        + [
            keras.layers.Dense(units, activation="relu", kernel_regularizer=keras_reg.L1(STRENGTH))
            for _ in range(layers)
        ]
        + [keras.layers.Dense(10, kernel_regularizer=keras_reg.L1(STRENGTH))]
    )
    model.compile(
        optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def main(rounds, seed, quick):
    layers, units, batch, steps = (3, 256, 64, 10) if quick else (6, 512, 64, 10)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, units)).astype("float32")
    y = rng.integers(0, 10, size=(batch,)).astype("int32")
    optimizers = {
        "SGD": lambda: keras.optimizers.SGD(1e-3),
        "Proximal(SGD)": lambda: keras_reg.Proximal(keras.optimizers.SGD(1e-3)),
        "Adam": lambda: keras.optimizers.Adam(1e-4),
        "Proximal(Adam)": lambda: keras_reg.Proximal(keras.optimizers.Adam(1e-4)),
    }

    def case(model):
        def run():
            for _ in range(steps):
                loss = model.train_on_batch(x, y)
            float(loss)

        return run

    cases = {name: case(build(make(), layers, units)) for name, make in optimizers.items()}
    groups = [("Proximal(SGD)", "SGD"), ("Proximal(Adam)", "Adam")]
    times = interleave(cases, rounds, warmup=2, seed=seed, groups=groups)
    print(
        "RESULT"
        + json.dumps(
            {
                "backend": keras.backend.backend(),
                "model": f"MLP {layers}xDense({units}), batch {batch}, {steps} steps per timing",
                "times": times,
                "versions": {
                    "keras": keras.__version__,
                    keras.backend.backend(): _backend_version(),
                },
            }
        )
    )


def _backend_version():
    module = __import__({"jax": "jax", "torch": "torch"}.get(keras.backend.backend(), "numpy"))
    return module.__version__


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "quick")
