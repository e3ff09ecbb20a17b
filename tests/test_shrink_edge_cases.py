"""Regression cases for shrink's edges (issue 23, items 1-4): each was wrong or crashed on 0.2.

Every case compares the shrunk model with the original model's own outputs.
"""

import warnings

import keras
import numpy as np
import pytest

import keras_reg
from helpers import to_numpy

L = keras.layers


def assign(variable, value):
    variable.assign(np.asarray(value, dtype=variable.dtype))


def max_relative_difference(model, small, x):
    a = to_numpy(model(x, training=False)).astype(np.float64)
    b = to_numpy(small(x, training=False)).astype(np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))


def shared_dense_model():
    """One Dense called twice: its input channel 0 is a constant 2.0 in call 1, zero in call 2."""
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    first = L.Dense(2, name="first")(a)  # unit 0: zero kernel, bias 2 -> the constant 2.0
    second = L.Dense(2, name="second")(b)  # unit 0: zero kernel and bias -> exactly zero
    shared = L.Dense(4, name="shared")
    model = keras.Model([a, b], L.Concatenate()([shared(first), shared(second)]))
    for name, bias in (("first", [2.0, 0.5]), ("second", [0.0, 0.5])):
        layer = model.get_layer(name)
        kernel = to_numpy(layer.kernel).copy()
        kernel[:, 0] = 0
        assign(layer.kernel, kernel)
        assign(layer.bias, bias)
    return model


def test_a_shared_layer_never_folds_one_calls_constant_into_the_bias_both_use():
    model = shared_dense_model()
    x = [np.random.default_rng(0).normal(size=(4, 3)).astype("float32") for _ in range(2)]
    small = keras_reg.shrink(model)  # 0.2 raised "This is a bug in keras_reg" here
    assert max_relative_difference(model, small, x) < 1e-6
    # The constant channel stays: it cannot be folded into a bias the zero call shares.
    assert small.get_layer("first").units == 2
    assert small.get_layer("second").units == 2


def test_under_mixed_precision_the_check_is_as_strict_as_in_float32(monkeypatch):
    """A wrong result as small as float16 rounding is refused, not accepted at 1e-2."""
    from keras_reg.shrinking import build

    keras.config.set_dtype_policy("mixed_float16")
    inputs = keras.Input((8,))
    hidden = L.Dense(6, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, L.Dense(3, name="out")(hidden))
    kernel = to_numpy(model.get_layer("hidden").kernel).copy()
    kernel[:, 0] = 0
    assign(model.get_layer("hidden").kernel, kernel)
    keras_reg.shrink(model)  # exact: accepted

    original = build._Builder.assign_weights

    def off_by_float16_rounding(builder):
        original(builder)
        new = builder.new[id(model.get_layer("out"))]
        assign(new.bias, to_numpy(new.bias) + 3e-3)  # the size of the 0.2 miss

    monkeypatch.setattr(build._Builder, "assign_weights", off_by_float16_rounding)
    with pytest.raises(RuntimeError, match="more than 0.0001"):
        keras_reg.shrink(model)


def dead_dense_chain():
    inputs = keras.Input((5,))
    h = L.Dense(4, activation="relu", name="d1")(inputs)
    dead = L.Dense(3, activation="relu", name="dead")(h)
    after = L.Dense(3, activation="tanh", name="after")(dead)
    model = keras.Model(inputs, L.Dense(2, name="out")(after))
    layer = model.get_layer("dead")
    assign(layer.kernel, np.zeros((4, 3)))
    assign(layer.bias, np.zeros(3))
    return model


def test_a_layer_whose_units_are_all_removable_keeps_one_and_says_so():
    model = dead_dense_chain()
    plan = keras_reg.plan_shrink(model)
    assert "dead" in plan.dead and "after" in plan.dead
    assert "dead: dead (nothing reads its outputs" in str(plan)
    small = keras_reg.shrink(model, plan=plan)  # 0.2: TypeError, units=0
    assert small.get_layer("dead").units == 1
    assert small.get_layer("after").units == 1
    assert small.get_layer("d1").units == 1  # nothing alive reads d1 either
    x = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
    assert max_relative_difference(model, small, x) < 1e-6


def test_a_dead_branch_into_concatenate_is_cut_to_one_filter():
    inputs = keras.Input((8, 8, 2))
    live = L.Conv2D(3, 1, name="live")(inputs)
    dead = L.Conv2D(4, 3, padding="same", activation="relu", name="dead")(inputs)
    merged = L.Concatenate()([live, dead])
    model = keras.Model(inputs, L.Conv2D(2, 1, name="out")(merged))
    assign(model.get_layer("dead").kernel, np.zeros((3, 3, 2, 4)))
    assign(model.get_layer("dead").bias, np.zeros(4))
    small = keras_reg.shrink(model)
    assert small.get_layer("dead").filters == 1
    assert tuple(small.get_layer("out").kernel.shape) == (1, 1, 4, 2)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 2)).astype("float32")
    assert max_relative_difference(model, small, x) < 1e-6


def test_the_cli_shrinks_a_dead_branch_without_a_traceback(tmp_path, capsys):
    from keras_reg.cli import main

    dead_dense_chain().save(tmp_path / "in.keras")
    assert main(["shrink", str(tmp_path / "in.keras"), str(tmp_path / "out.keras")]) == 0
    assert "dead: dead" in capsys.readouterr().out


def test_a_masked_embedding_is_checked_on_valid_indices():
    inputs = keras.Input((6,), dtype="int32")
    x = L.Embedding(20, 4, mask_zero=True, name="embed")(inputs)
    x = L.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(L.Dense(3, name="h")(x)))
    kernel = to_numpy(model.get_layer("h").kernel).copy()
    kernel[:, 1] = 0
    assign(model.get_layer("h").kernel, kernel)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        small = keras_reg.shrink(model)  # 0.2: both outputs NaN, "This is a bug"
    assert small.get_layer("h").units == 2
    x = np.array([[3, 1, 4, 0, 0, 0], [5, 9, 2, 6, 5, 3]], "int32")
    assert max_relative_difference(model, small, x) < 1e-6


def test_a_huge_declared_input_is_not_sampled_and_the_check_says_so():
    inputs = keras.Input((16000, 16000, 3))
    x = L.Conv2D(2, 1, name="c")(inputs)
    model = keras.Model(inputs, L.GlobalAveragePooling2D()(x))
    with pytest.warns(UserWarning, match="did not compare.*768,000,000 elements"):
        small = keras_reg.shrink(model)  # 0.2: a 6.5 GB batch, then _ArrayMemoryError
    assert small.get_layer("c").filters == 2


def test_the_plan_table_adds_up_to_its_totals():
    """0.2 left BatchNorm out of the rows and in the totals (4,097 vs 4,353)."""
    inputs = keras.Input((6, 6, 2))
    x = L.BatchNormalization(name="bn")(L.Conv2D(4, 3, name="c")(inputs))
    model = keras.Model(inputs, L.Dense(2, name="d")(L.Flatten()(x)))
    kernel = to_numpy(model.get_layer("c").kernel).copy()
    kernel[..., 3] = 0
    assign(model.get_layer("c").kernel, kernel)
    plan = keras_reg.plan_shrink(model)
    assert plan.other_params_before == 16 and plan.other_params_after == 12  # BatchNorm's
    for when in ("before", "after"):
        rows = sum(getattr(r, f"params_{when}") for r in plan.rows)
        assert rows + getattr(plan, f"other_params_{when}") == getattr(plan, f"params_{when}")
    assert sum(v.size for v in map(to_numpy, model.weights)) == plan.params_before
    assert "(other layers)                  16 -> 12" in str(plan)
