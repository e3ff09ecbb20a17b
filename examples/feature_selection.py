"""The quick-start model on scikit-learn's bundled breast-cancer data.

Run: `python examples/feature_selection.py` (or `make demo`).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import keras_reg  # noqa: E402


def build_model(n_features):
    return keras.Sequential(
        [
            keras.Input((n_features,)),
            keras.layers.Dense(64, activation="relu", kernel_regularizer=keras_reg.L1(0.01)),
            keras.layers.Dense(
                32,
                activation="relu",
                kernel_regularizer=keras_reg.ElasticNet(alpha=0.01, l1_ratio=0.5),
            ),
            keras.layers.Dense(1, activation="sigmoid", kernel_regularizer=keras_reg.L2(0.01)),
        ]
    )


def main(epochs=30):
    keras.utils.set_random_seed(0)
    data = load_breast_cancer()
    x_train, x_val, y_train, y_val = train_test_split(
        data.data, data.target, test_size=0.25, random_state=0, stratify=data.target
    )
    scaler = StandardScaler().fit(x_train)
    x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)

    model = build_model(x_train.shape[1])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"]
    )
    history = model.fit(
        x_train, y_train, validation_data=(x_val, y_val), epochs=epochs, batch_size=32, verbose=0
    )
    kernel = model.layers[0].kernel.numpy()
    print(f"validation accuracy: {history.history['val_accuracy'][-1]:.3f}")
    print(f"penalty in the loss: {float(sum(model.losses)):.4f}")
    print(f"first-layer weights exactly zero: {np.mean(kernel == 0):.1%}")
    return history


if __name__ == "__main__":
    main()
