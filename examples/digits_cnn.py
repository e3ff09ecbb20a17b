"""Group lasso on conv filters: a small CNN on scikit-learn's 8x8 digits loses whole filters.

`GroupLasso(axis=-1)` makes each filter of a Conv2D kernel (its whole `kernel[..., f]` slice)
one group, and `keras_reg.Proximal` zeroes groups exactly (Wen et al., NeurIPS 2016). A filter
whose slice is all zero outputs the constant `relu(bias)`; `keras_reg.shrink` removes it and
folds the constant into the biases of the layers that read it, which is exact for a Dense layer
and a `padding="valid"` convolution (a `padding="same"` one sees zeros at the border instead, so
there such a filter stays). The second convolution is therefore `padding="valid"`. The shrunk
model is a real, smaller Keras model: its predictions, size on disk and latency are measured
against the original. The same network is trained without the penalty for comparison.

The optimizer is `Proximal(SGD(momentum=0.9))`: every weight takes the same step, so the group
threshold is exactly `strength * sqrt(p_g) * lr / (1 - momentum)`. Adaptive optimizers work too:
there a group's step is the harmonic mean of its coordinates' steps.

Run: `python examples/digits_cnn.py [--quick]`.
"""

import os
import tempfile
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
            padding=padding,
            activation="relu",
            kernel_regularizer=regularizer(),
            name=name,
        )
        for filters, name, padding in ((16, "conv1", "same"), (32, "conv2", "valid"))
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


def _latency(model, x, repeats=7):
    """Median seconds of one compiled forward pass over `x`."""
    model.predict_on_batch(x)  # compile once
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict_on_batch(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def shrink_and_measure(model, x_val):
    """keras_reg.shrink on the trained model: same predictions, fewer weights, less time."""
    small = keras_reg.shrink(model, verbose=True)
    x = np.concatenate([x_val] * (2048 // len(x_val) + 1))[:2048]
    before, after = model.predict(x, verbose=0), small.predict(x, verbose=0)
    # Both files written the same way, without optimizer state: an uncompiled copy of each
    # (rebuilt from its config; clone_model would carry the trained model's optimizer along).
    copies = []
    for m in (model, small):
        copy = type(m).from_config(m.get_config())
        copy.set_weights(m.get_weights())
        copies.append(copy)
    with tempfile.TemporaryDirectory() as folder:
        sizes = []
        for name, m in zip(("model", "small"), copies, strict=True):
            path = os.path.join(folder, f"{name}.keras")
            m.save(path)
            sizes.append(os.path.getsize(path))
    # Interleaved, so that load on the machine hits both alike.
    latency = {"model": [], "small": []}
    for _ in range(3):
        latency["model"].append(_latency(model, x))
        latency["small"].append(_latency(small, x))
    result = {
        "params_before": model.count_params(),
        "params_after": small.count_params(),
        "max_abs_diff": float(np.max(np.abs(before - after))),
        "same_predictions": bool(np.all(before.argmax(1) == after.argmax(1))),
        "file_bytes_before": sizes[0],
        "file_bytes_after": sizes[1],
        "latency_ratio": float(np.median(latency["small"]) / np.median(latency["model"])),
        "filters_after": {
            layer.name: layer.filters
            for layer in small.layers
            if isinstance(layer, keras.layers.Conv2D)
        },
    }
    print(
        f"\nshrunk: {result['params_before']:,} -> {result['params_after']:,} parameters "
        f"({result['params_after'] / result['params_before']:.2f}x), .keras file "
        f"{sizes[0]:,} -> {sizes[1]:,} bytes ({sizes[1] / sizes[0]:.2f}x), predict latency on "
        f"{len(x)} images {result['latency_ratio']:.2f}x; same predicted class for all: "
        f"{result['same_predictions']}, largest output difference {result['max_abs_diff']:.1e}"
    )
    return result


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
    shrunk = shrink_and_measure(group["model"], data[1])
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
        "shrunk": shrunk,
    }


if __name__ == "__main__":
    main(quick=_common.parse_args(__doc__).quick)
