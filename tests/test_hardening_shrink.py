"""keras-reg shrink on hostile files and odd places: bombs, names, escapes, folders, modes."""

import os
import struct
import warnings
import zipfile

import keras
import numpy as np
import pytest

from keras_reg import cli
from keras_reg._archive import reader, screen

EVIL = "evil\x1b[2J\x07\u202e\nforged  Dense  9 -> 9"


def run_main(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, out, err, path=None, status=2):
    assert (code, out) == (status, ""), err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    if path is not None:
        assert err.startswith(f"keras-reg shrink: error: {path}: "), err


@pytest.fixture
def no_keras_load(monkeypatch):
    """Fails the test if the command hands the file to Keras."""

    def load_model(*args, **kwargs):
        raise AssertionError("Keras was asked to load a file that should have been refused")

    monkeypatch.setattr(keras.saving, "load_model", load_model)


def write_zip(path, members, compression=zipfile.ZIP_STORED):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names, on purpose
        with zipfile.ZipFile(path, "w", compression=compression) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return path


def small_zip(path, extra=(), config=b"{}", weights=b"\x89HDF\r\n\x1a\n" + bytes(100), **kwargs):
    members = [("metadata.json", b"{}"), ("config.json", config), ("model.weights.h5", weights)]
    return write_zip(path, [*members, *extra], **kwargs)


def set_declared_size(path, name, size):
    """Rewrites the uncompressed size that the central directory declares for `name`."""
    data = bytearray(path.read_bytes())
    start = data.index(b"PK\x01\x02")
    while True:
        name_len = struct.unpack("<H", data[start + 28 : start + 30])[0]
        if data[start + 46 : start + 46 + name_len] == name.encode():
            data[start + 24 : start + 28] = struct.pack("<I", size)
            break
        start = data.index(b"PK\x01\x02", start + 46)
    path.write_bytes(bytes(data))


def dead_unit_model(name="hidden"):
    """4 inputs, feature 0 unused; 3 hidden units, unit 0 dead (zero kernel column and bias)."""
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(3, activation="relu", name=name)
    outputs = keras.layers.Dense(2, name="out")(hidden(inputs))
    model = keras.Model(inputs, outputs)
    kernel = np.asarray(hidden.kernel.numpy())
    kernel[:, 0] = 0
    kernel[0, :] = 0
    hidden.kernel.assign(kernel)
    hidden.bias.assign(np.array([0.0, 0.1, 0.2], np.float32))
    return model


def no_dead_unit_model():
    model = dead_unit_model()
    hidden = model.get_layer("hidden")
    kernel = np.asarray(hidden.kernel.numpy())
    kernel[1:, 0] = 1.0  # unit 0 lives again; feature 0 still unused
    hidden.kernel.assign(kernel)
    return model


# --- item 5: bombs and odd members, refused before Keras reads anything --------------------


def test_config_bomb_is_refused(tmp_path, capsys, monkeypatch, no_keras_load):
    monkeypatch.setattr(reader, "_MAX_CONFIG_BYTES", 1000)
    path = small_zip(tmp_path / "cfg.keras", config=b" " * 1001, compression=zipfile.ZIP_DEFLATED)
    code, out, err = run_main(["shrink", str(path), str(tmp_path / "o.keras")], capsys)
    one_line_error(code, out, err, path=path)
    assert "its config.json declares 1,001 bytes, more than the 1,000" in err
    assert not (tmp_path / "o.keras").exists()


def test_deflated_weights_bomb_is_refused(tmp_path, capsys, monkeypatch, no_keras_load):
    monkeypatch.setattr(screen, "_RATIO_FLOOR", 1000)
    path = small_zip(tmp_path / "w.keras", weights=bytes(200_000), compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 2000  # 200 KB of zeros in a few hundred bytes
    code, out, err = run_main(["shrink", str(path), str(tmp_path / "o.keras")], capsys)
    one_line_error(code, out, err, path=path)
    assert "'model.weights.h5' inflates to 200,000 bytes" in err and "zip bomb" in err


def test_declared_sizes_are_checked_not_trusted(tmp_path, capsys, no_keras_load):
    """A header that declares 2 GiB: for a deflated member a bomb, for a stored one a lie."""
    for kind, compression, message in [
        ("deflated", zipfile.ZIP_DEFLATED, "more than 100 times: a zip bomb"),
        ("stored", zipfile.ZIP_STORED, "is stored uncompressed but declares 2,147,483,648"),
    ]:
        path = small_zip(tmp_path / f"{kind}.keras", compression=compression)
        set_declared_size(path, "model.weights.h5", 2**31)
        with zipfile.ZipFile(path) as archive:
            assert archive.getinfo("model.weights.h5").file_size == 2**31
        code, out, err = run_main(["shrink", str(path), str(tmp_path / "o.keras")], capsys)
        one_line_error(code, out, err, path=path)
        assert message in err, err


def test_weights_beyond_half_the_memory_are_refused(tmp_path, capsys, monkeypatch, no_keras_load):
    monkeypatch.setattr(screen, "available_memory", lambda: 200)
    path = small_zip(tmp_path / "w.keras", weights=bytes(101))
    code, out, err = run_main(["shrink", str(path), str(tmp_path / "o.keras")], capsys)
    one_line_error(code, out, err, path=path)
    assert (
        "its model.weights.h5 declares 101 bytes, more than the 100 bytes (half the memory" in err
    )


def test_assets_are_bounded_in_all(tmp_path, capsys, monkeypatch, no_keras_load):
    monkeypatch.setattr(screen, "_MAX_ASSETS_BYTES", 1000)
    assets = [(f"assets/layer/part{i}.bin", bytes(250)) for i in range(8)]
    path = small_zip(tmp_path / "a.keras", extra=assets)
    code, out, err = run_main(["shrink", str(path), str(tmp_path / "o.keras")], capsys)
    one_line_error(code, out, err, path=path)
    assert "its assets/ members inflate to more than the 1,000 bytes" in err


def test_extracted_members_must_fit_the_free_disk(tmp_path, capsys, monkeypatch, no_keras_load):
    monkeypatch.setattr(reader, "_DISK_MARGIN", reader.shutil.disk_usage(tmp_path).free)
    path = small_zip(tmp_path / "a.keras", extra=[("assets/vocabulary.txt", b"a\nb\n")])
    code, out, err = run_main(["shrink", str(path), str(tmp_path / "o.keras")], capsys)
    one_line_error(code, out, err, path=path)
    assert "more than the free space in" in err


def test_too_many_members_are_refused_before_the_directory_is_read(
    tmp_path, capsys, monkeypatch, no_keras_load
):
    monkeypatch.setattr(screen, "_MAX_MEMBERS", 5)
    path = small_zip(tmp_path / "m.keras", extra=[(f"assets/{i}", b"") for i in range(3)])
    code, out, err = run_main(["shrink", str(path), str(tmp_path / "o.keras")], capsys)
    one_line_error(code, out, err, path=path)
    assert "holds 6 members, more than the 5" in err


@pytest.mark.parametrize(
    "name, message",
    [
        ("../evil.txt", "name leaves its folder"),
        ("assets/../../evil.txt", "name leaves its folder"),
        ("assets\\..\\..\\evil.txt", "name leaves its folder"),
        ("/etc/evil", "absolute name"),
        ("C:/evil", "absolute name"),
        ("notes.txt", "not a member Keras writes"),
        ("assets//x", "not a member Keras writes"),
        ("config.json", "holds 'config.json' twice"),
        ("evil\x1b[2J.txt", "not a member Keras writes"),
    ],
)
def test_odd_member_names_are_refused(tmp_path, capsys, no_keras_load, name, message):
    path = small_zip(tmp_path / "n.keras", extra=[(name, b"x")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no zipfile warning on the way
        code, out, err = run_main(["shrink", str(path), str(tmp_path / "o.keras")], capsys)
    one_line_error(code, out, err, path=path)
    assert message in err and "\x1b" not in err, err


@pytest.mark.parametrize("kind", ["truncated", "random", "empty"])
def test_truncated_or_non_zip_files_say_so(tmp_path, capsys, no_keras_load, kind):
    good = tmp_path / "good.keras"
    no_dead_unit_model().save(good)
    data = {"truncated": good.read_bytes()[:-100], "random": os.urandom(3000), "empty": b""}[kind]
    path = tmp_path / f"{kind}.keras"
    path.write_bytes(data)
    code, out, err = run_main(["shrink", str(path), str(tmp_path / "o.keras")], capsys)
    one_line_error(code, out, err, path=path)
    assert err.endswith(": not a .keras file (corrupt or truncated zip)\n"), err


def test_a_member_keras_does_not_need_is_refused_before_keras(tmp_path, capsys, no_keras_load):
    path = write_zip(tmp_path / "w.keras", [("config.json", b"{}")])
    code, out, err = run_main(["shrink", str(path), str(tmp_path / "o.keras")], capsys)
    one_line_error(code, out, err, path=path)
    assert "no model.weights.h5 inside" in err


# --- item 6: an OUT folder that cannot be written ------------------------------------------


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="as root a read-only folder is still writable; the next test covers it another way",
)
def test_read_only_out_folder_is_said_before_loading(tmp_path, capsys, no_keras_load):
    source = tmp_path / "m.keras"
    no_dead_unit_model().save(source)
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        code, out, err = run_main(["shrink", str(source), str(folder / "o.keras")], capsys)
    finally:
        folder.chmod(0o755)
    one_line_error(code, out, err, path=folder / "o.keras")
    assert "cannot be written in" in err and "Permission denied" in err
    assert list(folder.iterdir()) == []


def test_out_folder_refusing_files_is_said_before_loading(
    tmp_path, capsys, monkeypatch, no_keras_load
):
    """The same path as a read-only folder, for any user: creating the file there fails."""
    source = tmp_path / "m.keras"
    no_dead_unit_model().save(source)

    def mkstemp(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli.tempfile, "mkstemp", mkstemp)
    target = tmp_path / "o.keras"
    code, out, err = run_main(["shrink", str(source), str(target)], capsys)
    one_line_error(code, out, err, path=target)
    assert f"cannot be written in {tmp_path}: Permission denied" in err


# --- item 7: names from the file are escaped ------------------------------------------------


def test_names_from_the_file_are_escaped_in_the_plan(tmp_path, capsys):
    source = tmp_path / "m.keras"
    dead_unit_model(name=EVIL).save(source)
    code, out, err = run_main(["shrink", str(source), str(tmp_path / "o.keras")], capsys)
    assert (code, err) == (0, "")
    assert not any(ch in out for ch in "\x1b\x07\u202e")
    lines = out.splitlines()
    # "IN -> OUT", header, rule, 2 rows, rule, total, ratios: no forged row.
    assert len(lines) == 8, out
    assert lines[3].startswith("evil\\x1b[2J\\x07\\u202e\\nforged  Dense  9 -> 9  Dense  3 -> 2")


def test_kept_whole_reasons_are_escaped(tmp_path, capsys):
    inputs = keras.Input((4,))
    normed = keras.layers.LayerNormalization(name="norm\x1b[31m")(inputs)
    hidden = keras.layers.Dense(3, activation="relu", name="hidden")
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden(normed)))
    kernel = np.asarray(hidden.kernel.numpy())
    kernel[:, 0] = 0  # a dead unit: something to remove
    hidden.kernel.assign(kernel)
    hidden.bias.assign(np.zeros(3, np.float32))
    source = tmp_path / "m.keras"
    model.save(source)
    code, out, err = run_main(["shrink", str(source), str(tmp_path / "o.keras")], capsys)
    assert (code, err) == (0, "")
    assert "\x1b" not in out
    assert "kept whole: norm\\x1b[31m (" in out, out


# --- item 8: OUT's mode follows the umask, like model.save ---------------------------------


@pytest.mark.parametrize("umask", [0o027, 0o002])
def test_out_gets_the_mode_model_save_gives(tmp_path, capsys, umask):
    source = tmp_path / "m.keras"
    model = dead_unit_model()
    model.save(source)
    target = tmp_path / "o.keras"
    target.write_bytes(b"old")
    target.chmod(0o600)
    old = os.umask(umask)
    try:
        model.save(tmp_path / "plain.keras")
        assert cli.main(["shrink", str(source), str(tmp_path / "new.keras")]) == 0
        assert cli.main(["shrink", str(source), str(target), "--force"]) == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    expected = 0o666 & ~umask
    assert (tmp_path / "plain.keras").stat().st_mode & 0o777 == expected
    assert (tmp_path / "new.keras").stat().st_mode & 0o777 == expected
    assert target.stat().st_mode & 0o777 == expected


# --- item 9: --drop-inputs, nothing to remove, --version ------------------------------------


def test_drop_inputs_removes_unused_features(tmp_path, capsys):
    source = tmp_path / "m.keras"
    model = no_dead_unit_model()
    model.save(source)
    target = tmp_path / "o.keras"
    code, out, err = run_main(["shrink", str(source), str(target), "--drop-inputs"], capsys)
    assert (code, err) == (0, "")
    assert "input features keeps features [1, 2, 3]" in out
    small = keras.saving.load_model(target)
    assert small.count_params() == model.count_params() - 3
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    got, expected = (
        keras.ops.convert_to_numpy(small(x[:, 1:])),
        keras.ops.convert_to_numpy(model(x)),
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_nothing_to_remove_says_so_and_writes_nothing(tmp_path, capsys):
    source = tmp_path / "m.keras"
    no_dead_unit_model().save(source)
    target = tmp_path / "o.keras"
    code, out, err = run_main(["shrink", str(source), str(target)], capsys)
    assert (code, err) == (0, "")
    assert out == (
        f"{source}: nothing to remove (every unit, filter and channel is used); "
        f"{target} not written\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]
    target.write_bytes(b"keep me")  # and --force does not replace it with a copy
    assert cli.main(["shrink", str(source), str(target), "--force"]) == 0
    assert target.read_bytes() == b"keep me"


def test_version(capsys):
    import keras_reg

    code, out, err = run_main(["--version"], capsys)
    assert (code, out, err) == (0, f"keras-reg {keras_reg.__version__}\n", "")


def test_help_names_the_new_flags_and_bounds(capsys):
    code, out, _ = run_main(["shrink", "--help"], capsys)
    assert code == 0
    for text in ("--drop-inputs", "zip bomb", "16 MiB", "half the memory", "umask", "not write"):
        assert text in " ".join(out.split()), text
