"""Group lasso on conv filters: a small CNN on scikit-learn's 8x8 digits loses whole filters.

`GroupLasso(axis=-1)` makes each filter of a Conv2D kernel (its whole `kernel[..., f]` slice)
one group, and `keras_reg.Proximal` zeroes groups exactly (Wen et al., NeurIPS 2016). A filter
whose slice is all zero is removed: its output is the constant `relu(bias)`, which the next layer
can fold into its own bias, so the filter and the next kernel's matching input slice can be cut
from the network. The same network is trained without the penalty for comparison.

The optimizer is `Proximal(SGD(momentum=0.9))`: every weight takes the same step, so the group
threshold is exactly `strength * sqrt(p_g) * lr / (1 - momentum)`. Adaptive optimizers work too:
there a group's step is the harmonic mean of its coordinates' steps.

Run: `python examples/digits_cnn.py [--quick]`.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_reg  # noqa: E402

SEED = 0
STRENGTH = 2e-3
EPOCHS, QUICK_EPOCHS = 20, 4


def build_model(regularizer):
    convs = [
        keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            activation="relu",
            kernel_regularizer=regularizer(),
            name=name,
        )
        for filters, name in ((16, "conv1"), (32, "conv2"))
    ]
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            *convs,
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def train(strength, data, epochs):
    x_train, x_val, y_train, y_val = data
    keras.utils.set_random_seed(SEED)
    if strength:
        model = build_model(lambda: keras_reg.GroupLasso(strength, axis=-1))
        optimizer = keras_reg.Proximal(keras.optimizers.SGD(0.05, momentum=0.9))
    else:
        model = build_model(lambda: None)
        optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    logger = keras_reg.SparsityLogger()
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, callbacks=[logger], verbose=0)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    layers = []
    for layer in convs:
        kernel = layer.kernel.numpy()
        # A filter is removed when its whole slice along the last axis is exactly zero.
        removed = int(np.sum(~np.any(kernel.reshape(-1, kernel.shape[-1]) != 0, axis=0)))
        layers.append(
            {
                "layer": layer.name,
                "filters": kernel.shape[-1],
                "removed": removed,
                "logged": logger.zero_units[layer.kernel.path][-1],
                "weights": kernel.size,
                "nonzero": int(np.count_nonzero(kernel)),
            }
        )
    return {
        "model": model,
        "val_accuracy": float(model.evaluate(x_val, y_val, verbose=0)[1]),
        "layers": layers,
        "filters_removed_per_epoch": [
            sum(logger.zero_units[c.kernel.path][e] for c in convs) for e in range(epochs)
        ],
    }


def main(quick=False):
    start = time.perf_counter()
    data = _common.digits(seed=SEED)
    epochs = QUICK_EPOCHS if quick else EPOCHS
    print(
        f"load_digits: {len(data[0])} training / {len(data[1])} validation 8x8 images; "
        f"{epochs} epochs of SGD(0.05, momentum=0.9), batch 64, seed {SEED}"
    )
    plain = train(None, data, epochs)
    group = train(STRENGTH, data, epochs)

    print(f"\nGroupLasso({STRENGTH:g}, axis=-1) + Proximal on both conv kernels:")
    rows = [
        [
            layer["layer"],
            layer["filters"],
            layer["removed"],
            layer["filters"] - layer["removed"],
            f"{layer['nonzero']}/{layer['weights']}",
        ]
        for layer in group["layers"]
    ]
    print(_common.table(["layer", "filters", "removed", "kept", "kernel weights kept"], rows))
    removed = sum(layer["removed"] for layer in group["layers"])
    total = sum(layer["filters"] for layer in group["layers"])
    print(f"filters removed after each epoch: {group['filters_removed_per_epoch']}")
    conv1, conv2 = (layer["filters"] - layer["removed"] for layer in group["layers"])
    # A removed filter outputs the constant relu(bias): the next layer's matching input slice
    # can be folded into that layer's bias, so both are cut.
    before = 3 * 3 * 1 * 16 + 3 * 3 * 16 * 32 + 4 * 4 * 32 * 10
    after = 3 * 3 * 1 * conv1 + 3 * 3 * conv1 * conv2 + 4 * 4 * conv2 * 10
    print(
        f"cut down: conv kernels (3, 3, 1, {conv1}) and (3, 3, {conv1}, {conv2}), Dense kernel "
        f"({16 * conv2}, 10): {after:,} kernel weights instead of {before:,}"
    )
    print(
        f"\nvalidation accuracy: {100 * plain['val_accuracy']:.1f}% without penalty, "
        f"{100 * group['val_accuracy']:.1f}% with {removed} of {total} filters removed "
        f"({100 * (group['val_accuracy'] - plain['val_accuracy']):+.1f} points)"
    )
    print("\nkeras_reg.sparsity_report of the group-lasso model:")
    print(keras_reg.sparsity_report(group["model"]))
    print(f"done in {time.perf_counter() - start:.0f} s")
    return {
        "strength": STRENGTH,
        "epochs": epochs,
        "plain_accuracy": plain["val_accuracy"],
        "group_accuracy": group["val_accuracy"],
        "plain_layers": plain["layers"],
        "group_layers": group["layers"],
        "filters_removed_per_epoch": group["filters_removed_per_epoch"],
        "kernel_weights_after_cut": after,
        "kernel_weights_before_cut": before,
    }


if __name__ == "__main__":
    main(quick=_common.parse_args(__doc__).quick)
