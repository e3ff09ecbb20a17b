"""Prune a digits CNN two ways: a TFMOT-style schedule to 90% of its filters, and to a speed-up.

`keras_reg.prune_low_magnitude(model, PolynomialDecay(...), axis=-1)` zeroes whole filters
and units (the ones with the smallest L2 norm) on a schedule, TFMOT's way, with no callback:
after every optimizer step each pruned kernel has exactly round(s * groups) zero groups.
`keras_reg.strip_pruning` removes the pruning constraint, and `keras_reg.shrink` removes the
zero filters and units, folding their constant outputs relu(bias) into the next layer's bias
(the convolutions use padding="valid", where that fold is exact). The shrunk model gives the
same outputs with a fraction of the parameters. Ninety percent of every layer's filters is a
lot for this small network, and the run says what it costs in accuracy.

The recipe that keeps accuracy follows: `keras_reg.prune_channels(model, speed_up=4)` on the
trained unpruned model (coupled channel groups ranked globally, MACs cut to a quarter exactly),
then a few epochs of fine-tuning of the smaller model.

Run: `python examples/prune_digits.py [--quick]`.
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_reg  # noqa: E402

SEED = 0
TARGET = 0.9
EPOCHS, QUICK_EPOCHS = 20, 3
SPEED_UP = 4
FINETUNE_EPOCHS, QUICK_FINETUNE_EPOCHS = 5, 1
BATCH = 32
PRUNED = ("conv1", "conv2", "dense")  # the classifier's 10 units are the classes: kept


def build_model():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv1"),
            keras.layers.Conv2D(64, 3, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(128, activation="relu", name="dense"),
            keras.layers.Dense(10, activation="softmax", name="out"),
        ]
    )


def compile_model(model):
    model.compile(
        keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )


def width(layer):
    config = layer.get_config()
    return config.get("filters", config.get("units"))


def outputs_of(model, x):
    # A direct call, not `predict`: each model's predict function is traced anew, and TensorFlow
    # warns of "excessive retracing" past five of them.
    return keras.ops.convert_to_numpy(model(x, training=False))


def train(data, epochs, prune):
    x_train, _, y_train, _ = data
    keras.utils.set_random_seed(SEED)
    model = build_model()
    steps = -(-len(x_train) // BATCH) * epochs
    if prune:
        # Zhu & Gupta's gradual schedule over the first 60% of the steps, then fine-tuning.
        schedule = keras_reg.PolynomialDecay(0.0, TARGET, 0, int(0.6 * steps), frequency=10)
        keras_reg.prune_low_magnitude(model, schedule, layers=list(PRUNED), axis=-1)
    compile_model(model)
    logger = keras_reg.SparsityLogger()
    model.fit(x_train, y_train, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=[logger])
    return model, logger


def latency_ms(models, x, rounds):
    """Median time of `model(x)` per model, the models timed in turns (the machine is shared)."""
    times = {name: [] for name in models}
    for model in models.values():
        model.predict(x, batch_size=len(x), verbose=0)  # trace once
    for i in range(rounds):
        order = list(models) if i % 2 == 0 else list(reversed(models))
        for name in order:
            start = time.perf_counter()
            models[name].predict(x, batch_size=len(x), verbose=0)
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def main(quick=False):
    start = time.perf_counter()
    data = _common.digits(seed=SEED)
    x_val, y_val = data[1], data[3]
    epochs = QUICK_EPOCHS if quick else EPOCHS
    print(
        f"load_digits: {len(data[0])} training / {len(x_val)} validation 8x8 images; "
        f"{epochs} epochs of Adam(1e-3), batch {BATCH}, seed {SEED}"
    )
    dense, _ = train(data, epochs, prune=False)
    pruned, logger = train(data, epochs, prune=True)

    layers = {}
    for name in PRUNED:
        kernel = keras.ops.convert_to_numpy(pruned.get_layer(name).kernel.value)
        groups = kernel.shape[-1]
        zero = int((np.abs(kernel.reshape(-1, groups)).sum(axis=0) == 0).sum())
        layers[name] = {"groups": groups, "zero_units": zero, "kernel_size": int(kernel.size)}
        layers[name]["zero_units_per_epoch"] = logger.zero_units[pruned.get_layer(name).kernel.path]

    plain = keras_reg.strip_pruning(pruned)
    plan = keras_reg.plan_shrink(plain)
    small = keras_reg.shrink(plain, plan=plan)
    for name in PRUNED:
        layer = small.get_layer(name)
        layers[name]["kept"] = layer.filters if hasattr(layer, "filters") else layer.units

    # The recipe that keeps accuracy: prune the trained model to a speed-up, then fine-tune.
    fast = keras_reg.prune_channels(dense, speed_up=SPEED_UP)
    fast_before = outputs_of(fast, x_val)
    compile_model(fast)
    keras.utils.set_random_seed(SEED)
    finetune_epochs = QUICK_FINETUNE_EPOCHS if quick else FINETUNE_EPOCHS
    fast.fit(data[0], data[2], batch_size=BATCH, epochs=finetune_epochs, verbose=0)
    macs = {
        name: keras_reg.plan_shrink(model).macs_before
        for name, model in (("dense", dense), ("shrunk", small), ("fast", fast))
    }

    outputs = {
        name: outputs_of(model, x_val)
        for name, model in (("dense", dense), ("pruned", pruned), ("shrunk", small))
    }
    outputs["fast_before_finetuning"] = fast_before
    outputs["fast"] = outputs_of(fast, x_val)
    accuracy = {name: float((out.argmax(axis=1) == y_val).mean()) for name, out in outputs.items()}
    difference = float(np.abs(outputs["shrunk"] - outputs["pruned"]).max())
    x_batch = np.concatenate([x_val] * (4 if quick else 16))
    latency = latency_ms({"pruned": plain, "shrunk": small}, x_batch, 5 if quick else 31)

    print(f"\nPolynomialDecay(0 -> {TARGET}), axis=-1 (whole filters and units), on {PRUNED}:")
    rows = [
        [name, info["groups"], info["zero_units"], info["kept"]] for name, info in layers.items()
    ]
    print(_common.table(["layer", "filters/units", "zero after training", "kept by shrink"], rows))
    per_epoch = layers[PRUNED[1]]["zero_units_per_epoch"]
    print(f"zero filters of {PRUNED[1]} after each epoch: {per_epoch}")
    print(f"\n{plan}")
    print(
        f"\nparameters: {pruned.count_params():,} -> {small.count_params():,} "
        f"({small.count_params() / pruned.count_params():.2f}x)"
    )
    print(f"largest |output difference| shrunk vs pruned: {difference:.2e}")
    print(
        f"predict on {len(x_batch)} images: {latency['pruned']:.1f} ms -> "
        f"{latency['shrunk']:.1f} ms ({latency['shrunk'] / latency['pruned']:.2f}x, median, "
        "interleaved; CPU shared, noisy)"
    )
    print(
        f"validation accuracy: {100 * accuracy['dense']:.1f}% unpruned, "
        f"{100 * accuracy['pruned']:.1f}% pruned, {100 * accuracy['shrunk']:.1f}% shrunk"
    )
    lost = 100 * (accuracy["dense"] - accuracy["shrunk"])
    print(
        f"90% of every layer's filters and units costs {lost:.1f} points of accuracy here, "
        f"for MACs {macs['shrunk'] / macs['dense']:.3f}x."
    )

    print(
        f"\nprune_channels(unpruned, speed_up={SPEED_UP}), then {finetune_epochs} epoch(s) of "
        "fine-tuning:"
    )
    rows = [[name, width(dense.get_layer(name)), width(fast.get_layer(name))] for name in PRUNED]
    print(_common.table(["layer", "filters/units", "kept"], rows))
    print(
        f"parameters: {dense.count_params():,} -> {fast.count_params():,}; "
        f"MACs {macs['dense']:,} -> {macs['fast']:,} ({macs['fast'] / macs['dense']:.3f}x)"
    )
    print(
        f"validation accuracy: {100 * accuracy['dense']:.1f}% unpruned, "
        f"{100 * accuracy['fast_before_finetuning']:.1f}% right after pruning, "
        f"{100 * accuracy['fast']:.1f}% after fine-tuning"
    )
    print(f"done in {time.perf_counter() - start:.0f} s")
    return {
        "epochs": epochs,
        "target": TARGET,
        "layers": layers,
        "params_before": int(pruned.count_params()),
        "params_after": int(small.count_params()),
        "max_output_difference": difference,
        "accuracy": accuracy,
        "latency_ms": latency,
        "batch": len(x_batch),
        "speed_up": SPEED_UP,
        "macs": macs,
    }


if __name__ == "__main__":
    main(quick=_common.parse_args(__doc__).quick)
