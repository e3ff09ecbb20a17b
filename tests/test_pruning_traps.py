"""Pruning traps (issue #23, items 10-12): what prune_low_magnitude, shrink and the schedules
must not do silently. Each test checks against NumPy or the model's own outputs."""

import os
import re
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import keras_reg
from helpers import to_numpy
from keras_reg.pruning import PruneLowMagnitude, pruned_weights

BACKEND = keras.backend.backend()
RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 12)).astype("float32")
Y = (X[:, :3].sum(axis=1) > 0).astype("int32")
DOCS = os.path.join(os.path.dirname(__file__), os.pardir, "docs")

# --- 12c: step arguments fit the int32 step arithmetic ------------------------------


def tfmot_should_prune(step, begin, end, frequency):
    in_range = step >= begin and (step <= end or end < 0)
    return in_range and (step - begin) % frequency == 0


def last_pruning_step(step, begin, end, frequency):
    """Brute force over the last `frequency` steps (a pruning step is never further back)."""
    for s in range(step, max(step - frequency, 0), -1):
        if tfmot_should_prune(s, begin, end, frequency) or s == end:
            return s
    return None


@pytest.mark.parametrize(
    "make,message",
    [
        (
            lambda: keras_reg.ConstantSparsity(0.5, begin_step=2**31),
            "The 'begin_step' argument of ConstantSparsity must be an integer in "
            "[0, 2**31 - 1 = 2147483647] (the steps are int32). Received: begin_step=2147483648",
        ),
        (
            lambda: keras_reg.PolynomialDecay(0.0, 0.5, begin_step=2**40, end_step=2**41),
            "The 'begin_step' argument of PolynomialDecay must be an integer in "
            "[0, 2**31 - 1 = 2147483647] (the steps are int32). Received: begin_step=1099511627776",
        ),
        (
            lambda: keras_reg.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=2**31),
            "The 'end_step' argument of PolynomialDecay must be an integer <= 2**31 - 1 = "
            "2147483647 (int32). Received: end_step=2147483648",
        ),
        (
            lambda: keras_reg.ConstantSparsity(0.5, 0, end_step=2**32),
            "The 'end_step' argument of ConstantSparsity must be an integer <= 2**31 - 1 = "
            "2147483647 (int32). Received: end_step=4294967296",
        ),
        (
            lambda: keras_reg.ConstantSparsity(0.5, 0, frequency=2**31),
            "The 'frequency' argument of ConstantSparsity must be an integer in "
            "[1, 2**31 - 1 = 2147483647] (int32). Received: frequency=2147483648",
        ),
    ],
)
def test_step_arguments_beyond_int32_are_refused(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert str(error.value) == message


@pytest.mark.parametrize(
    "begin,end,frequency",
    [(2**31 - 20, -1, 7), (2**31 - 40, 2**31 - 3, 6), (5, -1, 2**31 - 1), (0, 2**31 - 1, 9)],
)
def test_schedules_at_the_int32_limit_follow_tfmot_rule(begin, end, frequency):
    schedule = keras_reg.ConstantSparsity(0.5, begin, end_step=end, frequency=frequency)
    for step in [1, 6, 2**30, *range(2**31 - 45, 2**31)]:
        last = last_pruning_step(step, begin, end, frequency)
        assert float(schedule.target(step)) == (0.0 if last is None else 0.5), step
        should = tfmot_should_prune(step, begin, end, frequency) or step == end
        assert bool(schedule.should_prune(step)) == should, step
    if end == 2**31 - 1:
        poly = keras_reg.PolynomialDecay(0.0, 0.8, begin, end, frequency=frequency)
        np.testing.assert_allclose(float(poly.target(2**31 - 1)), 0.8, rtol=1e-7)
        np.testing.assert_allclose(float(poly.sparsity(2**30)), 0.8 * (1 - 0.5**3), rtol=1e-6)
