"""Argument checks shared by every public class (private)."""

import math
import numbers

import numpy as np

# Weights, strengths and the strength scale are float32 on the device: a larger
# number would become inf there, and one that Python cannot even hold as a
# float (10**400) would raise OverflowError.
FLOAT32_MAX = float(np.finfo(np.float32).max)  # 3.4028234663852886e+38
# Numbers below this round to FLOAT32_MAX in float32, at or above it to inf.
_FLOAT32_OVERFLOW = 2.0**128 * (1.0 - 2.0**-25)


def check_float(value, name, owner, *, low=0.0, high=None):
    """Returns `value` as a Python float, or raises a `ValueError` naming it.

    Accepts Python ints and floats and NumPy numeric scalars. Refuses bools,
    strings, NaN, infinities, values outside `[low, high]` and values whose
    magnitude does not fit in float32 (that round to inf: above 3.4028235e+38). `-0.0` comes
    back as `0.0`.

    Args:
        value: the argument as the user passed it.
        name: the argument's name, e.g. `"l1_ratio"`.
        owner: the class or function that takes it, e.g. `"ElasticNet"`.
        low: smallest accepted value (inclusive).
        high: largest accepted value (inclusive), or `None` for no bound.
    """
    if high is None:
        expected = "a non-negative float" if low == 0.0 else f"a float >= {low}"
        expected += " that fits in float32 (at most 3.4028235e+38)"
    else:
        expected = f"a float in [{low:g}, {high:g}]"
    is_number = isinstance(value, (numbers.Real, np.integer, np.floating))
    if isinstance(value, (bool, np.bool_)) or not is_number:
        _fail(name, owner, expected, value)
    try:
        number = float(value)
    except OverflowError:  # an int beyond a double, e.g. 10**400
        _fail(name, owner, expected, value)
    out_of_range = number < low or (high is not None and number > high)
    if not math.isfinite(number) or abs(number) >= _FLOAT32_OVERFLOW or out_of_range:
        _fail(name, owner, expected, value)
    return number + 0.0  # -0.0 + 0.0 is 0.0: a config never shows -0.0


def check_int(value, name, owner):
    """Returns `value` as a Python int; refuses bools, floats and strings."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        _fail(name, owner, "an integer", value)
    return int(value)


def check_bool(value, name, owner):
    """Returns `value` if it is a bool, or raises a `ValueError` naming it."""
    if not isinstance(value, bool):
        _fail(name, owner, "a bool (True or False)", value)
    return value


def check_built_model(model, owner):
    """Refuses anything but a built `keras.Model`, naming `owner` in the message."""
    import keras  # here, not at the top: the command line imports this module without Keras

    if not isinstance(model, keras.Model):
        raise ValueError(
            f"The 'model' argument of {owner} must be a keras.Model. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            f"The 'model' argument of {owner} must be built (call it on data or give it an "
            f"Input). Received: the unbuilt model {model.name!r}"
        )


def check_config_keys(config, allowed, owner):
    """Refuses a config holding keys that `owner.__init__` does not take."""
    if not isinstance(config, dict):
        raise ValueError(
            f"The config of {owner} must be a dict. Received: config={config!r} "
            f"of type {type(config).__name__}"
        )
    unknown = [key for key in config if key not in allowed]
    if unknown:
        raise ValueError(
            f"Unknown key {unknown[0]!r} in the config of {owner}: expected keys among "
            f"{sorted(allowed)}. Received: config={config!r}"
        )


def _fail(name, owner, expected, value):
    shown = repr(value)
    if len(shown) > 80:  # 10**400 has 401 digits
        shown = f"{shown[:40]}...{shown[-10:]} ({len(shown)} characters)"
    raise ValueError(
        f"The '{name}' argument of {owner} must be {expected}. Received: {name}={shown}"
    )
