"""Magnitude pruning: schedules against TFMOT's formula, zeros against a NumPy top-k."""

import inspect
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_reg
from helpers import groups_along, to_numpy
from keras_reg.pruning import magnitude_prune, pruned_weights

BACKEND = keras.backend.backend()
RNG = np.random.default_rng(0)
X = RNG.normal(size=(96, 12)).astype("float32")
Y = (X[:, :3].sum(axis=1) > 0).astype("int32")


# --- NumPy references, written from TFMOT's pruning_schedule.py --------------------


def tfmot_should_prune(step, begin, end, frequency):
    in_range = step >= begin and (step <= end or end < 0)
    return in_range and (step - begin) % frequency == 0


def tfmot_polynomial(step, initial, final, begin, end, power):
    f32 = np.float32
    p = min(f32(1.0), max(f32(0.0), f32(step - begin) / f32(end - begin)))
    return f32(initial - final) * (f32(1.0) - p) ** f32(power) + f32(final)


def reference_target(step, value_at, begin, end, frequency):
    """The sparsity in force after `step`: TFMOT's value at the last pruning step <= step."""
    pruning_steps = [
        s for s in range(1, step + 1) if tfmot_should_prune(s, begin, end, frequency) or s == end
    ]
    return float(value_at(pruning_steps[-1])) if pruning_steps else 0.0


def numpy_top_k(w, sparsity):
    """Zero the round(s*n) smallest |w|; ties to the lower flat index (stable sort)."""
    flat = np.abs(np.asarray(w, np.float64)).ravel()
    count = int(np.round(sparsity * flat.size))
    out = np.asarray(w, np.float64).ravel().copy()
    out[np.argsort(flat, kind="stable")[:count]] = 0
    return out.reshape(np.shape(w))


def numpy_group_top_k(w, sparsity, axis):
    norms = np.linalg.norm(groups_along(w, axis), axis=1)
    count = int(np.round(sparsity * norms.size))
    out = np.moveaxis(np.asarray(w, np.float64).copy(), axis, 0)
    out[np.argsort(norms, kind="stable")[:count]] = 0
    return np.moveaxis(out, 0, axis)


# --- schedules --------------------------------------------------------------------


@pytest.mark.parametrize(
    "begin,end,frequency,power", [(0, 100, 10, 3), (7, 53, 5, 2), (3, 40, 9, 1)]
)
def test_polynomial_decay_follows_tfmot_formula(begin, end, frequency, power):
    schedule = keras_reg.PolynomialDecay(0.1, 0.85, begin, end, power=power, frequency=frequency)
    for step in range(0, end + 20):
        expected = tfmot_polynomial(step, 0.1, 0.85, begin, end, power)
        np.testing.assert_allclose(float(schedule.sparsity(step)), expected, rtol=1e-6)
        should, value = schedule(step)
        assert bool(should) == (tfmot_should_prune(step, begin, end, frequency) or step == end)
        assert float(value) == float(schedule.sparsity(step))
        reference = reference_target(
            step,
            lambda s: tfmot_polynomial(s, 0.1, 0.85, begin, end, power),
            begin,
            end,
            frequency,
        )
        np.testing.assert_allclose(float(schedule.target(step)), reference, rtol=1e-6)
    # end_step - begin_step not a multiple of frequency: the final sparsity is reached anyway.
    np.testing.assert_allclose(float(schedule.target(end)), 0.85, rtol=1e-7)


@pytest.mark.parametrize("begin,end,frequency", [(0, -1, 10), (5, 30, 4), (2, 2, 3)])
def test_constant_sparsity_follows_tfmot_rule(begin, end, frequency):
    schedule = keras_reg.ConstantSparsity(0.6, begin, end_step=end, frequency=frequency)
    for step in range(0, 60):
        should = tfmot_should_prune(step, begin, end, frequency) or step == end
        assert bool(schedule.should_prune(step)) == should
        reference = reference_target(step, lambda s: np.float32(0.6), begin, end, frequency)
        np.testing.assert_allclose(float(schedule.target(step)), reference, rtol=1e-7)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: keras_reg.PolynomialDecay(0.0, 1.0, 0, 10), "'final_sparsity' argument"),
        (lambda: keras_reg.PolynomialDecay(-0.1, 0.5, 0, 10), "'initial_sparsity' argument"),
        (lambda: keras_reg.PolynomialDecay(0.0, 0.5, 10, 5), "'end_step' argument"),
        (lambda: keras_reg.PolynomialDecay(0.0, 0.5, 10, 10), "'end_step' argument"),
        (lambda: keras_reg.PolynomialDecay(0.0, 0.5, -1, 10), "'begin_step' argument"),
        (lambda: keras_reg.PolynomialDecay(0.0, 0.5, 0, 10, frequency=0), "'frequency' arg"),
        (lambda: keras_reg.PolynomialDecay(0.0, 0.5, 0, 10, power=0), "'power' argument"),
        (lambda: keras_reg.PolynomialDecay(0.0, True, 0, 10), "'final_sparsity' argument"),
        (lambda: keras_reg.PolynomialDecay(0.0, 0.5, 0, 10.0), "'end_step' argument"),
        (lambda: keras_reg.ConstantSparsity(1.5, 0), "'target_sparsity' argument"),
        (lambda: keras_reg.ConstantSparsity(0.5, 10, end_step=3), "'end_step' argument"),
        (lambda: keras_reg.ConstantSparsity(0.5, 0, end_step=-2), "'end_step' argument"),
        (lambda: keras_reg.ConstantSparsity(0.5, 0, frequency=-3), "'frequency' argument"),
    ],
)
def test_bad_schedules_are_refused_naming_the_argument(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_schedule_message_says_expected_and_received():
    with pytest.raises(ValueError) as error:
        keras_reg.ConstantSparsity(1.5, 0)
    assert str(error.value) == (
        "The 'target_sparsity' argument of ConstantSparsity must be a float in [0, 1). "
        "Received: target_sparsity=1.5"
    )


SCHEDULES = [
    keras_reg.PolynomialDecay(0.05, 0.75, 3, 90, power=2, frequency=7),
    keras_reg.ConstantSparsity(0.4, 11, end_step=70, frequency=9),
]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_schedule_config_round_trips(schedule):
    config = schedule.get_config()
    params = [p for p in inspect.signature(type(schedule).__init__).parameters if p != "self"]
    assert list(config) == params
    assert json.loads(json.dumps(config)) == config
    assert type(schedule).from_config(config) == schedule
    blob = keras.saving.serialize_keras_object(schedule)
    assert blob["registered_name"] == f"keras_reg>{type(schedule).__name__}"
    assert keras.saving.deserialize_keras_object(json.loads(json.dumps(blob))) == schedule
    with pytest.raises(ValueError, match="Unknown key 'step'"):
        type(schedule).from_config(dict(config, step=3))


def test_constraint_config_round_trips():
    constraint = keras_reg.PruneLowMagnitude(SCHEDULES[0], axis=-1)
    blob = json.loads(json.dumps(keras.saving.serialize_keras_object(constraint)))
    clone = keras.saving.deserialize_keras_object(blob)
    assert clone.schedule == SCHEDULES[0] and clone.axis == -1
    params = list(inspect.signature(keras_reg.PruneLowMagnitude.__init__).parameters)[1:]
    assert list(constraint.get_config()) == params
    with pytest.raises(ValueError, match="'schedule' argument of PruneLowMagnitude"):
        keras_reg.PruneLowMagnitude(1.0)
    with pytest.raises(ValueError, match="'axis' argument of PruneLowMagnitude"):
        keras_reg.PruneLowMagnitude(0.5, axis=0.5)


# --- the projection -----------------------------------------------------------------


# Sizes on either side of the selection's switches (a `cond` on ties from 4,096 entries,
# bincount histograms from 65,536).
@pytest.mark.parametrize(
    "shape", [(7, 5, 3), (40, 30), (80, 64), (300, 256)], ids=["105", "1200", "5120", "76800"]
)
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.73, 0.9, 0.99])
def test_magnitude_prune_matches_numpy_top_k(sparsity, shape):
    # Rounded values: many ties, which must go to the lower flat index; some exact zeros,
    # and magnitudes over many binades (the radix passes see every exponent bit).
    w = np.round(RNG.normal(size=shape), 1) * 10.0 ** RNG.integers(-30, 30, size=shape)
    w = w.astype("float32")
    result = to_numpy(magnitude_prune(w, sparsity))
    np.testing.assert_array_equal(result, numpy_top_k(w, sparsity))
    assert (result == 0).sum() >= round(sparsity * w.size)


@pytest.mark.parametrize("size", [1000, 5000, 70000])
def test_compiled_magnitude_prune_matches_numpy_with_and_without_ties(size):
    # Compiled as the train step compiles it (tf.function, jax.jit), the branch that splits
    # ties at the threshold and the one that need not are both exact.
    compilers = {
        "tensorflow": [
            lambda f: __import__("tensorflow").function(f),
            lambda f: __import__("tensorflow").function(f, jit_compile=True),  # XLA: no bincount
        ],
        "jax": [lambda f: __import__("jax").jit(f)],
    }.get(keras.backend.backend(), [lambda f: f])
    distinct = RNG.permutation(size).astype("float32") + 1.0
    tied = np.repeat(distinct[: size // 4], 4).astype("float32")
    for compiled in compilers:
        prune = compiled(lambda w: magnitude_prune(w, 0.61))  # splits a run of 4 ties
        for w in (distinct, tied, -tied[::-1]):
            np.testing.assert_array_equal(to_numpy(prune(w)), numpy_top_k(w, 0.61))


@pytest.mark.parametrize("axis", [0, -1, 1])
@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.9])
def test_structured_prune_matches_numpy_group_norms(axis, sparsity):
    w = RNG.normal(size=(6, 4, 10)).astype("float32")
    result = to_numpy(magnitude_prune(w, sparsity, axis=axis))
    np.testing.assert_array_equal(result, numpy_group_top_k(w, sparsity, axis))
    zero_groups = (np.abs(groups_along(result, axis)).sum(axis=1) == 0).sum()
    assert zero_groups == round(sparsity * w.shape[axis])


def test_magnitude_prune_refuses_a_bad_axis():
    with pytest.raises(
        ValueError, match=r"'axis' argument of magnitude_prune must be in \[-2, 1\]"
    ):
        magnitude_prune(np.ones((3, 4), "float32"), 0.5, axis=2)


def test_constraint_outside_an_optimizer_is_an_error():
    with pytest.raises(RuntimeError, match="inside a Keras optimizer's apply"):
        keras_reg.PruneLowMagnitude(0.5)(keras.Variable(np.ones((3, 4), "float32")))


# --- custom loop: the selection inside optimizer.apply against NumPy ---------------


@pytest.mark.parametrize("axis", [None, -1])
def test_custom_loop_prunes_the_updated_weight_like_numpy(axis):
    """SGD with known gradients: after each apply, the weight is NumPy's top-k of w - lr*g."""
    schedule = keras_reg.PolynomialDecay(0.0, 0.8, begin_step=2, end_step=9, frequency=3)
    w0 = RNG.normal(size=(8, 10)).astype("float32")
    variable = keras.Variable(w0)
    variable.constraint = keras_reg.PruneLowMagnitude(schedule, axis=axis)
    optimizer = keras.optimizers.SGD(0.1)
    expected = w0.astype(np.float64)
    for step in range(1, 13):
        grad = RNG.normal(size=w0.shape).astype("float32")
        optimizer.apply([keras.ops.convert_to_tensor(grad)], [variable])
        expected = (expected.astype(np.float32) - np.float32(0.1) * grad).astype(np.float64)
        target = reference_target(step, lambda s: tfmot_polynomial(s, 0.0, 0.8, 2, 9, 3), 2, 9, 3)
        if axis is None:
            expected = numpy_top_k(expected, target)
        else:
            expected = numpy_group_top_k(expected, target, axis)
        np.testing.assert_allclose(to_numpy(variable.value), expected, atol=1e-6)
        np.testing.assert_array_equal(to_numpy(variable.value) == 0, expected == 0)
    assert int(to_numpy(optimizer.iterations)) == 12


def test_the_threshold_guess_changes_no_weight_of_a_fit(monkeypatch):
    """Steps that reuse the guess (TF, PyTorch) give the weights the full selection gives."""

    def fit(use_guess):
        keras.utils.set_random_seed(1)
        model = keras.Sequential(
            [keras.Input((12,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(2)]
        )
        schedule = keras_reg.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=30, frequency=10)
        keras_reg.prune_low_magnitude(model, schedule)
        if not use_guess:
            monkeypatch.setattr(keras_reg.PruneLowMagnitude, "_guess", lambda self, w: None)
        model.compile(keras.optimizers.Adam(0.01), "mse")
        model.fit(X, np.stack([Y, -Y], axis=1).astype("float32"), batch_size=8, epochs=4, verbose=0)
        monkeypatch.undo()
        constraint = model.layers[0].kernel.constraint
        return [to_numpy(v.value) for v in model.weights], constraint

    guessed, constraint = fit(True)
    selected, _ = fit(False)
    for a, b in zip(guessed, selected, strict=True):
        np.testing.assert_array_equal(a, b)
    guesses = [g for g in constraint._guesses.values() if g is not None]
    if keras.backend.backend() == "jax":
        assert not guesses  # JAX's compiled step cannot carry it: every step selects
    else:
        assert len(guesses) == 2 and all(int(to_numpy(g.value)) >= 0 for g in guesses)


@pytest.mark.tensorflow_only(reason="TensorFlow's XLA (jit_compile=True, Keras' default on a GPU)")
def test_a_train_step_compiled_by_xla_prunes_to_the_schedule():
    # A kernel of 76,800 weights: the size at which histograms use bincount, which XLA lacks.
    model = keras.Sequential([keras.Input((300,)), keras.layers.Dense(256), keras.layers.Dense(1)])
    schedule = keras_reg.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=6, frequency=2)
    keras_reg.prune_low_magnitude(model, schedule)
    model.compile(keras.optimizers.Adam(0.01), "mse", jit_compile=True)
    x = RNG.normal(size=(64, 300)).astype("float32")
    model.fit(x, x[:, :1], batch_size=16, epochs=2, verbose=0)  # 8 steps: past end_step
    for kernel in pruned_weights(model):
        value = to_numpy(kernel.value)
        assert (value == 0).sum() == round(0.5 * value.size)
        kept = np.abs(value[value != 0])
        assert kept.size == value.size - round(0.5 * value.size) and kept.min() > 0


# --- model.fit ------------------------------------------------------------------------

FIT_SCHEDULE = dict(initial_sparsity=0.0, final_sparsity=0.8, begin_step=2, end_step=14)


def build_model():
    inputs = keras.Input((12,))
    inner = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(8, activation="relu")], name="inner"
    )
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(2, name="out")(inner(hidden))
    return keras.Model(inputs, outputs)


class ZeroCounter(keras.callbacks.Callback):
    """Zero count of every pruned weight after each step, keyed by optimizer step."""

    def __init__(self):
        super().__init__()
        self.counts = {}

    def on_train_batch_end(self, batch, logs=None):
        step = int(to_numpy(self.model.optimizer.iterations))
        self.counts[step] = {
            v.path: int((to_numpy(v.value) == 0).sum()) for v in pruned_weights(self.model)
        }


@pytest.fixture(scope="module")
def fitted():
    keras.utils.set_random_seed(0)
    model = build_model()
    schedule = keras_reg.PolynomialDecay(**FIT_SCHEDULE, frequency=4)
    assert keras_reg.prune_low_magnitude(model, schedule) is model
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    counter, logger = ZeroCounter(), keras_reg.SparsityLogger()
    history = model.fit(X, Y, batch_size=16, epochs=3, verbose=0, callbacks=[counter, logger])
    return model, counter, history


def test_fit_zero_counts_follow_the_schedule_at_every_step(fitted):
    model, counter, _ = fitted
    sizes = {v.path: int(np.prod(v.shape)) for v in pruned_weights(model)}
    assert sorted(sizes) == ["hidden/kernel", "inner/dense/kernel", "out/kernel"]
    assert sorted(counter.counts) == list(range(1, 19))
    for step, counts in counter.counts.items():
        target = reference_target(step, lambda s: tfmot_polynomial(s, 0.0, 0.8, 2, 14, 3), 2, 14, 4)
        assert counts == {p: round(target * n) for p, n in sizes.items()}, step
    assert counter.counts[18] == {p: round(0.8 * n) for p, n in sizes.items()}


def test_sparsity_logger_shows_the_schedule(fitted):
    model, _, history = fitted
    sizes = [int(np.prod(v.shape)) for v in pruned_weights(model)]
    for epoch, step in enumerate([6, 12, 18]):
        target = reference_target(step, lambda s: tfmot_polynomial(s, 0.0, 0.8, 2, 14, 3), 2, 14, 4)
        expected = sum(round(target * n) for n in sizes) / sum(sizes)
        assert history.history["sparsity"][epoch] == pytest.approx(expected, abs=1e-12)


def test_biases_are_not_pruned(fitted):
    model, _, _ = fitted
    assert all(v.constraint is None for v in model.weights if v.path.endswith("bias"))


def test_strip_pruning_keeps_the_zeros_and_drops_the_machinery(fitted):
    model, _, _ = fitted
    plain = keras_reg.strip_pruning(model)
    assert plain is not model
    assert pruned_weights(plain) == [] and len(pruned_weights(model)) == 3
    for a, b in zip(model.weights, plain.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(a.value), to_numpy(b.value))
    np.testing.assert_allclose(
        to_numpy(plain.predict(X, verbose=0)), to_numpy(model.predict(X, verbose=0)), atol=1e-6
    )
    assert "PruneLowMagnitude" not in json.dumps(plain.get_config())


# --- prune_low_magnitude's choices and refusals -----------------------------------


def test_layers_filter_and_per_layer_form():
    model = build_model()
    keras_reg.prune_low_magnitude(model, 0.5, layers=["hidden"])
    assert [v.path for v in pruned_weights(model)] == ["hidden/kernel"]
    written = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(10, kernel_constraint=keras_reg.PruneLowMagnitude(0.7, axis=-1)),
            keras.layers.Dense(2),
        ]
    )
    written.compile("sgd", "sparse_categorical_crossentropy")
    written.fit(X, Y, batch_size=96, epochs=1, verbose=0)
    kernel = to_numpy(written.layers[0].kernel.value)
    assert (np.abs(kernel).sum(axis=0) == 0).sum() == 7


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda m: keras_reg.prune_low_magnitude("model", 0.5), "'model' argument"),
        (lambda m: keras_reg.prune_low_magnitude(m, 1.2), "'schedule' argument"),
        (lambda m: keras_reg.prune_low_magnitude(m, "0.5"), "'schedule' argument"),
        (lambda m: keras_reg.prune_low_magnitude(m, 0.5, layers=3), "'layers' argument"),
        (lambda m: keras_reg.prune_low_magnitude(m, 0.5, layers=["nope"]), "does not have"),
        (lambda m: keras_reg.prune_low_magnitude(m, 0.5, axis=2), r"weight 'hidden/kernel'"),
    ],
)
def test_prune_low_magnitude_refuses_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call(build_model())


def test_refuses_unbuilt_model_and_existing_constraint():
    with pytest.raises(ValueError, match="must be built"):
        keras_reg.prune_low_magnitude(keras.Sequential([keras.layers.Dense(2)]), 0.5)
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, kernel_constraint=keras.constraints.MaxNorm())]
    )
    with pytest.raises(ValueError, match="already has the constraint"):
        keras_reg.prune_low_magnitude(model, 0.5)


# --- with Proximal, mixed precision, and through a save mid-schedule ---------------


@pytest.mark.parametrize("l1,more", [(1e-6, False), (0.2, True)])
def test_with_proximal_l1_the_target_is_a_floor(l1, more):
    """Weak L1: exactly the target's zeros. Strong L1: its own extra zeros on top."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(16, activation="relu", kernel_regularizer=keras_reg.L1(l1)),
            keras.layers.Dense(2),
        ]
    )
    keras_reg.prune_low_magnitude(model, 0.5, layers=[model.layers[0]])
    model.compile(
        keras_reg.Proximal(keras.optimizers.Adam(0.02)), "sparse_categorical_crossentropy"
    )
    model.fit(X, Y, batch_size=16, epochs=3, verbose=0)
    zeros = int((to_numpy(model.layers[0].kernel.value) == 0).sum())
    assert zeros > 96 if more else zeros == 96


def test_mixed_precision_prunes_exactly():
    keras.config.set_dtype_policy("mixed_float16")
    model = keras.Sequential(
        [keras.Input((12,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)]
    )
    keras_reg.prune_low_magnitude(model, keras_reg.ConstantSparsity(0.75, 0, frequency=1))
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    model.fit(X, Y, batch_size=32, epochs=1, verbose=0)
    assert [int((to_numpy(v.value) == 0).sum()) for v in pruned_weights(model)] == [144, 24]


# One fresh process for both: a stripped model loads before keras_reg is imported; a
# model saved mid-schedule loads after it and goes on exactly as if never saved.
FRESH = """
import sys, keras, numpy as np
plain = keras.saving.load_model(sys.argv[1])
assert "keras_reg" not in sys.modules
plain_zeros = int(sum((np.asarray(w) == 0).sum() for w in plain.get_weights()))
import keras_reg
model = keras.saving.load_model(sys.argv[2])
x, y = np.load(sys.argv[3]), np.load(sys.argv[4])
model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
np.savez(sys.argv[5], *[np.asarray(w) for w in model.get_weights()], plain_zeros=plain_zeros,
         step=int(keras.ops.convert_to_numpy(model.optimizer.iterations)))
"""


def test_strip_and_save_mid_schedule_round_trip_in_a_fresh_process(fitted, tmp_path):
    def fresh():
        keras.utils.set_random_seed(1)
        model = build_model()
        keras_reg.prune_low_magnitude(model, keras_reg.PolynomialDecay(**FIT_SCHEDULE, frequency=4))
        model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        return model

    pruned, _, _ = fitted
    keras_reg.strip_pruning(pruned).save(tmp_path / "plain.keras")
    straight = fresh()
    straight.fit(X, Y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    halfway = fresh()
    halfway.fit(X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0)  # steps 1-6 of 14
    halfway.save(tmp_path / "half.keras")
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", Y)
    files = ["plain.keras", "half.keras", "x.npy", "y.npy", "out.npz"]
    run = subprocess.run(
        [sys.executable, "-c", FRESH, *[str(tmp_path / f) for f in files]],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, KERAS_BACKEND=BACKEND),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    sizes = [int(np.prod(v.shape)) for v in pruned_weights(pruned)]
    assert int(out["plain_zeros"]) >= sum(round(0.8 * n) for n in sizes)
    assert int(out["step"]) == 12
    weights = [to_numpy(w) for w in straight.get_weights()]
    for i, w in enumerate(weights):
        np.testing.assert_allclose(out[f"arr_{i}"], w, atol=1e-6)
        np.testing.assert_array_equal(out[f"arr_{i}"] == 0, w == 0)


@pytest.mark.tensorflow_only(reason="tf.distribute")
@pytest.mark.slow
def test_mirrored_strategy_prunes_once_per_step_on_the_all_reduced_weights():
    script = os.path.join(os.path.dirname(__file__), "scripts", "mirrored_pruning.py")
    run = subprocess.run(
        [sys.executable, script], capture_output=True, text=True, timeout=600,
        env=dict(os.environ, KERAS_BACKEND="tensorflow"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith("RESULT"))
    result = json.loads(line[len("RESULT") :])
    single, multi = result["single"], result["mirrored"]
    assert multi["replicas"] == 2 and multi["iterations"] == single["iterations"] == 12
    for a, b in zip(single["kernels"], multi["kernels"], strict=True):
        a, b = np.array(a), np.array(b)
        assert (a == 0).sum() == (b == 0).sum() == round(0.8 * a.size)
        np.testing.assert_array_equal(a == 0, b == 0)
        np.testing.assert_allclose(b, a, atol=1e-5)
