"""keras-reg report on hostile files: bombs, pipes, devices, escapes, odd datasets."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from keras_reg import cli
from keras_reg._archive import blocks
from keras_reg._counts import Counts


def run_main(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, out, err, path=None):
    assert (code, out) == (2, ""), err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    if path is not None:
        assert err.startswith(f"keras-reg report: error: {path}: "), err


def write_keras(path, build_h5, config="{}", compression=zipfile.ZIP_STORED):
    """A `.keras` zip whose weights file `build_h5(h5)` fills."""
    h5_path = path.with_suffix(".h5tmp")
    with h5py.File(h5_path, "w") as h5:
        build_h5(h5)
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        archive.writestr("config.json", config)
        archive.write(h5_path, "model.weights.h5")
    h5_path.unlink()
    return path


def layer(h5, key, *arrays, name=None):
    vars_group = h5.create_group(f"layers/{key}/vars")
    vars_group.attrs["name"] = name or key
    for i, array in enumerate(arrays):
        vars_group.create_dataset(str(i), data=array)
    return vars_group


# --- counting in blocks: the numbers, against NumPy -----------------------------------


def numpy_counts(array, threshold):
    x = np.asarray(array)
    x = x if x.dtype == np.float64 else x.astype(np.float32)
    zero = x == 0 if threshold == 0 else np.abs(x) <= x.dtype.type(threshold)
    if zero.ndim < 2:
        return Counts(int(zero.sum()), None, None)
    inputs = (
        np.moveaxis(zero, -2, 0).reshape(zero.shape[-2], -1).all(axis=1).sum() if zero.size else 0
    )
    units = (
        np.moveaxis(zero, -1, 0).reshape(zero.shape[-1], -1).all(axis=1).sum() if zero.size else 0
    )
    return Counts(int(zero.sum()), int(inputs), int(units))


@pytest.mark.parametrize(
    "shape",
    [(), (7,), (5, 3), (4, 3, 6), (3, 2, 2, 5), (1, 40), (40, 1), (2, 0, 3), (6, 5, 1)],
)
def test_block_counts_match_numpy(shape):
    rng = np.random.default_rng(len(shape))
    for dtype in ("float32", "float64", "int8"):
        x = np.asarray(rng.normal(size=shape) * 2).astype(dtype)
        x[rng.random(shape) < 0.5] = 0
        if x.ndim >= 2 and x.size:
            x[..., 0] = 0  # a zero unit
            x[..., x.shape[-2] // 2, :] = 0  # a zero input
            x[-1] = 0  # a zero slice along axis 0 (an input only for rank 2)
        if x.size > 3 and dtype != "int8":
            x.flat[1], x.flat[2] = np.inf, np.nan
        for limit in (1, 4, 7, 30, 10**6):
            for threshold in (0.0, 0.3, 3.4028234e38):
                reads = []

                def read(index, x=x, reads=reads):
                    reads.append(x[index].size)
                    return x[index]

                counts = blocks.count_blocks(read, shape, threshold, limit=limit)
                assert counts == numpy_counts(x, threshold), (dtype, limit, threshold)
                assert max(reads, default=0) <= limit


def test_wide_weights_count_columns_in_blocks(monkeypatch):
    """More units than flags kept: blocks of whole units, one flag per input."""
    monkeypatch.setattr(blocks, "_MAX_FLAGS", 8)
    x = np.zeros((3, 2, 50), np.float32)
    x[0, 1, 7] = 1.0
    x[2, 0, 40] = -np.inf
    reads = []

    def read(index):
        reads.append(x[index].size)
        return x[index]

    counts = blocks.count_blocks(read, x.shape, 1e-3, limit=12)
    # Both inputs (axis -2) hold a non-zero (1.0, -inf); 48 of the 50 units are all zero.
    assert counts == numpy_counts(x, 1e-3) == (298, 0, 48)
    assert max(reads) <= 12


def test_block_counts_agree_with_the_logger_counting():
    from keras_reg import _sparsity

    rng = np.random.default_rng(3)
    values = [rng.normal(size=s).astype(np.float32) for s in [(9, 4), (3, 3, 2, 5), (8,)]]
    for v in values:
        v[np.abs(v) < 0.7] = 0
    for threshold in (0.0, 0.5):
        expected = _sparsity.count_zeros(values, threshold)
        got = [blocks.count_blocks(lambda i, v=v: v[i], v.shape, threshold, 5) for v in values]
        assert [tuple(c) for c in got] == [tuple(c) for c in expected]


# --- zip bombs: memory bounded by a block, not by the file -----------------------------

PEAK_RSS = textwrap.dedent(
    """
    import resource, sys, types
    # The reader alone: NumPy and h5py, without the package's Keras imports.
    package = types.ModuleType("keras_reg")
    package.__path__ = [sys.argv[2]]
    sys.modules["keras_reg"] = package
    from keras_reg._archive import count_weights
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    counted, skipped = count_weights(sys.argv[1])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(after - before, [(name, shape, tuple(c)) for name, shape, c in counted])
    """
)


@pytest.mark.slow
def test_memory_is_bounded_by_a_block(tmp_path):
    """A 64 MiB weight of zeros, deflated (a zip bomb) and stored: peak RSS grows by blocks."""
    rows, cols = 4096, 4096

    def build(h5):
        ds = layer(h5, "dense", np.zeros((1, cols), np.float32)).create_dataset(
            "1", shape=(rows, cols), dtype="f4"
        )
        for i in range(0, rows, 512):
            ds[i : i + 512] = 0.0
        ds[7, 9] = 2.0

    bomb = write_keras(tmp_path / "bomb.keras", build, compression=zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 2**20  # 64 MiB from less than 1 MiB
    stored = write_keras(tmp_path / "stored.keras", build)
    for path in (bomb, stored):
        run = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, str(path), os.path.dirname(cli.__file__)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        grown_kib, counted = run.stdout.split(" ", 1)
        # Holding the member or the weight (64 MiB each) would grow it by >= 64 MiB.
        assert int(grown_kib) < 24 * 1024, (path.name, grown_kib)
        assert "(4096, 4096), (16777215, 4095, 4095)" in counted


def test_inflated_size_beyond_free_disk_is_refused(tmp_path, capsys, monkeypatch):
    path = write_keras(
        tmp_path / "big.keras",
        lambda h5: layer(h5, "dense", np.zeros((64, 64), np.float32)),
        compression=zipfile.ZIP_DEFLATED,
    )
    import keras_reg._archive.reader as archive

    monkeypatch.setattr(archive, "_DISK_MARGIN", archive.shutil.disk_usage(tmp_path).free)
    code, out, err = run_main(["report", str(path)], capsys)
    one_line_error(code, out, err, path=path)
    assert "inflates to" in err and "more than the free space" in err
    assert not list(Path(tempfile.gettempdir()).glob("keras-reg-*"))  # no temporary left


# --- not a regular file -----------------------------------------------------------------


def _alarm(seconds):
    def handler(signum, frame):
        raise TimeoutError("blocked on the file")

    signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_fifo_is_refused_without_blocking(tmp_path, capsys):
    fifo = tmp_path / "m.keras"
    os.mkfifo(fifo)
    _alarm(20)
    try:
        result = run_main(["report", str(fifo)], capsys)
    finally:
        signal.alarm(0)
    one_line_error(*result, path=fifo)
    assert "named pipe" in result[2]


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")
def test_link_to_a_device_is_refused(tmp_path, capsys):
    link = tmp_path / "zero.keras"
    link.symlink_to("/dev/zero")
    _alarm(20)
    try:
        result = run_main(["report", str(link)], capsys)
    finally:
        signal.alarm(0)
    one_line_error(*result, path=link)
    assert "not a regular file" in result[2]


# --- terminal escapes ---------------------------------------------------------------------

EVIL = [
    "clear\x1b[2J",
    "title\x1b]0;pwned\x07",
    "forged\nzzz  (9, 9)  81  81  100.00%",
    "rtl\u202e",
]


def test_control_characters_in_names_are_escaped(tmp_path, capsys):
    def build(h5):
        for i, name in enumerate(EVIL):
            layer(h5, f"l{i}", np.zeros((2, 3), np.float32), name=name)
        layer(h5, "odd", h5py.Empty("f4"), name="empty\x1b[31m")

    path = write_keras(tmp_path / "evil.keras", build)
    code, out, err = run_main(["report", str(path)], capsys)
    assert (code, err) == (0, "")
    assert not any(ch in out for ch in "\x1b\x07\u202e")
    # Header, threshold, column names, rule, 4 rows, rule, total, "Not counted", 1 line.
    assert out.count("\n") == 12, out
    assert "forged\\nzzz" in out and "clear\\x1b[2J" in out and "rtl\\u202e" in out
    assert "empty\\x1b[31m/vars/0: empty dataspace" in out
    # JSON escapes them its own way, and keeps the real names.
    code, out, err = run_main(["report", str(path), "--json"], capsys)
    data = json.loads(out)
    assert [row["path"] for row in data["rows"]] == [f"{name}/vars/0" for name in EVIL]
    assert data["skipped"] == [
        {"path": "empty\x1b[31m/vars/0", "reason": "empty dataspace (h5py.Empty), nothing to count"}
    ]


@pytest.mark.parametrize("name", ["bad\nname.keras", "bad\x1b[2Jname.keras", "bad\nname.h5"])
def test_file_names_with_control_characters_give_one_line(tmp_path, capsys, name):
    code, out, err = run_main(["report", str(tmp_path / name)], capsys)
    one_line_error(code, out, err)
    assert "\x1b" not in err and "bad\\" in err


def test_usage_error_quoting_an_argument_stays_one_line(capsys):
    code, out, err = run_main(["report", "a.keras", "--no\npe"], capsys)
    one_line_error(code, out, err)


# --- odd datasets -----------------------------------------------------------------------


def test_uncountable_datasets_are_skipped_and_said(tmp_path, capsys):
    kernel = np.array([[0.0, 1.0], [0.0, 0.0]], np.float32)

    def build(h5):
        layer(h5, "good", kernel)
        layer(h5, "empty", h5py.Empty("f4"))
        layer(h5, "long", np.zeros((2, 2), np.longdouble))
        layer(h5, "text", np.array([[b"a", b"b"]]))
        vars_group = layer(h5, "linked")
        vars_group["0"] = h5py.SoftLink("/layers/good/vars/0")

    path = write_keras(tmp_path / "odd.keras", build)
    code, out, err = run_main(["report", str(path), "--json"], capsys)
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert [(r["path"], r["zeros"], r["zero_units"]) for r in data["rows"]] == [
        ("good/vars/0", 3, 1)
    ]
    reasons = {s["path"]: s["reason"] for s in data["skipped"]}
    assert set(reasons) == {"empty/vars/0", "long/vars/0", "text/vars/0", "linked/vars/0"}
    assert "long double" in reasons["long/vars/0"]
    assert "SoftLink, not followed" == reasons["linked/vars/0"]
    code, out, err = run_main(["report", str(path)], capsys)
    assert code == 0 and "Not counted (4):" in out and "long/vars/0: dtype float128" in out


def test_deep_nesting_is_walked_without_recursion(tmp_path, capsys):
    def build(h5):
        group = h5.create_group("layers")
        for i in range(3000):
            group = group.create_group(f"g{i}")
        vars_group = group.create_group("vars")
        vars_group.attrs["name"] = "deep"
        vars_group.create_dataset("0", data=np.zeros((2, 2), np.float32))

    deep_config = "[" * 100_000 + "]" * 100_000  # too deep for json: names by position
    path = write_keras(tmp_path / "deep.keras", build, config=deep_config)
    code, out, err = run_main(["report", str(path), "--json"], capsys)
    assert (code, err) == (0, "")
    assert [(r["path"], r["zeros"]) for r in json.loads(out)["rows"]] == [("deep/vars/0", 4)]


def test_deep_config_is_walked_without_recursion(tmp_path, capsys):
    # json.loads takes ~ its own recursion limit; naming then walks it without recursing.
    depth = sys.getrecursionlimit() - 50
    config = '{"a": ' * depth + '{"class_name": "Dense", "name": "d"}' + "}" * depth
    try:
        json.loads(config)
    except RecursionError:
        pytest.skip("this json module cannot parse it at all")
    path = write_keras(
        tmp_path / "c.keras", lambda h5: layer(h5, "d", np.ones((2, 2), np.float32)), config
    )
    code, out, err = run_main(["report", str(path), "--json"], capsys)
    assert (code, err) == (0, "")


@pytest.mark.parametrize("kind", ["cycle", "shared dataset"])
def test_hard_link_cycles_and_shared_objects_are_refused(tmp_path, capsys, kind):
    def build(h5):
        vars_group = layer(h5, "a", np.zeros((2, 2), np.float32))
        if kind == "cycle":
            h5["layers/a/loop"] = h5["layers"]
        else:
            layer(h5, "b")["0"] = vars_group["0"]

    path = write_keras(tmp_path / "links.keras", build)
    code, out, err = run_main(["report", str(path)], capsys)
    one_line_error(code, out, err, path=path)
    assert "reached twice through hard links" in err


def test_oversized_config_is_refused(tmp_path, capsys, monkeypatch):
    import keras_reg._archive.reader as archive

    monkeypatch.setattr(archive, "_MAX_CONFIG_BYTES", 100)
    path = write_keras(
        tmp_path / "cfg.keras", lambda h5: layer(h5, "d", np.ones((2, 2))), config=" " * 101
    )
    one_line_error(*run_main(["report", str(path)], capsys), path=path)


def test_large_compressed_chunks_are_refused(tmp_path, capsys, monkeypatch):
    import keras_reg._archive.reader as archive

    monkeypatch.setattr(archive, "_MAX_CHUNK_BYTES", 1000)

    def build(h5):
        vars_group = layer(h5, "d")
        vars_group.create_dataset(
            "0", data=np.zeros((64, 64), np.float32), chunks=(64, 64), compression="gzip"
        )

    path = write_keras(tmp_path / "chunks.keras", build)
    code, out, err = run_main(["report", str(path)], capsys)
    one_line_error(code, out, err, path=path)
    assert "compressed chunks of 16,384 bytes" in err


# --- thresholds beyond float32 ------------------------------------------------------------


@pytest.mark.parametrize("value", ["1e39", "3.5e38", "1e400"])
def test_threshold_beyond_float32_is_one_line(tmp_path, capsys, value):
    code, out, err = run_main(["report", "x.keras", "--threshold", value], capsys)
    one_line_error(code, out, err)
    assert "fits in float32" in err


def test_inf_weights_never_count_at_the_largest_threshold(tmp_path, capsys):
    x = np.array([[np.inf, -np.inf], [np.nan, 3e38]], np.float32)
    path = write_keras(tmp_path / "inf.keras", lambda h5: layer(h5, "d", x))
    code, out, err = run_main(
        ["report", str(path), "--json", "--threshold", "3.4028235e38"], capsys
    )
    assert code == 0, err
    assert json.loads(out)["rows"][0]["zeros"] == 1  # 3e38 only
