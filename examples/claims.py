"""The claims of a common L1/L2 tutorial, measured on bundled scikit-learn data.

Each claim of "What is L1 and L2 regularization in Deep Learning?" gets a number and a verdict:
holds, holds only with proximal steps, or does not hold as stated. Three experiments:

- `penalties`: the demo's network (30 -> Dense(16, relu) -> Dense(1)) on load_breast_cancer with
  no penalty, Keras' L1(0.01) + Adam, keras_reg L1(0.01) + Proximal(Adam) and L2(0.01) + Adam on
  the first kernel, one stratified split and initialization per seed: zeros, features, memory,
  stability and generalization.
- `outliers`: linear regression on load_diabetes with 10% of the training targets corrupted by
  +/-10 standard deviations; test error on clean targets for L1 and L2 penalties under the MSE
  loss (for each, the best of the strengths 0.01 ... 3, picked on the test set, which favours
  both alike), and for the MAE (L1) loss without penalty.
- `cost`: time per training step of a 64-512-512-10 MLP on load_digits with each penalty,
  measured in interleaved rounds in one process (medians).

Run: `python examples/claims.py [--quick] [--only penalties|outliers|cost]`; it ends with a
markdown table (claim | verdict | measured | command).
"""

import logging
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse  # noqa: E402
from feature_selection import build_model  # noqa: E402
from sklearn.datasets import load_diabetes, load_digits  # noqa: E402
from sklearn.metrics import log_loss  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import keras_reg  # noqa: E402

# Many small models in one process: TensorFlow's "retracing" notices are expected here.
logging.getLogger("tensorflow").setLevel(logging.ERROR)

SECTIONS = ("penalties", "outliers", "cost")
# Several training steps per compiled call keeps Python out of the way; PyTorch allows only one.
MULTI_STEP = keras.backend.backend() != "torch"
HOLDS, PROXIMAL_ONLY, NOT_AS_STATED = (
    "holds",
    "holds only with proximal steps",
    "does not hold as stated",
)

# ---------------------------------------------------------------------------------------------
# penalties: the breast-cancer network, several seeds

PENALTIES = [
    ("none", lambda: None, False),
    ("keras_l1", lambda: keras.regularizers.L1(0.01), False),
    ("l1_proximal", lambda: keras_reg.L1(0.01), True),
    ("l2", lambda: keras_reg.L2(0.01), False),
]


class KernelSteps(keras.callbacks.Callback):
    """How far all kernels move from one epoch's end to the next: ||dW||, and ||dW|| / ||W||."""

    def _flat(self):
        kernels = [w for w in self.model.trainable_weights if len(w.shape) >= 2]
        return np.concatenate([w.numpy().ravel() for w in kernels])

    def on_train_begin(self, logs=None):
        self.previous, self.changes, self.relative = self._flat(), [], []

    def on_epoch_end(self, epoch, logs=None):
        current = self._flat()
        change = np.linalg.norm(current - self.previous)
        self.changes.append(change)
        self.relative.append(change / np.linalg.norm(self.previous))
        self.previous = current


def fit_penalty(make_regularizer, proximal, seed, epochs):
    x_train, x_val, y_train, y_val, _ = _common.breast_cancer(seed=seed)
    keras.utils.set_random_seed(seed)
    model = build_model(x_train.shape[1], make_regularizer())
    optimizer = keras.optimizers.Adam(1e-2)
    model.compile(keras_reg.Proximal(optimizer) if proximal else optimizer, "binary_crossentropy")
    steps = KernelSteps()
    model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=32,
        callbacks=[keras_reg.SparsityLogger(), steps],
        verbose=0,
    )
    # Keras' val_loss would include the penalty: score the predictions themselves.
    p_val = keras.ops.convert_to_numpy(model(x_val)).ravel().astype("float64")
    kernel = model.layers[0].kernel.numpy()
    return {
        "kernel": kernel,
        "zeros": int(np.sum(kernel == 0)),
        "below_1e-3": int(np.sum(np.abs(kernel) < 1e-3)),
        "min_abs": float(np.abs(kernel).min()),
        "features": int(_common.kept_rows(kernel).sum()),
        "val_loss": float(log_loss(y_val, p_val, labels=[0, 1])),
        "val_accuracy": float(np.mean((p_val > 0.5) == y_val)),
        # The last half of training: past the first large moves of every run.
        "kernel_step": float(np.mean(steps.relative[epochs // 2 :])),
        "kernel_step_abs": float(np.mean(steps.changes[epochs // 2 :])),
        "weight_bytes": sum(w.numpy().nbytes for w in model.weights),
        "params": model.count_params(),
    }


def penalties_section(seeds, epochs):
    runs = {slug: [] for slug, _, _ in PENALTIES}
    for seed in seeds:
        for slug, make_regularizer, proximal in PENALTIES:
            runs[slug].append(fit_penalty(make_regularizer, proximal, seed, epochs))
    header = ["run", "zeros (of 480)", "features", "val loss", "val acc", "|dW|/|W|", "|dW|"]
    rows = [
        [
            slug,
            " ".join(str(r["zeros"]) for r in rs),
            " ".join(str(r["features"]) for r in rs),
            " ".join(f"{r['val_loss']:.3f}" for r in rs),
            " ".join(f"{100 * r['val_accuracy']:.1f}" for r in rs),
            " ".join(f"{r['kernel_step']:.4f}" for r in rs),
            " ".join(f"{r['kernel_step_abs']:.4f}" for r in rs),
        ]
        for slug, rs in runs.items()
    ]
    print(
        f"\n[penalties] load_breast_cancer, {epochs} epochs, seeds {list(seeds)} (one value each):"
    )
    print(_common.table(header, rows))
    return {"seeds": list(seeds), "epochs": epochs, "runs": runs}


def sparse_bytes(kernel):
    """Bytes of `kernel` as scipy CSR (float32 values, int32 indices) and as bitmask + values."""
    csr = scipy.sparse.csr_matrix(kernel.astype("float32"))
    csr_bytes = csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes
    bitmask_bytes = int(np.ceil(kernel.size / 8)) + 4 * int(np.count_nonzero(kernel))
    return csr_bytes, bitmask_bytes


# ---------------------------------------------------------------------------------------------
# outliers: linear regression on load_diabetes with corrupted training targets

STRENGTHS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
CORRUPTED, SHIFT = 0.10, 10.0


def head_name(penalty, strength):
    return f"{penalty}_{strength:g}".replace(".", "_")  # no dots: torch refuses them in names


def outlier_heads():
    """(name, loss, regularizer, trained on clean targets?) for one linear model each."""
    heads = [("mse", "mse", None, False), ("mse_clean", "mse", None, True)]
    heads += [(head_name("l1", s), "mse", keras_reg.L1(s), False) for s in STRENGTHS]
    heads += [(head_name("l2", s), "mse", keras_reg.L2(s), False) for s in STRENGTHS]
    heads += [("mae", "mae", None, False)]
    return heads


def fit_outliers(seed, steps):
    data = load_diabetes()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.3, random_state=seed
    )
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = (scaler.transform(x).astype("float32") for x in (x_train, x_test))
    mean, std = y_train.mean(), y_train.std()
    y_train, y_test = ((y - mean) / std for y in (y_train, y_test))
    rng = np.random.default_rng(seed)
    bad = rng.choice(len(y_train), int(CORRUPTED * len(y_train)), replace=False)
    y_corrupted = y_train.copy()
    y_corrupted[bad] += SHIFT * rng.choice([-1.0, 1.0], len(bad))

    # One linear model per head on a shared input: the heads share no weight, and Adam and the
    # proximal step act per coordinate, so one fit trains them all independently.
    keras.utils.set_random_seed(seed)
    heads = outlier_heads()
    inputs = keras.Input((x_train.shape[1],))
    outputs = {
        name: keras.layers.Dense(1, kernel_regularizer=reg, name=name)(inputs)
        for name, _, reg, _ in heads
    }
    model = keras.Model(inputs, outputs)
    per_call = 100  # full-batch steps per epoch (and per compiled call)
    schedule = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=steps)
    model.compile(
        keras_reg.Proximal(keras.optimizers.Adam(schedule)),
        loss={name: loss for name, loss, _, _ in heads},
        steps_per_execution=per_call if MULTI_STEP else 1,
    )
    targets = {
        name: np.tile((y_train if clean else y_corrupted)[:, None], (per_call, 1)).astype("float32")
        for name, _, _, clean in heads
    }
    model.fit(
        np.tile(x_train, (per_call, 1)),
        targets,
        batch_size=len(x_train),
        epochs=max(1, steps // per_call),
        shuffle=False,
        verbose=0,
    )
    predictions = model(x_test)
    return {
        name: float(np.mean((keras.ops.convert_to_numpy(predictions[name]).ravel() - y_test) ** 2))
        for name, _, _, _ in heads
    }


def outliers_section(seeds, steps):
    errors = [fit_outliers(seed, steps) for seed in seeds]
    mean = {name: float(np.mean([e[name] for e in errors])) for name in errors[0]}
    best_l1 = min(STRENGTHS, key=lambda s: mean[head_name("l1", s)])
    best_l2 = min(STRENGTHS, key=lambda s: mean[head_name("l2", s)])
    print(
        f"\n[outliers] load_diabetes, {int(100 * CORRUPTED)}% of training targets +/-{SHIFT:g} "
        f"std, {steps} full-batch steps; test MSE on clean targets (std units), "
        f"seeds {list(seeds)}:"
    )
    rows = [
        [name, " ".join(f"{e[name]:.3f}" for e in errors), f"{mean[name]:.3f}"] for name in mean
    ]
    print(_common.table(["head", "test MSE per seed", "mean"], rows))
    return {"seeds": list(seeds), "mean": mean, "best_l1": best_l1, "best_l2": best_l2}


# ---------------------------------------------------------------------------------------------
# cost: time per training step

COST_RUNS = [
    ("none", lambda: None, False),
    ("Keras L1", lambda: keras.regularizers.L1(1e-4), False),
    ("L1", lambda: keras_reg.L1(1e-4), False),
    ("L2", lambda: keras_reg.L2(1e-4), False),
    ("L1 + Proximal", lambda: keras_reg.L1(1e-4), True),
]


def cost_section(rounds, batches):
    data = load_digits()
    batch = 128
    n = batch * (len(data.target) // batch)
    x = np.tile((data.data[:n] / 16.0).astype("float32"), (batches * batch // n + 1, 1))
    y = np.tile(data.target[:n], batches * batch // n + 1)
    x, y = x[: batches * batch], y[: batches * batch]
    models = {}
    for name, make_regularizer, proximal in COST_RUNS:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((64,))]
            + [
                keras.layers.Dense(512, activation="relu", kernel_regularizer=make_regularizer())
                for _ in range(2)
            ]
            + [keras.layers.Dense(10, kernel_regularizer=make_regularizer())]
        )
        optimizer = keras.optimizers.Adam(1e-3)
        model.compile(
            keras_reg.Proximal(optimizer) if proximal else optimizer,
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            steps_per_execution=batches if MULTI_STEP else 1,  # one compiled call per round
        )
        model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)  # trace, warm up
        models[name] = model
    times = {name: [] for name in models}
    names = list(models)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
            start = time.perf_counter()
            models[name].fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
            times[name].append((time.perf_counter() - start) / batches)
    median = {name: float(np.median(t)) for name, t in times.items()}
    print(
        f"\n[cost] 64-512-512-10 MLP on load_digits, batch {batch}, {batches} steps per round, "
        f"{rounds} interleaved rounds; median ms per step:"
    )
    rows = [
        [name, f"{1000 * median[name]:.2f}", f"{median[name] / median['none']:.2f}"]
        for name in names
    ]
    print(_common.table(["penalty", "ms/step", "vs none"], rows))
    return {"rounds": rounds, "batches": batches, "median": median}


# ---------------------------------------------------------------------------------------------
# verdicts


def _seeds(seeds):
    return f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"


def _mean(runs, key):
    return float(np.mean([r[key] for r in runs]))


def penalty_claims(m, command):
    runs = m["runs"]
    none, kl1, pl1, l2 = runs["none"], runs["keras_l1"], runs["l1_proximal"], runs["l2"]
    size = none[0]["kernel"].size
    n_seeds, epochs = len(m["seeds"]), m["epochs"]
    setting = f"mean of {_seeds(m['seeds'])}, {epochs} epochs, first kernel 30x16"
    kl1_zeros, pl1_zeros = _mean(kl1, "zeros"), _mean(pl1, "zeros")

    def only_proximal(plain, proximal):
        return PROXIMAL_ONLY if plain == 0 and proximal > 0 else (HOLDS if plain > 0 else "?")

    rows = [
        (
            'L1 "drives some weights to exactly zero"',
            only_proximal(kl1_zeros, pl1_zeros),
            f"exact zeros of {size}: Keras L1 + Adam {kl1_zeros:.0f} "
            f"({_mean(kl1, 'below_1e-3') / size:.0%} below 1e-3); keras_reg L1 + Proximal(Adam) "
            f"{pl1_zeros:.0f} ({pl1_zeros / size:.0%}) ({setting})",
        )
    ]
    kl1_features, pl1_features = _mean(kl1, "features"), _mean(pl1, "features")
    acc_delta = 100 * (_mean(pl1, "val_accuracy") - _mean(none, "val_accuracy"))
    rows.append(
        (
            "L1 acts as feature selection",
            only_proximal(30 - kl1_features, 30 - pl1_features),
            f"input features kept of 30: Keras L1 {kl1_features:.0f}, L1 + Proximal "
            f"{'/'.join(str(r['features']) for r in pl1)} (per seed); val accuracy "
            f"{acc_delta:+.1f} points vs no penalty",
        )
    )
    kernel = pl1[0]["kernel"]
    csr, bitmask = sparse_bytes(kernel)
    dense = kernel.astype("float32").nbytes
    rows.append(
        (
            'L1 gives "sparse models" with "reduced memory"',
            PROXIMAL_ONLY if csr < dense and kl1_zeros == 0 else HOLDS,
            f"first kernel (seed 0): dense float32 {dense:,} B; the L1 + Proximal kernel stored "
            f"as CSR takes {csr:,} B ({csr / dense:.2f}x), as bitmask + values {bitmask:,} B "
            f"({bitmask / dense:.2f}x); Keras L1 has no zeros to drop. The Keras model stays "
            f"dense: {pl1[0]['params']} params, {pl1[0]['weight_bytes']:,} B of weights with or "
            f"without zeros ({none[0]['weight_bytes']:,} B without penalty), and a dense layer "
            "multiplies by its zeros",
        )
    )
    l2_zeros = _mean(l2, "zeros")
    rows.append(
        (
            'L2 "does not set weights exactly to zero"',
            HOLDS if l2_zeros == 0 else NOT_AS_STATED,
            f"exact zeros of {size}: L2 {l2_zeros:.0f} (smallest magnitude "
            f"{min(r['min_abs'] for r in l2):.1e}: shrunk towards 0, never to it); neither does "
            f"plain L1 ({kl1_zeros:.0f}) ({setting})",
        )
    )
    step_none, step_l2 = _mean(none, "kernel_step"), _mean(l2, "kernel_step")
    abs_none, abs_l2 = _mean(none, "kernel_step_abs"), _mean(l2, "kernel_step_abs")
    std_none = float(np.std([r["val_loss"] for r in none]))
    std_l2 = float(np.std([r["val_loss"] for r in l2]))
    stable = step_l2 < step_none and std_l2 < std_none
    mixed = (step_l2 < step_none) != (std_l2 < std_none)
    rows.append(
        (
            'L2 gives "more stable training"',
            HOLDS if stable else NOT_AS_STATED,
            f"kernel change per epoch in the last half of training, relative ||dW||/||W||: none "
            f"{step_none:.3f}, L2 {step_l2:.3f} ({step_l2 / step_none:.2f}x; absolute ||dW|| "
            f"{abs_l2 / abs_none:.2f}x); std of val loss across {n_seeds} seeds: none "
            f"{std_none:.3f}, L2 {std_l2:.3f}"
            + (": mixed, the two proxies disagree" if mixed else ""),
        )
    )
    loss_deltas = [b["val_loss"] - a["val_loss"] for a, b in zip(none, l2, strict=True)]
    acc_deltas = [
        100 * (b["val_accuracy"] - a["val_accuracy"]) for a, b in zip(none, l2, strict=True)
    ]
    lower_loss = all(d < 0 for d in loss_deltas)
    better = lower_loss and np.mean(acc_deltas) >= 0
    mixed = lower_loss != (np.mean(acc_deltas) >= 0)
    rows.append(
        (
            'L2 gives "better generalization"',
            HOLDS if better else NOT_AS_STATED,
            f"val loss (without the penalty term): none {_mean(none, 'val_loss'):.3f}, L2 "
            f"{_mean(l2, 'val_loss'):.3f} (lower in {sum(d < 0 for d in loss_deltas)}/"
            f"{n_seeds} seeds); val accuracy: none {100 * _mean(none, 'val_accuracy'):.1f}%, "
            f"L2 {100 * _mean(l2, 'val_accuracy'):.1f}% ({np.mean(acc_deltas):+.1f} points)"
            + (": mixed, loss and accuracy disagree" if mixed else ""),
        )
    )
    return [(claim, verdict, measured, command) for claim, verdict, measured in rows]


def outlier_claims(m, command):
    mean, best_l1, best_l2 = m["mean"], m["best_l1"], m["best_l2"]
    l1, l2 = mean[head_name("l1", best_l1)], mean[head_name("l2", best_l2)]
    mse, mae = mean["mse"], mean["mae"]
    return [
        (
            'L1 is "more robust to outliers"',
            HOLDS if l1 < 0.9 * l2 else NOT_AS_STATED,
            f"test MSE, 10% corrupted targets (clean fit {mean['mse_clean']:.3f}): MSE loss "
            f"{mse:.3f}; + best L1 penalty ({best_l1:g}) {l1:.3f}, + best L2 penalty "
            f"({best_l2:g}) {l2:.3f} (L1/L2 {l1 / l2:.2f}x); L1 *loss* (MAE) {mae:.3f} "
            f"({mae / mse:.2f}x MSE loss)"
            + (": the robustness is the L1 loss's, not the penalty's" if mae < 0.9 * l1 else "")
            + f" (mean of {_seeds(m['seeds'])})",
            command,
        )
    ]


def cost_claims(m, command):
    t = m["median"]
    l1_vs_l2 = t["L1"] / t["L2"]
    return [
        (
            'L1 is "computationally more expensive"',
            HOLDS if l1_vs_l2 > 1.1 else NOT_AS_STATED,
            f"time per train step vs none: Keras L1 {t['Keras L1'] / t['none']:.2f}x, L1 "
            f"{t['L1'] / t['none']:.2f}x, L2 {t['L2'] / t['none']:.2f}x (L1/L2 {l1_vs_l2:.2f}x); "
            f"L1 + Proximal, which gives the exact zeros, {t['L1 + Proximal'] / t['none']:.2f}x "
            f"({1000 * t['none']:.2f} ms/step without penalty, median of {m['rounds']} rounds)",
            command,
        )
    ]


def main(quick=False, only=None):
    start = time.perf_counter()
    sections = [only] if only else list(SECTIONS)
    flag = " --quick" if quick else ""
    rows = []
    if "penalties" in sections:
        seeds, epochs = ((0, 1), 10) if quick else ((0, 1, 2), 60)
        m = penalties_section(seeds, epochs)
        rows += penalty_claims(m, f"`python examples/claims.py --only penalties{flag}`")
    if "outliers" in sections:
        seeds, steps = ((0,), 300) if quick else ((0, 1, 2), 1000)
        m = outliers_section(seeds, steps)
        rows += outlier_claims(m, f"`python examples/claims.py --only outliers{flag}`")
    if "cost" in sections:
        rounds, batches = (3, 10) if quick else (15, 40)
        m = cost_section(rounds, batches)
        rows += cost_claims(m, f"`python examples/claims.py --only cost{flag}`")
    order = [
        "drives some",
        "feature selection",
        "reduced memory",
        "robust to outliers",
        "exactly to zero",
        "stable training",
        "generalization",
        "computationally",
    ]
    rows.sort(key=lambda row: next(i for i, key in enumerate(order) if key in row[0]))
    print()
    print(_common.table(["claim", "verdict", "measured", "command"], rows, markdown=True))
    print(f"\ndone in {time.perf_counter() - start:.0f} s")
    return [
        dict(zip(("claim", "verdict", "measured", "command"), row, strict=True)) for row in rows
    ]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds and epochs (for tests)")
    parser.add_argument("--only", choices=SECTIONS, help="run one experiment")
    args = parser.parse_args()
    main(quick=args.quick, only=args.only)
