"""Keras' own compression on a pruned model: quantization, LoRA, export.

Zero counts are checked against NumPy counts of the stored values: Keras'
`layer.kernel` / `layer.embeddings` give the int8 values as stored and the
int4 values unpacked; a stored value is a zero when it dequantizes to exactly
0, which the tests also check by dequantizing in NumPy.
"""

import json

import keras
import numpy as np
import pytest

import keras_reg
from keras_reg import cli

pytestmark = [
    # model.quantize() warns for every layer without a quantize method (InputLayer, Flatten).
    pytest.mark.filterwarnings("ignore:Layer .* does not have a `quantize` method"),
    # ... and for a layer that has none for the mode (Embedding under float8): left float.
    pytest.mark.filterwarnings("ignore:Invalid quantization mode"),
]

MODES = ("int8", "int4", "float8")


def numpy_counts(zero):
    """`(zeros, zero_inputs, zero_units)` of a boolean zero mask (inputs: axis -2)."""
    return int(zero.sum()), int(zero.all(axis=-1).sum()), int(zero.all(axis=-2).sum())


def build_model():
    """Embedding (odd width), EinsumDense, Dense (odd units), with zeros placed in NumPy."""
    inputs = keras.Input((4,), dtype="int32")
    x = keras.layers.Embedding(12, 7, name="emb")(inputs)
    x = keras.layers.EinsumDense("abc,cd->abd", (4, 5), bias_axes="d", name="ein")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, name="dense")(x)
    model = keras.Model(inputs, outputs, name="m")
    rng = np.random.default_rng(0)
    for name in ("emb", "ein", "dense"):
        variable = model.get_layer(name).weights[0]
        value = keras.ops.convert_to_numpy(variable)
        value[rng.random(value.shape) < 0.5] = 0.0
        value[0] = 0.0  # a zero input (row)
        variable.assign(value)
    return model


def stored(layer):
    """`(integer or float kernel, zero mask, dequantized kernel)` from what `layer` stores."""
    name = "embeddings" if isinstance(layer, keras.layers.Embedding) else "kernel"
    mode = layer.quantization_mode
    q = keras.ops.convert_to_numpy(getattr(layer, name))  # int4: unpacked by Keras
    if mode not in ("int8", "int4"):
        return q, q == 0, q
    scale = keras.ops.convert_to_numpy(getattr(layer, f"{name}_scale"))
    zero = getattr(layer, f"{name}_zero", None)
    if zero is not None:  # sub-channel int4: (q - zero[group]) * scale[group]
        groups = keras.ops.convert_to_numpy(layer.g_idx).astype(int)
        axis = 1 if name == "embeddings" else 0
        zero = np.take(keras.ops.convert_to_numpy(zero).astype(np.int16), groups, axis=axis)
        scale = np.take(scale, groups, axis=axis)
        return q, q.astype(np.int16) == zero, (q - zero) * scale
    # AbsMax (no zero point): q / scale, one scale per unit (per row for an Embedding).
    scale = scale.reshape(-1, 1) if name == "embeddings" else scale.reshape(-1)
    return q, q == 0, q / scale


@pytest.mark.parametrize("mode", MODES)
def test_quantized_kernels_are_counted_by_their_stored_values(mode):
    model = build_model()
    float_zero = {
        n: keras.ops.convert_to_numpy(model.get_layer(n).weights[0]) == 0
        for n in ("emb", "ein", "dense")
    }
    model.quantize(mode)
    report = keras_reg.sparsity_report(model)
    rows = {row.path: row for row in report.rows}
    assert list(rows) == ["emb/embeddings", "ein/kernel", "dense/kernel"]
    for name, path in (("emb", "emb/embeddings"), ("ein", "ein/kernel"), ("dense", "dense/kernel")):
        layer = model.get_layer(name)
        q, zero, dequantized = stored(layer)
        if layer.quantization_mode in ("int8", "int4"):
            assert q.dtype == np.int8
            # A stored zero is exactly what dequantizes to 0.
            np.testing.assert_array_equal(zero, dequantized == 0)
        row = rows[path]
        assert row.shape == q.shape
        assert (row.zeros, row.zero_inputs, row.zero_units) == numpy_counts(zero), name
        # Every pruned zero survives quantization, in every mode.
        assert np.all(zero[float_zero[name]]), name


def test_report_command_on_quantized_files(tmp_path, capsys):
    for mode in MODES:
        model = build_model()
        model.quantize(mode)
        expected = keras_reg.sparsity_report(model).to_dict()
        path = tmp_path / f"{mode}.keras"
        model.save(path)
        assert cli.main(["report", str(path), "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["skipped"] == [], mode
        assert got["rows"] == expected["rows"], mode
        # Reloaded, the model reports the same.
        reloaded = keras.saving.load_model(path)
        assert keras_reg.sparsity_report(reloaded).to_dict()["rows"] == expected["rows"]


def test_int4_per_channel_and_threshold(tmp_path, capsys):
    """Per-channel int4 (no zero point); a threshold does not apply to integer kernels."""
    config_class = getattr(keras.quantizers, "Int4QuantizationConfig", None)
    if config_class is None:
        pytest.skip("this Keras has no Int4QuantizationConfig")
    model = build_model()
    model.quantize(config=config_class(block_size=-1))
    assert getattr(model.get_layer("dense"), "kernel_zero", None) is None
    report = keras_reg.sparsity_report(model, threshold=0.5)
    for row in report.rows:
        layer = model.get_layer(row.path.split("/")[0])
        _, zero, _ = stored(layer)
        assert (row.zeros, row.zero_inputs, row.zero_units) == numpy_counts(zero)
    path = tmp_path / "int4.keras"
    model.save(path)
    assert cli.main(["report", str(path), "--json", "--threshold", "0.5"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["rows"] == report.to_dict()["rows"]


def test_all_flag_counts_scales_by_name(tmp_path, capsys):
    model = build_model()
    model.quantize("int4")
    path = tmp_path / "int4.keras"
    model.save(path)
    assert cli.main(["report", str(path), "--json", "--all"]) == 0
    got = {row["path"]: row for row in json.loads(capsys.readouterr().out)["rows"]}
    by_path = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    for path_, value in by_path.items():
        if path_.endswith(("_scale", "_zero", "g_idx")):
            assert got[path_]["zeros"] == int((value == 0).sum()), path_


def pruned_dense_model(informative):
    """Dense(8) -> Dense(1) pruned to 0.5 and trained one epoch on `informative` useful inputs."""
    x = np.random.default_rng(0).normal(size=(64, 16)).astype("float32")
    y = x[:, :informative].sum(axis=1, keepdims=True)
    model = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(8, name="a"), keras.layers.Dense(1, name="b")],
        name="s",
    )
    keras_reg.prune_low_magnitude(model, 0.5)
    model.compile("adam", "mse")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    return x, y, model


def test_prune_strip_quantize_then_report(tmp_path):
    """The issue's scenario: pruned, stripped, quantized to int8, then reported."""
    x, y, model = pruned_dense_model(informative=2)
    model = keras_reg.strip_pruning(model)
    pruned = {v.path: keras.ops.convert_to_numpy(v) == 0 for v in model.weights if v.ndim == 2}
    model.quantize("int8")
    report = keras_reg.sparsity_report(model)
    for row in report.rows:
        q = keras.ops.convert_to_numpy(model.get_layer(row.path.split("/")[1]).kernel)
        assert row.zeros == int((q == 0).sum())
        assert np.all(q[pruned[row.path]] == 0)
    assert report.zeros >= sum(int(m.sum()) for m in pruned.values())

    logger = keras_reg.SparsityLogger()
    model.compile("adam", "mse")  # the kernels left the trainable weights: a new optimizer
    history = model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[logger])
    # The int8 kernels are frozen: the logged sparsity is that of their stored zeros.
    assert history.history["sparsity"] == [report.sparsity]
    assert list(logger.history) == [row.path for row in report.rows]


@pytest.mark.parametrize("mode", ["int4", "float8"])
def test_sparsity_logger_on_a_quantized_model(mode):
    x = np.random.default_rng(1).integers(0, 12, size=(32, 4)).astype("int32")
    y = np.random.default_rng(2).normal(size=(32, 3)).astype("float32")
    model = build_model()
    model.quantize(mode)
    model.compile("sgd", "mse")
    logger = keras_reg.SparsityLogger()
    history = model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[logger])
    zeros = size = 0
    for name in ("emb", "ein", "dense"):
        _, zero, _ = stored(model.get_layer(name))
        zeros, size = zeros + int(zero.sum()), size + zero.size
    assert history.history["sparsity"] == [zeros / size]


def test_lora_on_a_pruned_model(tmp_path):
    """strip_pruning, then enable_lora: the zeros stay in the frozen kernel; the merge is dense."""
    x, y, model = pruned_dense_model(informative=3)
    # The trap: Keras refuses LoRA on a layer with a constraint (the pruning constraint).
    with pytest.raises(ValueError, match="Lora is incompatible with kernel constraints"):
        model.get_layer("a").enable_lora(4)

    model = keras_reg.strip_pruning(model)
    layer = model.get_layer("a")
    before = keras.ops.convert_to_numpy(layer.kernel).copy()
    layer.enable_lora(4)
    model.compile("adam", "mse")
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    frozen = keras.ops.convert_to_numpy(layer._kernel)
    np.testing.assert_array_equal(frozen, before)  # frozen: zeros and values unchanged
    rows = {row.path: row for row in keras_reg.sparsity_report(model).rows}
    # The frozen kernel is still a kernel: the report keeps counting its zeros.
    assert rows["s/a/kernel"].zeros == int((before == 0).sum()) == 64
    assert "s/a/lora_kernel_a" in rows and "s/a/lora_kernel_b" in rows
    # The merged kernel (what the layer computes with, and what .keras stores) is dense.
    merged = keras.ops.convert_to_numpy(layer.kernel)
    assert int((merged == 0).sum()) < int((before == 0).sum())
    path = tmp_path / "lora.keras"
    model.save(path)
    counted = {name: c for name, _, c in keras_reg._archive.count_weights(path)[0]}
    assert counted["s/a/kernel"].zeros == int((merged == 0).sum())


def _outputs_of_export(model, x, tmp_path):
    import tensorflow as tf

    path = str(tmp_path / "exported")
    model.export(path, verbose=False)
    loaded = tf.saved_model.load(path)  # held: its variables live as long as it does
    return np.asarray(loaded.serve(tf.constant(x)))


@pytest.fixture(scope="module")
def pruned_cnn():
    """A small conv net with whole zero filters and units, stripped of its pruning."""
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype("float32")
    y = np.random.default_rng(1).integers(0, 4, size=32)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="c"),
            keras.layers.Flatten(),
            keras.layers.Dense(12, activation="relu", name="d"),
            keras.layers.Dense(4, name="out"),
        ],
        name="cnn",
    )
    keras_reg.prune_low_magnitude(model, 0.5, axis=-1, layers=["c", "d"])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    return keras_reg.strip_pruning(model), x


@pytest.mark.tensorflow_only(reason="model.export() writes a TensorFlow SavedModel")
def test_export_of_stripped_and_shrunk_models(pruned_cnn, tmp_path):
    model, x = pruned_cnn
    expected = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(_outputs_of_export(model, x, tmp_path / "s"), expected, atol=1e-5)
    small = keras_reg.shrink(model)
    assert small.count_params() < model.count_params()
    np.testing.assert_allclose(_outputs_of_export(small, x, tmp_path / "k"), expected, atol=1e-5)


@pytest.mark.tensorflow_only(reason="LiteRT export and its interpreter come with TensorFlow")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
def test_litert_export_of_a_shrunk_model(pruned_cnn, tmp_path):
    import tensorflow as tf

    model, x = pruned_cnn
    small = keras_reg.shrink(model)
    path = str(tmp_path / "small.tflite")
    small.export(path, format="litert", verbose=False)
    interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    expected = keras.ops.convert_to_numpy(model(x))
    for i in range(4):
        interpreter.set_tensor(source["index"], x[i : i + 1])
        interpreter.invoke()
        np.testing.assert_allclose(
            interpreter.get_tensor(target["index"]), expected[i : i + 1], atol=1e-5
        )
