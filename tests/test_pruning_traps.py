"""Pruning traps (issue #23, items 10-12): what prune_low_magnitude, shrink and the schedules
must not do silently. Each test checks against NumPy or the model's own outputs."""

import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_reg
from helpers import to_numpy
from keras_reg.pruning import pruned_weights

BACKEND = keras.backend.backend()
RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 12)).astype("float32")
Y = (X[:, :3].sum(axis=1) > 0).astype("int32")
DOCS = os.path.join(os.path.dirname(__file__), os.pardir, "docs")

# --- 12c: step arguments fit the int32 step arithmetic ------------------------------


def tfmot_should_prune(step, begin, end, frequency):
    in_range = step >= begin and (step <= end or end < 0)
    return in_range and (step - begin) % frequency == 0


def last_pruning_step(step, begin, end, frequency):
    """Brute force over the last `frequency` steps (a pruning step is never further back)."""
    for s in range(step, max(step - frequency, begin - 1, 0), -1):
        if tfmot_should_prune(s, begin, end, frequency) or s == end:
            return s
    return None


@pytest.mark.parametrize(
    "make,message",
    [
        (
            lambda: keras_reg.ConstantSparsity(0.5, begin_step=2**31),
            "The 'begin_step' argument of ConstantSparsity must be an integer in "
            "[0, 2**31 - 1 = 2147483647] (the steps are int32). Received: begin_step=2147483648",
        ),
        (
            lambda: keras_reg.PolynomialDecay(0.0, 0.5, begin_step=2**40, end_step=2**41),
            "The 'begin_step' argument of PolynomialDecay must be an integer in "
            "[0, 2**31 - 1 = 2147483647] (the steps are int32). Received: begin_step=1099511627776",
        ),
        (
            lambda: keras_reg.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=2**31),
            "The 'end_step' argument of PolynomialDecay must be an integer <= 2**31 - 1 = "
            "2147483647 (int32). Received: end_step=2147483648",
        ),
        (
            lambda: keras_reg.ConstantSparsity(0.5, 0, end_step=2**32),
            "The 'end_step' argument of ConstantSparsity must be an integer <= 2**31 - 1 = "
            "2147483647 (int32). Received: end_step=4294967296",
        ),
        (
            lambda: keras_reg.ConstantSparsity(0.5, 0, frequency=2**31),
            "The 'frequency' argument of ConstantSparsity must be an integer in "
            "[1, 2**31 - 1 = 2147483647] (int32). Received: frequency=2147483648",
        ),
    ],
)
def test_step_arguments_beyond_int32_are_refused(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert str(error.value) == message


@pytest.mark.parametrize(
    "begin,end,frequency",
    [
        (2**31 - 20, -1, 7),
        (2**31 - 40, 2**31 - 3, 6),
        (2**31 - 30, -1, 2**31 - 1),
        (0, 2**31 - 1, 9),
    ],
)
def test_schedules_at_the_int32_limit_follow_tfmot_rule(begin, end, frequency):
    schedule = keras_reg.ConstantSparsity(0.5, begin, end_step=end, frequency=frequency)
    for step in [1, 6, 2**30, *range(2**31 - 45, 2**31)]:
        last = last_pruning_step(step, begin, end, frequency)
        assert float(schedule.target(step)) == (0.0 if last is None else 0.5), step
        should = tfmot_should_prune(step, begin, end, frequency) or step == end
        assert bool(schedule.should_prune(step)) == should, step
    if end == 2**31 - 1:
        poly = keras_reg.PolynomialDecay(0.0, 0.8, begin, end, frequency=frequency)
        np.testing.assert_allclose(float(poly.target(2**31 - 1)), 0.8, rtol=1e-7)
        np.testing.assert_allclose(float(poly.sparsity(2**30)), 0.8 * (1 - 0.5**3), rtol=1e-6)


# --- 10: structured pruning with layers=None leaves the output units alone -----------


def classifier():
    """Two outputs: a classifier head through a softmax, and a nested model's last Dense."""
    inputs = keras.Input((12,))
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    logits = keras.layers.Dense(4, name="classes")(hidden)
    probs = keras.layers.Activation("softmax")(keras.layers.Dropout(0.1)(logits))
    inner = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(8, name="inner_a"), keras.layers.Dense(3)],
        name="inner",
    )
    inner.layers[-1].name = "inner_out"
    return keras.Model(inputs, [probs, inner(hidden)], name="clf")


def dead_units(kernel):
    return int((np.abs(to_numpy(kernel)).sum(axis=0) == 0).sum())


def test_structured_pruning_by_default_keeps_every_output_unit():
    model = classifier()
    keras_reg.prune_low_magnitude(model, keras_reg.ConstantSparsity(0.5, 0, frequency=1), axis=-1)
    model.compile(keras.optimizers.SGD(0.01), ["sparse_categorical_crossentropy", "mse"])
    model.fit(X, (Y, X[:, :3]), batch_size=32, epochs=1, verbose=0)
    layer = {name: model.get_layer(name) for name in ("hidden", "classes")}
    layer["inner_a"] = model.get_layer("inner").get_layer("inner_a")
    layer["inner_out"] = model.get_layer("inner").get_layer("inner_out")
    assert {n: dead_units(v.kernel) for n, v in layer.items()} == {
        "hidden": 8, "inner_a": 4, "classes": 0, "inner_out": 0
    }  # fmt: skip
    # Named, an output layer is pruned (the user asked); so are input rows (axis=0).
    named = classifier()
    keras_reg.prune_low_magnitude(named, 0.5, axis=-1, layers=["classes"])
    assert [v.path for v in pruned_weights(named)] == ["classes/kernel"]
    rows = classifier()
    keras_reg.prune_low_magnitude(rows, 0.5, axis=0)
    assert len(pruned_weights(rows)) == 4


def test_structured_pruning_refuses_what_it_cannot_read():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    model = Subclassed()
    model(np.ones((1, 4), "float32"))
    with pytest.raises(ValueError, match="cannot tell which layers compute the outputs of model"):
        keras_reg.prune_low_magnitude(model, 0.5, axis=-1)
    only = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="only")], name="one")
    with pytest.raises(ValueError, match=r"its only kernels are those .* \(\['only'\]\)"):
        keras_reg.prune_low_magnitude(only, 0.5, axis=-1)


# --- 11: shrink drops PruneLowMagnitude, with a warning naming the layers -------------


def test_shrink_drops_pruning_meant_for_the_old_sizes():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,))
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    inner = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="mid")], name="inner")
    outputs = keras.layers.Dense(2, name="out")(inner(hidden))
    model = keras.Model(inputs, outputs)
    keras_reg.prune_low_magnitude(model, keras_reg.ConstantSparsity(0.5, 0, frequency=1), axis=-1)
    model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    model.fit(X, Y, batch_size=32, epochs=1, verbose=0)
    with pytest.warns(UserWarning, match=r"dropped the PruneLowMagnitude constraints of layers "
                      r"\['hidden', 'mid'\]") as record:  # fmt: skip
        small = keras_reg.shrink(model)
    assert len([r for r in record if "keras_reg" in str(r.message)]) == 1
    assert small.get_layer("hidden").units == 8 and pruned_weights(small) == []
    assert "PruneLowMagnitude" not in str(small.get_config())
    np.testing.assert_allclose(
        to_numpy(small.predict(X, verbose=0)), to_numpy(model.predict(X, verbose=0)), atol=1e-5
    )
    # Fine-tuning the shrunk model does not prune half of what is left again.
    small.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    small.fit(X, Y, batch_size=32, epochs=1, verbose=0)
    assert dead_units(small.get_layer("hidden").kernel) == 0
    assert dead_units(small.get_layer("inner").get_layer("mid").kernel) == 0


# --- 12a/b: kernels that cannot be pruned are never skipped silently ------------------


class NoSlot(keras.layers.Layer):
    """A custom layer with a `kernel` and no `kernel_constraint` attribute."""

    def build(self, input_shape):
        self.kernel = self.add_weight((input_shape[-1], 6), name="kernel")

    def call(self, x):
        return x @ self.kernel


def with_custom_and_lora():
    model = keras.Sequential(
        [
            keras.Input((12,)),
            NoSlot(name="custom"),
            keras.layers.Dense(6, name="lora"),
            keras.layers.Dense(2, name="plain"),
        ],
        name="m",
    )
    model.get_layer("lora").enable_lora(2)
    return model


def test_unprunable_kernels_warn_by_default_and_are_refused_when_named():
    model = with_custom_and_lora()
    with pytest.warns(UserWarning) as record:
        keras_reg.prune_low_magnitude(model, 0.5)
    (message,) = [str(r.message) for r in record if "prune_low_magnitude" in str(r.message)]
    assert "'m/custom/kernel' (layer class NoSlot has no constraint slot" in message
    assert "keras_reg.register_layer_rule" in message
    assert "'m/lora/kernel' (LoRA is enabled on it" in message and "before enable_lora" in message
    assert [v.path for v in pruned_weights(model)] == ["m/plain/kernel"]
    for name, why in [("custom", "has no constraint slot"), ("lora", "LoRA is enabled")]:
        with pytest.raises(ValueError, match=f"layers=\\['{name}'\\]: 'm/{name}/kernel' .*{why}"):
            keras_reg.prune_low_magnitude(with_custom_and_lora(), 0.5, layers=[name])


# --- 12d: loading a pruned model without keras_reg: Keras' error, as the docs quote it --

LOAD_WITHOUT_IMPORT = """
import sys, keras
try:
    keras.saving.load_model(sys.argv[1])
except TypeError as error:
    print(str(error).strip().splitlines()[-1])
"""


@pytest.mark.keras_behaviour
def test_docs_quote_the_error_of_loading_a_pruned_model_without_keras_reg(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    keras_reg.prune_low_magnitude(model, 0.5)
    model.save(tmp_path / "pruned.keras")
    run = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_IMPORT, str(tmp_path / "pruned.keras")],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, KERAS_BACKEND=BACKEND),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("Exception encountered: Could not interpret constraint identifier: ")
    assert "'registered_name': 'keras_reg>PruneLowMagnitude'" in last
    for page in ("troubleshooting.md", "pruning.md"):
        with open(os.path.join(DOCS, page), encoding="utf-8") as f:
            text = f.read()
        assert "Exception encountered: Could not interpret constraint identifier: " in text, page
        assert re.search(r"import keras_reg.*before", text, re.S), page
