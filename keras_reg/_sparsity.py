"""Which weights to count, and the one zero-counting routine (private).

`SparsityLogger` and `sparsity_report` both count through `count_zeros`, so an
epoch's logged number and a report's number agree; `keras-reg report` counts a
file's weights in NumPy with the same rules (`keras_reg._archive.blocks`).
"""

import math
import os

import keras
from keras import ops

from keras_reg import _quantized
from keras_reg._counts import Counts

TRACK_OPTIONS = ("kernels", "regularized")

# Per-weight counts are int32 on the device (JAX has no int64 by default). A
# weight with more elements than this sends its per-column counts to the host,
# where they are added up in int64.
_INT32_MAX = 2**31 - 1

# Elements per block when counting a large weight (see `_segment`).
_BLOCK = 2**20


def check_track(track, owner):
    """Returns `track` as given (a tuple for a list of paths), or raises `ValueError`."""
    if isinstance(track, str) and track in TRACK_OPTIONS:
        return track
    if callable(track) and not isinstance(track, str):
        return track
    if isinstance(track, (list, tuple)) and track and all(isinstance(p, str) for p in track):
        return tuple(track)
    raise ValueError(
        f"The 'track' argument of {owner} must be 'kernels', 'regularized', a callable "
        f"taking a weight and returning a bool, or a non-empty list of weight paths. "
        f"Received: track={track!r}"
    )


def check_log_dir(log_dir, owner):
    """Returns `log_dir` as a string or None, or raises a `ValueError` naming it."""
    if log_dir is None or isinstance(log_dir, (str, os.PathLike)):
        return None if log_dir is None else os.fspath(log_dir)
    raise ValueError(
        f"The 'log_dir' argument of {owner} must be None or a path. Received: log_dir={log_dir!r}"
    )


def select_weights(model, track, owner):
    """The variables of `model` that `track` names, in model order (or the paths' order).

    Raises a `ValueError` when `track` matches nothing or names unknown paths,
    since a logger or report of no weights is a mistake, not a result.
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(
            f"The 'model' argument of {owner} must be a Keras model or layer. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    weights = model.weights
    if track == "kernels":
        # The trainable kernels, and those a layer froze itself: a quantized
        # int8/int4 kernel, the float kernel under LoRA factors.
        keep = {id(v) for v in model.trainable_weights if len(v.shape) >= 2}
        keep |= set(_quantized.frozen_kernels(model))
        chosen = [v for v in weights if id(v) in keep]
    elif track == "regularized":
        chosen = [v for v in model.trainable_weights if getattr(v, "regularizer", None)]
    elif callable(track):
        chosen = [v for v in weights if track(v)]
    else:
        by_path = {v.path: v for v in weights}
        unknown = [p for p in track if p not in by_path]
        if unknown:
            known = sorted(by_path)
            shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
            raise ValueError(
                f"The 'track' argument of {owner} names weights the model does not have: "
                f"{unknown}. Its weight paths are: {shown}"
            )
        chosen = [by_path[p] for p in dict.fromkeys(track)]
    if not chosen:
        hint = " (is the model built?)" if not weights else ""
        raise ValueError(
            f"The 'track' argument of {owner} selects none of the model's {len(weights)} "
            f"weights{hint}. Received: track={track!r}"
        )
    return chosen


def read_values(model, variables):
    """`(values, exact)`: what the counter reads for each variable, and which count exactly.

    A quantized int8 kernel is read as stored, an int4 kernel unpacked (minus
    its zero points); their zeros are exact whatever the threshold (see
    `keras_reg._quantized`). Any other variable is read as its value.
    """
    frozen = _quantized.frozen_kernels(model)
    pairs = [_quantized.counted_value(v, frozen) for v in variables]
    return [value for value, _ in pairs], tuple(exact for _, exact in pairs)


def _zero_count(mask, axis=None):
    return ops.sum(ops.cast(mask, "int32"), axis=axis)


def _is_zero(x, threshold):
    # NaN and inf compare False here, so they never count as zeros.
    return ops.equal(x, 0.0) if threshold == 0.0 else ops.less_equal(ops.abs(x), threshold)


def _segment(x, threshold):
    """`[zero_inputs, zero_units, zero counts...]` for one tensor, as an int32 vector."""
    # The read happens here, on the device; under tf.distribute a mirrored
    # variable read in cross-replica context gives one copy, not one per replica.
    x = ops.stop_gradient(ops.convert_to_tensor(x))
    if keras.backend.standardize_dtype(x.dtype) not in ("float32", "float64"):
        x = ops.cast(x, "float32")
    shape = tuple(int(d) for d in x.shape)
    size = math.prod(shape)
    if size == 0:
        return ops.zeros((3,), dtype="int32")
    if len(shape) < 2:
        x = ops.reshape(x, (size,))
        parts = [
            _zero_count(_is_zero(x[i : i + _BLOCK], threshold)) for i in range(0, size, _BLOCK)
        ]
        return ops.concatenate([ops.zeros((2,), "int32"), ops.reshape(sum(parts), (1,))])
    # As (outer, inputs, units): a Dense kernel is (1, in, out), a Conv2D kernel
    # (kh * kw, in_channels, filters). Blocks along the outer axis, or along the
    # inputs for a Dense kernel: eager ops and TensorFlow graphs make full-size
    # temporaries (|x|, the mask, its int32 cast), which for a 25M-element
    # weight cost more than the count itself; blocks of ~1M elements stay in
    # cache, and blocks along the first axis are contiguous, so need not copy.
    n_in, n_units = shape[-2], shape[-1]
    outer = size // (n_in * n_units)
    x = ops.reshape(x, (outer, n_in, n_units))
    per_input, per_unit = 0, 0
    if outer == 1:
        rows_per_block = max(1, _BLOCK // n_units)
        per_input = []
        for i in range(0, n_in, rows_per_block):
            zero = _is_zero(x[0, i : i + rows_per_block], threshold)
            per_input.append(_zero_count(zero, 1))
            per_unit = per_unit + _zero_count(zero, 0)
        per_input = ops.concatenate(per_input)
    else:
        per_block = max(1, _BLOCK // (n_in * n_units))
        for i in range(0, outer, per_block):
            zero = _is_zero(x[i : i + per_block], threshold)
            per_input = per_input + _zero_count(zero, (0, 2))
            per_unit = per_unit + _zero_count(zero, (0, 1))
    zero_inputs = _zero_count(ops.equal(per_input, outer * n_units))
    zero_units = _zero_count(ops.equal(per_unit, outer * n_in))
    zeros = per_unit if size > _INT32_MAX else ops.reshape(ops.sum(per_unit), (1,))
    return ops.concatenate([ops.stack([zero_inputs, zero_units]), zeros])


def _count_all(values, threshold, exact=()):
    exact = tuple(exact) or (False,) * len(values)
    return ops.concatenate(
        [_segment(x, 0.0 if e else threshold) for x, e in zip(values, exact, strict=True)]
    )


def compiled_counter(threshold, exact=()):
    """`_count_all` compiled once for the backend: one device call per epoch.

    TensorFlow gets a plain `tf.function` (on CPU, `jit_compile=True` measured
    3-4x slower), JAX `jax.jit`; other backends run the same ops eagerly.
    """

    def counter(values):
        return _count_all(values, threshold, exact)

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(counter, autograph=False)
    if backend == "jax":
        import jax

        return jax.jit(counter)
    return counter


def count_zeros(values, threshold, counter=None, exact=()):
    """Counts, for each tensor, `|x| <= threshold` and the all-zero inputs and units.

    Inputs are the slices along axis -2 (input features of a Dense kernel,
    input channels of a Conv kernel, tokens of an embedding table), units the
    slices along the last axis (output units of a Dense kernel, filters of a
    Conv kernel). The tensors are reduced where they live; only the counts come
    back to the host.

    Args:
        values: list of tensors, arrays or variable values.
        threshold: non-negative float.
        counter: a function from `compiled_counter(threshold, exact)`, or `None`
            to run the ops eagerly (best for a one-off count).
        exact: one bool per tensor (or empty for all `False`): `True` counts
            that tensor's exact zeros whatever the threshold (integer kernels).

    Returns:
        A list of `Counts(zeros, zero_inputs, zero_units)` of Python ints;
        `zero_inputs` and `zero_units` are `None` for tensors of rank < 2.
    """
    values = list(values)
    if not values:
        return []
    flat = ops.convert_to_numpy((counter or (lambda v: _count_all(v, threshold, exact)))(values))
    flat = flat.astype("int64")
    counts, start = [], 0
    for x in values:
        shape = tuple(int(d) for d in x.shape)
        size = math.prod(shape)
        n_zeros = shape[-1] if len(shape) >= 2 and size > _INT32_MAX else 1
        zeros = int(flat[start + 2 : start + 2 + n_zeros].sum())
        if len(shape) >= 2:
            counts.append(Counts(zeros, int(flat[start]), int(flat[start + 1])))
        else:
            counts.append(Counts(zeros, None, None))
        start += 2 + n_zeros
    return counts
