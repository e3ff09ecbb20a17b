"""Choosing a strength: sparsity and accuracy against the L1 strength, on real data.

The demo's network (30 inputs -> Dense(16, relu) -> Dense(1, sigmoid)) on scikit-learn's bundled
breast-cancer data, `keras_reg.L1(strength)` on the first kernel, trained with
`keras_reg.Proximal(Adam(1e-2))` for each strength of a log-spaced grid, and once without a
penalty. For each seed (its own stratified split and initialization) it records the exact zeros of
the first kernel, the input features and hidden units it still uses, and the validation accuracy;
it prints the means as a table and draws them against the strength.

Run: `python examples/strength_sweep.py [--quick] [--out DIR]` (writes DIR/strength_sweep.png).
"""

import os

import _common
import keras
import numpy as np

import keras_reg

STRENGTHS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
QUICK_STRENGTHS = (1e-3, 3e-2)
SEEDS, QUICK_SEEDS = (0, 1, 2), (0,)
EPOCHS, QUICK_EPOCHS = 40, 5


def train(strength, seed, epochs):
    """One run; `strength=None` means no penalty (and plain Adam)."""
    x_train, x_val, y_train, y_val, _ = _common.breast_cancer(seed=seed)
    keras.utils.set_random_seed(seed)
    regularizer = None if strength is None else keras_reg.L1(strength)
    model = keras.Sequential(
        [
            keras.Input((x_train.shape[1],)),
            keras.layers.Dense(16, activation="relu", kernel_regularizer=regularizer),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    optimizer = keras.optimizers.Adam(1e-2)
    if strength is not None:
        optimizer = keras_reg.Proximal(optimizer)
    model.compile(optimizer, "binary_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    report = keras_reg.sparsity_report(model)
    first = report.rows[0]
    return {
        "sparsity": first.sparsity,
        "features_kept": first.inputs - first.zero_inputs,
        "units_kept": first.units - first.zero_units,
        "val_accuracy": float(model.evaluate(x_val, y_val, verbose=0)[1]),
    }


def sweep(strengths, seeds, epochs):
    """`{strength or None: mean of each measure over the seeds}`."""
    results = {}
    for strength in (None, *strengths):
        runs = [train(strength, seed, epochs) for seed in seeds]
        results[strength] = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
    return results


def plot(results, path):
    plt = _common.pyplot()
    strengths = [s for s in results if s is not None]
    base = results[None]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 6.0), sharex=True)
    zeros = [100 * results[s]["sparsity"] for s in strengths]
    top.plot(strengths, zeros, "o-", color="tab:blue")
    for s, z in zip(strengths, zeros, strict=True):
        kept = results[s]["features_kept"]
        top.annotate(
            f"{kept:.1f}/30\nfeatures",
            (s, z),
            textcoords="offset points",
            xytext=(0, -30),
            ha="center",
            fontsize=8,
        )
    top.set_ylabel("first-kernel weights\nexactly zero (%)")
    top.margins(x=0.08)
    top.set_ylim(0, 100)
    top.grid(alpha=0.3)
    accuracy = [100 * results[s]["val_accuracy"] for s in strengths]
    bottom.plot(strengths, accuracy, "o-", color="tab:green", label="L1 + Proximal")
    bottom.axhline(100 * base["val_accuracy"], color="gray", ls="--", label="no penalty")
    bottom.set_ylabel("validation accuracy (%)")
    bottom.set_ylim(min(90.0, min(accuracy) - 1), 100)  # 90-100: one sample is 0.7 points
    bottom.set_xlabel("L1 strength (log scale)")
    bottom.set_xscale("log")
    bottom.legend(loc="lower left")
    bottom.grid(alpha=0.3)
    fig.suptitle("L1(strength) + Proximal(Adam(1e-2)), load_breast_cancer")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(quick=False, out="strength_sweep_output"):
    strengths = QUICK_STRENGTHS if quick else STRENGTHS
    seeds = QUICK_SEEDS if quick else SEEDS
    epochs = QUICK_EPOCHS if quick else EPOCHS
    results = sweep(strengths, seeds, epochs)
    print(
        f"L1(strength) + Proximal(Adam(1e-2)) on the first kernel (30x16), {epochs} epochs, "
        f"mean of {len(seeds)} seed(s)"
    )
    rows = []
    for strength, r in results.items():
        rows.append(
            [
                "no penalty" if strength is None else f"{strength:g}",
                f"{r['sparsity']:.1%}",
                f"{r['features_kept']:.1f}/30",
                f"{r['units_kept']:.1f}/16",
                f"{r['val_accuracy']:.1%}",
            ]
        )
    header = ["strength", "exact zeros", "features kept", "units kept", "val acc"]
    print(_common.table(header, rows))
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "strength_sweep.png")
    plot(results, path)
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    args = _common.parse_args(__doc__, out="strength_sweep_output")
    main(args.quick, args.out)
