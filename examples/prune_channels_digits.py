"""Structured channel pruning to a MACs target: global coupled pruning against per-layer uniform.

`keras_reg.prune_channels(model, speed_up)` removes whole coupled channel groups (a conv's
filters with their BatchNorm entries and the next layers' input rows; in a residual network the
whole residual stream at once) until the model has at most `1 / speed_up` of its MACs. Channels
are ranked by an importance score normalized per group and pruned lowest first across all groups
(`global_pruning=True`), or the same fraction of every group (`global_pruning=False`: per-layer
uniform pruning, the baseline).

Two CNNs on scikit-learn's 8x8 digits (bundled, no download; the split of `_common.digits`):
a plain one (Conv-BN-ReLU blocks, `padding="same"`, Flatten, Dense) and a small residual one
(stem, three residual blocks joined by `Add`, global average pooling, Dense). Each is trained
per seed, then pruned at each speed-up with every importance ("magnitude", "l1", "bn_scale",
"taylor" from a training batch of 256) and with the uniform baseline (magnitude, per-layer
uniform), and every pruned model is fine-tuned for the same number of epochs with the same
optimizer. The table gives the MACs ratio reached and the validation accuracy right after
pruning and after fine-tuning (mean +- std over seeds), next to the unpruned accuracy.

Run: `python examples/prune_channels_digits.py [--quick]` (--quick: one seed, speed-up 2,
fewer epochs).
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_reg  # noqa: E402

L = keras.layers

SEEDS, QUICK_SEEDS = (0, 1, 2), (0,)
SPEED_UPS, QUICK_SPEED_UPS = (2, 4), (2,)
EPOCHS, QUICK_EPOCHS = 15, 5  # training of the unpruned models
FINETUNE, QUICK_FINETUNE = 5, 1  # the same for every pruned model
BATCH = 32
TAYLOR_BATCH = 256
LOSS = "sparse_categorical_crossentropy"
# (label, importance, global_pruning): the four global importances, then the baseline.
METHODS = (
    ("magnitude", "magnitude", True),
    ("l1", "l1", True),
    ("bn_scale", "bn_scale", True),
    ("taylor", "taylor", True),
    ("uniform", "magnitude", False),
)


# BatchNorm's moving statistics with momentum 0.9 (PyTorch's 0.1): Keras' default 0.99 lags
# behind the weights over the few hundred steps of these trainings, and validation suffers.
def conv_bn_relu(x, filters, name):
    x = L.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
    return L.ReLU(name=f"{name}_relu")(L.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x))


def plain_cnn():
    """Conv-BN-ReLU x2 (32), MaxPool, Conv-BN-ReLU x2 (64), Flatten, Dense(10)."""
    inputs = keras.Input((8, 8, 1))
    x = conv_bn_relu(inputs, 32, "conv1")
    x = conv_bn_relu(x, 32, "conv2")
    x = L.MaxPooling2D(name="pool")(x)
    x = conv_bn_relu(x, 64, "conv3")
    x = conv_bn_relu(x, 64, "conv4")
    x = L.Flatten(name="flatten")(x)
    outputs = L.Dense(10, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="plain_cnn")


def residual_cnn(width=32, blocks=3):
    """Stem Conv-BN-ReLU, `blocks` residual blocks (Conv-BN-ReLU, Conv-BN, Add, ReLU), GAP, head."""
    inputs = keras.Input((8, 8, 1))
    x = conv_bn_relu(inputs, width, "stem")
    for i in range(blocks):
        h = conv_bn_relu(x, width, f"b{i}_c1")
        h = L.Conv2D(width, 3, padding="same", use_bias=False, name=f"b{i}_c2")(h)
        h = L.BatchNormalization(momentum=0.9, name=f"b{i}_c2_bn")(h)
        x = L.ReLU(name=f"b{i}_relu")(L.Add(name=f"b{i}_add")([x, h]))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(10, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="residual_cnn")


MODELS = {"plain": plain_cnn, "residual": residual_cnn}


def compile_model(model):
    model.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])


def accuracy(model, x, y):
    # A direct call, not `predict`: no traced function per model (TensorFlow warns of retracing).
    probabilities = keras.ops.convert_to_numpy(model(x, training=False))
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


def prune_and_finetune(model, data, seed, speed_up, method, finetune_epochs):
    x_train, x_val, y_train, y_val = data
    label, importance, global_pruning = method
    options = {"importance": importance, "global_pruning": global_pruning}
    if importance == "taylor":
        rows = np.random.default_rng(seed).choice(len(x_train), TAYLOR_BATCH, replace=False)
        options.update(x=x_train[rows], y=y_train[rows], loss=LOSS)
    start = time.perf_counter()
    plan = keras_reg.plan_channels(model, speed_up, **options)
    small = keras_reg.prune_channels(model, speed_up, **options)
    prune_seconds = time.perf_counter() - start
    pruned_accuracy = accuracy(small, x_val, y_val)
    keras.utils.set_random_seed(seed)
    compile_model(small)
    small.fit(x_train, y_train, batch_size=BATCH, epochs=finetune_epochs, verbose=0)
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


def mean_std(values):
    values = [100 * v for v in values]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f}±{spread:.1f}"


def main(quick=False):
    start = time.perf_counter()
    data = _common.digits(seed=0)
    x_train, x_val, y_train, y_val = data
    seeds = QUICK_SEEDS if quick else SEEDS
    speed_ups = QUICK_SPEED_UPS if quick else SPEED_UPS
    epochs = QUICK_EPOCHS if quick else EPOCHS
    finetune_epochs = QUICK_FINETUNE if quick else FINETUNE
    print(
        f"load_digits: {len(x_train)} training / {len(x_val)} validation 8x8 images; Adam(1e-3), "
        f"batch {BATCH}: {epochs} epochs of training, {finetune_epochs} of fine-tuning after "
        f"pruning; seeds {list(seeds)}; backend {keras.backend.backend()}"
    )
    result = {
        "seeds": list(seeds),
        "speed_ups": list(speed_ups),
        "methods": [m[0] for m in METHODS],
        "epochs": epochs,
        "finetune_epochs": finetune_epochs,
        "models": {},
    }
    for name, build in MODELS.items():
        info = {"unpruned": [], "runs": []}
        for seed in seeds:
            keras.utils.set_random_seed(seed)
            model = build()
            compile_model(model)
            tic = time.perf_counter()
            model.fit(x_train, y_train, batch_size=BATCH, epochs=epochs, verbose=0)
            info["train_seconds"] = time.perf_counter() - tic
            info["unpruned"].append(accuracy(model, x_val, y_val))
            info["macs"], info["params"] = macs(model), model.count_params()
            for speed_up in speed_ups:
                for method in METHODS:
                    run = prune_and_finetune(model, data, seed, speed_up, method, finetune_epochs)
                    info["runs"].append(run)
        result["models"][name] = info
        print(
            f"{name}: {info['params']:,} weights, {info['macs']:,} MACs per image; unpruned "
            f"validation accuracy {mean_std(info['unpruned'])}% (training "
            f"{info['train_seconds']:.0f} s)"
        )

    # The baseline must not have fewer MACs than the global runs it is compared with.
    result["uniform_fewer_macs"] = []
    for name, info in result["models"].items():
        for seed in seeds:
            for speed_up in speed_ups:
                same = [r for r in info["runs"] if (r["seed"], r["speed_up"]) == (seed, speed_up)]
                uniform = next(r for r in same if r["method"] == "uniform")
                for r in same:
                    if r["method"] != "uniform" and uniform["macs_after"] < r["macs_after"]:
                        result["uniform_fewer_macs"].append((name, seed, speed_up, r["method"]))

    rows, summary = [], []
    for name, info in result["models"].items():
        for speed_up in speed_ups:
            for label in result["methods"]:
                runs = [
                    r for r in info["runs"] if r["speed_up"] == speed_up and r["method"] == label
                ]
                ratios = [r["macs_ratio"] for r in runs]
                entry = {
                    "model": name,
                    "speed_up": speed_up,
                    "method": label,
                    "macs_ratio_min": min(ratios),
                    "macs_ratio_max": max(ratios),
                    "accuracy_pruned": [r["accuracy_pruned"] for r in runs],
                    "accuracy_finetuned": [r["accuracy_finetuned"] for r in runs],
                    "unpruned": info["unpruned"],
                }
                summary.append(entry)
                ratio = f"{min(ratios):.3f}"
                if max(ratios) - min(ratios) >= 5e-4:
                    ratio += f"-{max(ratios):.3f}"
                rows.append(
                    [
                        name,
                        f"{speed_up}x",
                        label + (" (per-layer)" if label == "uniform" else ""),
                        ratio,
                        mean_std(entry["accuracy_pruned"]),
                        mean_std(entry["accuracy_finetuned"]),
                        mean_std(info["unpruned"]),
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
    ]
    print(f"\nvalidation accuracy, mean±std over {len(seeds)} seed(s):")
    print(_common.table(header, rows))
    # The bar: global coupled pruning at least as accurate as per-layer uniform.
    result["at_least_uniform"] = {}
    for entry in summary:
        if entry["method"] == "uniform":
            continue
        uniform = next(
            e
            for e in summary
            if (e["model"], e["speed_up"], e["method"])
            == (entry["model"], entry["speed_up"], "uniform")
        )
        key = (entry["model"], entry["speed_up"])
        result["at_least_uniform"].setdefault(key, [])
        if statistics.mean(entry["accuracy_finetuned"]) >= statistics.mean(
            uniform["accuracy_finetuned"]
        ):
            result["at_least_uniform"][key].append(entry["method"])
    for (name, speed_up), methods in result["at_least_uniform"].items():
        print(
            f"{name} {speed_up}x: global methods at least as accurate as uniform after "
            f"fine-tuning (mean): {', '.join(methods) or 'none'}"
        )
    if result["uniform_fewer_macs"]:
        # Uniform pruning moves every group at once: its MACs come in coarser steps.
        counts = {}
        for name, _, speed_up, _ in result["uniform_fewer_macs"]:
            counts[(name, speed_up)] = counts.get((name, speed_up), 0) + 1
        total = len(seeds) * (len(METHODS) - 1)
        listed = ", ".join(f"{n} {s}x {c}/{total}" for (n, s), c in counts.items())
        print(f"note: uniform (the baseline) ended with fewer MACs than global runs: {listed}")
    else:
        print(
            "uniform (the baseline) has at least the MACs of every global run it is compared with"
        )
    result["seconds"] = time.perf_counter() - start
    print(f"done in {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main(quick=_common.parse_args(__doc__).quick)
