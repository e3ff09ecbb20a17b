"""Exact zeros with and without `keras_reg.Proximal`, for every optimizer family.

A Dense(16)-Dense(1) classifier on 40 features (5 informative, 35 noise) with
`L1(0.03)` on the first kernel, trained by each optimizer plainly and wrapped in
`Proximal`. Prints the exact-zero fraction of the kernel, the input features
removed (all-zero rows) and the validation accuracy.

Run: `python examples/proximal_zeros.py [--quick]`.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import keras_reg  # noqa: E402

OPTIMIZERS = {
    "SGD(0.1)": lambda: keras.optimizers.SGD(0.1),
    "SGD(0.01, momentum=0.9)": lambda: keras.optimizers.SGD(0.01, momentum=0.9),
    "Adam(0.01)": lambda: keras.optimizers.Adam(0.01),
    "AdamW(0.01)": lambda: keras.optimizers.AdamW(0.01),
    "Nadam(0.01)": lambda: keras.optimizers.Nadam(0.01),
    "Adamax(0.01)": lambda: keras.optimizers.Adamax(0.01),
    "RMSprop(0.01)": lambda: keras.optimizers.RMSprop(0.01),
    "Adagrad(0.2)": lambda: keras.optimizers.Adagrad(0.2),
}


def data():
    x, y = make_classification(
        n_samples=600, n_features=40, n_informative=5, n_redundant=0, shuffle=False, random_state=0
    )
    order = np.random.default_rng(0).permutation(len(x))
    x, y = StandardScaler().fit_transform(x[order]).astype("float32"), y[order]
    return x[:400], y[:400], x[400:], y[400:]


def train(optimizer, epochs):
    keras.utils.set_random_seed(0)
    x, y, xv, yv = data()
    model = keras.Sequential(
        [
            keras.Input((40,)),
            keras.layers.Dense(16, activation="relu", kernel_regularizer=keras_reg.L1(0.03)),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer, "binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    kernel = keras.ops.convert_to_numpy(model.layers[0].kernel)
    removed = int(np.all(kernel == 0, axis=1).sum())
    return float(np.mean(kernel == 0)), removed, model.evaluate(xv, yv, verbose=0)[1]


def main(quick=False):
    epochs = 5 if quick else 15
    names = list(OPTIMIZERS)[:2] if quick else list(OPTIMIZERS)
    print(f"L1(0.03) on a 40x16 kernel, {epochs} epochs, 35 of 40 features are noise\n")
    print(
        "| optimizer | zeros, plain | zeros, Proximal | features removed, Proximal "
        "| val. acc. plain | val. acc. Proximal |\n|---|---|---|---|---|---|"
    )
    rows = {}
    for name in names:
        plain = train(OPTIMIZERS[name](), epochs)
        prox = train(keras_reg.Proximal(OPTIMIZERS[name]()), epochs)
        rows[name] = (plain, prox)
        print(
            f"| {name} | {plain[0]:.1%} | {prox[0]:.1%} | {prox[1]} / 40 | {plain[2]:.3f} "
            f"| {prox[2]:.3f} |"
        )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (for the test suite)")
    main(parser.parse_args().quick)
