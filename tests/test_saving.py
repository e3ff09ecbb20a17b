"""Every round trip keeps every regularizer, its class and its numbers."""

import inspect
import json
import textwrap
import zipfile

import keras
import numpy as np
import pytest

import keras_reg
from helpers import REGULARIZERS, reg_id, result_of, run_python, to_float

RNG = np.random.default_rng(0)
X = RNG.normal(size=(16, 6)).astype("float32")
Y = RNG.normal(size=(16, 1)).astype("float32")


def same_regularizer(a, b):
    return type(a) is type(b) and a.get_config() == b.get_config()


@pytest.mark.parametrize("reg", REGULARIZERS, ids=reg_id)
def test_config_is_exactly_the_init_arguments(reg):
    config = reg.get_config()
    params = [p for p in inspect.signature(type(reg).__init__).parameters if p != "self"]
    assert list(config) == params
    assert all(type(v) in (float, int) for v in config.values())
    clone = type(reg).from_config(config)
    assert same_regularizer(clone, reg)
    # The numbers are the ones given, not float32 approximations (unlike Keras' L1).
    assert json.loads(json.dumps(config)) == config


def test_l1_config_is_exact():
    assert keras_reg.L1(0.1).get_config() == {"l1": 0.1}
    assert keras.regularizers.L1(0.1).get_config() != {"l1": 0.1}  # Keras' own is not


@pytest.mark.parametrize("reg", REGULARIZERS, ids=reg_id)
def test_serialize_keras_object_round_trip(reg):
    blob = keras.saving.serialize_keras_object(reg)
    assert blob["registered_name"] == f"keras_reg>{type(reg).__name__}"
    clone = keras.saving.deserialize_keras_object(json.loads(json.dumps(blob)))
    assert same_regularizer(clone, reg)


@pytest.mark.parametrize("reg", REGULARIZERS, ids=reg_id)
def test_from_config_refuses_unknown_key_naming_it(reg):
    config = dict(reg.get_config(), l3=0.5)
    with pytest.raises(
        ValueError, match=r"Unknown key 'l3' in the config of " + type(reg).__name__
    ):
        type(reg).from_config(config)


def make_model(reg):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(
        5,
        activation="tanh",
        kernel_regularizer=reg,
        bias_regularizer=reg,
        activity_regularizer=reg,
        name="hidden",
    )(inputs)
    outputs = keras.layers.Dense(1, kernel_regularizer=reg, name="out")(hidden)
    return keras.Model(inputs, outputs)


def regularizers_of(model):
    return [
        (layer.name, attr, getattr(layer, attr))
        for layer in model.layers
        for attr in ("kernel_regularizer", "bias_regularizer", "activity_regularizer")
        if getattr(layer, attr, None) is not None
    ]


def assert_same_regularizers(a, b):
    ra, rb = regularizers_of(a), regularizers_of(b)
    assert [(n, at) for n, at, _ in ra] == [(n, at) for n, at, _ in rb]
    assert len(ra) == 4
    for (_, _, x), (_, _, y) in zip(ra, rb, strict=True):
        assert same_regularizer(x, y)


@pytest.mark.parametrize("reg", REGULARIZERS, ids=reg_id)
def test_json_and_clone_model(reg):
    model = make_model(reg)
    from_json = keras.models.model_from_json(model.to_json())
    assert_same_regularizers(model, from_json)
    clone = keras.models.clone_model(model)
    assert_same_regularizers(model, clone)


FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras, keras_reg
    path, safe_mode = sys.argv[1], sys.argv[2] == "safe"
    model = keras.saving.load_model(path, safe_mode=safe_mode)
    x = np.load(sys.argv[3])
    out = {
        "pred": np.asarray(model.predict(x, verbose=0)).tolist(),
        "penalty": float(keras.ops.convert_to_numpy(sum(model.losses))),
        "regs": [[type(l.kernel_regularizer).__name__, l.kernel_regularizer.get_config()]
                 for l in model.layers if getattr(l, "kernel_regularizer", None)],
    }
    before = model.get_layer("hidden").kernel.numpy().copy()
    model.fit(x, np.ones((len(x), 1)), epochs=1, verbose=0)
    out["trained"] = bool(np.any(model.get_layer("hidden").kernel.numpy() != before))
    print("RESULT" + json.dumps(out))
    """
)


def load_in_fresh_process(path, tmp_path, safe_mode=True):
    np.save(tmp_path / "x.npy", X)
    mode = "safe" if safe_mode else "unsafe"
    return result_of(run_python(path, mode, tmp_path / "x.npy", code=FRESH_PROCESS))


@pytest.mark.parametrize("safe_mode", [True, False])
def test_keras_file_in_fresh_process(tmp_path, safe_mode):
    """Every regularizer class in one model, so one subprocess covers them all."""
    inputs = keras.Input((6,))
    h = inputs
    for i, reg in enumerate(REGULARIZERS):
        h = keras.layers.Dense(6, activation="tanh", kernel_regularizer=reg, name=f"d{i}")(h)
    h = keras.layers.Dense(4, name="hidden", kernel_regularizer=keras_reg.L1(0.5))(h)
    outputs = keras.layers.Dense(1, name="out")(h)
    model = keras.Model(inputs, outputs)
    model.compile("sgd", "mse")
    model.fit(X, Y, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    before = path.read_bytes()

    result = load_in_fresh_process(path, tmp_path, safe_mode=safe_mode)

    np.testing.assert_allclose(result["pred"], model.predict(X, verbose=0), rtol=1e-6)
    np.testing.assert_allclose(result["penalty"], to_float(sum(model.losses)), rtol=1e-6)
    expected = [[type(r).__name__, r.get_config()] for r in REGULARIZERS] + [["L1", {"l1": 0.5}]]
    assert result["regs"] == expected
    assert result["trained"]
    assert path.read_bytes() == before


def test_keras_file_stores_registered_names(tmp_path):
    model = make_model(keras_reg.ElasticNet(0.04, 0.3))
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        config = archive.read("config.json").decode()
    assert '"registered_name": "keras_reg>ElasticNet"' in config


@pytest.mark.keras_behaviour
def test_load_without_import(tmp_path):
    """What a user sees when they forget `import keras_reg` (documented in the README).

    Keras resolves the class name alone when the registered name is unknown, so
    our L1/L2/L1L2 silently load as Keras' own classes (same penalty), while
    ElasticNet and the group penalties fail with an error that names them.
    """
    make_model(keras_reg.L1(0.03)).save(tmp_path / "l1.keras")
    make_model(keras_reg.ElasticNet(0.03)).save(tmp_path / "en.keras")
    code = textwrap.dedent(
        f"""
        import sys, keras
        m = keras.saving.load_model({str(tmp_path / "l1.keras")!r})
        print("L1CLASS", type(m.get_layer("hidden").kernel_regularizer).__module__)
        assert "keras_reg" not in sys.modules
        keras.saving.load_model({str(tmp_path / "en.keras")!r})
        """
    )
    run = run_python(code=code, check=False)
    assert "L1CLASS keras.src.regularizers" in run.stdout
    assert run.returncode != 0
    assert "'registered_name': 'keras_reg>ElasticNet'" in run.stderr


@pytest.mark.tensorflow_only(reason="SavedModel export")
def test_savedmodel_export_serves_same_predictions(tmp_path):
    import tensorflow as tf

    model = make_model(keras_reg.L1(0.03))
    model.export(str(tmp_path / "exported"), format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "exported"))
    np.testing.assert_allclose(served.serve(X).numpy(), model.predict(X, verbose=0), rtol=1e-6)
