"""What L1, L2, elastic-net and group penalties do to a small network, on real data.

The same network (30 inputs -> Dense(16, relu) -> Dense(1, sigmoid)) is trained six times on
scikit-learn's bundled breast-cancer data (569 tumours, 30 named features; stratified 75/25
split, standardized), each time with another penalty on the first layer's kernel:

- no penalty;
- Keras' own `keras.regularizers.L1`, with plain Adam;
- `keras_reg.L1` with `keras_reg.Proximal(Adam)`: the same penalty, applied by its proximal map;
- `keras_reg.L2`, with plain Adam;
- `keras_reg.ElasticNet` with `Proximal(Adam)`;
- `keras_reg.GroupLasso(axis=0)` with `Proximal(Adam)`: one group per input feature.

It prints the validation accuracy, the exact zeros, the weights, input features and hidden units
kept, the names of the features kept, checks that every saved `.keras` model reloads in a fresh
process with identical predictions, and draws three figures into the output folder.

Run: `python examples/feature_selection.py [--quick] [--out DIR]` (or `make demo`).
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_reg  # noqa: E402

SEED = 0
EPOCHS, QUICK_EPOCHS = 60, 10

# (file name, short name for the figures, what was trained, regularizer, proximal?)
RUNS = [
    ("none", "no penalty", "no penalty", lambda: None, False),
    (
        "keras_l1",
        "Keras L1",
        "keras.regularizers.L1(0.01)",
        lambda: keras.regularizers.L1(0.01),
        False,
    ),
    ("l1_proximal", "L1 + Proximal", "L1(0.01) + Proximal", lambda: keras_reg.L1(0.01), True),
    ("l2", "L2", "L2(0.01)", lambda: keras_reg.L2(0.01), False),
    (
        "elastic_net_proximal",
        "ElasticNet + Proximal",
        "ElasticNet(0.04, l1_ratio=0.5) + Proximal",
        lambda: keras_reg.ElasticNet(0.04, l1_ratio=0.5),
        True,
    ),
    (
        "group_lasso_proximal",
        "GroupLasso + Proximal",
        "GroupLasso(0.005, axis=0) + Proximal",
        lambda: keras_reg.GroupLasso(0.005, axis=0),
        True,
    ),
]

EXPLAIN_RUNS = (
    "Each row is the same network trained with another penalty on its first layer. "
    '"+ Proximal" means the optimizer is wrapped in keras_reg.Proximal: after each Adam step it '
    "applies the penalty by its proximal map, which sets the weights the penalty outweighs to "
    "exactly 0.0. Without it (Keras' L1, L2) gradient descent only makes weights small: they "
    "jitter around zero and never reach it."
)
EXPLAIN_TABLE = (
    "val acc: accuracy on the 143 held-out samples (one sample is 0.7 points). exact zeros: the "
    "share of all kernel weights (30x16 + 16x1) that are exactly 0.0. weights kept: the non-zero "
    "ones. features kept: input features that still reach the network (a feature whose row of "
    "the first kernel is all zero is ignored: it could be dropped from the data). units kept: "
    "hidden units with a non-zero input weight. reloaded: the saved .keras file, loaded in a "
    "fresh process, predicts exactly what the trained model does."
)

# Loads every model in a fresh interpreter and saves its predictions. keras_reg is imported
# before loading: that registers its classes with Keras (a .keras file cannot import it).
_RELOAD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    import keras_reg
    x = np.load(sys.argv[1])
    preds = [keras.ops.convert_to_numpy(keras.saving.load_model(p)(x)) for p in sys.argv[3:]]
    np.savez(sys.argv[2], *preds)
    """
)


def build_model(n_features, regularizer):
    return keras.Sequential(
        [
            keras.Input((n_features,)),
            keras.layers.Dense(16, activation="relu", kernel_regularizer=regularizer),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )


def train(run, data, epochs):
    slug, name, spec, make_regularizer, proximal = run
    x_train, x_val, y_train, y_val, _ = data
    keras.utils.set_random_seed(SEED)  # the same initial weights and batches for every run
    model = build_model(x_train.shape[1], make_regularizer())
    optimizer = keras.optimizers.Adam(1e-2)
    if proximal:
        optimizer = keras_reg.Proximal(optimizer)
    model.compile(optimizer, "binary_crossentropy", metrics=["accuracy"])
    history = model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=32,
        callbacks=[keras_reg.SparsityLogger()],
        verbose=0,
    )
    kernels = [w.numpy() for w in model.trainable_weights if w.ndim >= 2]
    first = kernels[0]
    return {
        "slug": slug,
        "name": name,
        "spec": spec,
        "model": model,
        "val_accuracy": float(model.evaluate(x_val, y_val, verbose=0)[1]),
        "sparsity": [float(s) for s in history.history["sparsity"]],
        "kernel_size": sum(k.size for k in kernels),
        "kernel_nonzero": sum(int(np.count_nonzero(k)) for k in kernels),
        "first_kernel": first,
        "features_kept": _common.kept_rows(first),
        "units_kept": int(_common.kept_rows(first.T).sum()),
    }


def shrink_run(model, x_val, names):
    """The real smaller model: `keras_reg.shrink` with the unread input features dropped."""
    plan = keras_reg.plan_shrink(model, drop_inputs=True)
    small = keras_reg.shrink(model, plan=plan)
    (kept,) = plan.inputs_kept.values()
    before = keras.ops.convert_to_numpy(model(x_val))
    after = keras.ops.convert_to_numpy(small(x_val[:, kept]))
    return {
        "params_before": model.count_params(),
        "params_after": small.count_params(),
        "features": [names[i] for i in kept],
        "units": small.layers[0].units,
        "max_abs_diff": float(np.max(np.abs(before - after))),
    }


def check_reload(results, x_val, folder):
    """Saves each model, reloads them all in a new process, compares the predictions bit for bit."""
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"{r['slug']}.keras") for r in results]
    for result, path in zip(results, paths, strict=True):
        result["model"].save(path)
    with tempfile.TemporaryDirectory() as tmp:
        x_path, pred_path = os.path.join(tmp, "x.npy"), os.path.join(tmp, "preds.npz")
        np.save(x_path, x_val)
        done = subprocess.run(
            [sys.executable, "-c", _RELOAD, x_path, pred_path, *paths],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"reloading the saved models failed:\n{done.stderr[-3000:]}")
        with np.load(pred_path) as reloaded:
            fresh = [reloaded[f"arr_{i}"] for i in range(len(paths))]
    for result, path, pred in zip(results, paths, fresh, strict=True):
        mine = keras.ops.convert_to_numpy(result["model"](x_val))
        result["saved_as"] = path
        result["reload_max_diff"] = float(np.max(np.abs(mine - pred)))
        result["reload_identical"] = bool(np.array_equal(mine, pred))


def plot_sparsity(plt, results, path):
    fig, ax = plt.subplots(figsize=(10, 4.5))
    styles = ["-", "--", "-", ":", "-", "-"]
    for i, r in enumerate(results):
        epochs = np.arange(1, len(r["sparsity"]) + 1)
        ax.plot(
            epochs,
            100 * np.array(r["sparsity"]),
            styles[i % len(styles)],
            color=f"C{i}",
            lw=2,
            label=f"{r['name']} ({100 * r['sparsity'][-1]:.0f}%)",
        )
    ax.set(
        xlabel="epoch",
        ylabel="kernel weights exactly zero (%)",
        title="Sparsity per epoch (keras_reg.SparsityLogger)",
        ylim=(-3, 100),
    )
    ax.grid(alpha=0.3)
    # Outside the axes: inside, it hid a curve whatever the corner.
    ax.legend(title="run (last epoch)", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_histograms(plt, results, path):
    """|w| on a log axis, with the exact zeros (which a log axis cannot show) as their own bar.

    The counts are on a log axis too: next to a bar of 400 exact zeros, the few dozen weights
    that survive would be invisible on a linear one.
    """
    lo, hi = -7, 1  # decades: 1e-7 .. 10; smaller non-zero magnitudes go in the first bin
    bins = np.arange(lo, hi + 0.01, 0.25)
    zero_at = lo - 1.0
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), sharex=True)
    for i, (ax, r) in enumerate(zip(axes.flat, results, strict=True)):
        w = np.abs(r["first_kernel"]).ravel()
        zeros = int(np.sum(w == 0))
        logs = np.clip(np.log10(w[w > 0]), lo, hi - 1e-6)
        ax.hist(logs, bins=bins, color=f"C{i}", alpha=0.85, label="non-zero")
        ax.bar(zero_at, zeros, width=0.6, color="black", label="exactly 0")
        ax.text(zero_at, zeros, str(zeros), ha="center", va="bottom", fontsize=9)
        ax.set_title(f"{r['name']}: {zeros}/{w.size} exactly zero", fontsize=10)
        ax.set_yscale("log")
        ax.set_ylim(0.8, w.size * 2)
        ax.grid(axis="y", alpha=0.3)
    ticks = [zero_at, *range(lo, hi + 1, 2)]
    for ax in axes[-1]:
        ax.set_xticks(ticks, ["0"] + [f"1e{t}" for t in ticks[1:]])
        ax.set_xlabel("|w| (log scale; exact zeros at the left)")
    for ax in axes[:, 0]:
        ax.set_ylabel("first-layer weights (log scale)")
    axes[0, 0].legend(loc="upper left", fontsize=9)
    fig.suptitle("First-layer weight magnitudes: L1 + Proximal spikes at exactly 0, L2 does not")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


REMOVED, REMOVED_TEXT = "#f4b6b6", "#c0392b"


def plot_heatmap(plt, results, feature_names, path):
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Patch

    vmax = max(float(np.abs(r["first_kernel"]).max()) for r in results)
    # Exact zeros are masked: drawn transparent, over the axes' colour.
    cmap = plt.get_cmap("viridis").with_extremes(bad=(0, 0, 0, 0))
    fig, axes = plt.subplots(1, len(results), figsize=(17, 8.5), sharey=True)
    for ax, r in zip(axes, results, strict=True):
        w = np.abs(r["first_kernel"])
        image = ax.imshow(
            np.ma.masked_equal(w, 0), cmap=cmap, norm=LogNorm(1e-4, vmax), aspect="auto"
        )
        kept = r["features_kept"]
        for row in np.flatnonzero(~kept):  # a removed feature: its whole row is zero
            ax.axhspan(row - 0.5, row + 0.5, color=REMOVED, zorder=0)
        ax.set_title(f"{r['name']}\n{kept.sum()}/{len(kept)} features kept", fontsize=10)
        ax.set_xlabel("hidden unit")
        ax.set_xticks(range(0, w.shape[1], 5))
    # The rows are the same features in every panel: their names in black on the left. The red
    # names, the features the group-lasso run removed, go beside that run's panel, on the right.
    axes[0].set_yticks(range(len(feature_names)), feature_names, fontsize=8)
    for ax in axes[1:]:
        ax.tick_params(axis="y", left=False)
    last = axes[-1].secondary_yaxis("right")
    last.set_yticks(range(len(feature_names)), feature_names, fontsize=8)
    removed = ~results[-1]["features_kept"]
    for label, gone in zip(last.get_yticklabels(), removed, strict=True):
        label.set_color(REMOVED_TEXT if gone else "black")
    fig.colorbar(
        image,
        ax=axes,
        orientation="horizontal",
        fraction=0.03,
        pad=0.08,
        aspect=60,
        label="|w| (log scale)",
    )
    fig.legend(
        handles=[
            Patch(facecolor="white", edgecolor="black", label="exactly 0"),
            Patch(facecolor=REMOVED, edgecolor="black", label="feature removed (whole row zero)"),
        ],
        loc="upper right",
        ncol=2,
        fontsize=9,
    )
    fig.suptitle(
        "First-layer kernel |w| (30 input features x 16 units); "
        f"red names: removed by {results[-1]['name']} (right)",
        x=0.45,
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def strength_path(data, quick):
    """A short regularization path: L1 from max_strength down, warm starts, scored on x_val."""
    x_train, x_val, y_train, y_val, _ = data
    keras.utils.set_random_seed(SEED)
    model = build_model(x_train.shape[1], keras_reg.L1(0.01))
    model.compile(keras_reg.Proximal(keras.optimizers.Adam(1e-2)), "binary_crossentropy")
    path = keras_reg.regularization_path(
        model,
        x_train,
        y_train,
        n_strengths=5,
        eps=1e-2,
        epochs=2 if quick else 5,
        batch_size=32,
        validation_data=(x_val, y_val),
        verbose=0,
    )
    print(
        "\nWhich strength? keras_reg.regularization_path trains L1 + Proximal along a log grid "
        "from\nkeras_reg.max_strength down, each point starting from the previous one (warm "
        "starts),\nscored on the validation part (docs/choosing-a-strength.md adds "
        "cross-validation):"
    )
    print(path)
    return path


def main(quick=False, out="demo_output"):
    start = time.perf_counter()
    data = _common.breast_cancer(seed=SEED)
    x_train, x_val, _, _, names = data
    epochs = QUICK_EPOCHS if quick else EPOCHS
    print(
        f"load_breast_cancer: {len(x_train)} training / {len(x_val)} validation samples, "
        f"{len(names)} features; {epochs} epochs of Adam(1e-2), batch 32, seed {SEED}"
    )
    results = []
    for run in RUNS:
        results.append(train(run, data, epochs))
        print(f"  trained: {results[-1]['spec']}", flush=True)

    os.makedirs(out, exist_ok=True)
    check_reload(results, x_val, os.path.join(out, "models"))

    n_features = len(names)
    rows = [
        [
            r["spec"],
            f"{100 * r['val_accuracy']:.1f}%",
            f"{100 * r['sparsity'][-1]:.1f}%",
            f"{r['kernel_nonzero']}/{r['kernel_size']}",
            f"{r['features_kept'].sum()}/{n_features}",
            f"{r['units_kept']}/{r['first_kernel'].shape[1]}",
            "identical" if r["reload_identical"] else f"max diff {r['reload_max_diff']:.1e}",
        ]
        for r in results
    ]
    header = "run|val acc|exact zeros|weights kept|features kept|units kept|reloaded".split("|")
    print()
    print(textwrap.fill(EXPLAIN_RUNS, 100))
    print()
    print(_common.table(header, rows))
    print()
    print(textwrap.fill(EXPLAIN_TABLE, 100))

    for r in results:
        kept = r["features_kept"]
        if r["spec"].endswith("Proximal"):
            chosen = [n for n, k in zip(names, kept, strict=True) if k]
            print(f"\n{r['spec']} keeps {len(chosen)} of {n_features} features:")
            print(
                textwrap.fill(", ".join(chosen), 100, initial_indent="  ", subsequent_indent="  ")
            )

    print(
        "\nkeras_reg.shrink turns the zeros into a smaller model: hidden units with no incoming "
        "or no\noutgoing weight go, and with drop_inputs=True so do features no kept unit reads."
    )
    for r in results:
        if r["spec"].endswith("Proximal"):
            r["shrunk"] = shrink_run(r["model"], x_val, names)
            s = r["shrunk"]
            print(
                f"  {r['spec']}: {s['params_before']} -> {s['params_after']} parameters, "
                f"{len(s['features'])}/{n_features} features, {s['units']} hidden units; "
                f"largest output difference {s['max_abs_diff']:.1e}"
            )

    path = strength_path(data, quick)

    plt = _common.pyplot()
    figures = {
        "sparsity": os.path.join(out, "sparsity_per_epoch.png"),
        "histograms": os.path.join(out, "weight_histograms.png"),
        "heatmap": os.path.join(out, "first_layer_heatmap.png"),
    }
    plot_sparsity(plt, results, figures["sparsity"])
    plot_histograms(plt, results, figures["histograms"])
    plot_heatmap(plt, results, names, figures["heatmap"])

    summary = {
        "epochs": epochs,
        "runs": [
            {
                key: r[key]
                for key in (
                    "slug",
                    "spec",
                    "val_accuracy",
                    "sparsity",
                    "kernel_size",
                    "kernel_nonzero",
                    "units_kept",
                    "reload_identical",
                    "reload_max_diff",
                    "saved_as",
                )
            }
            | {"features_kept": [n for n, k in zip(names, r["features_kept"], strict=True) if k]}
            | ({"shrunk": r["shrunk"]} if "shrunk" in r else {})
            for r in results
        ],
        "path": path.to_dict(),
        "figures": figures,
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"\nfigures: {', '.join(figures.values())}")
    # The command beside this interpreter: `make demo` runs in .venv, whose bin/ is not on PATH.
    command = os.path.join(os.path.dirname(sys.executable), "keras-reg")
    if not os.path.exists(command):
        command = "keras-reg"
    elif not os.path.relpath(command).startswith(".."):
        command = os.path.relpath(command)
    print(f"models: {os.path.join(out, 'models')}/*.keras (try: {command} report FILE)")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return summary


if __name__ == "__main__":
    args = _common.parse_args(__doc__, out="demo_output")
    main(quick=args.quick, out=args.out)
