"""The proximal maps, checked against NumPy and by their optimality conditions."""

import numpy as np
import pytest

from helpers import REGULARIZERS, groups_along, numpy_penalty, reg_id
from keras_reg import prox

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 5)).astype("float32")
X4 = RNG.normal(size=(3, 3, 4, 8)).astype("float32")  # a Conv2D kernel


def test_prox_l1_is_soft_thresholding():
    t = 0.7
    y = np.asarray(prox.prox_l1(X, t))
    np.testing.assert_allclose(y, np.sign(X) * np.maximum(np.abs(X) - t, 0), atol=1e-7)
    # Optimality: 0 in y - x + t * d|y|.
    nz = y != 0
    np.testing.assert_allclose((y - X + t * np.sign(y))[nz], 0, atol=1e-6)
    assert np.all(np.abs(X[~nz]) <= t + 1e-7)
    assert (~nz).sum() > 0  # the threshold really zeroes something here


def test_prox_l1_per_coordinate_threshold():
    t = RNG.uniform(0, 1.5, size=X.shape).astype("float32")
    y = np.asarray(prox.prox_l1(X, t))
    np.testing.assert_allclose(y, np.sign(X) * np.maximum(np.abs(X) - t, 0), atol=1e-7)


def test_prox_ridge_and_elastic_net():
    np.testing.assert_allclose(np.asarray(prox.prox_ridge(X, 0.5)), X / 1.5, rtol=1e-6)
    a, b = 0.4, 0.3
    y = np.asarray(prox.prox_elastic_net(X, a, b))
    nz = y != 0
    # Optimality: 0 in y - x + a * d|y| + b * y.
    np.testing.assert_allclose((y - X + a * np.sign(y) + b * y)[nz], 0, atol=1e-6)
    assert np.all(np.abs(X[~nz]) <= a + 1e-7)


@pytest.mark.parametrize("x, axis", [(X, 0), (X, 1), (X, -1), (X4, -1), (X4, 2), (X4, 0)])
def test_prox_group_lasso_optimality(x, axis):
    groups = groups_along(x, axis)
    norms = np.linalg.norm(groups, axis=1)
    t = float(np.median(norms))  # about half of the groups vanish
    y = np.asarray(prox.prox_group_lasso(x, t, axis))
    y_groups = groups_along(y, axis)
    y_norms = np.linalg.norm(y_groups, axis=1)
    zero = y_norms == 0
    assert 0 < zero.sum() < len(zero)
    # Optimality: x_g - y_g = t * y_g / ||y_g|| for kept groups, ||x_g|| <= t for removed.
    kept = ~zero
    np.testing.assert_allclose(
        groups[kept] - y_groups[kept], t * y_groups[kept] / y_norms[kept, None], atol=1e-5
    )
    assert np.all(norms[zero] <= t + 1e-6)


def test_prox_sparse_group_lasso_optimality():
    a, b, axis = 0.3, 1.0, 1
    y = np.asarray(prox.prox_sparse_group_lasso(X, a, b, axis))
    yg, xg = groups_along(y, axis), groups_along(X, axis)
    for y_g, x_g in zip(yg, xg, strict=True):
        n = np.linalg.norm(y_g)
        if n == 0:
            # 0 in -x_g + a*[-1,1] + b*B(0,1): dist(x_g, [-a,a]^p) <= b.
            assert np.linalg.norm(np.sign(x_g) * np.maximum(np.abs(x_g) - a, 0)) <= b + 1e-6
            continue
        nz = y_g != 0
        residual = y_g - x_g + a * np.sign(y_g) + b * y_g / n
        np.testing.assert_allclose(residual[nz], 0, atol=1e-5)
        assert np.all(np.abs(x_g[~nz]) <= a + 1e-6)


def test_group_norms_gradient_is_finite_at_zero():
    from keras import ops

    from keras_reg._autodiff import gradient

    x = np.zeros((4, 3), "float32")
    x[1] = [3.0, 4.0, 0.0]
    grad = ops.convert_to_numpy(gradient(lambda v: ops.sum(prox.group_norms(v, 0)), x))
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad[1], [0.6, 0.8, 0.0])
    assert np.all(grad[[0, 2, 3]] == 0)


def test_group_axis_out_of_range_names_axis_and_shape():
    with pytest.raises(ValueError, match=r"axis.*\(6, 5\).*Received: axis=2"):
        prox.prox_group_lasso(X, 0.1, axis=2)


@pytest.mark.parametrize("reg", REGULARIZERS, ids=reg_id)
@pytest.mark.parametrize("step", [0.1, 2.0])
def test_regularizer_prox_minimizes_its_objective(reg, step):
    """prox(w, s) beats every nearby point on 1/2||y - w||^2 + s * R(y) (R in NumPy)."""
    w = RNG.normal(size=(7, 4))
    w[2] *= 0.01  # a small row, so that group maps zero it
    y = np.asarray(reg.prox(w.astype("float32"), step), dtype=np.float64)

    def objective(v):
        return 0.5 * ((v - w) ** 2).sum() + step * numpy_penalty(reg, v)

    best = objective(y)
    rng = np.random.default_rng(1)
    for scale in (1e-3, 1e-2, 1e-1, 1.0):
        for _ in range(50):
            assert best <= objective(y + scale * rng.normal(size=w.shape)) + 1e-6
    # And every coordinate-wise or group-wise zeroing is no better.
    assert best <= objective(np.zeros_like(w)) + 1e-6
