"""L1 strength warm-up with `StrengthScheduler`: sparsity per epoch, fixed vs warmed-up.

The demo's network on `load_breast_cancer`, `L1(0.01)` + `Proximal(Adam(1e-2))` on the first
kernel, trained twice: at full strength from the first epoch, and with the strength warmed up
linearly over the first half of training (`scale = epoch / warm-up epochs`, capped at 1). The
scale changes inside the compiled train step (no recompile); `SparsityLogger` shows the zeros
appear as the strength grows instead of in the first epochs.

Run: `python examples/schedule.py [--quick]`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _common  # noqa: E402
import keras  # noqa: E402

import keras_reg  # noqa: E402


def train(epochs, warm_up):
    keras.utils.set_random_seed(0)
    x_train, x_val, y_train, y_val, _ = _common.breast_cancer()
    model = keras.Sequential(
        [
            keras.Input((x_train.shape[1],)),
            keras.layers.Dense(16, activation="relu", kernel_regularizer=keras_reg.L1(0.01)),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(
        keras_reg.Proximal(keras.optimizers.Adam(1e-2)), "binary_crossentropy", metrics=["accuracy"]
    )
    callbacks = [keras_reg.SparsityLogger()]
    if warm_up:
        callbacks.insert(
            0, keras_reg.StrengthScheduler(lambda epoch, scale: min(1.0, epoch / warm_up))
        )
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=epochs,
        batch_size=32,
        callbacks=callbacks,
        verbose=0,
    )
    return history.history


def main(quick=False):
    epochs = 10 if quick else 40
    warm = epochs // 2
    fixed, warmed = train(epochs, 0), train(epochs, warm)
    print(
        f"L1(0.01) + Proximal(Adam(1e-2)), {epochs} epochs; warm-up: scale = min(1, epoch/{warm})"
    )
    print(f"{'epoch':>5} {'scale':>6} {'sparsity, fixed':>16} {'sparsity, warm-up':>18}")
    for epoch in range(epochs):
        print(
            f"{epoch + 1:>5} {warmed['strength_scale'][epoch]:>6.2f} "
            f"{fixed['sparsity'][epoch]:>16.1%} {warmed['sparsity'][epoch]:>18.1%}"
        )
    print(
        f"final validation accuracy: fixed {fixed['val_accuracy'][-1]:.3f}, "
        f"warm-up {warmed['val_accuracy'][-1]:.3f}"
    )
    return fixed, warmed


if __name__ == "__main__":
    main(_common.parse_args(__doc__).quick)
