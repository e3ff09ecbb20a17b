"""prune_channels: coupled groups pruned to a MACs target, exactly, the model untouched."""

import math

import keras
import numpy as np
import pytest

import keras_reg
from helpers import to_numpy

L = keras.layers


def residual_cnn(width=16, seed=0):
    """Conv-BN-ReLU stem, two residual blocks (Add), global pooling, a classifier."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 12, 3))
    x = L.Conv2D(width, 3, padding="same", name="stem")(inputs)
    x = L.ReLU()(L.BatchNormalization(name="stem_bn")(x))
    for i in range(2):
        h = L.Conv2D(width, 3, padding="same", activation="relu", name=f"b{i}_c1")(x)
        h = L.Conv2D(width, 3, padding="same", name=f"b{i}_c2")(h)
        h = L.BatchNormalization(name=f"b{i}_bn")(h)
        x = L.ReLU()(L.Add(name=f"b{i}_add")([x, h]))
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(10, name="head")(x))
    rng = np.random.default_rng(seed)
    for v in model.weights:  # BatchNorm statistics and offsets that are not the defaults
        if v.path.endswith(("moving_mean", "beta")):
            v.assign(rng.normal(scale=0.1, size=v.shape).astype("float32"))
        if v.path.endswith("moving_variance"):
            v.assign(rng.uniform(0.5, 1.5, size=v.shape).astype("float32"))
    return model


def numpy_macs(model):
    """Multiply-accumulates per sample from the layers' shapes, independent of keras_reg."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, (L.Conv2D, L.Dense)):
            out = layer.output.shape
            positions = math.prod(out[1:-1]) if len(out) > 2 else 1
            total += positions * int(np.prod(layer.kernel.shape))
    return total


def weights_by_path(model):
    return {v.path: to_numpy(v).copy() for v in model.weights}


def test_speed_up_2_halves_the_macs_and_prunes_the_residual_stream():
    model = residual_cnn()
    before = weights_by_path(model)
    plan = keras_reg.plan_channels(model, 2.0)
    small = keras_reg.prune_channels(model, 2.0)
    ratio = numpy_macs(small) / numpy_macs(model)
    assert 0.40 <= ratio <= 0.5
    assert math.isclose(ratio, plan.macs_after / plan.macs_before)
    # The residual stream (stem, both blocks' second convs, the Adds) is one group, pruned.
    stream = next(g for g in plan.groups if "b0_c2" in g.layers)
    assert {"stem", "stem_bn", "b0_c2", "b1_c2", "b0_bn", "b1_bn"} <= set(stream.layers)
    assert stream.kept < stream.size
    assert small.get_layer("stem").filters == stream.kept
    assert small.get_layer("b1_c2").filters == stream.kept
    # The model given is untouched.
    assert all(np.array_equal(a, weights_by_path(model)[p]) for p, a in before.items())


def test_the_result_is_the_original_with_whole_channels_zeroed():
    model = residual_cnn()
    plan = keras_reg.plan_channels(model, 2.0)
    zeroed = plan._model
    # Every weight of the zeroed model is the original's or exactly zero ...
    for v, w in zip(model.weights, zeroed.weights, strict=True):
        a, b = to_numpy(v), to_numpy(w)
        assert np.all((b == a) | (b == 0)), v.path
    # ... whole channels: a pruned stem filter is zero in its kernel, bias and BN scale/offset,
    # and in the rows of every conv that reads the stream.
    stem = to_numpy(zeroed.get_layer("stem").kernel)
    pruned = np.flatnonzero(~stem.reshape(-1, stem.shape[-1]).any(axis=0))
    assert len(pruned) == plan.groups[0].size - plan.groups[0].kept
    for name in ("stem_bn", "b0_bn", "b1_bn"):
        bn = zeroed.get_layer(name)
        assert not to_numpy(bn.gamma)[pruned].any() and not to_numpy(bn.beta)[pruned].any()
    for name in ("b0_c1", "b1_c1"):
        assert not to_numpy(zeroed.get_layer(name).kernel)[:, :, pruned, :].any()
    assert not to_numpy(zeroed.get_layer("head").kernel)[pruned].any()
    # The returned model computes what the zeroed original computes.
    small = keras_reg.prune_channels(model, 2.0)
    x = np.random.default_rng(1).normal(size=(4, 12, 12, 3)).astype("float32")
    expected = to_numpy(zeroed(x, training=False))
    np.testing.assert_allclose(to_numpy(small(x, training=False)), expected, atol=1e-5)


@pytest.mark.parametrize("speed_up", [1.5, 3.0, 4.0])
def test_the_target_is_met_as_closely_as_one_more_channel_allows(speed_up):
    model = residual_cnn(width=24)
    plan = keras_reg.plan_channels(model, speed_up)
    assert plan.macs_after <= plan.macs_before / speed_up
    assert plan.speed_up >= speed_up
    # Keeping one more block of channels would miss the target: the last one pruned was needed.
    assert plan.macs_after > plan.macs_before / speed_up * 0.85


def test_round_to_keeps_multiples_and_uniform_pruning_takes_the_same_share():
    model = residual_cnn(width=32)
    plan = keras_reg.plan_channels(model, 2.0, round_to=8)
    assert all(g.kept % 8 == 0 and g.kept >= 8 for g in plan.groups)
    uniform = keras_reg.plan_channels(model, 2.0, global_pruning=False)
    shares = {round(1 - g.kept / g.size, 1) for g in uniform.groups}
    assert len(shares) == 1 and shares != {0.0}
    assert uniform.macs_after <= uniform.macs_before / 2


def test_ignored_layers_keep_their_outputs():
    model = residual_cnn()
    small = keras_reg.prune_channels(model, 1.5, ignored_layers=["b0_c1", model.get_layer("b1_c1")])
    assert small.get_layer("b0_c1").filters == 16 and small.get_layer("b1_c1").filters == 16
    assert small.get_layer("head").units == 10  # model outputs never change


def test_bn_scale_importance_prunes_the_smallest_gammas_first():
    model = residual_cnn()
    gamma = np.ones(16, "float32")
    gamma[[3, 7, 11]] = 1e-3
    model.get_layer("b0_bn").gamma.assign(gamma)  # the stream's BN scales: three tiny ones
    plan = keras_reg.plan_channels(model, 1.2, importance="bn_scale")
    stream = next(g for g in plan.groups if "b0_bn" in g.layers)
    assert np.argsort(stream.scores)[:3].tolist() == [3, 7, 11]


def test_taylor_importance_needs_data_and_uses_it():
    model = residual_cnn()
    x = np.random.default_rng(0).normal(size=(8, 12, 12, 3)).astype("float32")
    y = np.arange(8) % 10
    with pytest.raises(ValueError, match="importance='taylor' needs a batch"):
        keras_reg.plan_channels(model, 2.0, importance="taylor")
    plan = keras_reg.plan_channels(
        model, 2.0, importance="taylor", x=x, y=y, loss="sparse_categorical_crossentropy"
    )
    magnitude = keras_reg.plan_channels(model, 2.0)
    assert plan.macs_after <= plan.macs_before / 2
    assert [g.scores for g in plan.groups] != [g.scores for g in magnitude.groups]


@pytest.mark.parametrize(
    "speed_up", [0.5, 0, -2, float("nan"), float("inf"), "2", True, None], ids=repr
)
def test_a_bad_speed_up_is_a_value_error_naming_it(speed_up):
    with pytest.raises(ValueError, match="'speed_up' argument of prune_channels"):
        keras_reg.prune_channels(residual_cnn(), speed_up)


def test_bad_options_and_unreachable_targets_are_value_errors():
    model = residual_cnn()
    with pytest.raises(ValueError, match="'importance' argument"):
        keras_reg.prune_channels(model, 2.0, importance="random")
    with pytest.raises(ValueError, match="'round_to' argument"):
        keras_reg.prune_channels(model, 2.0, round_to=0)
    with pytest.raises(ValueError, match="'ignored_layers' argument.*'typo'"):
        keras_reg.prune_channels(model, 2.0, ignored_layers=["typo"])
    with pytest.raises(ValueError, match=r"cannot reach speed_up=1000.*gives \d+\.\d+x"):
        keras_reg.prune_channels(model, 1000.0)

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    sub = Subclassed()
    sub.build((None, 3))
    with pytest.raises(ValueError, match="subclassed"):
        keras_reg.prune_channels(sub, 2.0)


@pytest.mark.slow
@pytest.mark.tensorflow_only(
    reason="a plain Keras file (no keras_reg class); test_saving's fresh-process round trips "
    "cover every backend, and a fresh JAX process costs 20 s"
)
def test_the_pruned_model_round_trips_through_keras_in_a_fresh_process(tmp_path):
    import subprocess
    import sys
    import textwrap

    small = keras_reg.prune_channels(residual_cnn(), 2.0)
    small.save(tmp_path / "small.keras")
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", to_numpy(small(x, training=False)))
    code = f"""
        import keras, numpy as np
        model = keras.saving.load_model({str(tmp_path / "small.keras")!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        got = keras.ops.convert_to_numpy(model(x, training=False))
        np.testing.assert_allclose(got, np.load({str(tmp_path / "y.npy")!r}), atol=1e-6)
        print("ok")
    """
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "ok"


def test_cli_prune_writes_a_model_with_the_speed_up_and_never_touches_in(tmp_path, capsys):
    from keras_reg.cli import main

    source, target = tmp_path / "in.keras", tmp_path / "out.keras"
    model = residual_cnn()
    model.save(source)
    before = source.read_bytes()
    assert main(["prune", str(source), str(target), "--speed-up", "2", "--round-to", "4"]) == 0
    out = capsys.readouterr().out
    assert "speed-up 2." in out and "(asked 2x)" in out
    assert source.read_bytes() == before
    small = keras.saving.load_model(target)
    assert numpy_macs(small) <= numpy_macs(model) / 2
    assert small.get_layer("stem").filters % 4 == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--speed-up", "0.5"], "argument --speed-up: must be a finite number >= 1"),
        (["--speed-up", "nan"], "argument --speed-up: must be a finite number >= 1"),
        ([], "the following arguments are required: --speed-up"),
        (["--speed-up", "1000"], "cannot reach speed_up=1000"),
        (["--speed-up", "2", "--ignore", "typo"], "'ignored_layers' argument"),
        (["--speed-up", "2", "--importance", "taylor"], "invalid choice: 'taylor'"),
    ],
    ids=["below-1", "nan", "missing", "unreachable", "typo", "taylor"],
)
def test_cli_prune_mistakes_are_one_line_and_exit_2(tmp_path, capsys, extra, message):
    from keras_reg.cli import main

    source = tmp_path / "in.keras"
    residual_cnn().save(source)
    assert main(["prune", str(source), str(tmp_path / "out.keras"), *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out.keras").exists()


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="JAX compiles every eagerly run op and every initializer's shape: these two take "
    "about a minute there; `KERAS_BACKEND=jax python -m benchmarks.channels` checks all six",
)
@pytest.mark.parametrize("name", ["ResNet50V2", "MobileNetV2"])
def test_applications_at_speed_up_2(name):
    model = getattr(keras.applications, name)(weights=None, input_shape=(64, 64, 3), classes=10)
    plan = keras_reg.plan_channels(model, 2.0)
    small = keras_reg.shrink(plan._model, plan=plan.shrink_plan)
    assert 0.40 <= numpy_macs_nested(small) / numpy_macs_nested(model) <= 0.51
    # The residual stream is pruned too: the Add layers join fewer channels.
    adds = [layer.name for layer in model.layers if isinstance(layer, L.Add)]
    narrower = [
        n for n in adds if small.get_layer(n).output.shape[-1] < model.get_layer(n).output.shape[-1]
    ]
    assert adds and narrower
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    expected = to_numpy(plan._model(x, training=False))
    np.testing.assert_allclose(to_numpy(small(x, training=False)), expected, atol=1e-4)


def numpy_macs_nested(model):
    """MACs of Conv2D, DepthwiseConv2D and Dense layers from their shapes (independent count)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, (L.Conv2D, L.DepthwiseConv2D, L.Dense)):
            positions = math.prod(layer.output.shape[1:-1]) if len(layer.output.shape) > 2 else 1
            total += positions * int(np.prod(layer.kernel.shape))
    return total
