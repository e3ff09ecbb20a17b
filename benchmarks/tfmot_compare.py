"""`make bench-tfmot`: keras_reg's pruning on Keras 3 side by side with TFMOT on tf_keras.

    python -m benchmarks.tfmot_compare --tfmot-python .venv-tfmot/bin/python
    python -m benchmarks.tfmot_compare --tfmot-python ... --quick   # 1 run, 3 epochs

Accuracy: the same small CNN on scikit-learn's 8x8 digits (Conv2D 16 - Conv2D 32 -
MaxPool - Dense 64 - Dense 10, Adam 1e-3, batch 32, 20 epochs), pruned with
`PolynomialDecay(0, s, begin_step=0, end_step=60% of the steps, frequency=10)` at
s = 0.5, 0.75, 0.9, with 2:4 sparsity (`sparsity_m_by_n=(2, 4)`), and unpruned, on
3 stratified train/validation splits x 3 seeds: TFMOT 0.8.1 on tf_keras (its own
virtualenv, `--tfmot-python`) and keras_reg on Keras 3 (TensorFlow backend, this
interpreter). Both sides start each run from the same weights (drawn with NumPy, Keras'
default initializers) and see the same batches in the same order, so the runs differ
only in how they prune. Both prune every Conv2D and Dense kernel, as TFMOT's
`prune_low_magnitude(model)` does (with 2:4, TFMOT leaves the first conv, whose 1
input channel makes no group of 4, dense; so does keras_reg). A third run, keras_reg's
"first conv and classifier dense", leaves the two smallest kernels (the first conv's
144 weights, the classifier's 640) dense and gives the two big kernels a higher
target, so that the model has as many zeros in all as in the other runs (the same
budget). A fourth, "zero set held after end_step", calls `keras_reg.freeze_pruning` once
the schedule is over, as TFMOT holds its masks from end_step on. Each keras_reg run is
also compared with TFMOT's run of the same split and seed (above / equal / below).

Time: in each worker the unpruned and the pruned model train one epoch each, in
turns, `--rounds` times (no validation inside `fit`); the ratio is the median of the
per-round ratios, so a slow spell of the shared machine hits both sides of a ratio.
On the digits CNN at every target, and on an MLP of 6 x Dense(1024) (batch 256, 20
batches of made data) at 0.9, where the step is large next to the pruning. A
"frozen" run times fine-tuning after `keras_reg.freeze_pruning` (fixed zero set).
On the 2-core machine an unpruned MLP epoch takes either ~0.7 s or ~1.3 s from one
epoch to the next, whatever the pruning: take its ratios over many rounds.

Two long-lived worker processes, one per side, take the runs in turns, each side
going first in turn. Sparsity is the fraction of exact zeros over all pruned kernels
at the end (after `strip_pruning` for TFMOT, whose masked weights are non-zero
between forward passes).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Sparsity targets; "2:4" is TFMOT's sparsity_m_by_n=(2, 4).
TARGETS = (0.0, 0.5, 0.75, 0.9, "2:4")
EPOCHS, BATCH, FREQUENCY = 20, 32, 10
MLP_BATCH = 256


def data(split=0, kind="cnn"):
    """`x_train, x_val, y_train, y_val`: a split of the digits, or the MLP's made data."""
    import numpy as np

    if kind == "mlp":  # timing only: 20 batches of 256 made samples of 1024 features
        rng = np.random.default_rng(0)
        x = rng.normal(size=(20 * MLP_BATCH, 1024)).astype("float32")
        y = rng.integers(0, 10, size=len(x)).astype(np.int32)
        return x, x[:MLP_BATCH], y, y[:MLP_BATCH]
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    return train_test_split(
        x,
        digits.target.astype(np.int32),
        test_size=0.25,
        random_state=split,
        stratify=digits.target,
    )


def build(keras, kind="cnn"):
    if kind == "mlp":
        dense = [keras.layers.Dense(1024, activation="relu") for _ in range(6)]
        return keras.Sequential(
            [keras.Input((1024,)), *dense, keras.layers.Dense(10, activation="softmax")]
        )
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


def tfmot_model(job):
    """A compiled tf_keras model, pruned by TFMOT when `job["target"]`, and its callbacks."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    tf.keras.utils.set_random_seed(job["seed"])
    model = build(keras, job.get("kind", "cnn"))
    model.set_weights(initial_weights(model, job["seed"]))  # before the wrappers add theirs
    callbacks = []
    if job["target"] == "2:4":  # the mask is m-by-n, updated at the schedule's pruning steps
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            0.0, 0.5, 0, job["end_step"], frequency=FREQUENCY
        )
        model = tfmot.sparsity.keras.prune_low_magnitude(
            model, pruning_schedule=schedule, sparsity_m_by_n=(2, 4)
        )
        callbacks.append(tfmot.sparsity.keras.UpdatePruningStep())
    elif job["target"]:
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            0.0, job["target"], 0, job["end_step"], frequency=FREQUENCY
        )
        model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
        callbacks.append(tfmot.sparsity.keras.UpdatePruningStep())
    model.compile(
        keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return keras, model, callbacks


def keras_reg_model(job):
    """A compiled Keras 3 model, pruned by keras_reg when `job["target"]` (no callback)."""
    import keras
    import numpy as np

    import keras_reg

    keras.utils.set_random_seed(job["seed"])
    model = build(keras, job.get("kind", "cnn"))
    model.set_weights(initial_weights(model, job["seed"]))
    if job["target"] == "2:4":
        keras_reg.prune_low_magnitude(model, sparsity_m_by_n=(2, 4))
    elif job["target"] and job.get("variant") == "frozen":
        # Fine-tuning a pruned model: its zero set fixed by freeze_pruning (TFMOT's masks).
        keras_reg.prune_low_magnitude(model, job["target"])
        from keras_reg.pruning import magnitude_prune, pruned_weights

        for weight in pruned_weights(model):
            weight.assign(magnitude_prune(weight, job["target"]))
        keras_reg.freeze_pruning(model)
    elif job["target"] and job.get("variant") == "inner":
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
    model.compile(
        keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return keras, model, []


def initial_weights(model, seed):
    """`model`'s first weights from NumPy, the same arrays on both sides: Keras' defaults
    (Glorot-uniform kernels, zero biases), drawn from `seed`. Keras 3 and tf_keras draw
    different weights from the same seed, which would make the sides differ before pruning.
    """
    import numpy as np

    rng = np.random.default_rng([seed, 2026])
    weights = []
    for w in model.get_weights():  # kernel, bias of each layer, in the same order on both sides
        if w.ndim == 1:
            weights.append(np.zeros_like(w))
            continue
        receptive = int(np.prod(w.shape[:-2]))
        limit = np.sqrt(6.0 / ((w.shape[-2] + w.shape[-1]) * receptive))
        weights.append(rng.uniform(-limit, limit, size=w.shape).astype(w.dtype))
    return weights


def train(make, job):
    """One accuracy run. Both sides start from the same weights (`initial_weights`) and see
    the same batches in the same order: each epoch's permutation comes from the seed, not
    from the framework's shuffling. What differs is the pruning (and floating-point order).
    """
    import numpy as np

    x_train, x_val, y_train, y_val = data(job["split"])
    keras, model, callbacks = make(job)
    timer = epoch_timer(keras)
    order = np.random.default_rng([job["seed"], job["split"]])
    steps = -(-len(x_train) // BATCH)
    hold_from = job["end_step"] if job.get("variant") == "frozen_end" else None
    for epoch in range(job["epochs"]):
        if hold_from is not None and epoch * steps >= hold_from:
            # The schedule is over: from here on the zero set is held, as TFMOT holds its
            # masks after end_step (keras_reg.freeze_pruning).
            import keras_reg

            keras_reg.freeze_pruning(model)
            hold_from = None
        batches = order.permutation(len(x_train))
        model.fit(
            x_train[batches],
            y_train[batches],
            batch_size=BATCH,
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,
            verbose=0,
            callbacks=[timer, *callbacks],
        )
    if make is tfmot_model and job["target"]:
        import tensorflow_model_optimization as tfmot

        model = tfmot.sparsity.keras.strip_pruning(model)
        model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    _, accuracy = model.evaluate(x_val, y_val, verbose=0)
    return {"accuracy": accuracy, "sparsity": kernel_sparsity(model), "times": timer.times}


def timing(make, job):
    """Epochs of the unpruned and the pruned model in turns: `rounds` epoch times of each.

    Each turn is a `fit` of two epochs, timed by a callback from the second epoch's
    start to its end: the `fit` set-up and the first epoch's iterator warm-up, the same
    for both models, would dilute the ratio.
    """
    kind = job.get("kind", "cnn")
    x_train, _, y_train, _ = data(0, kind)
    batch = MLP_BATCH if kind == "mlp" else BATCH
    models = {
        "plain": make(dict(job, target=0.0)),
        "pruned": make(job),
    }
    times = {name: [] for name in models}
    for i in range(job["rounds"] + 1):  # round 0 traces
        for name in ("plain", "pruned") if i % 2 else ("pruned", "plain"):
            keras, model, callbacks = models[name]
            timer = epoch_timer(keras)
            model.fit(
                x_train,
                y_train,
                batch_size=batch,
                epochs=2,
                verbose=0,
                callbacks=[timer, *callbacks],
            )
            if i:
                times[name].append(timer.times[-1])
    return times


SIDES = ("tfmot", "keras_reg", "keras_reg_inner", "keras_reg_frozen_end")
NAMES = {
    "tfmot": "TFMOT",
    "keras_reg": "keras_reg",
    "keras_reg_inner": "keras_reg, first conv and classifier dense",
    "keras_reg_frozen_end": "keras_reg, zero set held after end_step (freeze_pruning)",
    "keras_reg_frozen": "keras_reg, frozen (freeze_pruning, fine-tuning)",
}


def worker(side):
    make = tfmot_model if side == "tfmot" else keras_reg_model
    for line in sys.stdin:
        job = json.loads(line)
        result = timing(make, job) if job.get("rounds") else train(make, job)
        print("RESULT" + json.dumps(result))
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tfmot-python", help="python of the virtualenv with TFMOT and tf_keras")
    parser.add_argument("--worker", choices=("tfmot", "keras_reg"), help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="1 split, 1 seed, 3 epochs, 3 rounds")
    parser.add_argument("--splits", type=int, default=3, help="train/validation splits")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per split")
    parser.add_argument("--rounds", type=int, default=10, help="timing rounds (epochs each)")
    parser.add_argument("--timing-only", action="store_true", help="skip the accuracy runs")
    parser.add_argument("--accuracy-only", action="store_true", help="skip the timing runs")
    parser.add_argument(
        "--targets",
        default="0,0.5,0.75,0.9,2:4",
        help="accuracy targets, comma-separated (0: unpruned); default: all",
    )
    args = parser.parse_args()
    targets = _targets(args.targets, parser)
    if args.worker:
        worker(args.worker)
        return
    if not args.tfmot_python:
        parser.error("--tfmot-python is required (make bench-tfmot sets it up)")
    epochs = 3 if args.quick else EPOCHS
    runs = (
        []
        if args.timing_only
        else [
            (split, seed)
            for split in range(1 if args.quick else args.splits)
            for seed in range(1 if args.quick else args.seeds)
        ]
    )
    rounds = 0 if args.accuracy_only else 3 if args.quick else args.rounds
    x_train = data()[0]
    steps = -(-len(x_train) // BATCH) * epochs
    end_step = int(0.6 * steps)
    print(
        f"digits CNN, {len(x_train)} training images, {epochs} epochs x {steps // epochs} steps, "
        f"PolynomialDecay(0, s, 0, end_step={end_step}, frequency={FREQUENCY}), "
        f"{len(runs)} runs (split, seed), {rounds} timing rounds"
    )
    workers = {
        "tfmot": Worker(args.tfmot_python, "tfmot"),
        "keras_reg": Worker(sys.executable, "keras_reg"),
    }

    def run(side, job):
        if side not in ("tfmot", "keras_reg"):  # a keras_reg variant: "keras_reg_<variant>"
            job = dict(job, variant=side.removeprefix("keras_reg_"))
        return workers["tfmot" if side == "tfmot" else "keras_reg"].run(job)

    results, timings = {}, {}
    start = time.perf_counter()
    try:
        turn = 0
        for split, seed in runs:
            for target in targets:
                # Each side goes first in turn, so no side always follows the same one.
                for side in SIDES[turn % len(SIDES) :] + SIDES[: turn % len(SIDES)]:
                    if not target and side not in ("tfmot", "keras_reg"):
                        continue  # unpruned: every variant is keras_reg's model
                    if side == "keras_reg_inner" and target == "2:4":
                        continue  # 2:4 has no budget to move
                    job = {
                        "split": split,
                        "seed": seed,
                        "target": target,
                        "epochs": epochs,
                        "end_step": end_step,
                    }
                    result = results[side, target, split, seed] = run(side, job)
                    print(
                        f"  {side:15s} s={target:<4} split={split} seed={seed}: accuracy "
                        f"{result['accuracy']:.4f} sparsity {result['sparsity']:.4f}",
                        flush=True,
                    )
                turn += 1
        timed = [("cnn", t) for t in TARGETS[1:]] + [("mlp", 0.9)]
        timed_sides = ("tfmot", "keras_reg", "keras_reg_frozen")
        for kind, target in timed if rounds else ():
            for side in timed_sides[turn % 3 :] + timed_sides[: turn % 3]:
                if side == "keras_reg_frozen" and target != 0.9:
                    continue
                job = {
                    "seed": 0,
                    "target": target,
                    "end_step": end_step,
                    "rounds": rounds,
                    "kind": kind,
                }
                times = timings[side, kind, target] = run(side, job)
                print(
                    f"  {side:15s} {kind} s={target:<4} timing: pruned/unpruned epoch "
                    f"{per_round_ratio(times):.2f}x",
                    flush=True,
                )
            turn += 1
    finally:
        for w in workers.values():
            w.close()
    print(f"({time.perf_counter() - start:.0f} s)\n")
    if runs:
        print(accuracy_table(results, runs, epochs))
    if timings:
        print(timing_table(timings))


def per_round_ratio(times):
    ratios = [p / q for p, q in zip(times["pruned"], times["plain"], strict=True)]
    return statistics.median(ratios)


def _targets(text, parser):
    chosen = []
    for item in text.split(","):
        item = item.strip()
        target = (
            "2:4" if item == "2:4" else float(item) if item.replace(".", "", 1).isdigit() else None
        )
        if target not in TARGETS:
            parser.error(
                f"--targets takes a comma-separated subset of 0,0.5,0.75,0.9,2:4; got {item!r}"
            )
        chosen.append(target)
    return tuple(chosen)


def accuracy_table(results, runs, epochs):
    def cells(side, target):
        side = side if target or side == "tfmot" else "keras_reg"
        done = [results[side, target, split, seed] for split, seed in runs]
        acc = [r["accuracy"] for r in done]
        spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
        sparsity = statistics.mean(r["sparsity"] for r in done)
        # Per split: the mean over its seeds, to see whether one side is ahead on every split.
        splits = sorted({split for split, _ in runs})
        per_split = [
            statistics.mean(
                results[side, target, sp, seed]["accuracy"] for s2, seed in runs if s2 == sp
            )
            for sp in splits
        ]
        # Paired with TFMOT's run of the same split and seed (same weights, same batches).
        paired = "—"
        if side != "tfmot":
            diffs = [
                results[side, target, split, seed]["accuracy"]
                - results["tfmot", target, split, seed]["accuracy"]
                for split, seed in runs
            ]
            paired = " / ".join(
                str(sum(1 for d in diffs if test(d)))
                for test in (lambda d: d > 1e-9, lambda d: abs(d) <= 1e-9, lambda d: d < -1e-9)
            )
        return [
            f"{100 * statistics.mean(acc):.1f}% ± {100 * spread:.1f}",
            " / ".join(f"{100 * a:.1f}" for a in per_split),
            paired,
            f"{sparsity:.4f}",
        ]

    lines = [
        "| target | run | validation accuracy | per split | runs above / equal / below TFMOT "
        "| kernel sparsity |",
        "|---|---|---|---|---|---|",
    ]
    for target in TARGETS:
        if not any(key[1] == target for key in results):
            continue
        run_split, run_seed = runs[0]
        sides = [side for side in SIDES if (side, target, run_split, run_seed) in results]
        for side in sides:
            label = "unpruned" if not target else str(target)
            lines.append("| " + " | ".join([label, NAMES[side], *cells(side, target)]) + " |")
    splits = len({split for split, _ in runs})
    lines.append(
        f"\nAccuracy: mean ± std over {len(runs)} runs ({splits} train/validation splits x "
        f"{len(runs) // splits} seeds), {epochs} epochs; per split: the mean over its seeds. "
        "Each keras_reg run is paired with TFMOT's run of the same split and seed: the same "
        "initial weights, the same batches."
    )
    return "\n".join(lines)


def timing_table(timings):
    lines = [
        "| model | target | run | unpruned epoch | pruned epoch | pruned / unpruned "
        "| fastest pruned / fastest unpruned |",
        "|---|---|---|---|---|---|---|",
    ]
    for side, kind, target in timings:
        times = timings[side, kind, target]
        plain = 1e3 * statistics.median(times["plain"])
        pruned = 1e3 * statistics.median(times["pruned"])
        model = (
            "digits CNN, batch 32" if kind == "cnn" else f"MLP 6 x Dense(1024), batch {MLP_BATCH}"
        )
        lines.append(
            f"| {model} | {target} | {NAMES[side]} | {plain:.0f} ms | {pruned:.0f} ms | "
            f"{per_round_ratio(times):.2f}x | {min(times['pruned']) / min(times['plain']):.2f}x |"
        )
    lines.append(
        "\nEpoch: the median of epochs timed in turns with the same side's unpruned model (one "
        "process per side); the ratio is the median of the per-round ratios. Fastest: the "
        "shortest epoch of each over all rounds, less sensitive to the machine's slow spells "
        "(on the 2-core machine an MLP epoch takes ~0.8 s or ~1.3 s at random, even alone)."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
