"""Proximal maps: pure functions of a tensor and a threshold.

`prox_f(x, t)` is the point `argmin_y 1/2 ||y - x||^2 + t * f(y)`: the step
that replaces a (sub)gradient step on a penalty `f`. Every function here takes
the tensor first and its threshold(s) next; a threshold is a non-negative
scalar or a tensor that broadcasts against `x` (one step size per coordinate,
as adaptive optimizers take). They use `keras.ops` only, so they run on every
backend, inside or outside a compiled function.

References:
    Parikh & Boyd, "Proximal Algorithms", Foundations and Trends in
    Optimization 1(3), 2014. jaxopt's `jaxopt.prox` module uses the same
    layout.
"""

from keras import ops

__all__ = [
    "group_norms",
    "prox_elastic_net",
    "prox_group_lasso",
    "prox_l1",
    "prox_ridge",
    "prox_sparse_group_lasso",
]


def _as(value, x):
    return ops.cast(value, x.dtype)


def prox_l1(x, threshold):
    """Soft-thresholding: the proximal map of the L1 norm.

    `prox_l1(x, t) = argmin_y 1/2 ||y - x||^2 + t * ||y||_1
                   = sign(x) * max(|x| - t, 0)`.

    Coordinates with `|x| <= t` come out exactly zero.

    Args:
        x: tensor.
        threshold: `t >= 0`, a scalar or a tensor broadcastable to `x`.

    Examples:
        >>> y = keras_reg.prox.prox_l1(np.array([-2.0, 0.5, 3.0]), 1.0)
        >>> keras.ops.convert_to_numpy(y).tolist()
        [-1.0, 0.0, 2.0]
    """
    x = ops.convert_to_tensor(x)
    threshold = _as(threshold, x)
    # x - clip(x, -t, t) is sign(x) * max(|x| - t, 0), bit for bit, in fewer passes.
    return x - ops.clip(x, -threshold, threshold)


def prox_ridge(x, threshold):
    """Proximal map of the halved squared L2 norm (ridge).

    `prox_ridge(x, t) = argmin_y 1/2 ||y - x||^2 + t/2 * ||y||_2^2
                      = x / (1 + t)`.

    Note the 1/2 in the penalty (jaxopt's convention). Keras' `L2(l2)` penalty
    `l2 * sum(w^2)` has no 1/2, so its map at step `s` is
    `prox_ridge(x, 2 * s * l2)`.

    Args:
        x: tensor.
        threshold: `t >= 0`, a scalar or a tensor broadcastable to `x`.
    """
    x = ops.convert_to_tensor(x)
    return x / (1.0 + _as(threshold, x))


def prox_elastic_net(x, l1_threshold, l2_threshold):
    """Proximal map of the elastic-net penalty.

    `prox_elastic_net(x, a, b) = argmin_y 1/2 ||y - x||^2 + a ||y||_1 + b/2 ||y||_2^2
                               = prox_l1(x, a) / (1 + b)`.

    Args:
        x: tensor.
        l1_threshold: `a >= 0`, scalar or tensor broadcastable to `x`.
        l2_threshold: `b >= 0`, scalar or tensor broadcastable to `x`.
    """
    return prox_ridge(prox_l1(x, l1_threshold), l2_threshold)


def _other_axes(x, axis):
    rank = len(x.shape)
    if rank == 0:
        raise ValueError(
            "The 'axis' argument must be a valid axis of the weight, but a scalar weight "
            f"(shape ()) has no axis to form groups along. Received: axis={axis}"
        )
    if not -rank <= axis < rank:
        raise ValueError(
            f"The 'axis' argument must be a valid axis of the weight: expected an integer in "
            f"[{-rank}, {rank - 1}] for a weight of shape {tuple(x.shape)}. Received: axis={axis}"
        )
    axis = axis % rank
    return tuple(a for a in range(rank) if a != axis)


def group_norms(x, axis):
    """Euclidean norm of each group: one group per index along `axis`.

    Returns a tensor of the shape of `x` with every axis but `axis` reduced to
    size 1 (keepdims), so it broadcasts back against `x`. The gradient at an
    all-zero group is zero, not NaN, so a penalty built on it can be trained
    through groups that a proximal step set to exactly zero.

    Args:
        x: tensor of rank >= 1.
        axis: the axis whose indices name the groups, e.g. `0` for the rows
            (input features) of a Dense kernel, `-1` for its columns (units).
    """
    x = ops.convert_to_tensor(x)
    squares = ops.sum(ops.square(x), axis=_other_axes(x, axis), keepdims=True)
    positive = squares > 0
    # sqrt has an infinite derivative at 0: feed it 1 there and mask the result.
    safe = ops.where(positive, squares, ops.ones_like(squares))
    return ops.where(positive, ops.sqrt(safe), ops.zeros_like(squares))


def prox_group_lasso(x, threshold, axis):
    """Block soft-thresholding: the proximal map of a sum of group norms.

    `prox_group_lasso(x, t, axis) = argmin_y 1/2 ||y - x||^2 + sum_g t_g ||y_g||_2`,
    with one group `g` per index along `axis`; the solution is
    `y_g = x_g * max(0, 1 - t_g / ||x_g||_2)`. Groups with `||x_g|| <= t_g`
    come out exactly zero, as a whole.

    Args:
        x: tensor.
        threshold: `t >= 0`, a scalar or a tensor that broadcasts against the
            group norms (shape of `x` with every axis but `axis` of size 1).
        axis: the axis whose indices name the groups.
    """
    x = ops.convert_to_tensor(x)
    norms = group_norms(x, axis)
    tiny = ops.cast(ops.convert_to_tensor(1e-30), x.dtype)
    shrink = ops.relu(1.0 - _as(threshold, x) / ops.maximum(norms, tiny))
    return x * shrink


def prox_sparse_group_lasso(x, l1_threshold, group_threshold, axis):
    """Proximal map of the sparse group lasso.

    `argmin_y 1/2 ||y - x||^2 + a ||y||_1 + sum_g b_g ||y_g||_2
    = prox_group_lasso(prox_l1(x, a), b, axis)`: soft-threshold each
    coordinate, then shrink each group (Friedman, Hastie & Tibshirani, "A note
    on the group lasso and a sparse group lasso", 2010).

    Args:
        x: tensor.
        l1_threshold: `a >= 0`, scalar or tensor broadcastable to `x`.
        group_threshold: `b >= 0`, scalar or tensor broadcastable to the group
            norms.
        axis: the axis whose indices name the groups.
    """
    return prox_group_lasso(prox_l1(x, l1_threshold), group_threshold, axis)
