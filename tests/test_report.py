"""sparsity_report: every number against NumPy, the table and the JSON form."""

import json
import re

import keras
import numpy as np
import pytest

import keras_reg
from keras_reg import _sparsity


def planted_model():
    """Dense, Conv2D and Embedding weights with known zeros, zero inputs and zero units."""
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(5, 3, name="conv")(inputs)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(7, name="dense")(h)
    outputs = keras.layers.Embedding(9, 4, name="emb")(keras.ops.cast(h, "int32"))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    conv = model.get_layer("conv").kernel.numpy()  # (3, 3, 2, 5)
    conv[..., 2] = 0  # a whole filter: a zero unit
    conv[:, :, 1, :] = 0  # a whole input channel: a zero input
    conv[1] = 0  # a row of the 3x3 window: neither
    conv[0, 0, 0, 0] = 1e-3  # small, not zero
    dense = model.get_layer("dense").kernel.numpy()  # (80, 7)
    dense[rng.random(dense.shape) < 0.4] = 0
    dense[:, [0, 6]] = 0
    dense[[3, 10, 79]] = 0
    dense[5, 3] = -2e-3
    emb = model.get_layer("emb").embeddings.numpy()  # (9, 4)
    emb[4] = 0
    model.get_layer("conv").kernel.assign(conv)
    model.get_layer("dense").kernel.assign(dense)
    model.get_layer("emb").embeddings.assign(emb)
    return model


def numpy_row(array, threshold):
    """The reference: Distiller's columns computed with NumPy alone."""
    zero = np.abs(array) <= threshold
    row = {"shape": list(array.shape), "size": array.size, "zeros": int(zero.sum())}
    row["sparsity"] = row["zeros"] / array.size
    if array.ndim >= 2:
        inputs = np.moveaxis(zero, -2, 0).reshape(array.shape[-2], -1).all(axis=1)
        units = np.moveaxis(zero, -1, 0).reshape(array.shape[-1], -1).all(axis=1)
        row.update(inputs=array.shape[-2], zero_inputs=int(inputs.sum()))
        row.update(units=array.shape[-1], zero_units=int(units.sum()))
    else:
        row.update(inputs=None, zero_inputs=None, units=None, zero_units=None)
    return row


@pytest.mark.parametrize("threshold", [0.0, 1e-3, 0.01])
def test_report_numbers_against_numpy(threshold):
    model = planted_model()
    report = keras_reg.sparsity_report(model, threshold=threshold)
    arrays = {w.path: w.numpy() for w in model.trainable_weights if w.numpy().ndim >= 2}
    assert [row.path for row in report.rows] == list(arrays)
    for row in report.rows:
        expected = numpy_row(arrays[row.path], threshold)
        got = row.to_dict()
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=0, abs=1e-15), (row.path, key)
    zeros = sum(int((np.abs(a) <= threshold).sum()) for a in arrays.values())
    size = sum(a.size for a in arrays.values())
    assert (report.zeros, report.size) == (zeros, size)
    assert report.sparsity == zeros / size
    assert report.threshold == threshold


def test_planted_structure_is_found():
    report = keras_reg.sparsity_report(planted_model())
    conv, dense, emb = report.rows
    assert (conv.zero_inputs, conv.inputs, conv.zero_units, conv.units) == (1, 2, 1, 5)
    assert dense.zero_units >= 2 and dense.zero_inputs >= 3
    assert (emb.zero_inputs, emb.zero_units) == (1, 0)  # token 4's row of the table


def test_names_of_version_0_1_still_work_with_a_warning():
    dense = keras_reg.sparsity_report(planted_model()).rows[1]
    with pytest.warns(DeprecationWarning, match="zero_col_count is deprecated; use zero_units"):
        assert dense.zero_col_count == dense.zero_units
    with pytest.warns(DeprecationWarning, match="use zero_inputs"):
        assert dense.zero_row_count == dense.zero_inputs
    with pytest.warns(DeprecationWarning, match="zero_cols is deprecated"):
        assert dense.zero_cols == dense.zero_units / 7
    with pytest.warns(DeprecationWarning, match="zero_rows is deprecated"):
        assert dense.zero_rows == dense.zero_inputs / 80


def test_rank_one_weights_have_no_inputs_or_units():
    model = planted_model()
    model.get_layer("dense").bias.assign(np.array([0, 1, 0, 2, 0, 0, 3], "float32"))
    report = keras_reg.sparsity_report(model, track=lambda w: w.path == "dense/bias")
    (row,) = report.rows
    assert (row.shape, row.size, row.zeros) == ((7,), 7, 4)
    assert row.inputs is row.zero_inputs is row.units is row.zero_units is None


def test_nan_and_inf_are_not_zeros():
    model = planted_model()
    kernel = model.get_layer("dense").kernel
    values = kernel.numpy()
    values[:, 0] = np.nan  # was an all-zero column
    values[0, 6] = np.inf
    kernel.assign(values)
    report = keras_reg.sparsity_report(model, threshold=1e30, track=["dense/kernel"])
    (row,) = report.rows
    assert row.zeros == values.size - 80 - 1
    assert row.zero_units == 5  # the NaN unit and the one holding inf are not zero
    json.dumps(report.to_dict(), allow_nan=False)


def test_large_weights_count_per_column(monkeypatch):
    """Weights past int32 send per-unit counts home; exercised with a small limit."""
    model = planted_model()
    expected = keras_reg.sparsity_report(model).to_dict()
    monkeypatch.setattr(_sparsity, "_INT32_MAX", 10)
    monkeypatch.setattr(_sparsity, "_BLOCK", 7)  # many blocks, some of one row
    assert keras_reg.sparsity_report(model).to_dict() == expected


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_other_dtypes(dtype):
    if dtype == "float64" and keras.backend.backend() == "jax":
        pytest.skip("JAX has no float64 unless jax_enable_x64 is set")
    layer = keras.layers.Dense(4, dtype=dtype, name="d")
    layer.build((None, 3))
    values = np.array([[0, 1e-3, 2, 0], [0, -1e-3, 0, 0], [0, 5, 0, 1]], "float64")
    layer.kernel.assign(values)
    stored = np.asarray(layer.kernel.numpy(), dtype="float64")  # after rounding
    report = keras_reg.sparsity_report(layer, threshold=2e-3)
    assert report.rows[0].zeros == int((np.abs(stored) <= 2e-3).sum()) == 9
    assert report.rows[0].zero_units == 1


def test_table_is_aligned_with_a_total_row():
    report = keras_reg.sparsity_report(planted_model())
    lines = str(report).splitlines()
    assert lines[0] == "Zeros: |w| <= 0"
    header = ["weight", "shape", "size", "zeros", "sparsity", "zero", "inputs", "zero", "units"]
    assert lines[1].split() == header
    body = lines[3:-2]
    assert [line.split()[0] for line in body] == ["conv/kernel", "dense/kernel", "emb/embeddings"]
    assert lines[-1].split()[0] == "total"
    assert lines[-1].split()[-1] == f"{100 * report.sparsity:.2f}%"
    # Right-aligned numbers: every '%' of the sparsity column at the same place.
    percent = {line.index("%") for line in body + [lines[-1]]}
    assert len(percent) == 1
    assert re.search(r"\b1/2\s+1/5$", body[0])  # conv: 1 of 2 input channels, 1 of 5 filters
    assert "dense/kernel" in repr(report.rows[1])
    assert repr(report).startswith("SparsityReport(sparsity=")


def test_to_dict_is_json_and_matches_rows():
    report = keras_reg.sparsity_report(planted_model())
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert set(data) == {"threshold", "sparsity", "size", "zeros", "rows"}
    assert data["sparsity"] == report.sparsity
    assert [r["path"] for r in data["rows"]] == [row.path for row in report.rows]
    assert data["rows"][0]["shape"] == [3, 3, 2, 5]


def test_logger_and_report_agree():
    model = planted_model()
    logger = keras_reg.SparsityLogger(threshold=1e-3)
    logger.set_model(model)
    logs = {}
    logger.on_epoch_end(0, logs)  # without on_train_begin: starts itself
    report = keras_reg.sparsity_report(model, threshold=1e-3)
    assert logger.report.to_dict() == report.to_dict()
    assert logs["sparsity"] == report.sparsity


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"threshold": -0.5}, "The 'threshold' argument of sparsity_report must be a non-negative"),
        ({"threshold": float("inf")}, "Received: threshold=inf"),
        ({"track": "biases"}, "The 'track' argument of sparsity_report"),
        ({"track": 3}, "Received: track=3"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_reg.sparsity_report(planted_model(), **kwargs)


def test_bad_model_names_the_argument():
    with pytest.raises(ValueError, match="The 'model' argument of sparsity_report must be a Keras"):
        keras_reg.sparsity_report(np.zeros((3, 3)))
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"is the model built\?"):
        keras_reg.sparsity_report(unbuilt)
