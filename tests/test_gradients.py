"""Closed-form penalty gradients: exactly what the backend's autodiff puts into Keras' gradient.

`Proximal` takes each penalty's gradient out of the gradient Keras computed; it
uses the regularizer's closed form, so that form must agree with the backend's
autodiff everywhere, its conventions at exactly-zero weights included (the
derivative of `abs` at 0 is 0 on TensorFlow and PyTorch and 1 on JAX; an
all-zero group has gradient 0).
"""

import keras
import numpy as np
import pytest

import keras_reg
from helpers import REGULARIZERS, groups_along, reg_id, to_numpy
from keras_reg._autodiff import gradient as autodiff_gradient

RNG = np.random.default_rng(0)


def weights_with_zeros(dtype="float32"):
    """Random weights with exact zeros, a -0.0, an all-zero row and an all-zero column."""
    w = RNG.normal(size=(6, 5))
    w[RNG.random(w.shape) < 0.3] = 0.0
    w[2, :] = 0.0  # an all-zero group for axis=0
    w[:, 3] = 0.0  # and for axis=-1
    w[0, 0] = -0.0
    return w.astype(dtype)


def scheduled(reg, scale):
    reg = type(reg).from_config(reg.get_config())
    reg.set_scale(scale)
    return reg


CASES = [*REGULARIZERS, keras_reg.GroupLasso(0.06, axis=-1), scheduled(REGULARIZERS[0], 0.3)]
CASE_IDS = [reg_id(r) for r in REGULARIZERS] + ["GroupLasso-axis-1", "L1-scaled"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("reg", CASES, ids=CASE_IDS)
def test_closed_form_equals_backend_autodiff_with_exact_zeros(reg, dtype):
    w = keras.ops.convert_to_tensor(weights_with_zeros(dtype))
    dtype = keras.backend.standardize_dtype(w.dtype)  # JAX without x64 makes float32
    ours = to_numpy(reg.gradient(w))
    theirs = to_numpy(autodiff_gradient(reg, w))
    assert ours.dtype == theirs.dtype == np.dtype(dtype)
    # Bit for bit at the zeros (where the backends' conventions live), to rounding elsewhere.
    zero = to_numpy(w) == 0
    np.testing.assert_array_equal(ours[zero], theirs[zero])
    np.testing.assert_allclose(ours, theirs, rtol=1e-6 if dtype == "float32" else 1e-12, atol=0)


def numpy_gradient(reg, w):
    """The penalties' gradients away from zero, differentiated by hand, in NumPy."""
    name = type(reg).__name__
    scale = reg.scale
    if name == "L1":
        return scale * reg.l1 * np.sign(w)
    if name == "L2":
        return scale * 2 * reg.l2 * w
    if name == "L1L2":
        return scale * (reg.l1 * np.sign(w) + 2 * reg.l2 * w)
    if name == "ElasticNet":
        r = reg.l1_ratio
        return scale * reg.alpha * (r * np.sign(w) + (1 - r) * w)
    g = np.moveaxis(w, reg.axis, 0)
    flat = groups_along(w, reg.axis)
    norms = np.linalg.norm(flat, axis=1).reshape((-1,) + (1,) * (g.ndim - 1))
    group = np.moveaxis(np.sqrt(flat.shape[1]) * g / norms, 0, reg.axis)
    if name == "GroupLasso":
        return scale * reg.strength * group
    r = reg.l1_ratio
    return scale * reg.strength * (r * np.sign(w) + (1 - r) * group)


@pytest.mark.parametrize("reg", CASES, ids=CASE_IDS)
def test_closed_form_matches_numpy_away_from_zero(reg):
    w = RNG.normal(size=(6, 5))
    ours = to_numpy(reg.gradient(keras.ops.convert_to_tensor(w.astype("float32"))))
    np.testing.assert_allclose(ours, numpy_gradient(reg, w), rtol=1e-5, atol=1e-7)


@pytest.mark.keras_behaviour
def test_abs_at_zero_follows_the_backend_convention():
    """Where the backends differ: d|x|/dx at 0 (a fact about the backends, checked here)."""
    w = keras.ops.convert_to_tensor(np.array([0.0, -0.0, 1.0, -1.0], "float32"))
    at_zero = {"jax": 1.0}.get(keras.backend.backend(), 0.0)
    expected = np.array([at_zero, at_zero, 1.0, -1.0], "float32")
    np.testing.assert_array_equal(to_numpy(autodiff_gradient(keras_reg.L1(1.0), w)), expected)
    np.testing.assert_array_equal(to_numpy(keras_reg.L1(1.0).gradient(w)), expected)


def test_half_precision_input_gives_a_gradient_of_its_dtype():
    w = keras.ops.convert_to_tensor(weights_with_zeros("float16"))
    reg = keras_reg.ElasticNet(0.04, 0.3)
    ours = to_numpy(reg.gradient(w))
    assert ours.dtype == np.float16
    np.testing.assert_array_equal(ours, to_numpy(autodiff_gradient(reg, w)))


def test_subclass_with_its_own_penalty_gets_autodiff():
    class Cubed(keras_reg.L1):
        def penalty(self, x):
            return keras.ops.sum(keras.ops.abs(x) ** 3)

    w = RNG.normal(size=(4, 3)).astype("float32")
    ours = to_numpy(Cubed(0.5).gradient(keras.ops.convert_to_tensor(w)))
    np.testing.assert_allclose(ours, 3 * w * np.abs(w), rtol=1e-5)


def test_bad_axis_is_named_by_the_gradient_too():
    with pytest.raises(ValueError, match="'axis' argument"):
        keras_reg.GroupLasso(0.1, axis=4).gradient(keras.ops.ones((3, 3)))
