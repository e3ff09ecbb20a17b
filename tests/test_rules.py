"""The layer rules: shrink cuts each layer kind exactly; the registry covers keras.layers."""

import inspect

import keras
import numpy as np
import pytest

import keras_reg
from keras_reg import rules

L = keras.layers


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def zero_last_axis(variable, index):
    """Sets `variable[..., index]` to zero."""
    value = to_numpy(variable).copy()
    value[..., index] = 0
    variable.assign(value)


def randomize(model, seed=0):
    """Non-zero biases and BatchNorm/GroupNorm offsets, so that constants are not zeros."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if v.path.endswith(("bias", "beta", "gamma", "moving_mean")):
            v.assign(rng.normal(size=v.shape).astype(v.dtype) + (1.0 if "gamma" in v.path else 0))


def shrunk_outputs_match(model, x, atol=2e-5):
    """Shrinks `model` and checks the result against the original's outputs on `x`."""
    small = keras_reg.shrink(model)
    expected = to_numpy(model(x, training=False)).astype(np.float64)
    got = to_numpy(small(x, training=False)).astype(np.float64)
    scale = max(np.abs(expected).max(), 1e-12)
    np.testing.assert_allclose(got / scale, expected / scale, atol=atol)
    return small


def normal(*shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def units_of(layer):
    return int(to_numpy(layer.weights[0]).shape[-1])


# --- each layer kind: a producer with dead units feeds it, it feeds a reader -----------------

SPATIAL = {1: (9, 3), 2: (7, 6, 3), 3: (5, 4, 6, 3)}


def conv_model(rank, middle, padding="valid"):
    inputs = keras.Input(SPATIAL[rank])
    conv = getattr(L, f"Conv{rank}D")
    x = conv(6, 1, activation="relu", name="producer")(inputs)
    x = middle(x)
    x = conv(4, 1, name="reader", padding=padding)(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_convolutions_of_every_rank_lose_dead_filters(rank):
    conv = getattr(L, f"Conv{rank}D")
    model = conv_model(rank, conv(5, 2, activation="relu", name="middle"))
    randomize(model)
    zero_last_axis(model.get_layer("middle").kernel, [1, 3])
    zero_last_axis(model.get_layer("middle").bias, [1, 3])
    small = shrunk_outputs_match(model, normal(2, *SPATIAL[rank]))
    assert small.get_layer("middle").filters == 3
    assert tuple(small.get_layer("reader").kernel.shape)[-2:] == (3, 4)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_transposed_convolutions_lose_dead_filters_and_keep_constants(rank):
    conv_t = getattr(L, f"Conv{rank}DTranspose")
    model = conv_model(rank, conv_t(5, 2, strides=2, activation="relu", name="middle"))
    randomize(model)
    # Filter 1: zero everywhere (goes). Filter 3: zero kernel, bias 0.7 > 0, a constant
    # relu(0.7) that a 1x1 "valid" reader could fold; it stays only if the rule says so.
    kernel = to_numpy(model.get_layer("middle").kernel).copy()
    kernel[..., [1, 3], :] = 0  # a transposed kernel is (*window, filters, in)
    model.get_layer("middle").kernel.assign(kernel)
    bias = to_numpy(model.get_layer("middle").bias).copy()
    bias[1], bias[3] = 0.0, 0.7
    model.get_layer("middle").bias.assign(bias)
    # The producer's filter 2 is dead: its input rows go too.
    zero_last_axis(model.get_layer("producer").kernel, [2])
    zero_last_axis(model.get_layer("producer").bias, [2])
    small = shrunk_outputs_match(model, normal(2, *SPATIAL[rank]))
    middle = small.get_layer("middle")
    assert middle.filters == 3  # filter 1 gone; the constant filter 3 folds into the reader
    assert tuple(middle.kernel.shape)[-2:] == (3, 5)  # input channel 2 gone
    assert small.get_layer("producer").filters == 5


def test_separable_and_depthwise_1d_channels_go_together():
    inputs = keras.Input((9, 3))
    x = L.Conv1D(6, 1, activation="relu", name="producer")(inputs)
    x = L.DepthwiseConv1D(3, activation="relu", name="dw")(x)
    x = L.SeparableConv1D(5, 3, name="sep")(x)
    x = L.Conv1D(2, 1, name="reader")(x)
    model = keras.Model(inputs, x)
    randomize(model)
    for name in ("producer",):
        zero_last_axis(model.get_layer(name).kernel, [0, 4])
        zero_last_axis(model.get_layer(name).bias, [0, 4])
    dw = to_numpy(model.get_layer("dw").bias).copy()
    dw[[0, 4]] = 0
    model.get_layer("dw").bias.assign(dw)
    zero_last_axis(model.get_layer("sep").pointwise_kernel, [2])
    zero_last_axis(model.get_layer("sep").bias, [2])
    small = shrunk_outputs_match(model, normal(2, 9, 3))
    assert small.get_layer("producer").filters == 4
    assert tuple(small.get_layer("dw").kernel.shape) == (3, 4, 1)
    assert small.get_layer("sep").filters == 4
    assert tuple(small.get_layer("sep").depthwise_kernel.shape) == (3, 4, 1)


@pytest.mark.parametrize(
    "equation, output_shape, bias_axes, shape",
    [
        ("ab,bc->ac", 5, "c", (4,)),
        ("abc,cd->abd", (3, 5), "d", (3, 4)),
        ("ab,bc->ac", 5, None, (4,)),
    ],
)
def test_einsum_dense_with_a_dense_like_equation_is_cut(equation, output_shape, bias_axes, shape):
    inputs = keras.Input(shape)
    x = L.Dense(6, activation="relu", name="producer")(inputs)
    x = L.EinsumDense(equation, output_shape, bias_axes=bias_axes, name="ein")(x)
    x = L.Dense(2, name="reader")(L.Activation("tanh")(x))
    model = keras.Model(inputs, x)
    randomize(model)
    zero_last_axis(model.get_layer("producer").kernel, [1])  # relu(bias): a constant, folded
    zero_last_axis(model.get_layer("ein").kernel, [0, 2])
    if bias_axes:
        zero_last_axis(model.get_layer("ein").bias, [0, 2])
    small = shrunk_outputs_match(model, normal(3, *shape))
    assert tuple(small.get_layer("ein").kernel.shape) == (5, 3)
    assert small.get_layer("ein").bias_axes == (bias_axes or None) or not bias_axes


def test_einsum_dense_with_another_equation_is_kept_whole():
    inputs = keras.Input((3, 4))
    x = L.EinsumDense("abc,cde->abde", (3, 2, 5), name="ein")(inputs)
    model = keras.Model(inputs, L.Dense(2)(L.Reshape((3, 10))(x)))
    plan = keras_reg.plan_shrink(model)
    assert any(name == "ein" and "not Dense-like" in why for name, why in plan.kept_whole)


def test_group_normalization_loses_whole_groups_only():
    inputs = keras.Input((5, 3))
    x = L.Conv1D(8, 1, name="producer")(inputs)
    x = L.GroupNormalization(4, name="gn")(x)
    x = L.Conv1D(2, 1, name="reader")(L.Activation("relu")(x))
    model = keras.Model(inputs, x)
    randomize(model)
    # Group 0 (channels 0, 1): both dead, so constant after the norm: it folds and goes.
    # Group 2 (channels 4, 5): only 4 dead; the group's statistics need it: all stay.
    zero_last_axis(model.get_layer("producer").kernel, [0, 1, 4])
    zero_last_axis(model.get_layer("producer").bias, [0, 1])
    small = shrunk_outputs_match(model, normal(2, 5, 3))
    assert small.get_layer("gn").groups == 3
    assert small.get_layer("producer").filters == 6


@pytest.mark.parametrize(
    "middle, kept",
    [
        (lambda: L.UpSampling1D(2), 4),
        (lambda: L.Cropping1D((1, 2)), 4),
        (lambda: L.ZeroPadding1D(2), 4),
    ],
    ids=["UpSampling1D", "Cropping1D", "ZeroPadding1D"],
)
def test_channel_movers_pass_channels_through(middle, kept):
    inputs = keras.Input((9, 3))
    x = L.Conv1D(6, 1, activation="relu", name="producer")(inputs)
    x = middle()(x)
    model = keras.Model(inputs, L.Conv1D(2, 1, name="reader")(x))
    randomize(model)
    zero_last_axis(model.get_layer("producer").kernel, [0, 5])
    zero_last_axis(model.get_layer("producer").bias, [0, 5])
    small = shrunk_outputs_match(model, normal(2, 9, 3))
    assert small.get_layer("producer").filters == kept


# --- recurrent layers -------------------------------------------------------------------------

GATES = {L.SimpleRNN: 1, L.GRU: 3, L.LSTM: 4}
CANDIDATE = {L.SimpleRNN: 0, L.GRU: 2, L.LSTM: 2}


def zero_units(layer, units, gates, candidate_only=False):
    """Zeroes unit `units`' columns in every gate (or its candidate gate), and its bias."""
    n = layer.cell.units
    blocks = [CANDIDATE[type(layer)]] if candidate_only else range(gates)
    cols = [g * n + u for g in blocks for u in units]
    for name in ("kernel", "recurrent_kernel", "bias"):
        v = next(w for w in layer.weights if w.path.endswith(name))
        value = to_numpy(v).copy()
        value[..., cols] = 0
        v.assign(value)


@pytest.mark.parametrize("cls", [L.SimpleRNN, L.GRU, L.LSTM], ids=lambda c: c.__name__)
@pytest.mark.parametrize("sequences", [False, True], ids=["last", "sequences"])
def test_recurrent_units_go_on_every_side(cls, sequences):
    inputs = keras.Input((6, 4))
    x = L.Dense(5, activation="relu", name="producer")(inputs)
    x = cls(7, return_sequences=sequences, name="rnn")(x)
    model = keras.Model(inputs, L.Dense(2, name="reader")(x))
    randomize(model)
    rnn = model.get_layer("rnn")
    # Units 1 and 4: their candidate gate gets nothing, so they stay exactly zero.
    zero_units(rnn, [1, 4], GATES[cls], candidate_only=True)
    # Unit 6: alive but read by nobody (no reader row, no recurrent row).
    zero_last_axis(rnn.cell.recurrent_kernel, [])
    rec = to_numpy(rnn.cell.recurrent_kernel).copy()
    rec[6, :] = 0
    rnn.cell.recurrent_kernel.assign(rec)
    reader = to_numpy(model.get_layer("reader").kernel).copy()
    reader[6, :] = 0
    model.get_layer("reader").kernel.assign(reader)
    # Producer unit 3: relu(bias), a constant folded into the recurrent layer's input bias.
    zero_last_axis(model.get_layer("producer").kernel, [3])
    small = shrunk_outputs_match(model, normal(3, 6, 4))
    new = small.get_layer("rnn")
    assert new.units == 4
    assert tuple(new.cell.kernel.shape) == (4, 4 * GATES[cls])
    assert tuple(new.cell.recurrent_kernel.shape) == (4, 4 * GATES[cls])
    assert small.get_layer("producer").units == 4


def test_recurrent_layer_with_a_mask_and_constants_stays_exact():
    inputs = keras.Input((6,), dtype="int32")
    x = L.Embedding(10, 5, mask_zero=True, name="embed")(inputs)
    x = L.LSTM(6, name="rnn")(x)
    model = keras.Model(inputs, L.Dense(2)(x))
    randomize(model)
    zero_units(model.get_layer("rnn"), [2], 4, candidate_only=True)
    x = np.array([[3, 1, 4, 0, 0, 0], [5, 9, 2, 6, 5, 3]], "int32")
    small = shrunk_outputs_match(model, x)
    assert small.get_layer("rnn").units == 5


def test_stateful_or_return_state_recurrent_layers_are_kept_whole():
    inputs = keras.Input((6, 4))
    out, state = L.GRU(3, return_state=True, name="rnn")(inputs)
    model = keras.Model(inputs, L.Add()([out, state]))
    plan = keras_reg.plan_shrink(model)
    assert ("rnn", "return_state=True is not supported") in plan.kept_whole


# --- the registry -----------------------------------------------------------------------------


def keras_layer_classes():
    return sorted(
        {
            cls.__name__  # GroupQueryAttention's class is GroupedQueryAttention
            for _, cls in inspect.getmembers(keras.layers, inspect.isclass)
            if issubclass(cls, keras.layers.Layer)
        }
    )


def test_every_keras_layer_class_has_a_rule():
    """A new class in keras.layers fails here until it gets a rule (or a KeptWhole reason)."""
    assert [name for name in keras_layer_classes() if name not in rules.BUILTIN] == []


def test_a_subclass_of_a_keras_layer_does_not_get_its_parents_rule():
    class MyDense(L.Dense):
        pass

    assert type(rules.rule_for(MyDense(2))) is rules.LayerRule
    assert isinstance(rules.rule_for(L.Dense(2)), rules.DenseLike)


def test_register_layer_rule_refuses_what_is_not_a_layer_class_or_a_rule():
    with pytest.raises(ValueError, match="'layer_class' argument of register_layer_rule"):
        keras_reg.register_layer_rule(object, rules.DenseLike())
    with pytest.raises(ValueError, match="'rule' argument of register_layer_rule"):
        keras_reg.register_layer_rule(L.Dense, "dense")


def test_the_docs_coverage_table_is_the_registrys():
    from pathlib import Path

    from keras_reg.rules.table import coverage_table

    page = Path(__file__).parent.parent / "docs" / "_generated" / "layer_rules.md"
    assert page.read_text() == coverage_table(), (
        "docs/_generated/layer_rules.md is out of date: python -m keras_reg.rules > "
        "docs/_generated/layer_rules.md"
    )
