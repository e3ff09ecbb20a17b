"""Weight penalties that plug into `kernel_regularizer=` and know their proximal map.

Every class here is a `keras.regularizers.Regularizer`: calling it on a tensor
returns the penalty (float32, or float64 for float64 weights, also under mixed
precision); `prox(w, step)` returns `argmin_y 1/2 ||y - w||^2 + step * R(y)`,
the step `keras_reg.Proximal` takes instead of descending the penalty's
gradient. `get_config()` returns exactly the constructor arguments as plain
Python values, and each class is registered as `"keras_reg>Name"`.

`L1`, `L2` and `L1L2` are subclasses of Keras' own classes of the same names
(`isinstance(keras_reg.L1(0.1), keras.regularizers.L1)` holds), and `l1`,
`l2`, `l1_l2` are their aliases, as in `keras.regularizers`.
"""

import inspect
import math

import keras
from keras import ops

from keras_reg import prox as _prox
from keras_reg._validation import check_config_keys, check_float, check_int

__all__ = [
    "L1",
    "L2",
    "L1L2",
    "ElasticNet",
    "GroupLasso",
    "SparseGroupLasso",
    "l1",
    "l2",
    "l1_l2",
]


def _penalty_input(x):
    """Weights or activations in at least float32, so the penalty is float32."""
    x = ops.convert_to_tensor(x)
    if keras.backend.standardize_dtype(x.dtype) in ("float16", "bfloat16"):
        x = ops.cast(x, "float32")
    return x


def _l1(x):
    return ops.sum(ops.abs(x))


def _sq(x):
    return ops.sum(ops.square(x))


def _abs_gradient(x):
    """d|x|/dx as the backend's autodiff takes it: its convention at exactly zero.

    TensorFlow and PyTorch differentiate `abs` as `sign(x)` (0 at 0). JAX as
    `x >= 0 ? 1 : -1` (1 at 0 and at -0.0). `Proximal` subtracts this from the
    gradient Keras computed, so it must be exactly what the autodiff put in.
    """
    if keras.backend.backend() == "jax":
        one = ops.ones_like(x)
        return ops.where(x >= 0, one, -one)
    return ops.sign(x)


def _group_gradient(x, axis, coefficient):
    """`coefficient * x_g / ||x_g||` per group, 0 in an all-zero group (see `group_norms`)."""
    other = _prox._other_axes(x, axis)  # validates the axis
    squares = ops.sum(ops.square(x), axis=other, keepdims=True)
    positive = squares > 0
    safe = ops.where(positive, squares, ops.ones_like(squares))
    factor = ops.where(positive, coefficient / ops.sqrt(safe), ops.zeros_like(squares))
    return x * factor


_CLOSED_FORM = {}  # class -> whether its `_gradient` is the gradient of its penalty


class _Regularizer(keras.regularizers.Regularizer):
    """Shared behaviour: strict `from_config`, plain-float `get_config`, repr."""

    @classmethod
    def _param_names(cls):
        params = inspect.signature(cls.__init__).parameters
        return tuple(name for name in params if name != "self")

    def get_config(self):
        return {name: getattr(self, name) for name in self._param_names()}

    @classmethod
    def from_config(cls, config):
        check_config_keys(config, cls._param_names(), cls.__name__)
        return cls(**config)

    # The strength scale (StrengthScheduler): None until a scale is first set, so
    # that a regularizer nobody schedules reads no variable.
    _scale = None

    @property
    def scale(self):
        """The factor on the penalty and its proximal step, 1.0 unless scheduled."""
        if self._scale is None:
            return 1.0
        return float(ops.convert_to_numpy(self._scale))

    def set_scale(self, value):
        """Multiplies the penalty and the proximal step by `value` from now on.

        The factor lives in a `keras.Variable`, so a train step compiled before
        the change reads the new value (TensorFlow, PyTorch; under JAX, when
        `StrengthScheduler` sets it, which makes it state of the compiled step).
        It is training state: `get_config()` keeps the base strengths only.
        """
        value = check_float(value, "scale", f"{type(self).__name__}.set_scale")
        if self._scale is None:
            self._scale = keras.Variable(
                value, dtype="float32", trainable=False, name="keras_reg_scale"
            )
        else:
            self._scale.assign(value)

    def _scaled(self, value):
        if self._scale is None:
            return value
        return value * ops.cast(self._scale, value.dtype)

    def _coefficient(self, value, x):
        """A strength as a scalar of `x`'s dtype, times the scale: the factor autodiff uses."""
        value = ops.cast(value, x.dtype)
        if self._scale is None:
            return value
        return value * ops.cast(self._scale, x.dtype)

    def __call__(self, x):
        return self._scaled(self.penalty(_penalty_input(x)))

    def gradient(self, x):
        """The gradient of `self(x)` with respect to `x`, in closed form.

        The (sub)gradient the backend's autodiff computes for the same penalty,
        its conventions at exactly-zero weights included (`abs` at 0: 0 on
        TensorFlow and PyTorch, 1 on JAX; an all-zero group: 0), so that
        `Proximal` can take exactly that gradient out of the one Keras
        computed. A subclass that redefines the penalty without its gradient
        gets the backend's autodiff instead.

        Args:
            x: the weights, a tensor.

        Returns:
            A tensor of the shape and dtype of `x`.
        """
        x = ops.convert_to_tensor(x)
        if not self._has_closed_form_gradient():
            from keras_reg._autodiff import gradient

            return gradient(self, x)
        return ops.cast(self._gradient(_penalty_input(x)), x.dtype)

    @classmethod
    def _has_closed_form_gradient(cls):
        """Whether the class that wrote `_gradient` also wrote the penalty in force."""
        known = _CLOSED_FORM.get(cls)
        if known is None:

            def owner(name):
                return next((k for k in cls.__mro__ if name in vars(k)), None)

            writer = owner("_gradient")
            known = writer not in (None, _Regularizer) and all(
                issubclass(writer, owner(name)) for name in ("penalty", "__call__")
            )
            _CLOSED_FORM[cls] = known  # PyTorch runs this every step: once per class
        return known

    def _gradient(self, x):
        """The scaled penalty's gradient at a float32/float64 tensor `x`."""
        raise NotImplementedError  # pragma: no cover - every subclass defines it

    def penalty(self, x):
        """The unscaled penalty of a float tensor `x`."""
        raise NotImplementedError  # pragma: no cover - every subclass defines it

    def prox(self, x, step):
        """The proximal map `argmin_y 1/2 ||y - x||^2 + step * R(y)`.

        Args:
            x: the weights, a tensor.
            step: the step size, a non-negative scalar or a tensor that
                broadcasts against `x` (one step per coordinate).

        Returns:
            A tensor of the shape and dtype of `x`.
        """
        x = ops.convert_to_tensor(x)
        step = ops.cast(step, x.dtype)
        return self._prox(x, self._scaled(step))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_reg")
class L1(_Regularizer, keras.regularizers.L1):
    """L1 penalty: `l1 * sum(|w|)`, the same penalty as `keras.regularizers.L1`.

    Its proximal map is soft-thresholding, `sign(w) * max(|w| - step * l1, 0)`,
    which sets weights to exactly zero when training with `keras_reg.Proximal`.
    A drop-in replacement for Keras' own class whose config keeps the number
    exactly as given (`L1(0.1).get_config() == {"l1": 0.1}`).

    Args:
        l1: non-negative float, the strength. Defaults to `0.01`.

    Examples:
        >>> layer = keras.layers.Dense(64, kernel_regularizer=keras_reg.L1(0.01))
        >>> w = np.array([[1.0, -2.0], [0.0, 3.0]], "float32")
        >>> round(float(keras_reg.L1(0.01)(w)), 6)  # 0.01 * (1 + 2 + 0 + 3)
        0.06

    References:
        Tibshirani, "Regression Shrinkage and Selection via the Lasso",
        JRSS B 58(1), 1996.
    """

    def __init__(self, l1=0.01):
        self.l1 = check_float(l1, "l1", "L1")

    def penalty(self, x):
        return ops.cast(self.l1, x.dtype) * _l1(x)

    def _prox(self, x, step):
        return _prox.prox_l1(x, step * self.l1)

    def _gradient(self, x):
        return self._coefficient(self.l1, x) * _abs_gradient(x)


@keras.saving.register_keras_serializable(package="keras_reg")
class L2(_Regularizer, keras.regularizers.L2):
    """L2 penalty: `l2 * sum(w^2)` (no 1/2, as in `keras.regularizers.L2`).

    Its proximal map is the shrinkage `w / (1 + 2 * step * l2)`: weights get
    smaller, never exactly zero.

    Args:
        l2: non-negative float, the strength. Defaults to `0.01`.

    Examples:
        >>> layer = keras.layers.Dense(64, kernel_regularizer=keras_reg.L2(0.01))
        >>> w = np.array([[1.0, -2.0], [0.0, 3.0]], "float32")
        >>> round(float(keras_reg.L2(0.01)(w)), 6)  # 0.01 * (1 + 4 + 0 + 9), no 1/2
        0.14
    """

    def __init__(self, l2=0.01):
        self.l2 = check_float(l2, "l2", "L2")

    def penalty(self, x):
        return ops.cast(self.l2, x.dtype) * _sq(x)

    def _prox(self, x, step):
        return _prox.prox_ridge(x, 2.0 * step * self.l2)

    def _gradient(self, x):
        # d(c * sum x^2) = 2c * x; doubling is exact in floating point.
        return (2.0 * self._coefficient(self.l2, x)) * x


@keras.saving.register_keras_serializable(package="keras_reg")
class L1L2(_Regularizer, keras.regularizers.L1L2):
    """L1 and L2 penalties together: `l1 * sum(|w|) + l2 * sum(w^2)`.

    The same penalty as `keras.regularizers.L1L2`. Proximal map:
    `soft_threshold(w, step * l1) / (1 + 2 * step * l2)`.

    Args:
        l1: non-negative float. Defaults to `0.0`. `None` means `0.0`, as in
            Keras.
        l2: non-negative float. Defaults to `0.0`. `None` means `0.0`.

    Examples:
        >>> layer = keras.layers.Dense(64, kernel_regularizer=keras_reg.L1L2(l1=1e-4, l2=1e-3))
        >>> w = np.array([[1.0, -2.0], [0.0, 3.0]], "float32")
        >>> round(float(keras_reg.L1L2(l1=0.01, l2=0.01)(w)), 6)  # 0.01 * 6 + 0.01 * 14
        0.2
    """

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = check_float(0.0 if l1 is None else l1, "l1", "L1L2")
        self.l2 = check_float(0.0 if l2 is None else l2, "l2", "L1L2")

    def penalty(self, x):
        total = ops.zeros((), dtype=x.dtype)
        if self.l1:
            total = total + ops.cast(self.l1, x.dtype) * _l1(x)
        if self.l2:
            total = total + ops.cast(self.l2, x.dtype) * _sq(x)
        return total

    def _prox(self, x, step):
        return _prox.prox_elastic_net(x, step * self.l1, 2.0 * step * self.l2)

    def _gradient(self, x):
        return _l1_l2_gradient(self, x, self.l1, self.l2)


@keras.saving.register_keras_serializable(package="keras_reg")
class ElasticNet(_Regularizer):
    """Elastic-net penalty in scikit-learn's parameterization.

    `alpha * (l1_ratio * sum(|w|) + 1/2 * (1 - l1_ratio) * sum(w^2))`

    Note the 1/2 on the squared term, as in `sklearn.linear_model.ElasticNet`;
    `l1_ratio=1` is `L1(alpha)`, `l1_ratio=0` is `L2(alpha / 2)`. A Dense(1)
    model trained on `loss="mse"` with `ElasticNet(A, r)` minimizes twice
    scikit-learn's objective for `ElasticNet(alpha=A / 2, l1_ratio=r)`.
    Proximal map: `soft_threshold(w, step*alpha*l1_ratio) / (1 + step*alpha*(1 - l1_ratio))`.

    Args:
        alpha: non-negative float, the overall strength. Defaults to `0.01`.
        l1_ratio: float in [0, 1], the share of the L1 term. Defaults to `0.5`.

    Examples:
        >>> layer = keras.layers.Dense(
        ...     32, kernel_regularizer=keras_reg.ElasticNet(alpha=0.01, l1_ratio=0.5))
        >>> w = np.array([[1.0, -2.0], [0.0, 3.0]], "float32")
        >>> round(float(keras_reg.ElasticNet(alpha=0.1, l1_ratio=0.5)(w)), 6)  # 0.1 * (3 + 3.5)
        0.65

    References:
        Zou & Hastie, "Regularization and variable selection via the elastic
        net", JRSS B 67(2), 2005.
    """

    def __init__(self, alpha=0.01, l1_ratio=0.5):
        self.alpha = check_float(alpha, "alpha", "ElasticNet")
        self.l1_ratio = check_float(l1_ratio, "l1_ratio", "ElasticNet", high=1.0)

    def penalty(self, x):
        total = ops.zeros((), dtype=x.dtype)
        if self.alpha * self.l1_ratio:
            total = total + ops.cast(self.alpha * self.l1_ratio, x.dtype) * _l1(x)
        if self.alpha * (1.0 - self.l1_ratio):
            total = total + ops.cast(0.5 * self.alpha * (1.0 - self.l1_ratio), x.dtype) * _sq(x)
        return total

    def _prox(self, x, step):
        return _prox.prox_elastic_net(
            x, step * self.alpha * self.l1_ratio, step * self.alpha * (1.0 - self.l1_ratio)
        )

    def _gradient(self, x):
        return _l1_l2_gradient(
            self, x, self.alpha * self.l1_ratio, 0.5 * self.alpha * (1.0 - self.l1_ratio)
        )


def _l1_l2_gradient(reg, x, l1, l2):
    """Gradient of `l1 * sum|x| + l2 * sum x^2` (terms with a zero strength are absent)."""
    grad = None
    if l1:
        grad = reg._coefficient(l1, x) * _abs_gradient(x)
    if l2:
        ridge = (2.0 * reg._coefficient(l2, x)) * x
        grad = ridge if grad is None else grad + ridge
    return ops.zeros_like(x) if grad is None else grad


class _GroupRegularizer(_Regularizer):
    """Groups are the slices along `axis`: `w[i]` along that axis is group `i`."""

    def _sqrt_group_size(self, x):
        """sqrt(p_g): static when the shape is known, else read at run time."""
        rank = len(x.shape)
        others = [x.shape[a] for a in range(rank) if a != self.axis % max(rank, 1)]
        if all(dim is not None for dim in others):
            return math.sqrt(math.prod(others))
        shape = ops.shape(x)
        size = 1.0
        for a in range(rank):
            if a != self.axis % rank:
                size = size * ops.cast(shape[a], x.dtype)
        return ops.sqrt(size)

    def _weighted_group_norms(self, x):
        norms = _prox.group_norms(x, self.axis)  # validates the axis first
        return self._sqrt_group_size(x) * ops.sum(norms)

    def _group_step(self, x, step):
        """One step per group: the harmonic mean of a per-coordinate step.

        The group map has no closed form for unequal steps. The harmonic mean
        is robust to the huge steps of coordinates without gradient (about
        `lr / epsilon` under Adam), which an arithmetic mean would let zero the
        whole group; for Adam it is the step of the group's mean `sqrt(v)`.
        """
        step = ops.convert_to_tensor(step)
        if len(step.shape) == 0:
            return step
        x = ops.convert_to_tensor(x)
        step = ops.broadcast_to(ops.cast(step, x.dtype), x.shape)
        other = tuple(a for a in range(len(x.shape)) if a != self.axis % len(x.shape))
        tiny = ops.cast(1e-30, x.dtype)
        return 1.0 / ops.mean(1.0 / ops.maximum(step, tiny), axis=other, keepdims=True)


@keras.saving.register_keras_serializable(package="keras_reg")
class GroupLasso(_GroupRegularizer):
    """Group lasso: `strength * sum_g sqrt(p_g) * ||w_g||_2`.

    One group `g` per index along `axis`, `p_g` its number of elements (Yuan &
    Lin's weighting). `axis=-1` groups each output unit of a Dense kernel or
    each filter of a Conv kernel; `axis=0` each input feature (row) of a Dense
    kernel, for feature selection; `axis=2` the input channels of a Conv2D
    kernel. Its proximal map, block soft-thresholding, zeroes whole groups:
    `w_g * max(0, 1 - step * strength * sqrt(p_g) / ||w_g||_2)`.

    A per-coordinate step (adaptive optimizers) becomes one step per group, the
    harmonic mean of its coordinates' steps, since the group map has no closed
    form for unequal steps.

    Args:
        strength: non-negative float. Defaults to `0.01`.
        axis: integer, the axis whose indices are the groups. Defaults to `-1`.
            Checked against the weight when the penalty is first computed.

    Examples:
        >>> layer = keras.layers.Dense(
        ...     64, kernel_regularizer=keras_reg.GroupLasso(0.01, axis=0))
        >>> w = np.array([[1.0, -2.0], [0.0, 3.0]], "float32")
        >>> reg = keras_reg.GroupLasso(0.1, axis=0)  # two groups: the rows [1, -2] and [0, 3]
        >>> round(float(reg(w)), 4)  # 0.1 * sqrt(2) * (sqrt(5) + 3)
        0.7405

    References:
        Yuan & Lin, "Model selection and estimation in regression with grouped
        variables", JRSS B 68(1), 2006.
        Wen et al., "Learning Structured Sparsity in Deep Neural Networks",
        NeurIPS 2016.
        Scardapane et al., "Group sparse regularization for deep neural
        networks", Neurocomputing 241, 2017.
    """

    def __init__(self, strength=0.01, axis=-1):
        self.strength = check_float(strength, "strength", "GroupLasso")
        self.axis = check_int(axis, "axis", "GroupLasso")

    def penalty(self, x):
        return ops.cast(self.strength, x.dtype) * self._weighted_group_norms(x)

    def _prox(self, x, step):
        x = ops.convert_to_tensor(x)
        weight = self.strength * self._sqrt_group_size(x)
        return _prox.prox_group_lasso(x, self._group_step(x, step) * weight, self.axis)

    def _gradient(self, x):
        coefficient = self._coefficient(self.strength, x) * self._sqrt_group_size(x)
        return _group_gradient(x, self.axis, coefficient)


@keras.saving.register_keras_serializable(package="keras_reg")
class SparseGroupLasso(_GroupRegularizer):
    """Sparse group lasso: single weights and whole groups at once.

    `strength * (l1_ratio * sum|w| + (1 - l1_ratio) * sum_g sqrt(p_g) ||w_g||_2)`

    Zeroes single weights and whole groups. Its proximal map soft-thresholds by
    `step * strength * l1_ratio`, then applies the group step with strength
    `step * strength * (1 - l1_ratio)`. Groups are the slices along `axis`, as
    in `GroupLasso`.

    Args:
        strength: non-negative float. Defaults to `0.01`.
        l1_ratio: float in [0, 1], the share of the L1 term. Defaults to `0.5`.
        axis: integer, the axis whose indices are the groups. Defaults to `-1`.

    Examples:
        >>> layer = keras.layers.Conv2D(
        ...     16, 3, kernel_regularizer=keras_reg.SparseGroupLasso(1e-3, 0.5, axis=-1))
        >>> w = np.array([[1.0, -2.0], [0.0, 3.0]], "float32")
        >>> reg = keras_reg.SparseGroupLasso(0.1, l1_ratio=0.5, axis=-1)  # columns as groups
        >>> round(float(reg(w)), 4)  # 0.1 * (0.5 * 6 + 0.5 * sqrt(2) * (1 + sqrt(13)))
        0.6257

    References:
        Simon, Friedman, Hastie & Tibshirani, "A Sparse-Group Lasso", JCGS
        22(2), 2013.
    """

    def __init__(self, strength=0.01, l1_ratio=0.5, axis=-1):
        self.strength = check_float(strength, "strength", "SparseGroupLasso")
        self.l1_ratio = check_float(l1_ratio, "l1_ratio", "SparseGroupLasso", high=1.0)
        self.axis = check_int(axis, "axis", "SparseGroupLasso")

    def penalty(self, x):
        l1 = ops.cast(self.strength * self.l1_ratio, x.dtype) * _l1(x)
        group = ops.cast(self.strength * (1.0 - self.l1_ratio), x.dtype)
        return l1 + group * self._weighted_group_norms(x)

    def _prox(self, x, step):
        x = ops.convert_to_tensor(x)
        group_weight = self.strength * (1.0 - self.l1_ratio) * self._sqrt_group_size(x)
        return _prox.prox_sparse_group_lasso(
            x,
            step * (self.strength * self.l1_ratio),
            self._group_step(x, step) * group_weight,
            self.axis,
        )

    def _gradient(self, x):
        group = self._coefficient(self.strength * (1.0 - self.l1_ratio), x)
        grad = _group_gradient(x, self.axis, group * self._sqrt_group_size(x))
        return self._coefficient(self.strength * self.l1_ratio, x) * _abs_gradient(x) + grad


# The lower-case aliases `keras.regularizers` has.
l1 = L1
l2 = L2
l1_l2 = L1L2
