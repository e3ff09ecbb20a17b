"""The largest useful strength, and the regularization path from it down.

`max_strength(model, x, y)` is the L1 strength from which penalized weights at
zero stay at zero under proximal training; `regularization_path(...)` trains a
model along a log grid of strengths below it, strongest first, each point
starting from the previous one (warm starts), with cross-validation if asked.
scikit-learn's `lasso_path` / `LassoCV` and glmnet do this for linear models.
"""

import numbers
import warnings

import keras
import numpy as np
from keras import ops

from keras_reg import _keras_private as _private
from keras_reg import regularizers as _regs
from keras_reg._autodiff import gradients as _gradients
from keras_reg._validation import check_bool, check_built_model, check_float, check_int
from keras_reg.optimizers import Proximal
from keras_reg.path_result import STRENGTH_KEY as _STRENGTH_KEY
from keras_reg.path_result import RegularizationPath
from keras_reg.strength import StrengthScheduler

__all__ = ["max_strength", "regularization_path"]


# --- the penalized weights ---------------------------------------------------------------


class _Penalized:
    """The trainable weights with an L1-type penalty, and the one that sets the path's unit.

    `ratios[i]` is the strength of regularizer `i` over the reference strength
    (the first penalized weight's): at path strength `s`, regularizer `i` has
    strength `s * ratios[i]`, which is a scale of `s / reference` for all.
    """

    def __init__(self, model, owner):
        self.variables, self.regularizers = [], []
        found_other = []
        for variable in model.trainable_variables:
            reg = getattr(variable, "regularizer", None)
            if reg is None:
                continue
            if not isinstance(reg, _regs._Regularizer):
                raise ValueError(
                    f"The 'model' argument of {owner} has the weight {variable.path!r} penalized "
                    f"by {type(reg).__module__}.{type(reg).__name__}, whose strength the path "
                    "cannot change: use keras_reg's penalty of the same name (keras_reg.L1, "
                    "keras_reg.L1L2, ...)."
                )
            if _l1_weight(reg) is None:
                found_other.append(f"{variable.path}: {reg!r}")
                continue
            strength = getattr(reg, _STRENGTH_KEY[type(reg)])
            if strength == 0:
                raise ValueError(
                    f"The 'model' argument of {owner} has the weight {variable.path!r} penalized "
                    f"by {reg!r}, of strength 0: the path scales each penalty's strength, and 0 "
                    "stays 0. Give it a positive strength (its value sets the ratio between "
                    "penalties)."
                )
            self.variables.append(variable)
            self.regularizers.append(reg)
        if not self.variables:
            detail = (
                f" Its penalties have no L1 part: {found_other[:5]}."
                if found_other
                else " It has no keras_reg penalty on a trainable weight."
            )
            raise ValueError(
                f"The 'model' argument of {owner} must have a trainable weight penalized by a "
                "keras_reg penalty with an L1 part (L1, L1L2 with l1 > 0, ElasticNet with "
                "l1_ratio > 0, GroupLasso, SparseGroupLasso)." + detail
            )
        first = self.regularizers[0]
        self.reference = getattr(first, _STRENGTH_KEY[type(first)])
        self.ratios = [
            getattr(r, _STRENGTH_KEY[type(r)]) / self.reference for r in self.regularizers
        ]
        self.distinct = list({id(r): r for r in self.regularizers}.values())


def _l1_weight(reg):
    """The share of `reg`'s strength on its L1-type term, or None without one."""
    kind = type(reg)
    if kind is _regs.L1:
        return 1.0 if reg.l1 >= 0 else None
    if kind is _regs.L1L2:
        return 1.0 if reg.l1 > 0 else None
    if kind is _regs.ElasticNet:
        return reg.l1_ratio if reg.l1_ratio > 0 else None
    if kind in (_regs.GroupLasso, _regs.SparseGroupLasso):
        return 1.0
    return None  # L2, or a subclass that may compute another penalty


def _groups(g, axis):
    """`g` as (groups, elements per group), one group per index along `axis`."""
    g = np.moveaxis(g, axis, 0)
    return g.reshape(g.shape[0], -1)


def _sgl_threshold(groups, rho):
    """Per group, the smallest `t` with `||ST(g, t rho)|| <= t (1 - rho) sqrt(p)`, by bisection.

    `||ST(g, t rho)||` falls and `t (1 - rho) sqrt(p)` grows with `t`, so the
    set of such `t` is `[t*, inf)`; bisection in float64 finds `t*` to its last bits.
    """
    a = np.abs(groups)
    c = (1.0 - rho) * np.sqrt(groups.shape[1])
    hi = np.full(len(groups), np.inf)
    if rho > 0:
        hi = np.minimum(hi, a.max(axis=1) / rho)
    if c > 0:
        hi = np.minimum(hi, np.linalg.norm(groups, axis=1) / c)
    lo = np.zeros_like(hi)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        norm = np.linalg.norm(np.maximum(a - mid[:, None] * rho, 0.0), axis=1)
        inside = norm <= mid * c
        hi = np.where(inside, mid, hi)
        lo = np.where(inside, lo, mid)
        if np.all(hi - lo <= 1e-15 * hi):
            break
    return hi


def _threshold(reg, g):
    """The smallest strength of `reg` at which its weights at 0 stay at 0, for the gradient `g`."""
    kind = type(reg)
    if kind in (_regs.L1, _regs.L1L2):
        return float(np.max(np.abs(g), initial=0.0))
    if kind is _regs.ElasticNet:
        return float(np.max(np.abs(g), initial=0.0)) / reg.l1_ratio
    groups = _groups(g, reg.axis)
    root_p = np.sqrt(groups.shape[1])
    if kind is _regs.GroupLasso:
        return float(np.max(np.linalg.norm(groups, axis=1) / root_p, initial=0.0))
    return float(np.max(_sgl_threshold(groups, reg.l1_ratio), initial=0.0))


# --- the data gradient at zero ---------------------------------------------------------------


def _leaves(x):
    return keras.tree.flatten(x)


def _num_samples(x, name, owner):
    leaves = _leaves(x)
    if not leaves or any(not hasattr(leaf, "shape") or len(leaf.shape) == 0 for leaf in leaves):
        raise ValueError(
            f"The '{name}' argument of {owner} must be an array (or a structure of arrays) "
            f"with one row per sample. Received: {name} of type {type(x).__name__}"
        )
    return int(leaves[0].shape[0])


def _take(x, index):
    return keras.tree.map_structure(lambda a: np.asarray(a)[index], x)


def _loss_name(loss):
    if isinstance(loss, str):
        return loss
    if isinstance(loss, keras.losses.Loss):
        return type(loss).__name__, getattr(loss, "from_logits", False)
    return getattr(loss, "__name__", None)


_MSE = {"mse", "mean_squared_error", "MeanSquaredError"}
_BCE = {"binary_crossentropy", "BinaryCrossentropy"}


def _linear_layer(model):
    """The model's one Dense layer if the model is that layer alone (a linear model / GLM)."""
    layers = [
        layer
        for layer in _private.flatten_layers(model, include_self=False)
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    if len(layers) == 1 and type(layers[0]) is keras.layers.Dense:
        return layers[0]
    return None


def _bias_optimum(model, y):
    """`(bias variable, its optimum with the kernel at 0)` for a linear model, else None.

    With the kernel at zero the prediction is `activation(bias)` for every
    sample; for MSE with a linear unit the best bias is the mean of `y`, for
    binary cross-entropy with a sigmoid unit (or from logits) the log-odds of
    its mean.
    """
    layer = _linear_layer(model)
    if layer is None or not layer.use_bias or not layer.bias.trainable:
        return None
    if len(_leaves(y)) != 1:
        return None
    y = np.asarray(_leaves(y)[0], dtype=np.float64)
    y = y.reshape(len(y), -1)
    units = layer.units
    if y.shape[1] not in (1, units):
        return None
    mean = np.broadcast_to(y.mean(axis=0), (units,))
    name = _loss_name(model.loss)
    from_logits = False
    if isinstance(name, tuple):
        name, from_logits = name
    activation = getattr(layer.activation, "__name__", None)
    if name in _MSE and activation == "linear":
        return layer.bias, mean
    if name in _BCE and (
        activation == "sigmoid" and not from_logits or activation == "linear" and from_logits
    ):
        if np.any((mean <= 0) | (mean >= 1)):
            return None
        return layer.bias, np.log(mean / (1.0 - mean))
    return None


def _data_gradients(model, x, y, variables, at, batch_size, refit_bias=True):
    """d(compiled loss)/dw for `variables`, at 0 (`at="zero"`) or as they are, other weights fixed.

    Dropout and other training-only behaviour are off (`training=False`). The
    loss is a mean over samples, so batches add up weighted by their size.
    """
    trainable = model.trainable_variables
    index = {id(v): i for i, v in enumerate(trainable)}
    values = [ops.convert_to_tensor(v) for v in trainable]
    if at == "zero":
        for v in variables:
            values[index[id(v)]] = ops.zeros(v.shape, dtype=v.dtype)
        optimum = _bias_optimum(model, y) if refit_bias else None
        if optimum is not None:
            bias, value = optimum
            values[index[id(bias)]] = ops.convert_to_tensor(value.astype(bias.dtype))
    non_trainable = [ops.convert_to_tensor(v) for v in model.non_trainable_variables]
    positions = [index[id(v)] for v in variables]
    loss_fn = _private.compiled_loss(model)
    n = _num_samples(x, "x", "max_strength")
    step = n if batch_size is None else batch_size
    total = [np.zeros(v.shape, np.float64) for v in variables]
    for start in range(0, n, step):
        part = slice(start, min(n, start + step))
        xb, yb = _take(x, part), _take(y, part)

        def loss_of(targets, xb=xb, yb=yb):
            current = list(values)
            for p, t in zip(positions, targets, strict=True):
                current[p] = t
            y_pred, _ = model.stateless_call(current, non_trainable, xb, training=False)
            with keras.StatelessScope():  # the loss's own trackers must not keep traced values
                return loss_fn(yb, y_pred)

        grads = _gradients(loss_of, [values[p] for p in positions])
        weight = (part.stop - part.start) / n
        for i, g in enumerate(grads):
            if g is not None:
                total[i] += weight * ops.convert_to_numpy(g).astype(np.float64)
    return total


def max_strength(model, x, y, at="zero", batch_size=None):
    """The smallest strength at which every penalized weight, at zero, stays at zero.

    Under proximal training a weight at zero stays there while the loss
    gradient does not overcome its penalty's threshold: `|dL/dw| <= l1` for
    `L1`, `|dL/dw| <= alpha * l1_ratio` for `ElasticNet`, `||dL/dw_g|| <=
    strength * sqrt(p_g)` for a group of `GroupLasso`, and for
    `SparseGroupLasso` `||ST(dL/dw_g, strength * l1_ratio)|| <= strength *
    (1 - l1_ratio) * sqrt(p_g)` (soft-thresholding `ST`; the smallest such
    strength is found per group by bisection, in float64). `max_strength` is the
    largest of these bounds over the penalized weights, with `dL/dw` the
    gradient of the compiled loss (without the penalties) over `x, y`, taken
    with the penalized weights at 0 and the others as they are.

    For a model that is one `Dense` layer (a linear model or GLM) the bias is
    set to its optimum first, as scikit-learn and glmnet do with the
    intercept: the mean of `y` for `"mse"` with a linear unit, its log-odds for
    binary cross-entropy with a sigmoid (or from logits). There the bound is
    exact: at or above it, the all-zero kernel is the solution. A Dense(1)
    with `keras_reg.L1` and `"mse"` gives `2 * alpha_max` of scikit-learn's
    `Lasso` (Keras' mse has no 1/2: `L1(l)` is `Lasso(alpha=l / 2)`).

    For a network it is the same bound at the other weights as they are: the
    loss is not convex, and training moves those weights too. A ReLU layer
    with zero biases passes no gradient back at zero weights, and the bound is
    then 0; `at="current"` takes the gradient at the weights as they are
    instead (the largest `|dL/dw|` there: at a greater strength every
    proximal step shrinks every penalized weight).

    With several penalties, the strength is that of the first penalized
    weight's penalty, the others keeping their ratio to it (as in
    `regularization_path`). A penalty's other parameters (`l1_ratio`, the
    `l2` of `L1L2`) keep their value.

    Args:
        model: a built, compiled `keras.Model` whose trainable weights carry
            keras_reg penalties with an L1 part (`L1`, `L1L2` with `l1 > 0`,
            `ElasticNet` with `l1_ratio > 0`, `GroupLasso`, `SparseGroupLasso`).
        x: the inputs, an array (or the structure of arrays the model takes).
        y: the targets.
        at: `"zero"` (default) or `"current"`: where the gradient is taken.
        batch_size: samples per gradient computation; `None` (default) takes
            them all at once.

    Returns:
        A Python float.

    Examples:
        >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        >>> y = x[:, :1] - 0.5 * x[:, 1:2]
        >>> model = keras.Sequential([
        ...     keras.Input((4,)), keras.layers.Dense(1, kernel_regularizer=keras_reg.L1(0.01))
        ... ])
        >>> model.compile(keras_reg.Proximal(keras.optimizers.SGD(0.1)), "mse")
        >>> top = keras_reg.max_strength(model, x, y)
        >>> xc, yc = x - x.mean(0), y - y.mean(0)  # bias at its optimum: centred data
        >>> bool(np.isclose(top, np.max(np.abs(2 * xc.T @ yc / len(x))), rtol=1e-5))
        True
    """
    owner = "max_strength"
    check_built_model(model, owner)
    _check_compiled(model, owner)
    if at not in ("zero", "current"):
        raise ValueError(
            f"The 'at' argument of max_strength must be 'zero' or 'current'. Received: at={at!r}"
        )
    batch_size = _check_batch_size(batch_size, owner)
    penalized = _Penalized(model, owner)
    n = _num_samples(x, "x", owner)
    if _num_samples(y, "y", owner) != n:
        raise ValueError(
            f"The 'y' argument of {owner} must have as many samples as x ({n}). "
            f"Received: {_num_samples(y, 'y', owner)}"
        )
    return _max_strength(model, x, y, penalized, at, batch_size)


def _max_strength(model, x, y, penalized, at, batch_size):
    grads = _data_gradients(model, x, y, penalized.variables, at, batch_size)
    bounds = [
        _threshold(reg, g) / ratio
        for reg, g, ratio in zip(penalized.regularizers, grads, penalized.ratios, strict=True)
    ]
    return max(bounds)


# --- the path ----------------------------------------------------------------------------------


def _check_compiled(model, owner):
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        raise ValueError(
            f"The 'model' argument of {owner} must be compiled with an optimizer and a loss "
            "(e.g. model.compile(keras_reg.Proximal(keras.optimizers.Adam()), 'mse')). "
            f"Received: the uncompiled model {model.name!r}"
        )
    if getattr(model, "loss", None) is None:
        raise ValueError(
            f"The 'model' argument of {owner} must be compiled with a loss. "
            f"Received: model {model.name!r} compiled without one"
        )


def _check_batch_size(batch_size, owner):
    if batch_size is None:
        return None
    batch_size = check_int(batch_size, "batch_size", owner)
    if batch_size < 1:
        raise ValueError(
            f"The 'batch_size' argument of {owner} must be a positive integer or None. "
            f"Received: batch_size={batch_size}"
        )
    return batch_size


def _is_proximal(optimizer):
    while optimizer is not None:
        if isinstance(optimizer, Proximal):
            return True
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return False


def _folds(cv, n, seed):
    """A list of (train indices, test indices), or None without cross-validation."""
    if cv is None:
        return None
    if isinstance(cv, numbers.Integral) and not isinstance(cv, bool):
        k = int(cv)
        if k < 2 or k > n:
            raise ValueError(
                "The 'cv' argument of regularization_path must be an integer from 2 to the "
                f"number of samples ({n}), a scikit-learn splitter or a list of (train, test) "
                f"index pairs. Received: cv={k}"
            )
        order = np.random.default_rng(seed).permutation(n)
        parts = np.array_split(order, k)
        return [
            (np.sort(np.concatenate(parts[:i] + parts[i + 1 :])), np.sort(parts[i]))
            for i in range(k)
        ]
    if hasattr(cv, "split"):
        cv = list(cv.split(np.zeros((n, 1))))
    try:
        folds = [(np.asarray(tr, dtype=int), np.asarray(te, dtype=int)) for tr, te in cv]
    except (TypeError, ValueError):
        folds = None
    if (
        not folds
        or any(tr.ndim != 1 or te.ndim != 1 or not len(tr) or not len(te) for tr, te in folds)
        or any(np.any((a < 0) | (a >= n)) for f in folds for a in f)
    ):
        raise ValueError(
            "The 'cv' argument of regularization_path must be an integer from 2 to the number "
            f"of samples ({n}), a scikit-learn splitter or a list of (train, test) index pairs "
            f"with indices in [0, {n}). Received: cv={cv!r}"
        )
    return folds


_ACCURACIES = {
    "accuracy",
    "binary_accuracy",
    "categorical_accuracy",
    "sparse_categorical_accuracy",
}


def _scorer(model, scoring):
    """`(name, fn(y_true, y_pred) -> float, greater_is_better)`."""
    if scoring is None:
        loss = _private.compiled_loss(model)
        name = model.loss if isinstance(model.loss, str) else "loss"
        return name, lambda y, p: float(ops.convert_to_numpy(loss(y, p))), False
    if isinstance(scoring, str) and scoring in _ACCURACIES:
        metric_cls = {
            "accuracy": keras.metrics.Accuracy,
            "binary_accuracy": keras.metrics.BinaryAccuracy,
            "categorical_accuracy": keras.metrics.CategoricalAccuracy,
            "sparse_categorical_accuracy": keras.metrics.SparseCategoricalAccuracy,
        }[scoring]
        if scoring == "accuracy":
            # Keras' compile picks the accuracy that fits the loss; here, by the output.
            metric_cls = None

        def accuracy(y, p, metric_cls=metric_cls):
            p = np.asarray(p)
            y = np.asarray(y)
            if metric_cls is None:
                if p.ndim > 1 and p.shape[-1] > 1:
                    labels = y.reshape(len(y), -1)
                    if labels.shape[1] == 1:
                        return float(np.mean(np.argmax(p, -1) == labels[:, 0]))
                    return float(np.mean(np.argmax(p, -1) == np.argmax(labels, -1)))
                return float(np.mean((p.reshape(len(p)) > 0.5) == (y.reshape(len(y)) > 0.5)))
            metric = metric_cls()
            metric.update_state(y, p)
            return float(ops.convert_to_numpy(metric.result()))

        return scoring, accuracy, True
    try:
        fn = keras.losses.get(scoring) if isinstance(scoring, str) else scoring
    except ValueError:
        fn = None
    if not callable(fn):
        raise ValueError(
            "The 'scoring' argument of regularization_path must be None (the compiled loss), a "
            "Keras loss name such as 'mse', an accuracy name ('accuracy', 'binary_accuracy', "
            "...) or a callable (y_true, y_pred) -> number, lower is better. "
            f"Received: scoring={scoring!r}"
        )
    name = scoring if isinstance(scoring, str) else getattr(scoring, "__name__", "score")

    def score(y, p):
        return float(np.mean(ops.convert_to_numpy(fn(y, p))))

    return name, score, False


class _Snapshots(keras.callbacks.Callback):
    """Keeps the weights at the end of each strength's last epoch; moves the progress bar."""

    def __init__(self, epochs, progbar, strengths, done):
        super().__init__()
        self.epochs = epochs
        self.progbar = progbar
        self.strengths = strengths
        self.done = done
        self.weights = []
        self.losses = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.epochs:
            return
        self.weights.append(self.model.get_weights())
        self.losses.append(None if logs is None else logs.get("loss"))
        self.done[0] += 1
        if self.progbar is not None:
            point = epoch // self.epochs
            self.progbar.update(self.done[0], values=[("strength", self.strengths[point])])


def _check_strengths(strengths, n_strengths, eps, owner):
    if strengths is not None:
        try:
            values = [check_float(s, "strengths", owner) for s in strengths]
        except TypeError:
            raise ValueError(
                f"The 'strengths' argument of {owner} must be a list of non-negative floats. "
                f"Received: strengths={strengths!r}"
            ) from None
        if len(values) < 1 or len(set(values)) != len(values):
            raise ValueError(
                f"The 'strengths' argument of {owner} must be a non-empty list of distinct "
                f"non-negative floats. Received: strengths={strengths!r}"
            )
        return sorted(values, reverse=True)
    n = check_int(n_strengths, "n_strengths", owner)
    if n < 2:
        raise ValueError(
            f"The 'n_strengths' argument of {owner} must be an integer >= 2. "
            f"Received: n_strengths={n}"
        )
    eps = check_float(eps, "eps", owner)
    if not 0.0 < eps < 1.0:
        raise ValueError(
            f"The 'eps' argument of {owner} must be a float in (0, 1) (the smallest strength "
            f"over the largest). Received: eps={eps!r}"
        )
    return None


def regularization_path(
    model,
    x,
    y,
    n_strengths=12,
    eps=1e-3,
    strengths=None,
    cv=None,
    scoring=None,
    epochs=10,
    batch_size=32,
    validation_data=None,
    shuffle=True,
    verbose=1,
    seed=0,
):
    """Trains `model` along a grid of penalty strengths, strongest first, with warm starts.

    The grid is `n_strengths` values log-spaced from `max_strength(model, x,
    y)` down to `eps` times it, as scikit-learn's `lasso_path` and glmnet
    make theirs (or `strengths`, sorted strongest first). At each strength the
    model trains `epochs` epochs, starting from the weights and optimizer state
    the previous strength left: the whole path is one `fit`, its penalty
    strengths changed at each point through the penalties' scale, as
    `StrengthScheduler` does (no recompiling; one trace of the train step on
    JAX and TensorFlow). The compiled optimizer and loss are used; exact zeros
    need a `keras_reg.Proximal` optimizer (a warning says so otherwise).

    With several penalties, the strength is that of the first penalized
    weight's penalty, the others keeping their ratio to it; `ElasticNet`
    keeps its `l1_ratio`, `L1L2` its `l2 / l1`. Penalties without an L1 part
    (`L2`) keep their strength.

    With `cv=k`, the samples are shuffled (seeded) into `k` folds; the path
    runs on the whole data, then once per fold on the other folds, each
    from the model's weights as given, and each strength gets the mean held-out
    score over the folds and its standard error (std over folds, ddof=1, over
    sqrt(k)). `.best` is the strength with the best mean, `.one_se` the largest
    strength whose mean is within one standard error of the best (glmnet's
    one-standard-error rule: the sparser of the nearly-as-good models).

    The model itself is left as it was: weights, optimizer state and penalty
    scales are restored at the end. Each point's weights are kept (host
    copies): `path.model(strength)` rebuilds that model.

    Args:
        model: a built `keras.Model`, compiled with its optimizer and loss,
            whose trainable weights carry keras_reg penalties with an L1 part.
        x: the training inputs (an array or the structure the model takes).
        y: the training targets.
        n_strengths: integer >= 2, points on the grid. Defaults to 12.
        eps: float in (0, 1), the smallest strength over the largest.
            Defaults to `1e-3`, as in scikit-learn.
        strengths: optional list of strengths, instead of the grid.
        cv: `None` (default; no cross-validation), an integer `k` from 2 to
            the number of samples, a scikit-learn splitter (its `split(x)`), or
            a list of `(train indices, test indices)` pairs.
        scoring: the held-out score. `None` (default): the compiled loss,
            without the penalties. A Keras loss name (`"mse"`) or a callable
            `(y_true, y_pred) -> number`, lower is better; or `"accuracy"`,
            `"binary_accuracy"`, `"categorical_accuracy"`,
            `"sparse_categorical_accuracy"`, greater is better.
        epochs: positive integer, epochs at each strength. Defaults to 10.
        batch_size: positive integer, as in `fit`. Defaults to 32.
        validation_data: optional `(x_val, y_val)`, scored at every point of
            the path on the whole data (the held-out score when `cv` is None).
        shuffle: bool, as in `fit`: whether the samples are shuffled before
            each epoch. Defaults to `True`.
        verbose: 0 (silent) or 1 (default): a progress bar over the points.
        seed: integer or None. Shuffles the folds, and seeds Keras
            (`keras.utils.set_random_seed`) before each path so that every
            fold sees the same batch order. `None`: NumPy's global generator
            shuffles the folds and the global seeds are left alone. Defaults to 0.

    Returns:
        A `RegularizationPath`.

    Examples:
        >>> x = np.random.default_rng(0).normal(size=(96, 5)).astype("float32")
        >>> y = x[:, :1] - 0.5 * x[:, 1:2]
        >>> model = keras.Sequential([
        ...     keras.Input((5,)), keras.layers.Dense(1, kernel_regularizer=keras_reg.L1(0.01))
        ... ])
        >>> model.compile(keras_reg.Proximal(keras.optimizers.SGD(0.1)), "mse")
        >>> path = keras_reg.regularization_path(
        ...     model, x, y, n_strengths=4, eps=1e-2, cv=3, epochs=20, batch_size=96, verbose=0)
        >>> len(path.to_dict()["rows"])  # one row per strength
        4
        >>> path.strengths[0] == keras_reg.max_strength(model, x, y)  # the grid's top
        True
        >>> path.one_se >= path.best  # the 1-SE rule picks the same or a sparser model
        True

    References:
        Friedman, Hastie & Tibshirani, "Regularization Paths for Generalized
        Linear Models via Coordinate Descent", J. Stat. Software 33(1), 2010.
    """
    owner = "regularization_path"
    check_built_model(model, owner)
    _check_compiled(model, owner)
    penalized = _Penalized(model, owner)
    grid = _check_strengths(strengths, n_strengths, eps, owner)
    epochs = check_int(epochs, "epochs", owner)
    if epochs < 1:
        raise ValueError(
            f"The 'epochs' argument of {owner} must be a positive integer. Received: "
            f"epochs={epochs}"
        )
    batch_size = _check_batch_size(batch_size, owner)
    if isinstance(verbose, bool) or verbose not in (0, 1):
        raise ValueError(
            f"The 'verbose' argument of {owner} must be 0 or 1. Received: verbose={verbose!r}"
        )
    if seed is not None:
        seed = check_int(seed, "seed", owner)
    shuffle = check_bool(shuffle, "shuffle", owner)
    n = _num_samples(x, "x", owner)
    if _num_samples(y, "y", owner) != n:
        raise ValueError(
            f"The 'y' argument of {owner} must have as many samples as x ({n}). "
            f"Received: {_num_samples(y, 'y', owner)}"
        )
    folds = _folds(cv, n, seed)
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError(
                f"The 'validation_data' argument of {owner} must be a pair (x_val, y_val). "
                f"Received: {type(validation_data).__name__}"
            )
    score_name, score, greater = _scorer(model, scoring)
    if not _is_proximal(model.optimizer):
        warnings.warn(
            f"regularization_path trains with {type(model.optimizer).__name__}, not "
            "keras_reg.Proximal: penalized weights get small, never exactly zero, so the "
            "sparsity and the shrunk sizes along the path stay at their dense values.",
            stacklevel=2,
        )

    top = None
    top_at = None
    if grid is None:
        top_at = "zero"
        top = _max_strength(model, x, y, penalized, "zero", None)
        if top <= 0:
            top_at = "current"
            top = _max_strength(model, x, y, penalized, "current", None)
        if not top > 0:
            raise ValueError(
                f"The 'model' argument of {owner}: the loss has no gradient on the penalized "
                "weights, at zero or at their current values, so there is no largest strength "
                "to start from. Pass strengths= instead."
            )
        grid = list(np.geomspace(top, top * eps, int(n_strengths)))
    grid = [float(s) for s in grid]

    state = _State(model, penalized)
    scales = [s / penalized.reference for s in grid]
    runs = [(np.arange(n), None)] + list(folds or [])
    progbar = (
        keras.utils.Progbar(len(grid) * len(runs), stateful_metrics=["strength"])
        if verbose
        else None
    )
    done = [0]
    train_scores = np.full((len(runs), len(grid)), np.nan)
    test_scores = np.full((len(runs), len(grid)), np.nan)
    val_scores = np.full(len(grid), np.nan)
    try:
        state.prepare()
        full_weights, full_losses = None, None
        for r, (train, test) in enumerate(runs):
            state.reset()
            if seed is not None:
                keras.utils.set_random_seed(seed)
            x_train = x if test is None else _take(x, train)
            y_train = y if test is None else _take(y, train)
            snapshots = _Snapshots(epochs, progbar, grid, done)
            scheduler = StrengthScheduler(
                lambda epoch, scale: scales[epoch // epochs],
                regularizers=penalized.distinct,
            )
            model.fit(
                x_train,
                y_train,
                epochs=epochs * len(grid),
                batch_size=batch_size,
                shuffle=shuffle,
                callbacks=[scheduler, snapshots],
                verbose=0,
            )
            for p, weights in enumerate(snapshots.weights):
                model.set_weights(weights)
                train_scores[r, p] = score(y_train, _predict(model, x_train, batch_size))
                if test is not None:
                    x_test, y_test = _take(x, test), _take(y, test)
                    test_scores[r, p] = score(y_test, _predict(model, x_test, batch_size))
                elif validation_data is not None:
                    val_scores[p] = score(
                        validation_data[1], _predict(model, validation_data[0], batch_size)
                    )
            if test is None:
                full_weights, full_losses = snapshots.weights, snapshots.losses
    finally:
        state.restore()
    return RegularizationPath(
        model=model,
        strengths=grid,
        weights=full_weights,
        objectives=full_losses,
        penalized=penalized,
        score_name=score_name,
        greater_is_better=greater,
        train_scores=train_scores,
        test_scores=test_scores if folds else None,
        validation_scores=val_scores if validation_data is not None else None,
        top=top,
        top_at=top_at,
        epochs=epochs,
    )


def _predict(model, x, batch_size, chunk=4096):
    """The model's outputs on `x`, called directly in chunks (no `predict` loop to set up)."""
    n = _num_samples(x, "x", "regularization_path")
    outputs = []
    for start in range(0, n, chunk):
        part = _take(x, slice(start, min(n, start + chunk)))
        outputs.append(keras.tree.map_structure(ops.convert_to_numpy, model(part, training=False)))
    if len(outputs) == 1:
        return outputs[0]
    return keras.tree.map_structure(lambda *parts: np.concatenate(parts), *outputs)


class _State:
    """The model's weights, optimizer state and penalty scales, to restart each path and restore."""

    def __init__(self, model, penalized):
        self.model = model
        self.regularizers = penalized.distinct
        self.weights = model.get_weights()
        self.scales = [r.scale for r in self.regularizers]
        self.optimizer = None

    def prepare(self):
        optimizer = self.model.optimizer
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self.optimizer = [ops.convert_to_numpy(v) for v in optimizer.variables]

    def reset(self):
        self.model.set_weights(self.weights)
        for v, value in zip(self.model.optimizer.variables, self.optimizer, strict=True):
            v.assign(value)

    def restore(self):
        self.model.set_weights(self.weights)
        if self.optimizer is not None:
            self.reset()
        for reg, scale in zip(self.regularizers, self.scales, strict=True):
            if reg._scale is not None:
                reg.set_scale(scale)
