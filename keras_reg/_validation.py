"""Argument checks shared by every public class (private)."""

import math
import numbers

import numpy as np


def check_float(value, name, owner, *, low=0.0, high=None):
    """Returns `value` as a Python float, or raises a `ValueError` naming it.

    Accepts Python ints and floats and NumPy numeric scalars. Refuses bools,
    strings, NaN, infinities and values outside `[low, high]`.

    Args:
        value: the argument as the user passed it.
        name: the argument's name, e.g. `"l1_ratio"`.
        owner: the class or function that takes it, e.g. `"ElasticNet"`.
        low: smallest accepted value (inclusive).
        high: largest accepted value (inclusive), or `None` for no bound.
    """
    if high is None:
        expected = "a non-negative float" if low == 0.0 else f"a float >= {low}"
    else:
        expected = f"a float in [{low:g}, {high:g}]"
    is_number = isinstance(value, (numbers.Real, np.integer, np.floating))
    if isinstance(value, (bool, np.bool_)) or not is_number:
        _fail(name, owner, expected, value)
    value = float(value)
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        _fail(name, owner, expected, value)
    return value


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
    raise ValueError(
        f"The '{name}' argument of {owner} must be {expected}. Received: {name}={value!r}"
    )
