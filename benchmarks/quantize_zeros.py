"""Pruning, then Keras quantization: which zeros survive `model.quantize(mode)`.

A digits MLP (64-128-64-10, bundled scikit-learn data) is pruned to 50% of
each kernel with `keras_reg.prune_low_magnitude`, trained 5 epochs,
stripped (`keras_reg.strip_pruning`), then quantized with Keras 3's
`model.quantize(mode)` for `int8`, `int4` and `float8`, each on a fresh copy.
For each mode it prints, over the three kernels:

- the zeros of the pruned float kernels, and the zeros of the quantized
  kernels read from their stored values in NumPy (`layer.kernel`: int8 as
  stored, int4 unpacked by Keras; a stored value is a zero when it
  dequantizes to exactly 0, i.e. equals its zero point), and what
  `keras_reg.sparsity_report` counts;
- how many of the pruned zeros are still zero, and how many weights became
  zero that were not;
- the zeros of the kernel `call` multiplies by: the stored ones for int8 and
  int4; for float8, the float kernel cast to float8 (e4m3) inside `call`, as
  `keras.quantizers.quantize_and_dequantize` does, computed with ml_dtypes;
- the largest |difference| of the logits from the float model's on the test
  split, relative to the largest |logit|, and both test accuracies.

Run: `python -m benchmarks.quantize_zeros` (any backend: `KERAS_BACKEND=jax ...`).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_reg  # noqa: E402

SEED = 0
MODES = ("int8", "int4", "float8")
KERNELS = ("d1", "d2", "out")


def data():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)


def build():
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu", name="d1"),
            keras.layers.Dense(64, activation="relu", name="d2"),
            keras.layers.Dense(10, name="out"),
        ],
        name="mlp",
    )


def pruned_model(x_train, y_train, epochs=5):
    keras.utils.set_random_seed(SEED)
    model = build()
    keras_reg.prune_low_magnitude(model, 0.5)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    return keras_reg.strip_pruning(model)


def copy_of(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def stored_zeros(layer):
    """The zero mask of a kernel as stored: the weights that dequantize to exactly 0."""
    kernel = keras.ops.convert_to_numpy(layer.kernel)  # int8 as stored, int4 unpacked
    mode = layer.quantization_mode
    if mode == "int4" and getattr(layer, "kernel_zero", None) is not None:
        groups = keras.ops.convert_to_numpy(layer.g_idx).astype(int)
        zero = keras.ops.convert_to_numpy(layer.kernel_zero).astype(np.int16)[groups]
        return kernel.astype(np.int16) == zero
    return kernel == 0


def call_zeros(layer):
    """Zeros of the kernel `call` multiplies by; a float8 kernel is cast to e4m3 there."""
    if layer.quantization_mode != "float8":
        return stored_zeros(layer)
    import ml_dtypes

    scale = float(keras.ops.convert_to_numpy(layer.kernel_scale))
    kernel = keras.ops.convert_to_numpy(layer.kernel) / scale
    top = float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)
    return np.clip(kernel, -top, top).astype(ml_dtypes.float8_e4m3fn).astype(np.float32) == 0


def measure(model, x_test, y_test, mode):
    """One row of the table: `model` is the stripped float model (left as it is)."""
    quantized = copy_of(model)
    quantized.quantize(mode)
    before = {n: keras.ops.convert_to_numpy(model.get_layer(n).kernel) == 0 for n in KERNELS}
    after = {n: stored_zeros(quantized.get_layer(n)) for n in KERNELS}
    at_call = {n: call_zeros(quantized.get_layer(n)) for n in KERNELS}
    report = keras_reg.sparsity_report(quantized)
    logits = keras.ops.convert_to_numpy(model.predict(x_test, verbose=0))
    q_logits = keras.ops.convert_to_numpy(quantized.predict(x_test, verbose=0))
    size = sum(b.size for b in before.values())
    return {
        "mode": mode,
        "size": size,
        "pruned_zeros": sum(int(b.sum()) for b in before.values()),
        "stored_zeros": sum(int(a.sum()) for a in after.values()),
        "report_zeros": report.zeros,
        "call_zeros": sum(int(a.sum()) for a in at_call.values()),
        "kept": sum(int((before[n] & after[n]).sum()) for n in KERNELS),
        "new": sum(int((after[n] & ~before[n]).sum()) for n in KERNELS),
        "max_diff": float(np.max(np.abs(q_logits - logits)) / np.max(np.abs(logits))),
        "accuracy": float(np.mean(logits.argmax(1) == y_test)),
        "q_accuracy": float(np.mean(q_logits.argmax(1) == y_test)),
    }


def main():
    x_train, x_test, y_train, y_test = data()
    model = pruned_model(x_train, y_train)
    rows = [measure(model, x_test, y_test, mode) for mode in MODES]
    print(f"Keras {keras.__version__}, backend {keras.backend.backend()}")
    print(
        "| mode | pruned zeros (float) | zeros stored | sparsity_report | pruned zeros kept "
        "| new zeros | zeros in the kernel `call` uses "
        "| max abs logit diff / max abs logit | accuracy float -> quantized |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['pruned_zeros']:,} of {r['size']:,} | {r['stored_zeros']:,} "
            f"| {r['report_zeros']:,} | {r['kept']:,} of {r['pruned_zeros']:,} | {r['new']:,} "
            f"| {r['call_zeros']:,} | {r['max_diff']:.4f} "
            f"| {r['accuracy']:.4f} -> {r['q_accuracy']:.4f} |"
        )


if __name__ == "__main__":
    main()
