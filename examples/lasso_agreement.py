"""Proximal SGD on a Keras Dense(1) layer against scikit-learn's Lasso and ElasticNet.

Full-batch `keras_reg.Proximal(SGD)` is ISTA; on standardized `load_diabetes` it
converges to the coordinate-descent solution: `L1(lam)` to `Lasso(alpha=lam/2)`,
`ElasticNet(A, r)` to `sklearn ElasticNet(alpha=A/2, l1_ratio=r)` (Keras' mse is
twice scikit-learn's objective). Also shows what plain SGD on the same penalty gives.

Run: `python examples/lasso_agreement.py [--quick]`.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402
from sklearn.linear_model import ElasticNet, Lasso  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import keras_reg  # noqa: E402


def diabetes():
    data = load_diabetes()
    x = StandardScaler().fit_transform(data.data).astype("float32")
    y = ((data.target - data.target.mean()) / data.target.std()).astype("float32")
    return x, y, data.feature_names


def fit_keras(x, y, regularizer, optimizer, steps):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((x.shape[1],)), keras.layers.Dense(1, kernel_regularizer=regularizer)]
    )
    per_epoch = 100  # 100 identical full batches an epoch: fewer Python round trips
    # PyTorch runs one step per call.
    spe = 1 if keras.backend.backend() == "torch" else per_epoch
    model.compile(optimizer, "mse", steps_per_execution=spe)
    model.fit(
        np.tile(x, (per_epoch, 1)),
        np.tile(y, per_epoch),
        batch_size=len(x),
        epochs=max(1, steps // per_epoch),
        shuffle=False,
        verbose=0,
    )
    return model.layers[0].kernel.numpy().ravel()


def main(quick=False):
    x, y, names = diabetes()
    steps = 500 if quick else 3000
    cases = [
        ("L1(0.1)", lambda: keras_reg.L1(0.1), Lasso(alpha=0.05)),
        (
            "ElasticNet(0.2, 0.7)",
            lambda: keras_reg.ElasticNet(0.2, 0.7),
            ElasticNet(alpha=0.1, l1_ratio=0.7),
        ),
    ]
    rows = []
    for label, make_reg, reference in cases:
        ref = reference.set_params(tol=1e-12, max_iter=100_000).fit(x.astype("float64"), y).coef_
        prox = fit_keras(x, y, make_reg(), keras_reg.Proximal(keras.optimizers.SGD(0.1)), steps)
        plain = fit_keras(x, y, make_reg(), keras.optimizers.SGD(0.1), steps)
        print(f"\n{label}: {steps} full-batch steps, lr=0.1, standardized load_diabetes")
        print(f"{'feature':>8} {'scikit-learn':>13} {'Proximal(SGD)':>14} {'plain SGD':>11}")
        for name, r, p, q in zip(names, ref, prox, plain, strict=True):
            print(f"{name:>8} {r:13.6f} {p:14.6f} {q:11.6f}")
        rows.append(
            (
                label,
                np.abs(prox - ref).max(),
                np.array_equal(prox == 0, ref == 0),
                int((ref == 0).sum()),
                int((prox == 0).sum()),
                int((plain == 0).sum()),
            )
        )
    print(
        f"\n{'penalty':<22}{'max |w - w_sklearn|':>20}{'same zeros':>12}"
        f"{'zeros: sklearn':>16}{'Proximal':>10}{'plain SGD':>11}"
    )
    for label, diff, same, nz_ref, nz_prox, nz_plain in rows:
        print(f"{label:<22}{diff:20.1e}{str(same):>12}{nz_ref:16d}{nz_prox:10d}{nz_plain:11d}")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (for the test suite)")
    main(parser.parse_args().quick)
