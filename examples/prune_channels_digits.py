"""Structured channel pruning to a MACs target: global coupled pruning against per-layer uniform.

`keras_reg.prune_channels(model, speed_up)` removes whole coupled channel groups (a conv's
filters with their BatchNorm entries and the next layers' input rows; in a residual network the
whole residual stream at once) until the model has at most `1 / speed_up` of its MACs. Channels
are ranked by an importance score normalized per group and pruned lowest first across all groups
(`global_pruning=True`), or the same fraction of every group (`global_pruning=False`: per-layer
uniform pruning, the baseline).

Two CNNs: a plain one (Conv-BN-ReLU blocks, `padding="same"`, Flatten, Dense) and a small
residual one (stem, three residual blocks joined by `Add`, global average pooling, Dense), on one
of two tasks made from scikit-learn's 8x8 digits (bundled, no download; the split of
`_common.digits`):
- `digits`: the 8x8 images as they are (unpruned validation accuracy about 99%);
- `shifted`: each digit at a random place on a 16x16 canvas with Gaussian noise (sigma 0.3),
  three placements of every training image and two of every validation image (harder, so that
  what pruning removes shows in the accuracy). The first convolution has stride 2 there, so
  both models compute at 8x8 as on `digits`.

Each model is trained per seed (Adam, cosine decay), then pruned at each speed-up: first by the
uniform baseline (magnitude, per-layer uniform), then with every importance ("magnitude", "l1",
"bn_scale", "taylor" from a training batch of 256) to at most the uniform model's MACs, so that
the baseline never has fewer MACs than what it is compared with. Every pruned model is
fine-tuned for the same number of epochs with the same optimizer and seed. The table gives the
MACs ratio reached and the validation accuracy right after pruning and after fine-tuning
(mean +- std over seeds), next to the unpruned accuracy before and after the same fine-tuning;
then, for each global method, the fine-tuned accuracy against uniform on the same trained model
and seed: how many runs are above, equal or below, and the mean difference with its 95%
t-interval.

`--slimming`: also trains every model with an L1 penalty on the BatchNorm scales
(`gamma_regularizer=keras_reg.L1(SLIMMING)`, network slimming's sparsity training) and compares
global "magnitude" and "bn_scale" pruning with uniform pruning on those models.

Run: `python examples/prune_channels_digits.py [--task shifted] [--seeds N] [--slimming]
[--quick]` (--quick: one seed, speed-up 2, fewer epochs).
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

import keras_reg  # noqa: E402

L = keras.layers

SEEDS, QUICK_SEEDS = (0, 1, 2), (0,)
SPEED_UPS, QUICK_SPEED_UPS = (2, 4), (2,)
EPOCHS, QUICK_EPOCHS = 15, 5  # training of the unpruned models
# `shifted` is harder: 15 epochs left the plain CNN short of what 5 more epochs gave it.
TASK_EPOCHS = {"digits": EPOCHS, "shifted": 40}
FINETUNE, QUICK_FINETUNE = 5, 1  # the same for every pruned model
BATCH = 32
LEARNING_RATE = 1e-3  # Adam's, decayed to 0 over each training and each fine-tuning (cosine)
TAYLOR_BATCH = 256
LOSS = "sparse_categorical_crossentropy"
# The `shifted` task: canvas size, noise, placements per training and per validation image.
CANVAS, NOISE, TRAIN_COPIES, VAL_COPIES = 16, 0.3, 3, 2
# --slimming: the L1 strength on BatchNorm scales. Adam normalizes the gradient, so network
# slimming's 1e-4 (for SGD) barely moves the scales; this one brings them down unevenly.
SLIMMING = 3e-2
# (label, importance, global_pruning): the four global importances, then the baseline.
METHODS = (
    ("magnitude", "magnitude", True),
    ("l1", "l1", True),
    ("bn_scale", "bn_scale", True),
    ("taylor", "taylor", True),
    ("uniform", "magnitude", False),
)
SLIMMING_METHODS = (
    ("slimming magnitude", "magnitude", True),
    ("slimming bn_scale", "bn_scale", True),
    ("slimming uniform", "magnitude", False),
)


def shifted(x, y, copies, rng):
    """Each 8x8 image `copies` times at a random place on a CANVAS x CANVAS canvas, plus noise."""
    n, room = len(x), CANVAS - x.shape[1]
    out = np.zeros((copies * n, CANVAS, CANVAS, 1), "float32")
    for c in range(copies):
        rows, cols = rng.integers(0, room + 1, size=(2, n))
        for i in range(n):
            out[c * n + i, rows[i] : rows[i] + 8, cols[i] : cols[i] + 8] = x[i]
    out += rng.normal(0.0, NOISE, out.shape).astype("float32")
    return out, np.tile(y, copies)


def load(task):
    x_train, x_val, y_train, y_val = _common.digits(seed=0)
    if task == "shifted":
        rng = np.random.default_rng(0)
        x_train, y_train = shifted(x_train, y_train, TRAIN_COPIES, rng)
        x_val, y_val = shifted(x_val, y_val, VAL_COPIES, rng)
    return x_train, x_val, y_train, y_val


# BatchNorm's moving statistics with momentum 0.9 (PyTorch's 0.1): Keras' default 0.99 lags
# behind the weights over the few hundred steps of these trainings, and validation suffers.
def batch_norm(name, gamma_l1):
    regularizer = keras_reg.L1(gamma_l1) if gamma_l1 else None
    return L.BatchNormalization(momentum=0.9, gamma_regularizer=regularizer, name=name)


def conv_bn_relu(x, filters, name, gamma_l1, strides=1):
    x = L.Conv2D(filters, 3, strides, padding="same", use_bias=False, name=name)(x)
    return L.ReLU(name=f"{name}_relu")(batch_norm(f"{name}_bn", gamma_l1)(x))


def plain_cnn(size=8, gamma_l1=0.0):
    """Conv-BN-ReLU x2 (32), MaxPool, Conv-BN-ReLU x2 (64), Flatten, Dense(10)."""
    inputs = keras.Input((size, size, 1))
    x = conv_bn_relu(inputs, 32, "conv1", gamma_l1, strides=size // 8)
    x = conv_bn_relu(x, 32, "conv2", gamma_l1)
    x = L.MaxPooling2D(name="pool")(x)
    x = conv_bn_relu(x, 64, "conv3", gamma_l1)
    x = conv_bn_relu(x, 64, "conv4", gamma_l1)
    x = L.Flatten(name="flatten")(x)
    outputs = L.Dense(10, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="plain_cnn")


def residual_cnn(size=8, gamma_l1=0.0, width=32, blocks=3):
    """Stem Conv-BN-ReLU, `blocks` residual blocks (Conv-BN-ReLU, Conv-BN, Add, ReLU), GAP, head."""
    inputs = keras.Input((size, size, 1))
    x = conv_bn_relu(inputs, width, "stem", gamma_l1, strides=size // 8)
    for i in range(blocks):
        h = conv_bn_relu(x, width, f"b{i}_c1", gamma_l1)
        h = L.Conv2D(width, 3, padding="same", use_bias=False, name=f"b{i}_c2")(h)
        h = batch_norm(f"b{i}_c2_bn", gamma_l1)(h)
        x = L.ReLU(name=f"b{i}_relu")(L.Add(name=f"b{i}_add")([x, h]))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(10, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="residual_cnn")


MODELS = {"plain": plain_cnn, "residual": residual_cnn}


def compile_model(model, epochs, samples):
    steps = epochs * -(-samples // BATCH)
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, steps)
    model.compile(keras.optimizers.Adam(schedule), LOSS, metrics=["accuracy"])


def accuracy(model, x, y):
    # A direct call, not `predict`: no traced function per model (TensorFlow warns of retracing).
    probabilities = np.concatenate(
        [
            keras.ops.convert_to_numpy(model(x[i : i + 512], training=False))
            for i in range(0, len(x), 512)
        ]
    )
    return float((probabilities.argmax(axis=1) == y).mean())


def macs(model):
    return keras_reg.plan_shrink(model).macs_before


def matches_plan(plan, small):
    """The pruned model is what the plan says: its MACs, weights and every layer's width."""
    after = keras_reg.plan_shrink(small)
    widths = {row.name: row.units_after for row in plan.shrink_plan.rows}
    small_widths = {row.name: row.units_before for row in after.rows}
    return (
        after.macs_before == plan.macs_after
        and small.count_params() == plan.params_after
        and small_widths == widths
    )


def prune_and_finetune(model, data, seed, speed_up, method, finetune_epochs, target):
    """Prunes `model` with `method` to at most `target` MACs (the uniform run's, or 1/speed_up)."""
    x_train, x_val, y_train, y_val = data
    label, importance, global_pruning = method
    options = {"importance": importance, "global_pruning": global_pruning}
    if importance == "taylor":
        rows = np.random.default_rng(seed).choice(len(x_train), TAYLOR_BATCH, replace=False)
        options.update(x=x_train[rows], y=y_train[rows], loss=LOSS)
    asked = max(speed_up, macs(model) / target) if target else speed_up
    start = time.perf_counter()
    plan = keras_reg.plan_channels(model, asked, **options)
    small = keras_reg.prune_channels(model, asked, **options)
    prune_seconds = time.perf_counter() - start
    pruned_accuracy = accuracy(small, x_val, y_val)
    fit(small, data, finetune_epochs, seed)
    return {
        "seed": seed,
        "speed_up": speed_up,
        "method": label,
        "macs_ratio": plan.macs_after / plan.macs_before,
        "macs_after": macs(small),
        "params_ratio": small.count_params() / model.count_params(),
        "accuracy_pruned": pruned_accuracy,
        "accuracy_finetuned": accuracy(small, x_val, y_val),
        "matches_plan": matches_plan(plan, small),
        "groups": [(g.size, g.kept) for g in plan.groups],
        "prune_seconds": prune_seconds,
    }


def fit(model, data, epochs, seed=None):
    """Compiles `model` afresh and trains it for `epochs` (after seeding, if `seed` is given)."""
    x_train, _, y_train, _ = data
    if seed is not None:
        keras.utils.set_random_seed(seed)
    compile_model(model, epochs, len(x_train))
    model.fit(x_train, y_train, batch_size=BATCH, epochs=epochs, verbose=0)


def train(build, data, seed, epochs, size, gamma_l1=0.0):
    keras.utils.set_random_seed(seed)
    model = build(size, gamma_l1)
    fit(model, data, epochs)
    return model


def prune_all(model, data, seed, speed_ups, methods, finetune_epochs):
    """The baseline (the last method) first; then every other method to at most its MACs."""
    runs = []
    *others, baseline = methods
    for speed_up in speed_ups:
        first = prune_and_finetune(model, data, seed, speed_up, baseline, finetune_epochs, None)
        for method in others:
            run = prune_and_finetune(
                model, data, seed, speed_up, method, finetune_epochs, first["macs_after"]
            )
            run["baseline"], run["baseline_macs"] = baseline[0], first["macs_after"]
            runs.append(run)
        runs.append(first)
    return runs


def mean_std(values):
    values = [100 * v for v in values]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f}±{spread:.1f}"


def paired(runs, baseline_runs):
    """Fine-tuned accuracy against the baseline on the same seeds: counts, mean, 95% interval."""
    by_seed = {r["seed"]: r["accuracy_finetuned"] for r in baseline_runs}
    diffs = [100 * (r["accuracy_finetuned"] - by_seed[r["seed"]]) for r in runs]
    above = sum(d > 1e-9 for d in diffs)
    below = sum(d < -1e-9 for d in diffs)
    mean = statistics.mean(diffs)
    if len(diffs) > 1:
        half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    else:
        half = float("nan")
    return {
        "above": above,
        "equal": len(diffs) - above - below,
        "below": below,
        "mean": mean,
        "low": mean - half,
        "high": mean + half,
    }


def main(quick=False, task="digits", seeds=None, slimming=False):
    start = time.perf_counter()
    if task not in ("digits", "shifted"):
        raise ValueError(f"task must be 'digits' or 'shifted'. Received: task={task!r}")
    data = load(task)
    x_train, x_val, y_train, y_val = data
    size = x_train.shape[1]
    seeds = tuple(seeds or (QUICK_SEEDS if quick else SEEDS))
    speed_ups = QUICK_SPEED_UPS if quick else SPEED_UPS
    epochs = QUICK_EPOCHS if quick else TASK_EPOCHS[task]
    finetune_epochs = QUICK_FINETUNE if quick else FINETUNE
    arms = [("", METHODS, 0.0)] + ([("slimming ", SLIMMING_METHODS, SLIMMING)] if slimming else [])
    methods = [m for _, ms, _ in arms for m in ms]
    print(
        f"task {task}: {len(x_train)} training / {len(x_val)} validation {size}x{size} images; "
        f"Adam({LEARNING_RATE:g}, cosine decay), batch {BATCH}: {epochs} epochs of training, "
        f"{finetune_epochs} of fine-tuning after pruning; seeds {list(seeds)}; backend "
        f"{keras.backend.backend()}"
        + (f"; slimming: L1({SLIMMING:g}) on BatchNorm scales" if slimming else "")
    )
    result = {
        "task": task,
        "seeds": list(seeds),
        "speed_ups": list(speed_ups),
        "methods": [m[0] for m in methods],
        "epochs": epochs,
        "finetune_epochs": finetune_epochs,
        "models": {},
    }
    for name, build in MODELS.items():
        info = {"unpruned": [], "runs": [], "unpruned_slimming": []}
        info["unpruned_tuned"], info["unpruned_slimming_tuned"] = [], []
        for seed in seeds:
            for prefix, arm, gamma_l1 in arms:
                tic = time.perf_counter()
                model = train(build, data, seed, epochs, size, gamma_l1)
                info[f"{prefix}train_seconds"] = time.perf_counter() - tic
                key = "unpruned_slimming" if gamma_l1 else "unpruned"
                info[key].append(accuracy(model, x_val, y_val))
                info["macs"], info["params"] = macs(model), model.count_params()
                info["runs"] += prune_all(model, data, seed, speed_ups, arm, finetune_epochs)
                # The reference for the fine-tuned columns: the unpruned model, same fine-tuning.
                fit(model, data, finetune_epochs, seed)
                info[f"{key}_tuned"].append(accuracy(model, x_val, y_val))
        result["models"][name] = info
        line = (
            f"{name}: {info['params']:,} weights, {info['macs']:,} MACs per image; unpruned "
            f"validation accuracy {mean_std(info['unpruned'])}%"
        )
        if slimming:
            line += f", {mean_std(info['unpruned_slimming'])}% with slimming"
        print(f"{line} (training {info['train_seconds']:.0f} s)")

    # The baseline never has fewer MACs than a run it is compared with (prune_all's order).
    result["baseline_fewer_macs"] = [
        (name, r["seed"], r["speed_up"], r["method"])
        for name, info in result["models"].items()
        for r in info["runs"]
        if "baseline" in r and r["baseline_macs"] < r["macs_after"]
    ]

    rows, summary = [], []
    for name, info in result["models"].items():
        for speed_up in speed_ups:
            for label in result["methods"]:
                runs = [
                    r for r in info["runs"] if r["speed_up"] == speed_up and r["method"] == label
                ]
                ratios = [r["macs_ratio"] for r in runs]
                key = "unpruned_slimming" if label.startswith("slimming") else "unpruned"
                unpruned, unpruned_tuned = info[key], info[f"{key}_tuned"]
                entry = {
                    "model": name,
                    "speed_up": speed_up,
                    "method": label,
                    "macs_ratio_min": min(ratios),
                    "macs_ratio_max": max(ratios),
                    "accuracy_pruned": [r["accuracy_pruned"] for r in runs],
                    "accuracy_finetuned": [r["accuracy_finetuned"] for r in runs],
                    "unpruned": unpruned,
                    "unpruned_tuned": unpruned_tuned,
                }
                if "baseline" in runs[0]:
                    base = [
                        r
                        for r in info["runs"]
                        if r["speed_up"] == speed_up and r["method"] == runs[0]["baseline"]
                    ]
                    entry["against_baseline"] = paired(runs, base)
                summary.append(entry)
                ratio = f"{min(ratios):.3f}"
                if max(ratios) - min(ratios) >= 5e-4:
                    ratio += f"-{max(ratios):.3f}"
                rows.append(
                    [
                        name,
                        f"{speed_up}x",
                        label + (" (per-layer)" if label.endswith("uniform") else ""),
                        ratio,
                        mean_std(entry["accuracy_pruned"]),
                        mean_std(entry["accuracy_finetuned"]),
                        mean_std(unpruned),
                        mean_std(unpruned_tuned),
                    ]
                )
    result["summary"] = summary
    header = [
        "model",
        "speed-up",
        "method",
        "MACs ratio",
        "acc. pruned %",
        f"acc. +{finetune_epochs} ep. %",
        "unpruned %",
        f"unpruned +{finetune_epochs} ep. %",
    ]
    print(f"\nvalidation accuracy, mean±std over {len(seeds)} seed(s):")
    print(_common.table(header, rows))
    # The bar: global coupled pruning at least as accurate as per-layer uniform, paired.
    print(
        "\nafter fine-tuning, against uniform on the same trained model and seed "
        "(points; 95% t-interval of the mean difference):"
    )
    rows = []
    for e in summary:
        if "against_baseline" in e:
            a = e["against_baseline"]
            rows.append(
                [
                    e["model"],
                    f"{e['speed_up']}x",
                    e["method"],
                    f"{a['above']} / {a['equal']} / {a['below']}",
                    f"{a['mean']:+.2f}",
                    f"[{a['low']:+.2f}, {a['high']:+.2f}]" if len(seeds) > 1 else "(1 seed)",
                ]
            )
    print(
        _common.table(
            ["model", "speed-up", "method", "above / equal / below", "mean", "95% interval"],
            rows,
        )
    )
    if result["baseline_fewer_macs"]:
        print(f"note: the baseline has fewer MACs in {result['baseline_fewer_macs']}")
    else:
        print("uniform (the baseline) has at least the MACs of every run it is compared with")
    result["seconds"] = time.perf_counter() - start
    print(f"done in {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs (for the test suite)")
    parser.add_argument("--task", choices=("digits", "shifted"), default="digits")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--slimming", action="store_true", help="also train with L1 on BN scales")
    args = parser.parse_args()
    seeds = None if args.seeds is None else tuple(range(args.seeds))
    main(quick=args.quick, task=args.task, seeds=seeds, slimming=args.slimming)
