"""StrengthScheduler: the scale reaches the compiled train step; bad schedules stop training."""

import keras
import numpy as np
import pytest

import keras_reg
from helpers import REGULARIZERS, count_traces, numpy_penalty, numpy_prox, reg_id, to_numpy

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 6)).astype("float32")
Y = np.zeros((32, 1), "float32")


def zero_loss(y_true, y_pred):
    return 0.0 * keras.ops.mean(y_pred)  # data loss exactly zero; the penalty is all


def frozen_model(reg):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1, kernel_regularizer=reg)])
    model.compile(keras.optimizers.SGD(0.0), zero_loss)  # lr 0: the weights stay put
    return model


SCALES = [0.0, 0.25, 0.5, 1.0, 2.0]


@pytest.mark.parametrize("reg", REGULARIZERS, ids=reg_id)
def test_reported_loss_is_scale_times_penalty_each_epoch(reg):
    reg = type(reg).from_config(reg.get_config())  # scheduling mutates it: not the shared one
    model = frozen_model(reg)
    penalty = numpy_penalty(reg, to_numpy(model.layers[0].kernel))
    traces = count_traces(model)
    scheduler = keras_reg.StrengthScheduler(lambda epoch, scale: SCALES[epoch])
    history = model.fit(X, Y, batch_size=8, epochs=len(SCALES), callbacks=[scheduler], verbose=0)
    np.testing.assert_allclose(history.history["loss"], np.array(SCALES) * penalty, rtol=1e-5)
    assert history.history["strength_scale"] == SCALES
    if keras.backend.backend() != "torch":  # PyTorch runs the Python step every batch
        assert len(traces) == 1  # one trace for the whole fit: the scale is state


def test_validation_loss_is_scale_times_penalty_each_epoch():
    """`fit(validation_data=...)` computes the penalty in the test step too (JAX: its state)."""
    reg = keras_reg.L1(0.5)
    model = frozen_model(reg)
    penalty = numpy_penalty(reg, to_numpy(model.layers[0].kernel))
    scheduler = keras_reg.StrengthScheduler(lambda epoch, scale: SCALES[epoch])
    history = model.fit(
        X, Y, validation_data=(X, Y), epochs=len(SCALES), callbacks=[scheduler], verbose=0
    )
    np.testing.assert_allclose(history.history["val_loss"], np.array(SCALES) * penalty, rtol=1e-5)
    # After fit, evaluate reads the last scale.
    np.testing.assert_allclose(model.evaluate(X, Y, verbose=0), SCALES[-1] * penalty, rtol=1e-5)


def test_scheduled_proximal_step_uses_the_scale():
    reg = keras_reg.L1(0.5)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1, kernel_regularizer=reg)])
    model.compile(keras_reg.Proximal(keras.optimizers.SGD(0.1)), zero_loss)
    w = to_numpy(model.layers[0].kernel).astype(np.float64)
    scheduler = keras_reg.StrengthScheduler(lambda epoch, scale: 0.3)
    model.fit(X, Y, batch_size=32, epochs=1, callbacks=[scheduler], verbose=0)
    # One step, zero data gradient: w <- ST(w, lr * 0.3 * l1).
    expected = numpy_prox(keras_reg.L1(0.5 * 0.3), w, 0.1)
    np.testing.assert_allclose(to_numpy(model.layers[0].kernel), expected, atol=1e-6)


def test_selected_regularizers_only():
    scheduled, fixed = keras_reg.L1(0.1), keras_reg.L2(0.1)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(4, kernel_regularizer=scheduled),
            keras.layers.Dense(1, kernel_regularizer=fixed),
        ]
    )
    model.compile(keras.optimizers.SGD(0.0), zero_loss)
    scheduler = keras_reg.StrengthScheduler(lambda e, s: 0.0, regularizers=[scheduled])
    history = model.fit(X, Y, batch_size=8, epochs=1, callbacks=[scheduler], verbose=0)
    expected = numpy_penalty(fixed, to_numpy(model.layers[1].kernel))
    np.testing.assert_allclose(history.history["loss"][0], expected, rtol=1e-5)
    assert scheduled.scale == 0.0 and fixed.scale == 1.0


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), "1", None, True], ids=repr)
def test_bad_schedule_value_stops_training_naming_epoch_and_value(bad):
    model = frozen_model(keras_reg.L1(0.1))
    scheduler = keras_reg.StrengthScheduler(lambda epoch, scale: 1.0 if epoch < 2 else bad)
    with pytest.raises(
        ValueError, match=rf"Received: {__import__('re').escape(repr(bad))} at epoch 2"
    ):
        model.fit(X, Y, epochs=5, callbacks=[scheduler], verbose=0)


def test_model_without_keras_reg_regularizer_is_refused():
    model = frozen_model(keras.regularizers.L1(0.1))
    with pytest.raises(ValueError, match="found no keras_reg regularizer"):
        model.fit(
            X, Y, epochs=1, callbacks=[keras_reg.StrengthScheduler(lambda e, s: 1.0)], verbose=0
        )


def test_bad_arguments():
    with pytest.raises(ValueError, match="'schedule' argument of StrengthScheduler"):
        keras_reg.StrengthScheduler(0.5)
    with pytest.raises(ValueError, match="'regularizers' argument of StrengthScheduler"):
        keras_reg.StrengthScheduler(lambda e, s: s, regularizers=[keras.regularizers.L1()])
    with pytest.raises(ValueError, match="'scale' argument of L1.set_scale"):
        keras_reg.L1().set_scale(-1)


def test_save_mid_schedule_then_reload_keeps_base_config(tmp_path):
    reg = keras_reg.L1(0.2)
    model = frozen_model(reg)
    model.fit(
        X, Y, epochs=2, verbose=0, callbacks=[keras_reg.StrengthScheduler(lambda epoch, scale: 0.5)]
    )
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", custom_objects={"zero_loss": zero_loss})
    reloaded = loaded.layers[0].kernel_regularizer
    assert reloaded.get_config() == {"l1": 0.2} and reloaded.scale == 1.0
    history = loaded.fit(
        X, Y, epochs=1, verbose=0, callbacks=[keras_reg.StrengthScheduler(lambda epoch, scale: 0.5)]
    )
    penalty = numpy_penalty(reg, to_numpy(loaded.layers[0].kernel))
    np.testing.assert_allclose(history.history["loss"][0], 0.5 * penalty, rtol=1e-5)


def test_five_scales_over_ten_epochs_trace_once_and_drive_penalty_and_prox():
    """Penalty and proximal step follow a changing scale in a train step traced once."""
    reg, lr = keras_reg.L1(0.5), 0.1
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1, kernel_regularizer=reg)])
    model.compile(keras_reg.Proximal(keras.optimizers.SGD(lr)), zero_loss)
    w = to_numpy(model.layers[0].kernel).astype(np.float64)
    traces = count_traces(model)
    scheduler = keras_reg.StrengthScheduler(lambda epoch, scale: SCALES[epoch // 2])
    history = model.fit(X, Y, batch_size=32, epochs=10, callbacks=[scheduler], verbose=0)
    # One full-batch step per epoch, zero data gradient: w <- ST(w, lr * scale * l1).
    losses = []
    for epoch in range(10):
        scale = SCALES[epoch // 2]
        losses.append(scale * numpy_penalty(reg, w))
        w = numpy_prox(keras_reg.L1(0.5 * scale), w, lr)
    np.testing.assert_allclose(to_numpy(model.layers[0].kernel), w, atol=1e-6)
    np.testing.assert_allclose(history.history["loss"], losses, rtol=1e-5, atol=1e-7)
    if keras.backend.backend() != "torch":  # PyTorch runs the Python step every batch
        assert len(traces) == 1
    # The scales' state leaves the model with the fit.
    assert all(not isinstance(m, keras_reg.strength._ScaleState) for m in model.metrics)


def test_a_scale_equal_in_float32_sets_nothing():
    """0.1 as a double is not 0.1 in float32: compared as the variable stores it."""
    reg = keras_reg.L1(0.1)
    reg.set_scale(0.1)
    model = frozen_model(reg)
    calls = []
    set_scale = reg.set_scale
    reg.set_scale = lambda value: calls.append(value) or set_scale(value)
    traces = count_traces(model)
    scheduler = keras_reg.StrengthScheduler(lambda epoch, scale: 0.1)
    model.fit(X, Y, batch_size=32, epochs=3, callbacks=[scheduler], verbose=0)
    assert calls == []
    if keras.backend.backend() != "torch":
        assert len(traces) == 1
