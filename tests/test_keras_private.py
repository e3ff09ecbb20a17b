"""The private Keras names keras_reg uses: all in one module, all present, with fallbacks."""

import pathlib
import re
import warnings

import keras
import numpy as np
import pytest

import keras_reg
from keras_reg import _keras_private as private
from keras_reg import optimizers as opt_module

PACKAGE = pathlib.Path(keras_reg.__file__).parent


def test_no_private_keras_name_outside_the_one_module():
    """`keras.src` and the private attributes listed in _keras_private appear nowhere else.

    Every module of the package is scanned, subpackages included.
    """
    names = (
        *private.OPTIMIZER_SLOTS,
        *private.LAYER_NAMES,
        *private.GRAPH_NAMES,
        "_get_variable_index",
        "_iterations",
        "_compile_loss",
    )
    pattern = re.compile(r"keras\.src|" + "|".join(rf"\.{re.escape(n)}\b" for n in names))
    offenders = []
    paths = sorted(PACKAGE.rglob("*.py"))
    assert PACKAGE / "_keras_private.py" in paths
    assert PACKAGE / "shrinking" / "channels.py" in paths  # subpackages are scanned too
    for path in paths:
        if path == PACKAGE / "_keras_private.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert offenders == []


OPTIMIZERS = [
    keras.optimizers.SGD(0.1, momentum=0.5),
    keras.optimizers.Adam(0.1),
    keras.optimizers.Adam(0.1, amsgrad=True),
    keras.optimizers.AdamW(0.1),
    keras.optimizers.Adamax(0.1),
    keras.optimizers.Nadam(0.1),
    keras.optimizers.RMSprop(0.1, centered=True),
    keras.optimizers.Adagrad(0.1),
]


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda o: type(o).__name__)
def test_every_slot_a_step_rule_reads_exists_in_this_keras(optimizer):
    variable = keras.Variable(np.ones((2, 3), "float32"))
    optimizer.build([variable])
    rule = opt_module._step_rule(optimizer)
    assert rule is not None
    names = opt_module._rule_slots(rule, optimizer)
    assert private.has_slots(optimizer, names)
    for name in names:
        assert tuple(private.slot(optimizer, name, variable).shape) == (2, 3)
    assert int(keras.ops.convert_to_numpy(private.raw_iterations(optimizer))) == 0


def test_layer_names_exist_in_this_keras():
    inputs = keras.Input((3,))
    mha = keras.layers.MultiHeadAttention(2, 2, name="mha")
    model = keras.Model(inputs, keras.layers.Dense(2, name="d")(inputs))
    assert [layer.name for layer in private.flatten_layers(model, include_self=False)][-1] == "d"
    assert [v.path for v in private.own_variables(model.get_layer("d"))] == ["d/kernel", "d/bias"]
    assert private.is_functional(model) and not private.is_functional(keras.Sequential())
    assert private.regularizer_attribute(mha, "kernel_regularizer") == "_kernel_regularizer"
    assert private.regularizer_attribute(model.get_layer("d"), "gamma_regularizer") is None
    assert [node.operation.name for node in private.nodes_by_depth(model)] == ["input_layer", "d"]
    sequential = keras.Sequential([inputs, keras.layers.Dense(2)])
    assert private.is_functional(private.sequential_graph(sequential))
    new_inputs = keras.Input((3,))
    rerun = private.run_through_graph(model, [new_inputs], lambda op: op)
    assert tuple(rerun.shape) == (None, 2)
    op_node = keras.Model(inputs, inputs + 1.0)
    (add,) = [node.operation for node in private.nodes_by_depth(op_node)][1:]
    assert private.keras_op_name(add) == "Add"
    assert private.keras_op_name(model.get_layer("d")) is None
    assert private.applying_optimizer() is None  # outside any optimizer.apply
    variable = keras.Variable(np.ones(2, "float32"))
    stored = private.variable_value(variable)
    private.set_variable_value(variable, stored)
    assert keras.ops.convert_to_numpy(private.variable_value(variable)).tolist() == [1.0, 1.0]
    assert isinstance(private.model_metrics(model), list)
    model.compile("sgd", "mse")
    loss = private.compiled_loss(model)(np.ones((2, 2), "float32"), np.zeros((2, 2), "float32"))
    assert float(keras.ops.convert_to_numpy(loss)) == 1.0


def test_scale_loss_matches_keras_own_outside_distribution():
    from keras.src.losses.loss import scale_loss_for_distribution

    value = keras.ops.convert_to_tensor(np.float32(3.0))
    assert float(private.scale_loss_for_distribution(value)) == float(
        scale_loss_for_distribution(value)
    )


def test_missing_slots_fall_back_to_the_learning_rate_step(monkeypatch):
    """A Keras that renamed Adam's state: Proximal warns and takes the learning-rate step."""
    monkeypatch.setattr(private, "has_slots", lambda optimizer, names: not names)
    w0 = np.array([[0.5, -0.05, 0.2, 0.0]], "float32").T
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(1, use_bias=False, kernel_regularizer=keras_reg.L1(1.0)),
        ]
    )
    model.layers[0].kernel.assign(w0)
    model.compile(keras_reg.Proximal(keras.optimizers.Adam(0.1)), "mse")
    with pytest.warns(UserWarning, match="cannot read the per-coordinate step of Adam"):
        model.fit(np.zeros((8, 4), "float32"), np.zeros((8, 1), "float32"), epochs=1, verbose=0)
    # Zero data: Adam's update is 0, the prox soft-thresholds by lr * l1 = 0.1.
    expected = np.sign(w0) * np.maximum(np.abs(w0) - 0.1, 0.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.layers[0].kernel), expected)


def test_slots_present_use_adams_own_step():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        proximal = keras_reg.Proximal(keras.optimizers.Adam(0.1))
        variable = keras.Variable(np.ones((2, 2), "float32"))
        variable.regularizer = keras_reg.L1(0.1)
        proximal.build([variable])
    assert proximal._rule is opt_module._adam


@pytest.mark.tensorflow_only(reason="TensorFlow's XLA, read through a private TensorFlow function")
def test_xla_is_detected_by_this_tensorflow_not_by_the_fallback():
    # The fallback answers True everywhere; this TensorFlow must tell the three apart.
    import tensorflow as tf

    def inside():
        return tf.constant(private.tf_xla_compiling())

    assert not private.tf_xla_compiling()
    assert not bool(tf.function(inside)())
    assert bool(tf.function(inside, jit_compile=True)())
