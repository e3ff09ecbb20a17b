"""keras_reg.shrink: hand-built models with known answers, coupling, refusals, round trips.

Each test zeroes known units, then checks the shrunk model against answers computed here
with NumPy (which units go, the sliced kernels, the folded biases) and against the original
model's outputs on random inputs.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_reg
from helpers import to_numpy

L = keras.layers
RNG = np.random.default_rng(0)


def outputs_match(model, small, x, rtol=1e-5):
    a = to_numpy(model(x, training=False)).astype(np.float64)
    b = to_numpy(small(x, training=False)).astype(np.float64)
    assert a.shape == b.shape
    assert np.max(np.abs(a - b)) <= rtol * np.max(np.abs(a)), np.max(np.abs(a - b))


def set_weights(layer, **arrays):
    for v in layer.weights:
        name = v.path.rsplit("/", 1)[-1]
        if name in arrays:
            v.assign(np.asarray(arrays[name], "float32"))


def weights(layer):
    return {v.path.rsplit("/", 1)[-1]: to_numpy(v) for v in layer.weights}


def normal(*shape):
    return RNG.normal(size=shape).astype("float32")


# --- Dense chains -----------------------------------------------------------------------------


def dense_chain():
    inputs = keras.Input((6,))
    h = L.Dense(5, activation="relu", name="d1")(inputs)
    h = L.Dense(4, activation="tanh", name="d2")(h)
    return keras.Model(inputs, L.Dense(3, name="out")(h))


def test_dense_dead_constant_and_unused_units():
    model = dense_chain()
    d1, d2, out = (model.get_layer(n) for n in ("d1", "d2", "out"))
    k1, b1 = normal(6, 5), np.array([0.5, -1.0, 0.3, 0.7, 0.2], "float32")
    k1[:, 0] = 0  # constant unit: relu(0.5) = 0.5, folded into d2's bias
    k1[:, 1] = 0  # dead unit: relu(-1.0) = 0
    k2, b2 = normal(5, 4), normal(4)
    k2[3, :] = 0  # unused unit 3 of d1: no outgoing weight
    k3 = normal(4, 3)
    k3[2, :] = 0  # unused unit 2 of d2
    set_weights(d1, kernel=k1, bias=b1)
    set_weights(d2, kernel=k2, bias=b2)
    set_weights(out, kernel=k3)
    small = keras_reg.shrink(model)

    keep1, keep2 = [2, 4], [0, 1, 3]
    got1, got2, got3 = (weights(small.get_layer(n)) for n in ("d1", "d2", "out"))
    np.testing.assert_array_equal(got1["kernel"], k1[:, keep1])
    np.testing.assert_array_equal(got1["bias"], b1[keep1])
    np.testing.assert_array_equal(got2["kernel"], k2[keep1][:, keep2])
    folded = b2.astype(np.float64) + 0.5 * k2[0].astype(np.float64)
    np.testing.assert_allclose(got2["bias"], folded[keep2], rtol=1e-6)
    np.testing.assert_array_equal(got3["kernel"], k3[keep2])
    outputs_match(model, small, normal(32, 6))
    assert model.get_layer("d1").units == 5  # the original is untouched


def test_output_units_and_input_shape_never_change():
    model = dense_chain()
    out = model.get_layer("out")
    kernel = to_numpy(out.kernel)
    kernel[:, 1] = 0
    set_weights(out, kernel=kernel, bias=np.zeros(3))
    d1 = model.get_layer("d1")
    kernel = to_numpy(d1.kernel)
    kernel[2, :] = 0  # an unused input feature
    set_weights(d1, kernel=kernel)
    small = keras_reg.shrink(model)
    assert small.output_shape == (None, 3) and small.input_shape == (None, 6)
    outputs_match(model, small, normal(8, 6))


def test_drop_inputs_removes_unread_features():
    model = dense_chain()
    d1 = model.get_layer("d1")
    kernel = to_numpy(d1.kernel)
    kernel[[1, 4], :] = 0  # features 1 and 4 are read by no unit
    set_weights(d1, kernel=kernel)
    assert keras_reg.shrink(model).input_shape == (None, 6)
    plan = keras_reg.plan_shrink(model, drop_inputs=True)
    small = keras_reg.shrink(model, plan=plan)
    (name,) = plan.inputs_kept
    assert plan.inputs_kept[name] == [0, 2, 3, 5]
    assert small.input_shape == (None, 4)
    np.testing.assert_array_equal(weights(small.get_layer("d1"))["kernel"], kernel[[0, 2, 3, 5]])
    x = normal(8, 6)
    a = to_numpy(model(x))
    b = to_numpy(small(x[:, [0, 2, 3, 5]]))
    assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(a))
    with pytest.raises(ValueError, match="'drop_inputs' argument of plan_shrink"):
        keras_reg.plan_shrink(model, drop_inputs=1)


def test_plan_counts_parameters_and_macs():
    model = dense_chain()
    kernel = to_numpy(model.get_layer("d1").kernel)
    kernel[:, :2] = 0
    set_weights(model.get_layer("d1"), kernel=kernel, bias=np.zeros(5))
    plan = keras_reg.plan_shrink(model)
    rows = {r.name: r for r in plan.rows}
    assert (rows["d1"].units_before, rows["d1"].units_after) == (5, 3)
    assert (rows["d1"].macs_before, rows["d1"].macs_after) == (6 * 5, 6 * 3)
    assert (rows["d2"].params_before, rows["d2"].params_after) == (5 * 4 + 4, 3 * 4 + 4)
    assert plan.params_before == model.count_params()
    small = keras_reg.shrink(model, plan=plan)
    assert plan.params_after == small.count_params() == model.count_params() - 2 * 6 - 2 - 2 * 4
    text = str(plan)
    assert "d1" in text and "5 -> 3" in text and "total" in text
    assert plan.to_dict()["rows"][0]["name"] == "d1"


# --- convolutions -----------------------------------------------------------------------------


def test_constant_filter_folds_into_valid_conv_but_not_same():
    inputs = keras.Input((7, 7, 2))
    a = L.Conv2D(3, 3, padding="same", activation="relu", name="a")(inputs)
    valid = L.Conv2D(2, 3, padding="valid", name="valid")(a)
    b = L.Conv2D(3, 3, padding="same", activation="relu", name="b")(inputs)
    same = L.Conv2D(2, 3, padding="same", name="same")(b)
    merged = L.Concatenate()([L.Flatten()(valid), L.Flatten()(same)])
    model = keras.Model(inputs, L.Dense(2, name="out")(merged))
    for name in ("a", "b"):
        kernel = to_numpy(model.get_layer(name).kernel)
        kernel[..., 1] = 0  # filter 1 outputs relu(0.4) = 0.4 everywhere
        set_weights(model.get_layer(name), kernel=kernel, bias=[0.1, 0.4, -0.2])
    plan = keras_reg.plan_shrink(model)
    small = keras_reg.shrink(model, plan=plan)
    assert small.get_layer("a").filters == 2  # folded into a valid conv: removed
    assert small.get_layer("b").filters == 3  # a same conv sees zeros at the border: kept
    assert {r.name: r.constant_kept for r in plan.rows}["b"] == 1
    w = weights(model.get_layer("valid"))
    folded = w["bias"] + 0.4 * w["kernel"][:, :, 1, :].sum(axis=(0, 1))
    np.testing.assert_allclose(weights(small.get_layer("valid"))["bias"], folded, atol=1e-6)
    outputs_match(model, small, normal(4, 7, 7, 2))


def test_conv_batchnorm_relu_flatten_dense():
    inputs = keras.Input((6, 6, 1))
    h = L.Conv2D(4, 3, use_bias=False, name="conv")(inputs)
    h = L.BatchNormalization(name="bn")(h)
    h = L.ReLU()(h)
    h = L.MaxPooling2D()(h)
    h = L.Flatten()(h)  # (2, 2, 4): Dense row (i * 2 + j) * 4 + c reads channel c
    model = keras.Model(inputs, L.Dense(3, name="out")(h))
    kernel = to_numpy(model.get_layer("conv").kernel)
    kernel[..., 2] = 0
    bn = model.get_layer("bn")
    set_weights(
        bn, gamma=[1.0, 2.0, 0.5, 1.5], beta=[0.1, 0.2, 0.7, 0.3], moving_mean=[0.0, 1.0, 0.2, 0.4]
    )
    set_weights(model.get_layer("conv"), kernel=kernel)
    small = keras_reg.shrink(model)
    assert small.get_layer("conv").filters == 3
    np.testing.assert_array_equal(weights(small.get_layer("bn"))["gamma"], [1.0, 2.0, 1.5])
    # Channel 2 is the constant relu(beta - gamma * mean / sqrt(var + eps)) at every position.
    eps = bn.epsilon
    constant = max(0.0, 0.7 - 0.5 * 0.2 / np.sqrt(1.0 + eps))
    dense = weights(model.get_layer("out"))
    rows = np.arange(16).reshape(4, 4)  # positions x channels
    kept = np.delete(rows, 2, axis=1).reshape(-1)
    np.testing.assert_array_equal(weights(small.get_layer("out"))["kernel"], dense["kernel"][kept])
    folded = dense["bias"] + constant * dense["kernel"][rows[:, 2]].sum(axis=0)
    np.testing.assert_allclose(weights(small.get_layer("out"))["bias"], folded, rtol=1e-5)
    outputs_match(model, small, normal(4, 6, 6, 1))


def test_residual_channel_zero_in_one_branch_stays():
    inputs = keras.Input((5, 5, 3))
    left = L.Conv2D(4, 1, name="left")(inputs)
    right = L.Conv2D(4, 3, padding="same", name="right")(inputs)
    h = L.ReLU()(L.Add()([left, right]))
    model = keras.Model(inputs, L.Conv2D(2, 1, name="out")(h))
    for name in ("left", "right"):
        kernel = to_numpy(model.get_layer(name).kernel)
        kernel[..., 0] = 0  # channel 0: zero in both branches
        set_weights(model.get_layer(name), kernel=kernel, bias=np.zeros(4))
    kernel = to_numpy(model.get_layer("left").kernel)
    kernel[..., 1] = 0  # channel 1: zero in the left branch only
    set_weights(model.get_layer("left"), kernel=kernel)
    small = keras_reg.shrink(model)
    assert small.get_layer("left").filters == small.get_layer("right").filters == 3
    np.testing.assert_array_equal(
        weights(small.get_layer("left"))["kernel"], kernel[..., [1, 2, 3]]
    )
    outputs_match(model, small, normal(4, 5, 5, 3))


def test_concatenate_offsets():
    inputs = keras.Input((4, 4, 2))
    a = L.Conv2D(3, 1, name="a")(inputs)
    b = L.Conv2D(5, 1, name="b")(inputs)
    h = L.Concatenate()([a, b])
    model = keras.Model(inputs, L.Conv2D(2, 1, name="out")(h))
    kernel = to_numpy(model.get_layer("b").kernel)
    kernel[..., [0, 3]] = 0
    set_weights(model.get_layer("b"), kernel=kernel, bias=np.zeros(5))
    small = keras_reg.shrink(model)
    out = weights(model.get_layer("out"))["kernel"]
    rows = [0, 1, 2, 3 + 1, 3 + 2, 3 + 4]  # b's channels 0 and 3 sit at offsets 3 and 6
    np.testing.assert_array_equal(weights(small.get_layer("out"))["kernel"], out[:, :, rows])
    outputs_match(model, small, normal(4, 4, 4, 2))


def test_depthwise_and_separable_channels_go_together():
    inputs = keras.Input((6, 6, 2))
    h = L.Conv2D(4, 1, name="expand")(inputs)
    h = L.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(h)
    h = L.SeparableConv2D(3, 3, name="sep")(h)
    model = keras.Model(inputs, L.GlobalAveragePooling2D()(h))
    dw = to_numpy(model.get_layer("dw").kernel)
    dw[:, :, 1, :] = 0  # depthwise channel 1: relu(bias) with bias 0 is zero
    set_weights(model.get_layer("dw"), kernel=dw, bias=np.zeros(4))
    small = keras_reg.shrink(model)
    assert small.get_layer("expand").filters == 3
    assert small.get_layer("dw").kernel.shape == (3, 3, 3, 1)
    sep = weights(model.get_layer("sep"))
    got = weights(small.get_layer("sep"))
    np.testing.assert_array_equal(got["depthwise_kernel"], sep["depthwise_kernel"][:, :, [0, 2, 3]])
    np.testing.assert_array_equal(got["pointwise_kernel"], sep["pointwise_kernel"][:, :, [0, 2, 3]])
    outputs_match(model, small, normal(4, 6, 6, 2))


def test_squeeze_excitation_gate():
    inputs = keras.Input((4, 4, 3))
    x = L.Conv2D(4, 1, name="x")(inputs)
    s = L.GlobalAveragePooling2D()(x)
    s = L.Reshape((1, 1, 4))(s)
    s = L.Conv2D(2, 1, activation="relu", name="squeeze")(s)
    relu_gate = L.Conv2D(4, 1, activation="relu", name="relu_gate")(s)
    sigmoid_gate = L.Conv2D(4, 1, activation="sigmoid", name="sigmoid_gate")(s)
    h = L.Multiply()([L.Multiply()([x, relu_gate]), sigmoid_gate])
    model = keras.Model(inputs, L.Conv2D(2, 1, name="out")(h))
    for name in ("relu_gate", "sigmoid_gate"):
        kernel = to_numpy(model.get_layer(name).kernel)
        kernel[..., 3] = 0  # gate 3: relu(0) = 0 removes the channel; sigmoid(0) = 0.5 alone not
        set_weights(model.get_layer(name), kernel=kernel, bias=np.zeros(4))
    squeeze = to_numpy(model.get_layer("squeeze").kernel)
    squeeze[:, :, 3, :] = 0  # channel 3 no longer steers the other gates
    set_weights(model.get_layer("squeeze"), kernel=squeeze)
    small = keras_reg.shrink(model)
    assert small.get_layer("x").filters == 3
    assert small.get_layer("sigmoid_gate").filters == 3
    assert small.get_layer("reshape").target_shape == (1, 1, 3)
    outputs_match(model, small, normal(4, 4, 4, 3))

    kernel = to_numpy(model.get_layer("relu_gate").kernel)
    set_weights(model.get_layer("relu_gate"), kernel=kernel + 1.0)  # gate 3 no longer zero
    assert keras_reg.shrink(model).get_layer("x").filters == 4


# --- models and layers shrink does not know -----------------------------------------------------


def test_nested_sequential_and_shared_layer():
    inner = keras.Sequential(
        [keras.Input((5,)), L.Dense(4, activation="relu", name="inner_dense")], name="inner"
    )
    shared = L.Dense(3, name="shared")  # one kernel for both calls: rows go together
    a, b = keras.Input((5,), name="a"), keras.Input((5,), name="b")
    other = L.Dense(4, name="other")(b)
    h = L.Concatenate()([shared(inner(a)), shared(other * 2.0)])
    model = keras.Model([a, b], L.Dense(2, name="out")(h))
    for layer in (inner.get_layer("inner_dense"), model.get_layer("other")):
        kernel = to_numpy(layer.kernel)
        kernel[:, 1] = 0
        set_weights(layer, kernel=kernel, bias=np.zeros(4))
    small = keras_reg.shrink(model)
    assert isinstance(small.get_layer("inner"), keras.Sequential)
    assert small.get_layer("inner").get_layer("inner_dense").units == 3
    assert small.get_layer("other").units == 3
    assert small.get_layer("shared").kernel.shape == (3, 3)
    outputs_match(model, small, [normal(4, 5), normal(4, 5)])

    kernel = to_numpy(model.get_layer("other").kernel)
    set_weights(model.get_layer("other"), kernel=kernel + 1.0)  # unit 1 of one call is alive
    assert keras_reg.shrink(model).get_layer("shared").kernel.shape == (4, 3)


def test_unknown_layers_keep_their_channels():
    @keras.saving.register_keras_serializable(package="test_shrink")
    class Scale(L.Layer):
        def call(self, x):
            return x * 2.0

    inputs = keras.Input((6,))
    h = L.Dense(4, name="d1")(inputs)
    h = Scale(name="custom")(h)
    h = L.Dense(4, name="d2")(h)
    h = L.LayerNormalization(name="ln")(h)
    model = keras.Model(inputs, L.Dense(2, name="out")(h))
    for name in ("d1", "d2"):
        kernel = to_numpy(model.get_layer(name).kernel)
        kernel[:, 0] = 0
        set_weights(model.get_layer(name), kernel=kernel, bias=np.zeros(4))
    plan = keras_reg.plan_shrink(model)
    small = keras_reg.shrink(model, plan=plan)
    assert small.get_layer("d1").units == small.get_layer("d2").units == 4
    assert {name for name, _ in plan.kept_whole} == {"custom", "ln"}
    assert "unknown" in dict(plan.kept_whole)["custom"]
    assert "kept whole: ln" in str(plan)
    outputs_match(model, small, normal(4, 6))


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(2)

    def call(self, x):
        return self.dense(x)


def test_refusals():
    model = Subclassed()
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="subclassed keras.Model"):
        keras_reg.shrink(model)
    with pytest.raises(ValueError, match="'model' argument of plan_shrink must be a keras.Model"):
        keras_reg.shrink(L.Dense(2))
    with pytest.raises(ValueError, match="'verbose' argument of shrink"):
        keras_reg.shrink(dense_chain(), verbose="loud")
    with pytest.raises(ValueError, match="'plan' argument of shrink"):
        keras_reg.shrink(dense_chain(), plan=keras_reg.plan_shrink(dense_chain()))


def test_verification_refuses_a_wrong_result(monkeypatch):
    from keras_reg.shrinking import build as module

    model = dense_chain()
    original = module._Builder.assign_weights

    def corrupt(builder):
        original(builder)
        new = builder.new[id(model.get_layer("d2"))]
        new.bias.assign(to_numpy(new.bias) + 1.0)

    monkeypatch.setattr(module._Builder, "assign_weights", corrupt)
    with pytest.raises(RuntimeError, match="refused its result"):
        keras_reg.shrink(model)


# --- the result is a plain Keras model --------------------------------------------------------


def regularized_model():
    inputs = keras.Input((6,))
    h = L.Dense(
        5,
        activation="relu",
        name="d1",
        kernel_regularizer=keras_reg.GroupLasso(0.01, axis=-1),
        kernel_constraint=keras.constraints.MaxNorm(3.0),
    )(inputs)
    model = keras.Model(inputs, L.Dense(2, name="out")(h))
    kernel = to_numpy(model.get_layer("d1").kernel)
    kernel[:, 3] = 0
    set_weights(model.get_layer("d1"), kernel=kernel, bias=np.zeros(5))
    return model


def test_regularizers_constraints_kept_and_training_goes_on():
    model = regularized_model()
    small = keras_reg.shrink(model)
    d1 = small.get_layer("d1")
    assert d1.units == 4
    assert isinstance(d1.kernel_regularizer, keras_reg.GroupLasso)
    assert d1.kernel_regularizer is not model.get_layer("d1").kernel_regularizer
    assert isinstance(d1.kernel_constraint, keras.constraints.MaxNorm)
    assert len(small.losses) == 1
    assert not small.compiled  # uncompiled, like clone_model
    small.compile(keras_reg.Proximal(keras.optimizers.SGD(0.1)), "mse")
    small.fit(normal(16, 6), normal(16, 2), epochs=1, verbose=0)
    assert model.get_layer("d1").units == 5


def test_keras_file_in_fresh_process(tmp_path):
    model = regularized_model()
    small = keras_reg.shrink(model)
    x = normal(4, 6)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", to_numpy(model(x)))
    small.save(tmp_path / "small.keras")
    code = textwrap.dedent(
        f"""
        import numpy as np, keras, keras_reg
        model = keras.saving.load_model({str(tmp_path / "small.keras")!r})
        assert model.get_layer("d1").units == 4
        assert isinstance(model.get_layer("d1").kernel_regularizer, keras_reg.GroupLasso)
        y = keras.ops.convert_to_numpy(model(np.load({str(tmp_path / "x.npy")!r})))
        expected = np.load({str(tmp_path / "y.npy")!r})
        assert np.max(np.abs(y - expected)) <= 1e-5 * np.max(np.abs(expected))
        print("ok")
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


# --- keras.applications ----------------------------------------------------------------------


def randomize(model, seed=0):
    """Non-trivial BatchNorm statistics and biases, and a quarter of each kernel's units zeroed."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for v in layer.weights:
            name = v.path.rsplit("/", 1)[-1]
            if name in ("moving_mean", "beta", "bias"):
                v.assign(rng.normal(0, 0.5, size=v.shape).astype(v.dtype))
            elif name in ("moving_variance", "gamma"):
                v.assign(rng.uniform(0.5, 1.5, size=v.shape).astype(v.dtype))
        target = getattr(layer, "pointwise_kernel", None)
        if target is None:
            target = getattr(layer, "kernel", None)
        if target is None or len(target.shape) < 2:
            continue
        values = to_numpy(target).copy()
        axis = -2 if isinstance(layer, L.DepthwiseConv2D) else -1
        n = values.shape[axis]
        index = rng.choice(n, n // 4, replace=False)
        np.moveaxis(values, axis, 0)[index] = 0
        target.assign(values)


@pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="JAX compiles every eagerly run op: these two take 42 s there, 2 s on PyTorch (the "
    "hand-built models above cover every backend)",
)
@pytest.mark.parametrize("name", ["MobileNetV3Small", "ResNet50V2"])
def test_applications_shrink_exactly(name):
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3))
    randomize(model)
    plan = keras_reg.plan_shrink(model)
    small = keras_reg.shrink(model, plan=plan)
    assert plan.params_after < 0.9 * plan.params_before
    assert small.count_params() == plan.params_after
    outputs_match(model, small, 10 * normal(2, 32, 32, 3), rtol=1e-4)


# --- keras-reg shrink --------------------------------------------------------------------------


def saved_model(tmp_path):
    model = regularized_model()
    path = tmp_path / "model.keras"
    model.save(path)
    return model, path


def test_cli_shrink_writes_a_smaller_model_and_never_touches_in(tmp_path, capsys):
    from keras_reg import cli

    model, source = saved_model(tmp_path)
    before = source.read_bytes()
    target = tmp_path / "small.keras"
    environment = dict(os.environ)
    assert cli.main(["shrink", str(source), str(target)]) == 0
    # Keras was loaded already: the command must not change what later child processes see.
    assert dict(os.environ) == environment
    out = capsys.readouterr().out
    assert "d1" in out and "5 -> 4" in out
    assert source.read_bytes() == before
    small = keras.saving.load_model(target)
    assert small.get_layer("d1").units == 4
    outputs_match(model, small, normal(4, 6))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "small.keras"]


def test_cli_shrink_refusals_are_one_line(tmp_path, capsys):
    from keras_reg import cli

    _, source = saved_model(tmp_path)
    target = tmp_path / "small.keras"
    target.write_bytes(b"keep me")
    cases = [
        (["shrink", str(source), str(target)], "already exists; pass --force"),
        (["shrink", str(source), str(source), "--force"], "never writes to the file it reads"),
        (["shrink", str(tmp_path / "missing.keras"), str(tmp_path / "x.keras")], "cannot be read"),
        (["shrink", str(source), str(tmp_path / "x.h5")], "must be a .keras file"),
        (["shrink", str(tmp_path), str(tmp_path / "x.keras")], "must be a .keras file"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)
    assert target.read_bytes() == b"keep me"
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    assert cli.main(["shrink", str(broken), str(tmp_path / "x.keras")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a .keras file (corrupt or truncated zip)" in err
    assert cli.main(["shrink", str(source), str(target), "--force"]) == 0
    assert keras.saving.load_model(target).get_layer("d1").units == 4


def test_mixed_precision_keeps_policies():
    keras.config.set_dtype_policy("mixed_float16")
    inputs = keras.Input((6, 6, 2))
    h = L.Conv2D(6, 3, activation="relu", name="c1")(inputs)
    h = L.Flatten()(h)
    model = keras.Model(inputs, L.Dense(3, dtype="float32", name="out")(h))
    kernel = to_numpy(model.get_layer("c1").kernel)
    kernel[..., :2] = 0
    set_weights(model.get_layer("c1"), kernel=kernel, bias=[0.3, 0.1, 0.2, -0.1, 0.5, 0.0])
    small = keras_reg.shrink(model)
    assert small.get_layer("c1").filters == 4
    assert small.get_layer("c1").dtype_policy.name == "mixed_float16"
    assert small.get_layer("out").dtype_policy.name == "float32"
    outputs_match(model, small, normal(4, 6, 6, 2), rtol=1e-2)


def test_unknown_sizes_are_checked_or_said_unchecked():
    inputs = keras.Input((None, None, 2))
    h = L.Conv2D(4, 3, activation="relu", name="c")(inputs)
    model = keras.Model(inputs, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(h)))
    kernel = to_numpy(model.get_layer("c").kernel)
    kernel[..., 0] = 0
    set_weights(model.get_layer("c"), kernel=kernel, bias=np.zeros(4))
    small = keras_reg.shrink(model)  # checked on a 64x64 sample
    assert small.get_layer("c").filters == 3
    outputs_match(model, small, normal(2, 9, 7, 2))


def test_a_model_that_cannot_run_on_the_sample_is_said_unchecked(monkeypatch):
    from keras_reg.shrinking import build as shrinking

    def fail(model, inputs):
        raise ValueError("the sample does not fit")

    monkeypatch.setattr(shrinking, "_forward", fail)
    with pytest.warns(UserWarning, match="did not compare"):
        keras_reg.shrink(dense_chain())


def test_the_shrunk_layers_keep_their_initializers_in_their_configs():
    # shrink builds the new layers' weights as zeros (they are all overwritten), then puts
    # each layer's own initializers back: the shrunk model's configs name the originals.
    inputs = keras.Input((6, 6, 2))
    h = L.Conv2D(
        4,
        3,
        kernel_initializer="he_normal",
        bias_initializer=keras.initializers.Constant(0.3),
        name="conv",
    )(inputs)
    h = L.BatchNormalization(gamma_initializer="random_uniform", name="bn")(h)
    h = L.Flatten()(h)
    h = L.Dense(5, kernel_initializer="lecun_uniform", name="hidden")(h)
    model = keras.Model(inputs, L.Dense(3, name="out")(h))
    kernel = model.get_layer("conv").kernel
    kernel.assign(np.concatenate([to_numpy(kernel)[..., :3], np.zeros((3, 3, 2, 1))], -1))
    # Filter 3 is the bias alone, 0.3, and BatchNorm maps it to exactly zero.
    set_weights(model.get_layer("bn"), moving_mean=[0, 0, 0, 0.3], beta=[0.1, 0.2, 0.3, 0.0])
    small = keras_reg.shrink(model)
    assert small.get_layer("conv").filters == 3
    for name in ("conv", "bn", "hidden", "out"):
        before, after = model.get_layer(name).get_config(), small.get_layer(name).get_config()
        keys = [key for key in before if key.endswith("_initializer")]
        assert keys and all(after[key] == before[key] for key in keys), name
    x = normal(4, 6, 6, 2)
    outputs_match(model, small, x)
