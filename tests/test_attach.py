"""apply_regularizer on a model that already exists."""

import keras
import numpy as np
import pytest

import keras_reg
from helpers import numpy_penalty, to_float, to_numpy

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 8)).astype("float32")
Y = (X[:, :1] - 2 * X[:, 1:2]).astype("float32")


def pretrained():
    inner = keras.Sequential(
        [keras.layers.Dense(6, activation="tanh", name="inner_dense")], name="block"
    )
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(8, activation="relu", name="first")(inputs)
    hidden = inner(hidden)
    outputs = keras.layers.Dense(1, name="head")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(X, Y, epochs=2, verbose=0)  # trained first, without any penalty
    assert model.losses == []
    return model


def kernels(model):
    return {
        layer.name: to_numpy(layer.kernel)
        for layer in model._flatten_layers(include_self=False)
        if hasattr(layer, "kernel")
    }


def test_penalty_present_at_once_and_training_shrinks_weights(tmp_path):
    model = pretrained()
    reg = keras_reg.L2(0.5)
    paths = keras_reg.apply_regularizer(model, reg)
    assert sorted(p.rsplit("/", 1)[-1] for p in paths) == ["kernel"] * 3
    assert any("inner_dense" in p for p in paths)  # nested model walked into
    expected = sum(numpy_penalty(reg, k) for k in kernels(model).values())
    np.testing.assert_allclose(to_float(sum(model.losses)), expected, rtol=1e-5)

    twin = keras.models.clone_model(pretrained())  # same architecture, no penalty
    twin.set_weights(model.get_weights())
    twin.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(X, Y, epochs=3, verbose=0)
    twin.fit(X, Y, epochs=3, verbose=0)
    norm = sum(np.square(k).sum() for k in kernels(model).values())
    twin_norm = sum(np.square(k).sum() for k in kernels(twin).values())
    assert norm < 0.8 * twin_norm

    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    for layer in loaded._flatten_layers(include_self=False):
        if hasattr(layer, "kernel"):
            assert layer.kernel_regularizer.get_config() == {"l2": 0.5}
    np.testing.assert_allclose(to_float(sum(loaded.losses)), to_float(sum(model.losses)), rtol=1e-6)


def test_filter_by_predicate_and_names_and_biases():
    model = pretrained()
    dense_only = keras_reg.apply_regularizer(
        model, keras_reg.L1(1e-3), layers=lambda layer: layer.name == "head"
    )
    assert [p.rsplit("/", 2)[-2:] for p in dense_only] == [["head", "kernel"]]
    biases = keras_reg.apply_regularizer(model, "l2", layers=["first"], weights="biases")
    assert [p.rsplit("/", 1)[-1] for p in biases] == ["bias"]
    assert isinstance(model.get_layer("first").bias_regularizer, keras.regularizers.L2)
    assert model.get_layer("first").kernel_regularizer is None


def test_compiled_model_next_evaluate_includes_penalty():
    model = pretrained()
    before = model.evaluate(X, Y, verbose=0)
    reg = keras_reg.L1(0.1)
    keras_reg.apply_regularizer(model, reg)
    penalty = sum(numpy_penalty(reg, k) for k in kernels(model).values())
    np.testing.assert_allclose(model.evaluate(X, Y, verbose=0), before + penalty, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(model=keras.layers.Dense(2)),
            "'model' argument of apply_regularizer must be a keras.Model",
        ),
        (dict(regularizer=0.01), "'regularizer' argument of apply_regularizer must be"),
        (dict(regularizer="no-such"), "'regularizer' argument of apply_regularizer must be"),
        (dict(layers=lambda layer: False), "filter matches no layer"),
        (dict(layers=["nope"]), "filter matches no layer"),
        (dict(layers=3), "'layers' argument of apply_regularizer must be"),
        (dict(weights="kernel"), "'weights' argument of apply_regularizer must be one of"),
    ],
)
def test_clear_errors(kwargs, message):
    args = dict(model=pretrained(), regularizer=keras_reg.L2(0.1))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        keras_reg.apply_regularizer(**args)
