"""Numbers beyond float32, messages for misuse, and Keras' own names (issue 12)."""

import math
import re

import keras
import numpy as np
import pytest

import keras_reg
from keras_reg.optimizers import _as_proximal

BEYOND_FLOAT32 = [1e39, -1e39, 3.5e38, 10**400, np.float64(1e39)]

FLOAT_ARGS = [
    (keras_reg.L1, "l1"),
    (keras_reg.L2, "l2"),
    (keras_reg.L1L2, "l1"),
    (keras_reg.L1L2, "l2"),
    (keras_reg.ElasticNet, "alpha"),
    (keras_reg.GroupLasso, "strength"),
    (keras_reg.SparseGroupLasso, "strength"),
    (keras_reg.SparsityLogger, "threshold"),
    (keras_reg.sparsity_report, "threshold"),
]


@pytest.mark.parametrize("owner, arg", FLOAT_ARGS, ids=lambda x: getattr(x, "__name__", x))
def test_numbers_beyond_float32_are_refused_naming_the_argument(owner, arg):
    for value in BEYOND_FLOAT32:
        kwargs = {arg: value}
        if owner is keras_reg.sparsity_report:
            kwargs["model"] = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        pattern = rf"The '{arg}' argument of {owner.__name__} must be .*fits in float32"
        with pytest.raises(ValueError, match=pattern):
            owner(**kwargs)


def test_largest_float32_is_accepted_and_stays_finite():
    reg = keras_reg.L1(3.4028235e38)
    assert np.isfinite(np.float32(reg.l1))
    assert math.isinf(float(reg(np.ones((2, 2), "float32"))))  # the user's own overflow


def test_set_scale_beyond_float32_is_refused():
    reg = keras_reg.L1(0.1)
    with pytest.raises(ValueError, match=r"'scale' argument of L1.set_scale .* float32"):
        reg.set_scale(1e39)
    assert reg.scale == 1.0


def test_schedule_beyond_float32_stops_training_naming_the_value():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(1, kernel_regularizer=keras_reg.L1(0.1))]
    )
    model.compile("sgd", "mse")
    scheduler = keras_reg.StrengthScheduler(lambda epoch, scale: 1e39)
    with pytest.raises(ValueError, match=r"fits in float32.*Received: 1e\+39 at epoch 0"):
        model.fit(np.ones((4, 3)), np.ones((4, 1)), epochs=1, callbacks=[scheduler], verbose=0)
    assert np.all(np.isfinite(model.layers[0].kernel.numpy()))


def test_inf_weights_never_count_as_zeros_at_the_largest_threshold():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.layers[0].kernel.assign(np.array([[np.inf, -np.inf], [np.nan, 1e38]], "float32"))
    assert keras_reg.sparsity_report(model, threshold=3.4028235e38).zeros == 1
    logger = keras_reg.SparsityLogger(threshold=3.4028235e38)
    logger.set_model(model)
    logs = {}
    logger.on_epoch_end(0, logs)
    assert logs["sparsity"] == 0.25


def test_negative_zero_becomes_zero_in_the_config():
    config = keras_reg.L1(-0.0).get_config()
    assert config == {"l1": 0.0} and math.copysign(1.0, config["l1"]) == 1.0


@pytest.mark.parametrize("cls", [keras_reg.GroupLasso, keras_reg.SparseGroupLasso])
def test_group_penalty_on_a_scalar_says_it_has_no_axis(cls):
    with pytest.raises(ValueError, match=r"scalar weight \(shape \(\)\) has no axis"):
        cls(0.1, axis=0)(np.float32(2.0))


# --- StrengthScheduler and Proximal: misuse named at once ---------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"regularizers": keras_reg.L1(0.1)}, r"list of keras_reg regularizers.*wrap it in a list"),
        ({"regularizers": 3}, r"non-empty list.*Received: regularizers=3 of type int"),
        ({"regularizers": []}, r"non-empty list.*Received: regularizers=\[\]"),
        ({"regularizers": [keras.regularizers.L1(0.1)]}, r"Received: <keras"),
        ({"verbose": "loud"}, r"'verbose' argument of StrengthScheduler must be 0 or 1"),
        ({"verbose": 2}, r"Received: verbose=2"),
    ],
)
def test_scheduler_arguments_are_checked_at_once(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_reg.StrengthScheduler(lambda e, s: 1.0, **kwargs)


def test_scheduler_accepts_a_bool_verbose_as_keras_callbacks_do():
    assert keras_reg.StrengthScheduler(lambda e, s: 1.0, verbose=True).verbose == 1


def test_proximal_config_without_optimizer_names_it():
    with pytest.raises(ValueError, match=r"under 'optimizer'. Received: config=\{'name': 'p'\}"):
        keras_reg.Proximal.from_config({"name": "p"})


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.optimizers.SGD(0.1, momentum=1.0),
        lambda: keras.optimizers.RMSprop(0.1, momentum=1.0),
        lambda: keras.optimizers.RMSprop(0.1, momentum=1.5),
    ],
)
def test_momentum_of_one_is_refused(make):
    with pytest.raises(ValueError, match=r"momentum < 1.*infinite.*momentum=1"):
        keras_reg.Proximal(make())


def test_momentum_below_one_is_accepted():
    keras_reg.Proximal(keras.optimizers.SGD(0.1, momentum=0.99))


@pytest.mark.parametrize("cls", [keras.optimizers.Adam, keras.optimizers.SGD])
def test_ema_is_refused(cls):
    with pytest.raises(ValueError, match=r"use_ema=True.*not sparse"):
        keras_reg.Proximal(cls(use_ema=True))


# --- Keras' own names -----------------------------------------------------------------------

PAIRS = [
    (keras_reg.L1, keras.regularizers.L1, {"l1": 0.1}),
    (keras_reg.L2, keras.regularizers.L2, {"l2": 0.1}),
    (keras_reg.L1L2, keras.regularizers.L1L2, {"l1": 0.1, "l2": 0.3}),
]


@pytest.mark.parametrize("ours, theirs, config", PAIRS, ids=lambda x: getattr(x, "__name__", ""))
def test_subclasses_of_keras_own_keep_exact_configs(ours, theirs, config):
    reg = ours(**config)
    assert isinstance(reg, theirs) and isinstance(reg, keras.regularizers.Regularizer)
    assert reg.get_config() == config  # exactly 0.1, not 0.10000000149011612
    assert _as_proximal(reg) is reg
    keras_own = _as_proximal(theirs(**config))
    assert type(keras_own) is ours
    for key, value in config.items():
        assert getattr(keras_own, key) == pytest.approx(value, rel=1e-7)
    serialized = keras.saving.serialize_keras_object(reg)
    assert serialized["registered_name"] == f"keras_reg>{ours.__name__}"
    again = keras.saving.deserialize_keras_object(serialized)
    assert type(again) is ours and again.get_config() == config


def test_lower_case_aliases_are_keras_names():
    assert keras_reg.l1 is keras_reg.L1 and keras_reg.l2 is keras_reg.L2
    assert keras_reg.l1_l2 is keras_reg.L1L2
    assert {"l1", "l2", "l1_l2"} <= set(keras_reg.__all__)
    assert keras_reg.l1_l2(l1=None, l2=0.5).get_config() == {"l1": 0.0, "l2": 0.5}


def test_save_load_and_clone_keep_our_subclasses(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, kernel_regularizer=keras_reg.L1(0.1), name="a"),
            keras.layers.Dense(2, kernel_regularizer=keras_reg.L1L2(0.1, 0.2), name="b"),
        ]
    )
    model.save(tmp_path / "m.keras")
    for other in (keras.saving.load_model(tmp_path / "m.keras"), keras.models.clone_model(model)):
        regs = [layer.kernel_regularizer for layer in other.layers]
        assert [type(r) for r in regs] == [keras_reg.L1, keras_reg.L1L2]
        assert [r.get_config() for r in regs] == [{"l1": 0.1}, {"l1": 0.1, "l2": 0.2}]


def test_bogus_regularizer_name_is_named():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=re.escape("Received: regularizer='bogus'")):
        keras_reg.apply_regularizer(model, "bogus")
