"""`regularization_path`: warm starts against independent fits from scratch.

The docs' network (30 inputs -> Dense(16, relu) -> Dense(1, sigmoid), `L1` on the first kernel,
`Proximal(Adam(1e-2))`, batch 32) on the training part of `load_breast_cancer`, 12 strengths from
`max_strength` down to 1e-3 of it. The path trains `epochs` epochs at each strength, each point
starting where the previous one ended. Each cold fit starts from the same initial weights and
trains at one strength until its epoch loss (data loss plus penalty, as `fit` reports it) reaches
the path's last-epoch loss at that strength, up to `cold_cap` times `epochs`. The cost compared
is the whole path against the 12 cold fits with those epoch counts: epochs (exact) and time
(interleaved rounds).
"""

import time

import keras
import numpy as np

import keras_reg
from benchmarks._harness import Ratio, interleave, table

N_STRENGTHS = 12


def _data():
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer()
    x, _, y, _ = train_test_split(
        data.data, data.target, test_size=0.25, random_state=0, stratify=data.target
    )
    return StandardScaler().fit_transform(x).astype("float32"), y.astype("float32")


def _model(strength, weights=None):
    model = keras.Sequential(
        [
            keras.Input((30,)),
            keras.layers.Dense(16, activation="relu", kernel_regularizer=keras_reg.L1(strength)),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    if weights is not None:
        model.set_weights(weights)
    model.compile(keras_reg.Proximal(keras.optimizers.Adam(1e-2)), "binary_crossentropy")
    return model


class _StopAt(keras.callbacks.Callback):
    def __init__(self, target):
        super().__init__()
        self.target = target
        self.epochs = 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs = epoch + 1
        if logs["loss"] <= self.target:
            self.model.stop_training = True


def warm_vs_cold(cfg, log):
    epochs = 4 if cfg.quick else 10
    cap = 6
    x, y = _data()
    keras.utils.set_random_seed(0)
    initial = _model(0.01).get_weights()

    def warm():
        keras.utils.set_random_seed(0)
        return keras_reg.regularization_path(
            _model(0.01, initial),
            x,
            y,
            n_strengths=N_STRENGTHS,
            epochs=epochs,
            batch_size=32,
            verbose=0,
        )

    path = warm()
    targets = [row["objective"] for row in path.rows]
    needed, reached = [], []
    for strength, target in zip(path.strengths, targets, strict=True):
        keras.utils.set_random_seed(0)
        stop = _StopAt(target)
        history = _model(strength, initial).fit(
            x, y, epochs=cap * epochs, batch_size=32, verbose=0, callbacks=[stop]
        )
        needed.append(stop.epochs)
        reached.append(history.history["loss"][-1] <= target)

    def cold():
        for strength, count in zip(path.strengths, needed, strict=True):
            keras.utils.set_random_seed(0)
            _model(strength, initial).fit(x, y, epochs=count, batch_size=32, verbose=0)

    rows = [
        [f"{s:.4g}", f"{t:.4f}", str(epochs), f"{n}" + ("" if ok else " (cap, not reached)")]
        for s, t, n, ok in zip(path.strengths, targets, needed, reached, strict=True)
    ]
    log(
        table(
            ("strength", "path loss", "path epochs", "cold epochs to reach it"),
            rows,
        )
    )
    warm_epochs, cold_epochs = epochs * N_STRENGTHS, sum(needed)
    log(
        f"epochs: path {warm_epochs}, cold fits {cold_epochs} "
        f"(ratio {warm_epochs / cold_epochs:.3f}); {sum(not r for r in reached)} cold fit(s) "
        f"stopped at the cap of {cap * epochs} epochs without reaching the path's loss"
    )
    start = time.perf_counter()
    times = interleave(
        {"path": warm, "cold": cold},
        rounds=1 if cfg.quick else 3,
        warmup=0,
        groups=[("path", "cold")],
    )
    log(
        table(
            ("variant", "median s"),
            [[name, f"{np.median(t):.2f}"] for name, t in times.items()],
        )
        + f"\n(timed in {time.perf_counter() - start:.0f} s)"
    )
    note = (
        f"{N_STRENGTHS} strengths, {epochs} epochs each; cold fits trained to the path's loss: "
        f"{cold_epochs} epochs against {warm_epochs}"
    )
    return [
        Ratio.from_times(
            "path",
            "regularization_path (warm starts) / 12 fits from scratch to the same losses",
            times,
            "path",
            "cold",
            goal=0.5,
            note=note,
        )
    ]
