"""A layer of your own, regularized, pruned and shrunk like Keras' Dense: one rule.

`MyDense` is a user's layer: `activation(x @ kernel + bias)` with the usual
`kernel_regularizer` / `kernel_constraint` arguments in its config. Without a
rule, keras_reg regularizes and prunes its `kernel` by name, but `shrink`
keeps all its units (it cannot know what the layer computes). One line tells
it the layer is Dense-like:

    keras_reg.register_layer_rule(MyDense, keras_reg.rules.DenseLike())

and the same model then loses its zero units for real.

Run: `python examples/custom_layer_rule.py OUT_DIR` (writes OUT_DIR/small.keras, and a
batch with the small model's outputs on it: x.npy, outputs.npy).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_reg  # noqa: E402


@keras.saving.register_keras_serializable(package="my_project")
class MyDense(keras.layers.Layer):
    """`activation(x @ kernel + bias)`, written by a user."""

    def __init__(
        self, units, activation=None, kernel_regularizer=None, kernel_constraint=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            (input_shape[-1], self.units),
            name="kernel",
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = self.add_weight((self.units,), name="bias", initializer="zeros")

    def call(self, x):
        return self.activation(x @ self.kernel + self.bias)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
        }


# The one line: MyDense computes what Dense computes, with the same names.
keras_reg.register_layer_rule(MyDense, keras_reg.rules.DenseLike())


def main(out_dir):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 20)).astype("float32")
    y = (x[:, :3].sum(axis=1) > 0).astype("int32")
    model = keras.Sequential(
        [
            keras.Input((20,)),
            MyDense(64, activation="relu", name="hidden"),
            MyDense(2, name="out"),
        ]
    )
    # Regularize every kernel, then prune 75% of the hidden units (whole columns).
    model = keras_reg.apply_regularizer(model, keras_reg.L2(1e-4))
    penalized = [v.path for v in model.weights if v.regularizer is not None]
    keras_reg.prune_low_magnitude(model, 0.75, layers=["hidden"], axis=-1)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)

    pruned = keras_reg.strip_pruning(model)
    plan = keras_reg.plan_shrink(pruned)
    small = keras_reg.shrink(pruned, plan=plan)
    print(plan)
    difference = float(np.max(np.abs(keras.ops.convert_to_numpy(pruned(x) - small(x)))))
    path = os.path.join(out_dir, "small.keras")
    small.save(path)
    np.save(os.path.join(out_dir, "x.npy"), x[:8])
    np.save(os.path.join(out_dir, "outputs.npy"), keras.ops.convert_to_numpy(small(x[:8])))
    print(f"penalized: {penalized}")
    print(f"hidden units: {pruned.get_layer('hidden').units} -> {small.get_layer('hidden').units}")
    print(f"max output difference: {difference:.1e}; saved {path}")
    return {
        "penalized": penalized,
        "units": (pruned.get_layer("hidden").units, small.get_layer("hidden").units),
        "difference": difference,
        "path": path,
        "kept_whole": plan.kept_whole,
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/custom_layer_rule.py OUT_DIR")
    main(sys.argv[1])
