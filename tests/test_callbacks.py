"""SparsityLogger: the logged numbers against independent NumPy counts."""

import importlib.util
import math
import textwrap

import keras
import numpy as np
import pytest

import keras_reg
from helpers import result_of, run_python

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 6)).astype("float32")
Y = RNG.normal(size=(32, 3)).astype("float32")

# Zeros planted in the hidden kernel (6, 8): two whole columns (units), one whole
# row (an input feature) and a few single weights. A constraint keeps them zero
# through training, so every epoch has a known count.
MASK = np.ones((6, 8), "float32")
MASK[:, [1, 5]] = 0
MASK[3] = 0
MASK[0, 0] = MASK[5, 7] = MASK[2, 2] = 0


class KeepZeros(keras.constraints.Constraint):
    def __init__(self, mask):
        self.mask = mask

    def __call__(self, w):
        return w * keras.ops.convert_to_tensor(self.mask, w.dtype)


def make_model(constraint=True):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(
        8,
        activation="tanh",
        kernel_constraint=KeepZeros(MASK) if constraint else None,
        kernel_regularizer=keras_reg.L1(0.01),
        name="hidden",
    )(inputs)
    hidden = keras.layers.BatchNormalization(name="norm")(hidden)
    outputs = keras.layers.Dense(3, name="out")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.get_layer("hidden").kernel.assign(model.get_layer("hidden").kernel * MASK)
    return model


def numpy_kernels(model):
    """Independent selection: trainable weights of rank >= 2, read as NumPy arrays."""
    return {w.path: np.asarray(w.numpy()) for w in model.trainable_weights if w.numpy().ndim >= 2}


def numpy_sparsity(arrays, threshold=0.0):
    zeros = sum(int(np.count_nonzero(np.abs(a) <= threshold)) for a in arrays)
    return zeros / sum(a.size for a in arrays)


class Recorder(keras.callbacks.Callback):
    """Placed after the logger: sees its keys and counts the weights itself."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        arrays = numpy_kernels(self.model)
        self.seen.append((dict(logs), arrays))


def test_logged_value_equals_numpy_count():
    model = make_model()
    logger, recorder = keras_reg.SparsityLogger(), Recorder()
    history = model.fit(X, Y, epochs=2, verbose=0, callbacks=[logger, recorder])

    assert len(history.history["sparsity"]) == 2
    for epoch, (logs, arrays) in enumerate(recorder.seen):
        assert logs["sparsity"] == numpy_sparsity(arrays.values())
        assert history.history["sparsity"][epoch] == logs["sparsity"]
        assert not [key for key in logs if key.startswith("sparsity/")]
    hidden = recorder.seen[-1][1]["hidden/kernel"]
    assert np.count_nonzero(hidden == 0) == np.count_nonzero(MASK == 0)  # the mask held
    # The per-epoch record: every tracked weight's sparsity and zero columns.
    assert set(logger.history) == {"hidden/kernel", "out/kernel"}
    for path in logger.history:
        expected = [np.mean(arrays[path] == 0) for _, arrays in recorder.seen]
        np.testing.assert_allclose(logger.history[path], expected, rtol=0, atol=1e-15)
    assert logger.zero_units["hidden/kernel"] == [2, 2]  # "2 of 8 units removed"
    assert logger.zero_units["out/kernel"] == [0, 0]
    assert logger.report.rows[0].zero_inputs == 1


def test_per_weight_keys_and_progress_bar_default():
    model = make_model()
    recorder = Recorder()
    model.fit(
        X,
        Y,
        epochs=1,
        verbose=0,
        callbacks=[keras_reg.SparsityLogger(per_weight=True), recorder],
    )
    logs, arrays = recorder.seen[0]
    keys = sorted(key for key in logs if key.startswith("sparsity"))
    assert keys == ["sparsity", "sparsity/hidden/kernel", "sparsity/out/kernel"]
    for path, array in arrays.items():
        assert logs[f"sparsity/{path}"] == np.mean(array == 0)


def test_csv_logger_after_it_records_the_column(tmp_path):
    model = make_model()
    csv_path = tmp_path / "log.csv"
    recorder = Recorder()
    model.fit(
        X,
        Y,
        epochs=2,
        verbose=0,
        callbacks=[
            keras_reg.SparsityLogger(),
            keras.callbacks.CSVLogger(str(csv_path)),
            recorder,
        ],
    )
    rows = np.genfromtxt(csv_path, delimiter=",", names=True)
    assert "sparsity" in rows.dtype.names
    expected = [numpy_sparsity(arrays.values()) for _, arrays in recorder.seen]
    np.testing.assert_allclose(rows["sparsity"], expected, rtol=1e-12)


def run_epoch_end(model, **kwargs):
    logger = keras_reg.SparsityLogger(**kwargs)
    logger.set_model(model)
    logger.on_train_begin()
    logs = {}
    logger.on_epoch_end(0, logs)
    return logger, logs


@pytest.mark.parametrize("threshold", [0.0, 0.05, 1])
def test_threshold(threshold):
    model = make_model(constraint=False)
    kernel = model.get_layer("hidden").kernel
    values = kernel.numpy()
    values[4, :4] = [0.05, -0.05, 0.049, 0.051]
    kernel.assign(values)
    _, logs = run_epoch_end(model, threshold=threshold, per_weight=True)
    arrays = numpy_kernels(model)
    assert logs["sparsity"] == numpy_sparsity(arrays.values(), threshold)
    hidden = arrays["hidden/kernel"]
    assert logs["sparsity/hidden/kernel"] == np.mean(np.abs(hidden) <= threshold)


def test_nan_and_inf_are_not_zeros_and_do_not_crash():
    model = make_model(constraint=False)
    kernel = model.get_layer("hidden").kernel
    values = kernel.numpy() * MASK
    values[0, 1:4] = [np.nan, np.inf, -np.inf]  # were zeros in MASK's column 1
    values[1, 1] = np.nan
    kernel.assign(values)
    logger, logs = run_epoch_end(model, threshold=0.5, per_weight=True)
    hidden = np.where(np.isfinite(values), values, 1.0)  # NaN/inf count as non-zero
    assert logs["sparsity/hidden/kernel"] == np.mean(np.abs(hidden) <= 0.5)
    assert math.isfinite(logs["sparsity"])
    # A column holding NaN is not an all-zero unit.
    assert logger.zero_units["hidden/kernel"] == [int(np.all(np.abs(hidden) <= 0.5, 0).sum())]

    # And through fit, where the loss itself turns NaN.
    recorder = Recorder()
    model.fit(X, Y, epochs=1, verbose=0, callbacks=[keras_reg.SparsityLogger(), recorder])
    logs, arrays = recorder.seen[0]
    assert logs["sparsity"] == numpy_sparsity(arrays.values())


def test_zero_filters_of_a_conv_kernel():
    inputs = keras.Input((5, 5, 3))
    outputs = keras.layers.Conv2D(16, 3, name="conv")(inputs)
    model = keras.Model(inputs, outputs)
    kernel = model.get_layer("conv").kernel  # (3, 3, 3, 16): filters on the last axis
    values = kernel.numpy()
    values[..., [0, 3, 4, 9, 15]] = 0
    values[1, 1, 1, 2] = 0  # a single zero does not remove filter 2
    kernel.assign(values)
    logger, logs = run_epoch_end(model)
    assert logger.zero_units == {"conv/kernel": [5]}
    assert logs["sparsity"] == np.mean(values == 0)
    with pytest.warns(DeprecationWarning, match="zero_groups is deprecated; use zero_units"):
        assert logger.zero_groups is logger.zero_units  # the name of version 0.1


def test_tracking_options():
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, kernel_regularizer=keras_reg.L1(0.1), name="reg")(inputs)
    h = keras.layers.Dense(8, bias_regularizer=keras_reg.L2(0.1), name="bias_reg")(h)
    h = keras.layers.LayerNormalization(name="ln")(h)
    frozen = keras.layers.Dense(8, name="frozen")
    h = frozen(h)
    frozen.trainable = False
    outputs = keras.layers.Embedding(8, 2, name="emb")(keras.ops.cast(h, "int32"))
    model = keras.Model(inputs, outputs)

    def tracked(track):
        logger, logs = run_epoch_end(model, track=track, per_weight=True)
        return sorted(key[len("sparsity/") :] for key in logs if key.startswith("sparsity/"))

    assert tracked("kernels") == ["bias_reg/kernel", "emb/embeddings", "reg/kernel"]
    assert tracked("regularized") == ["bias_reg/bias", "reg/kernel"]
    assert tracked(lambda w: w.path.startswith("ln/")) == ["ln/beta", "ln/gamma"]
    assert tracked(["frozen/kernel", "reg/bias"]) == ["frozen/kernel", "reg/bias"]

    with pytest.raises(ValueError, match=r"names weights the model does not have: \['nope'\]"):
        run_epoch_end(model, track=["reg/kernel", "nope"])
    with pytest.raises(ValueError, match="selects none of the model's"):
        run_epoch_end(model, track=lambda w: False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"threshold": -1}, "The 'threshold' argument of SparsityLogger must be a non-negative"),
        ({"threshold": True}, "Received: threshold=True"),
        ({"threshold": "0"}, "Received: threshold='0'"),
        ({"threshold": float("nan")}, "Received: threshold=nan"),
        ({"per_weight": 1}, "The 'per_weight' argument of SparsityLogger must be a bool"),
        ({"track": "all"}, "The 'track' argument of SparsityLogger must be 'kernels'"),
        ({"track": []}, "Received: track=\\[\\]"),
        ({"track": ["a", 1]}, "The 'track' argument"),
        ({"log_dir": 3}, "The 'log_dir' argument of SparsityLogger must be None or a path"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_reg.SparsityLogger(**kwargs)


@pytest.mark.tensorflow_only(reason="reads the TensorBoard event file with tf.data")
def test_log_dir_writes_tensorboard_scalars(tmp_path):
    import tensorflow as tf

    model = make_model()
    logger = keras_reg.SparsityLogger(log_dir=tmp_path / "tb")
    recorder = Recorder()
    model.fit(X, Y, epochs=2, verbose=0, callbacks=[logger, recorder])
    files = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(files) == 1
    scalars = {}
    for record in tf.data.TFRecordDataset(str(files[0])):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
            assert value.metadata.plugin_data.plugin_name == "scalars"
            scalars[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    for epoch, (logs, arrays) in enumerate(recorder.seen):
        assert scalars[("sparsity", epoch)] == pytest.approx(logs["sparsity"], rel=1e-6)
        hidden = arrays["hidden/kernel"]
        assert scalars[("sparsity/hidden/kernel", epoch)] == pytest.approx(np.mean(hidden == 0))
        assert scalars[("zero_units/hidden/kernel", epoch)] == 2
    assert len(scalars) == 2 * 5  # total, two weights' sparsity, two weights' zero groups


# One script for the subprocess tests: tf.distribute and other backends.
SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    if sys.argv[1] == "mirrored":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        two = [tf.config.LogicalDeviceConfiguration()] * 2
        tf.config.set_logical_device_configuration(cpu, two)
    import numpy as np, keras, keras_reg
    keras.utils.set_random_seed(0)
    mask = np.ones((6, 8), "float32"); mask[:, [1, 5]] = 0; mask[3] = 0

    class KeepZeros(keras.constraints.Constraint):
        def __call__(self, w):
            return w * keras.ops.convert_to_tensor(mask, w.dtype)

    def build():
        inputs = keras.Input((6,))
        h = keras.layers.Dense(8, kernel_constraint=KeepZeros(), name="hidden")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(3, name="out")(h))
        model.compile(keras.optimizers.SGD(0.05), "mse")
        return model

    if sys.argv[1] == "mirrored":
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        with strategy.scope():
            model = build()
    else:
        model = build()
    seen = []

    def record(epoch, logs):
        arrays = [np.asarray(w.numpy()) for w in model.trainable_weights if len(w.shape) >= 2]
        zeros = sum(int(np.sum(a == 0)) for a in arrays)
        seen.append([logs["sparsity"], zeros / sum(a.size for a in arrays)])

    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    logger = keras_reg.SparsityLogger()
    model.fit(x, x[:, :3], epochs=2, batch_size=8, verbose=0,
              callbacks=[logger, keras.callbacks.LambdaCallback(on_epoch_end=record)])
    report = keras_reg.sparsity_report(model)
    print("RESULT" + json.dumps({"seen": seen, "zero_units": logger.zero_units,
                                 "report": report.to_dict(), "backend": keras.backend.backend()}))
    """
)


def run_script(mode, backend):
    return result_of(run_python(mode, code=SCRIPT, backend=backend))


def check_result(result, backend):
    assert result["backend"] == backend
    assert len(result["seen"]) == 2
    for logged, counted in result["seen"]:
        assert logged == counted
    assert result["zero_units"] == {"hidden/kernel": [2, 2], "out/kernel": [0, 0]}
    # Read once, not once per replica: the zeros are those of one copy.
    hidden = result["report"]["rows"][0]
    assert hidden["path"] == "hidden/kernel"
    assert hidden["zeros"] == 6 * 2 + 8 - 2  # two columns and a row of zeros


@pytest.mark.slow
@pytest.mark.tensorflow_only(reason="tf.distribute")
def test_tf_distribute_mirrored_strategy(tmp_path):
    check_result(run_script("mirrored", "tensorflow"), "tensorflow")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends(tmp_path, backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    check_result(run_script("plain", backend), backend)
