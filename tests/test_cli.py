"""keras-reg report: good files, unimportable custom objects, bad files and bad arguments."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

import keras_reg
from helpers import run_python
from keras_reg import cli

# TensorFlow prints its own log lines on stderr when it is imported, before any
# code of ours runs; these two variables silence them, so stderr is ours alone.
QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}

CUSTOM_MODULE = textwrap.dedent(
    """
    import keras

    @keras.saving.register_keras_serializable(package="custom_parts")
    class Halve(keras.constraints.Constraint):
        def __call__(self, w):
            return w * 0.5

    @keras.saving.register_keras_serializable(package="custom_parts")
    class Block(keras.layers.Layer):
        def __init__(self, units=4, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.inner = keras.layers.Dense(units, kernel_constraint=Halve(), name="inner_dense")

        def build(self, input_shape):
            self.scale = self.add_weight(shape=(input_shape[-1], self.units), name="scale")
            self.inner.build(input_shape)

        def call(self, x):
            return self.inner(x) + keras.ops.matmul(x, self.scale)

        def get_config(self):
            return {**super().get_config(), "units": self.units}
    """
)


def plant_zeros(model, seed=0):
    """Zero about a third of every weight, one whole column of each kernel and one row."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        values = np.asarray(w.numpy())
        values[rng.random(values.shape) < 0.35] = 0
        if values.ndim >= 2:
            values[..., 0] = 0
            values[-1] = 0
        w.assign(values)


def save_plain_model(tmp_path):
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    h = keras.layers.Flatten(name="flat")(h)
    h = keras.layers.Dense(5, name="dense", kernel_regularizer=keras_reg.L1(0.01))(h)
    h = keras.layers.Embedding(10, 3, name="emb")(keras.ops.cast(h, "int32"))
    model = keras.Model(inputs, h)
    plant_zeros(model)
    path = tmp_path / "plain.keras"
    model.save(path)
    return path, model


def run_main(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_table_on_a_good_file(tmp_path, capsys):
    path, model = save_plain_model(tmp_path)
    before = path.read_bytes()
    code, out, err = run_main(["report", str(path)], capsys)
    assert (code, err) == (0, "")
    # The names the archive gives equal weight.path for a functional model.
    assert out == f"{path}: 3 weights\n{keras_reg.sparsity_report(model)}\n"
    assert path.read_bytes() == before


@pytest.mark.parametrize("extra", [[], ["--threshold", "0.02"], ["--all"]])
def test_json_on_a_good_file(tmp_path, capsys, extra):
    path, model = save_plain_model(tmp_path)
    code, out, err = run_main(["report", str(path), "--json", *extra], capsys)
    assert (code, err) == (0, "")
    data = json.loads(out)
    threshold = float(extra[1]) if "--threshold" in extra else 0.0
    track = (lambda w: True) if "--all" in extra else "kernels"
    expected = keras_reg.sparsity_report(model, threshold=threshold, track=track)
    assert data == {"file": str(path), **expected.to_dict(), "skipped": []}
    # And against NumPy directly, weight by weight.
    arrays = [np.asarray(w.numpy()) for w in model.weights if "--all" in extra or w.ndim >= 2]
    assert [r["zeros"] for r in data["rows"]] == [
        int((np.abs(a) <= threshold).sum()) for a in arrays
    ]
    if "--all" in extra:
        assert [r["path"] for r in data["rows"]] == [
            "conv/kernel",
            "conv/bias",
            "dense/kernel",
            "dense/bias",
            "emb/embeddings",
        ]


def test_names_of_keras_layers_equal_weight_paths(tmp_path, capsys):
    inputs = keras.Input((8, 3))
    h = keras.layers.Conv1D(4, 3, use_bias=False, name="conv")(inputs)
    h = keras.layers.Conv1DTranspose(2, 3, name="deconv")(h)
    h = keras.layers.BatchNormalization(center=False, name="bn")(h)
    h = keras.layers.LayerNormalization(name="ln")(h)
    h = keras.layers.LayerNormalization(scale=False, center=False, name="bare")(h)
    inner = keras.Sequential([keras.layers.Dense(3, name="in_dense")], name="inner")
    model = keras.Model(inputs, inner(h))
    path = tmp_path / "layers.keras"
    model.save(path)
    code, out, _ = run_main(["report", str(path), "--json", "--all"], capsys)
    assert code == 0
    assert [row["path"] for row in json.loads(out)["rows"]] == [w.path for w in model.weights]
    assert "bn/moving_variance" in out and "inner/in_dense/bias" in out

    sequential = keras.Sequential([keras.layers.Dense(2), keras.layers.Embedding(4, 2)])
    sequential(np.zeros((1, 3)))  # built on first call: paths start with its name too
    sequential.save(tmp_path / "seq.keras")
    code, out, _ = run_main(["report", str(tmp_path / "seq.keras"), "--json", "--all"], capsys)
    assert [row["path"] for row in json.loads(out)["rows"]] == [w.path for w in sequential.weights]


def test_unimportable_custom_objects_are_read_not_run(tmp_path):
    """Saved with a custom layer and constraint; reported where they cannot be imported."""
    source = tmp_path / "mods" / "custom_parts.py"
    source.parent.mkdir()
    source.write_text(CUSTOM_MODULE)
    spec = importlib.util.spec_from_file_location("custom_parts", source)
    custom = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(custom)  # not in sys.modules, not on sys.path

    inputs = keras.Input((6,))
    h = keras.layers.Dense(5, name="first")(inputs)
    h = custom.Block(4, name="block")(h)
    outputs = keras.layers.Dense(2, kernel_constraint=custom.Halve(), name="last")(h)
    model = keras.Model(inputs, outputs)
    plant_zeros(model, seed=1)
    path = tmp_path / "custom.keras"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        assert "custom_parts>Block" in archive.read("config.json").decode()
    before = path.read_bytes()

    code = textwrap.dedent(
        """
        import importlib.util, sys
        assert importlib.util.find_spec("custom_parts") is None
        from keras_reg.cli import main
        status = main(["report", sys.argv[1], "--json"])
        assert "custom_parts" not in sys.modules
        import keras
        try:
            keras.saving.load_model(sys.argv[1])
        except Exception as exc:
            print("load_model failed:", type(exc).__name__, file=sys.stderr)
        sys.exit(status)
        """
    )
    run = run_python(path, code=code, cwd=tmp_path, env=QUIET_TF)
    assert "load_model failed" in run.stderr  # Keras itself cannot rebuild this model
    data = json.loads(run.stdout)
    assert [r["path"] for r in data["rows"]] == [
        "first/kernel",
        "block/vars/0",  # a custom layer's weight: named by its stored position
        "block/inner_dense/vars/0",  # a sub-layer that config.json does not describe
        "last/kernel",
    ]
    arrays = [np.asarray(w.numpy()) for w in model.weights if w.ndim >= 2]
    for row, array in zip(data["rows"], arrays, strict=True):
        assert row["shape"] == list(array.shape)
        assert row["zeros"] == int((array == 0).sum())
        cols = np.moveaxis(array == 0, -1, 0).reshape(array.shape[-1], -1).all(axis=1)
        assert row["zero_units"] == int(cols.sum())
    zeros = sum(int((a == 0).sum()) for a in arrays)
    assert data["sparsity"] == zeros / sum(a.size for a in arrays)
    assert path.read_bytes() == before


def bad_files(tmp_path):
    good, _ = save_plain_model(tmp_path)
    data = good.read_bytes()
    files = {}
    files["random.keras"] = os.urandom(2000)
    files["truncated.keras"] = data[: len(data) // 2]
    files["empty.keras"] = b""
    with zipfile.ZipFile(tmp_path / "noweights.keras", "w") as archive:
        archive.writestr("config.json", "{}")
    with zipfile.ZipFile(tmp_path / "badh5.keras", "w") as archive:
        archive.writestr("config.json", "not json")
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + os.urandom(500))
    # A crafted file: a 40 GB weight that HDF5 would produce from a few bytes.
    h5_path = tmp_path / "huge.weights.h5"
    with h5py.File(h5_path, "w") as h5:
        h5.create_dataset("layers/dense/vars/0", shape=(10**5, 10**5), dtype="f4", chunks=True)
    with zipfile.ZipFile(tmp_path / "huge.keras", "w") as archive:
        archive.write(h5_path, "model.weights.h5")
    h5_path.unlink()
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "model.h5").write_bytes(data)
    (tmp_path / "folder.keras").mkdir()
    return [
        "random.keras",
        "truncated.keras",
        "empty.keras",
        "noweights.keras",
        "badh5.keras",
        "huge.keras",
        "model.h5",
        "folder.keras",
        "missing.keras",
    ]


def snapshot(tmp_path):
    return {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}


def test_bad_files_give_one_line_and_status_2(tmp_path, capsys):
    names = bad_files(tmp_path)
    before = snapshot(tmp_path)
    for name in names:
        path = str(tmp_path / name)
        code, out, err = run_main(["report", path, "--json"], capsys)
        assert code == 2, name
        assert out == ""
        assert err.count("\n") == 1 and err.endswith("\n"), err
        assert err.startswith(f"keras-reg report: error: {path}: "), err
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "missing.keras").exists()


@pytest.mark.parametrize("value", ["-1", "abc", "nan", "inf", ""])
def test_bad_threshold_gives_one_line_and_status_2(tmp_path, capsys, value):
    path, _ = save_plain_model(tmp_path)
    code, out, err = run_main(["report", str(path), "--threshold", value], capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert err.startswith("keras-reg report: error: argument --threshold: must be a non-negative")


def test_usage_errors_and_help(capsys):
    code, out, err = run_main([], capsys)
    assert code == 2 and err.count("\n") == 1 and "required" in err
    code, out, err = run_main(["report", "a.keras", "--nope"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--nope" in err
    code, out, err = run_main(["--help"], capsys)
    assert code == 0 and "report" in out
    code, out, err = run_main(["report", "--help"], capsys)
    assert code == 0
    for text in ("MODEL.keras", "--threshold", "--json", "--all", "exit status", "vars/0"):
        assert text in out


@pytest.mark.slow
def test_real_processes_print_one_line_and_no_traceback(tmp_path):
    """The console script on a missing file, `python -m keras_reg` on a corrupt one."""
    bad_files(tmp_path)
    before = snapshot(tmp_path)
    script = Path(sys.executable).with_name("keras-reg")
    if not script.exists():
        pytest.skip("the keras-reg console script is not installed")
    runs = {
        "missing.keras": [str(script)],
        "truncated.keras": [sys.executable, "-m", "keras_reg"],
    }
    # Started together: each spends seconds importing TensorFlow.
    processes = {
        name: subprocess.Popen(
            [*command, "report", str(tmp_path / name)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, **QUIET_TF),
        )
        for name, command in runs.items()
    }
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 2, stderr
        assert stdout == ""
        assert "Traceback" not in stderr
        assert stderr.count("\n") == 1, stderr
        assert stderr.startswith(f"keras-reg report: error: {tmp_path / name}: ")
    assert snapshot(tmp_path) == before
