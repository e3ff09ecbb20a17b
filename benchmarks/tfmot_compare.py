"""`make bench-tfmot`: keras_reg's pruning on Keras 3 side by side with TFMOT on tf_keras.

    python -m benchmarks.tfmot_compare --tfmot-python .venv-tfmot/bin/python
    python -m benchmarks.tfmot_compare --tfmot-python ... --quick   # 1 seed, 3 epochs

The same small CNN on scikit-learn's 8x8 digits (Conv2D 16 - Conv2D 32 - MaxPool -
Dense 64 - Dense 10, Adam 1e-3, batch 32, 20 epochs), pruned with
`PolynomialDecay(0, s, begin_step=0, end_step=60% of the steps, frequency=10)` at
s = 0.5, 0.75, 0.9, and unpruned, for 3 seeds: TFMOT 0.8.1 on tf_keras (its own
virtualenv, `--tfmot-python`) and keras_reg on Keras 3 (TensorFlow backend, this
interpreter). Both prune every Conv2D and Dense kernel, as TFMOT's
`prune_low_magnitude(model)` does. A third run, keras_reg's "first conv and
classifier dense", leaves the two smallest kernels (the first conv's 144 weights,
the classifier's 640) dense and gives the two big kernels a higher target, so that
the model has as many zeros in all as in the other runs (the same budget, and the
same kernel sparsity up to rounding).

Two long-lived worker processes, one per side, take the runs in turns (TFMOT, then
keras_reg, then TFMOT, ... with the order swapped every run), so a slow spell of
the shared machine hits both sides. An epoch's time is the median over epochs 2-20
of the training epoch (no validation inside `fit`); the ratio is that time over
the unpruned model's, same side, same seed, then the median over seeds.
Sparsity is the fraction of exact zeros over all pruned kernels at the end
(after `strip_pruning` for TFMOT, whose masked weights are non-zero between
forward passes).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TARGETS = (0.0, 0.5, 0.75, 0.9)
EPOCHS, BATCH, FREQUENCY = 20, 32, 10


def data(seed=0):
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    return train_test_split(
        x, digits.target.astype(np.int32), test_size=0.25, random_state=0, stratify=digits.target
    )


def build(keras):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def epoch_timer(keras):
    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._start)

    return EpochTimer()


def kernel_sparsity(model):
    import numpy as np

    kernels = [np.asarray(w) for w in model.weights if w.name.split("/")[-1].startswith("kernel")]
    return float(sum((k == 0).sum() for k in kernels) / sum(k.size for k in kernels))


def run_tfmot(job):
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    x_train, x_val, y_train, y_val = data()
    tf.keras.utils.set_random_seed(job["seed"])
    model = build(keras)
    callbacks = [epoch_timer(keras)]
    if job["target"]:
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            0.0, job["target"], 0, job["end_step"], frequency=FREQUENCY
        )
        model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
        callbacks.append(tfmot.sparsity.keras.UpdatePruningStep())
    model.compile(
        keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(
        x_train, y_train, batch_size=BATCH, epochs=job["epochs"], verbose=0, callbacks=callbacks
    )
    if job["target"]:
        model = tfmot.sparsity.keras.strip_pruning(model)
        model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    _, accuracy = model.evaluate(x_val, y_val, verbose=0)
    return accuracy, kernel_sparsity(model), callbacks[0].times


def run_keras_reg(job):
    import keras
    import numpy as np

    import keras_reg

    x_train, x_val, y_train, y_val = data()
    keras.utils.set_random_seed(job["seed"])
    model = build(keras)
    if job["target"] and job.get("variant") == "inner":
        # The first conv (144 weights) and the classifier (640) stay dense; the two big
        # kernels take their zeros, so the model has as many zeros as in "every kernel".
        inner = [model.layers[1], model.layers[4]]
        total = sum(int(np.prod(w.shape)) for w in model.weights if w.path.endswith("kernel"))
        size = sum(int(np.prod(layer.kernel.shape)) for layer in inner)
        final = job["target"] * total / size
        schedule = keras_reg.PolynomialDecay(0.0, final, 0, job["end_step"], frequency=FREQUENCY)
        keras_reg.prune_low_magnitude(model, schedule, layers=inner)
    elif job["target"]:
        schedule = keras_reg.PolynomialDecay(
            0.0, job["target"], 0, job["end_step"], frequency=FREQUENCY
        )
        keras_reg.prune_low_magnitude(model, schedule)
    timer = epoch_timer(keras)
    model.compile(
        keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(
        x_train, y_train, batch_size=BATCH, epochs=job["epochs"], verbose=0, callbacks=[timer]
    )
    _, accuracy = model.evaluate(x_val, y_val, verbose=0)
    return accuracy, kernel_sparsity(model), timer.times


SIDES = ("tfmot", "keras_reg", "keras_reg_inner")
NAMES = {
    "tfmot": "TFMOT",
    "keras_reg": "keras_reg",
    "keras_reg_inner": "keras_reg, first conv and classifier dense",
}


def worker(side):
    run = run_tfmot if side == "tfmot" else run_keras_reg
    for line in sys.stdin:
        job = json.loads(line)
        accuracy, sparsity, times = run(job)
        print("RESULT" + json.dumps({"accuracy": accuracy, "sparsity": sparsity, "times": times}))
        sys.stdout.flush()


class Worker:
    def __init__(self, python, side):
        env = dict(os.environ, KERAS_BACKEND="tensorflow")
        self.side = side
        self.process = subprocess.Popen(
            [python, "-m", "benchmarks.tfmot_compare", "--worker", side],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def run(self, job):
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith("RESULT"):
                return json.loads(line[len("RESULT") :])
        raise RuntimeError(f"the {self.side} worker stopped (exit {self.process.wait()})")

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


def median_epoch(times):
    return statistics.median(times[1:] if len(times) > 1 else times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tfmot-python", help="python of the virtualenv with TFMOT and tf_keras")
    parser.add_argument("--worker", choices=("tfmot", "keras_reg"), help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 epochs")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    if not args.tfmot_python:
        parser.error("--tfmot-python is required (make bench-tfmot sets it up)")
    epochs = 3 if args.quick else EPOCHS
    seeds = 1 if args.quick else args.seeds
    x_train = data()[0]
    steps = -(-len(x_train) // BATCH) * epochs
    end_step = int(0.6 * steps)
    print(
        f"digits CNN, {len(x_train)} training images, {epochs} epochs x {steps // epochs} steps, "
        f"PolynomialDecay(0, s, 0, end_step={end_step}, frequency={FREQUENCY}), {seeds} seeds"
    )
    workers = {
        "tfmot": Worker(args.tfmot_python, "tfmot"),
        "keras_reg": Worker(sys.executable, "keras_reg"),
    }
    results = {}
    start = time.perf_counter()
    try:
        turn = 0
        for seed in range(seeds):
            for target in TARGETS:
                # Each run in turn goes first, then the others, so no side always follows one.
                order = SIDES[turn % 3 :] + SIDES[: turn % 3]
                turn += 1
                for side in order:
                    job = {"seed": seed, "target": target, "epochs": epochs, "end_step": end_step}
                    if side == "keras_reg_inner":
                        if not target:
                            continue  # unpruned: the same model as keras_reg's
                        job["variant"] = "inner"
                    result = workers["tfmot" if side == "tfmot" else "keras_reg"].run(job)
                    results[side, target, seed] = result
                    print(
                        f"  {side:15s} s={target:<4} seed={seed}: accuracy {result['accuracy']:.4f}"
                        f" sparsity {result['sparsity']:.4f}"
                        f" epoch {median_epoch(result['times']) * 1e3:.0f} ms",
                        flush=True,
                    )
    finally:
        for w in workers.values():
            w.close()
    print(f"({time.perf_counter() - start:.0f} s)\n")
    print(table(results, seeds))


def table(results, seeds):
    def values(side, target, key):
        side = side if target or side == "tfmot" else "keras_reg"
        return [results[side, target, seed][key] for seed in range(seeds)]

    def accuracy(side, target):
        acc = values(side, target, "accuracy")
        spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
        return f"{100 * statistics.mean(acc):.1f}% ± {100 * spread:.1f}"

    def epoch(side, target):
        side = side if target or side == "tfmot" else "keras_reg"
        return [median_epoch(results[side, target, seed]["times"]) for seed in range(seeds)]

    def ratio(side, target):
        base = "tfmot" if side == "tfmot" else "keras_reg"
        per_seed = [a / b for a, b in zip(epoch(side, target), epoch(base, 0.0), strict=True)]
        return f"{statistics.median(per_seed):.2f}x"

    lines = [
        "| target | run | validation accuracy | kernel sparsity | epoch time | epoch / unpruned |",
        "|---|---|---|---|---|---|",
    ]
    for target in TARGETS:
        for side in SIDES if target else SIDES[:2]:
            lines.append(
                f"| {f'{target:g}' if target else 'unpruned'} | {NAMES[side]} "
                f"| {accuracy(side, target)} "
                f"| {statistics.mean(values(side, target, 'sparsity')):.4f} "
                f"| {1e3 * statistics.median(epoch(side, target)):.0f} ms "
                f"| {ratio(side, target) if target else '1.00x'} |"
            )
    lines.append(
        f"\nAccuracy: mean ± std over {seeds} seeds; times: median epoch (epochs 2-{EPOCHS}), "
        "ratio: median over seeds of the per-seed ratio, same side, same seed."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
