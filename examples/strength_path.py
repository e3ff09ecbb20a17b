"""Choosing a strength: the regularization path with cross-validation, on real data.

The demo's network (30 inputs -> Dense(16, relu) -> Dense(1, sigmoid)) on scikit-learn's bundled
breast-cancer data (the training part of the demo's stratified split), `keras_reg.L1` on the first
kernel, `keras_reg.Proximal(Adam(1e-2))`. `keras_reg.regularization_path` trains it along 12
strengths from `max_strength` down to 1e-3 of it, 10 epochs each with warm starts, with 3-fold
cross-validation; it prints the table, the strengths chosen by the best mean score and by the
one-standard-error rule, the shrunk model at the latter and its accuracy on the validation part,
and draws the path.

Run: `python examples/strength_path.py [--quick] [--out DIR]` (writes DIR/strength_path.png).
"""

import os

import _common
import keras
import numpy as np

import keras_reg

SEED = 0
N_STRENGTHS, QUICK_N_STRENGTHS = 12, 4
EPOCHS, QUICK_EPOCHS = 10, 2


def build_model(n_features):
    return keras.Sequential(
        [
            keras.Input((n_features,)),
            keras.layers.Dense(16, activation="relu", kernel_regularizer=keras_reg.L1(0.01)),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )


def main(quick=False, out="strength_path_output", verbose=1):
    x_train, x_val, y_train, y_val, names = _common.breast_cancer(seed=SEED)
    keras.utils.set_random_seed(SEED)
    model = build_model(x_train.shape[1])
    model.compile(keras_reg.Proximal(keras.optimizers.Adam(1e-2)), "binary_crossentropy")
    path = keras_reg.regularization_path(
        model,
        x_train,
        y_train,
        n_strengths=QUICK_N_STRENGTHS if quick else N_STRENGTHS,
        eps=1e-3,
        cv=3,
        epochs=QUICK_EPOCHS if quick else EPOCHS,
        batch_size=32,
        verbose=verbose,
        seed=SEED,
    )
    print(path)
    chosen = path.model(path.one_se)
    plan = keras_reg.plan_shrink(chosen, drop_inputs=True)
    small = keras_reg.shrink(chosen, plan=plan)
    (kept,) = plan.inputs_kept.values()
    prediction = keras.ops.convert_to_numpy(small(x_val[:, kept])).ravel()
    accuracy = float(np.mean((prediction > 0.5) == (y_val > 0.5)))
    print(
        f"\nAt the 1-SE strength {path.one_se:.4g}: {len(kept)} of {len(names)} features, "
        f"{small.layers[0].units} of 16 hidden units, {small.count_params()} of "
        f"{model.count_params()} weights; validation accuracy {accuracy:.1%} "
        f"({len(y_val)} held-out samples)."
    )
    print("features kept:", ", ".join(names[i] for i in kept))
    os.makedirs(out, exist_ok=True)
    figure = os.path.join(out, "strength_path.png")
    path.plot(figure, title="L1 + Proximal(Adam(1e-2)), load_breast_cancer, 3-fold CV")
    print(f"wrote {figure}")
    return path, accuracy


if __name__ == "__main__":
    args = _common.parse_args(__doc__, out="strength_path_output")
    main(args.quick, args.out)
