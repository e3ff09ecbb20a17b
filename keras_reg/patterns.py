"""TFMOT's structured sparsity patterns: m-by-n (2:4) and blocks, as projections.

Both are the projection of a kernel onto a set of sparse tensors, like
`magnitude_prune`, so `PruneLowMagnitude` applies them after every update:

- **m-by-n** (`sparsity_m_by_n=(m, n)`): in every `n` consecutive weights
  along the kernel's input axis (its second-to-last: a Dense kernel's rows of
  one unit, a convolution's `C_in` at each position of each filter), the `m`
  smallest magnitudes become zero. A row whose length is not a multiple of `n`
  ends in a short block, padded with zeros as TFMOT pads it: of its `r` weights,
  at most `n - m` stay. This is TFMOT's `generate_m_by_n_mask` on its
  `weights_rearrange` view (`[C_out * H * W, C_in]`), the pattern NVIDIA's
  sparse tensor cores run (2:4).
- **blocks** (`block_size=(r, c)`): the kernel seen as a matrix (all axes but
  the last, by the last: TFMOT's rank-2 kernels as they are) is cut into
  `r x c` blocks, the last ones short where the sizes do not divide; each
  block's magnitudes are pooled (`"AVG"`: their mean over the block's weights,
  `"MAX"`: their largest), and exactly `round(s * blocks)` blocks, the smallest
  pooled first, become all zero; the others are kept whole.

Ties go to the lower index, as in `magnitude_prune`.
"""

import math

import numpy as np
from keras import ops

from keras_reg._validation import _fail

__all__ = ["block_prune", "is_pruned_m_by_n", "m_by_n_prune"]

POOLING_TYPES = ("AVG", "MAX")


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _pair(value, name, owner, expected):
    if isinstance(value, (str, bytes)):
        _fail(name, owner, expected, value)
    try:
        pair = tuple(value)
    except TypeError:
        _fail(name, owner, expected, value)
    if len(pair) != 2 or not all(_is_int(v) for v in pair):
        _fail(name, owner, expected, value)
    return int(pair[0]), int(pair[1])


def check_m_by_n(value, owner, name="sparsity_m_by_n"):
    """`(m, n)` as two Python ints with `1 <= m < n`, or a `ValueError` naming `name`."""
    expected = "a tuple of 2 integers (m, n) with 1 <= m < n (m zeros in every n weights)"
    m, n = _pair(value, name, owner, expected)
    if not 1 <= m < n:
        _fail(name, owner, expected, value)
    return m, n


def check_block_size(value, owner, name="block_size"):
    """`(r, c)` as two positive Python ints, or a `ValueError` naming `name`."""
    r, c = _pair(value, name, owner, "a tuple of 2 positive integers (rows, columns)")
    if r < 1 or c < 1:
        _fail(name, owner, "a tuple of 2 positive integers (rows, columns)", value)
    return r, c


def check_pooling(value, owner, name="block_pooling_type"):
    """`"AVG"` or `"MAX"`, or a `ValueError` naming `name`."""
    if not isinstance(value, str) or value not in POOLING_TYPES:
        _fail(name, owner, "'AVG' or 'MAX'", value)
    return value


def _zeroed(remove, x):
    """`x` with zeros where the bool `remove` is true.

    The zero is a scalar of `x`'s dtype, broadcast by `where`: a `zeros_like(x)`
    would fill a second tensor of `x`'s size first, a pass over memory that the
    projection runs for every kernel at every step.
    """
    return ops.where(remove, ops.zeros((), x.dtype), x)


def _keys(x):
    """Non-negative int32 keys that sort as `|x|` does (NaN above inf)."""
    return ops.view(ops.abs(ops.cast(x, "float32")), "int32")


def m_by_n_prune(x, m_by_n=(2, 4)):
    """Keeps the `n - m` largest magnitudes of every `n` consecutive input weights of `x`.

    The projection of `x` onto the kernels with at least `m` zeros in each
    block of `n` consecutive weights along axis -2 (the input channels of a
    `(..., inputs, outputs)` kernel), blocks starting at index 0 of each row
    and the last one short when the row length is not a multiple of `n`
    (TFMOT pads it with zeros: at most `n - m` of its weights stay). Ties go
    to the lower index.

    Args:
        x: a tensor of rank 2 or more.
        m_by_n: `(m, n)`, two integers with `1 <= m < n`.

    Returns:
        A tensor of the shape and dtype of `x`.

    Examples:
        >>> x = np.array([[4.0, 1.0], [-3.0, 5.0], [1.0, 2.0], [2.0, -9.0]])  # (inputs, units)
        >>> keras.ops.convert_to_numpy(keras_reg.patterns.m_by_n_prune(x, (2, 4))).T.tolist()
        [[4.0, -3.0, 0.0, 0.0], [0.0, 5.0, 0.0, -9.0]]
    """
    m, n = check_m_by_n(m_by_n, "m_by_n_prune", name="m_by_n")
    x = ops.convert_to_tensor(x)
    shape = tuple(int(d) for d in x.shape)
    if len(shape) < 2:
        raise ValueError(
            "m_by_n_prune needs a kernel of rank 2 or more (its input axis is -2). "
            f"Received: a tensor of shape {shape}"
        )
    width = shape[-2]
    blocks = -(-width // n)
    keys = _keys(x)
    if blocks * n != width:
        pad = [(0, 0)] * len(shape)
        pad[-2] = (0, blocks * n - width)
        keys = ops.pad(keys, pad)
    # Blocks along the input axis, in place: (..., blocks, n, outputs), no transpose.
    keys = ops.reshape(keys, shape[:-2] + (blocks, n, shape[-1]))
    # Rank of each weight i in its block: how many weights j beat it, j beating i when
    # |x_j| > |x_i|, or |x_j| == |x_i| and j comes first. One broadcast comparison of the n
    # weights with the n weights (n is small): a handful of ops whatever n is.
    first = np.arange(n)[:, None] < np.arange(n)[None, :]  # first[j, i]: j before i
    first = first.reshape((n, n, 1))
    other = ops.expand_dims(keys, -2)  # [..., j, 1, :]
    mine = ops.expand_dims(keys, -3)  # [..., 1, i, :]
    beats = ops.where(first, ops.greater_equal(other, mine), ops.greater(other, mine))
    rank = ops.sum(ops.cast(beats, "int32"), axis=-3)  # [..., blocks, n, outputs]
    remove = ops.reshape(ops.greater_equal(rank, n - m), shape[:-2] + (blocks * n, shape[-1]))
    if blocks * n != width:
        remove = remove[..., :width, :]
    return _zeroed(remove, x)


def _block_counts(rows, cols, block_size):
    """The number of weights in each block (the last row and column of blocks may be short)."""
    r, c = block_size
    per_row = np.minimum(r, rows - r * np.arange(-(-rows // r)))
    per_col = np.minimum(c, cols - c * np.arange(-(-cols // c)))
    return np.outer(per_row, per_col).astype("float32")


def block_prune(x, sparsity, block_size, pooling="AVG"):
    """Zeroes exactly `round(s * blocks)` whole blocks of `x`, those of smallest pooled `|x|`.

    `x` is seen as the matrix `(prod(shape[:-1]), shape[-1])` (a Dense kernel
    as it is) and cut into `block_size` blocks from index 0, the last ones
    short. A block's score is the mean (`"AVG"`, over the weights it holds) or
    the largest (`"MAX"`) of its magnitudes. Ties go to the lower block
    (row-major). Every block comes out all zero or unchanged.

    Args:
        x: a tensor of rank 2 or more.
        sparsity: float or scalar tensor in [0, 1): the fraction of blocks zeroed.
        block_size: `(r, c)`, two positive integers.
        pooling: `"AVG"` or `"MAX"`.

    Returns:
        A tensor of the shape and dtype of `x`.

    Examples:
        >>> x = np.array([[1.0, 2.0, 9.0, 9.0], [1.0, 2.0, 9.0, 9.0]])
        >>> keras.ops.convert_to_numpy(keras_reg.patterns.block_prune(x, 0.5, (2, 2))).tolist()
        [[0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 9.0, 9.0]]
    """
    r, c = check_block_size(block_size, "block_prune")
    pooling = check_pooling(pooling, "block_prune", name="pooling")
    x = ops.convert_to_tensor(x)
    shape = tuple(int(d) for d in x.shape)
    if len(shape) < 2:
        raise ValueError(
            f"block_prune needs a kernel of rank 2 or more. Received: a tensor of shape {shape}"
        )
    cols = shape[-1]
    rows = math.prod(shape) // cols
    row_blocks, col_blocks = -(-rows // r), -(-cols // c)
    magnitudes = ops.reshape(ops.abs(ops.cast(x, "float32")), (rows, cols))
    padded = (row_blocks * r - rows, col_blocks * c - cols)
    if any(padded):
        magnitudes = ops.pad(magnitudes, ((0, padded[0]), (0, padded[1])))
    tiles = ops.reshape(magnitudes, (row_blocks, r, col_blocks, c))
    if pooling == "MAX":
        scores = ops.max(tiles, axis=(1, 3))
    else:
        counts = ops.convert_to_tensor(_block_counts(rows, cols, (r, c)))
        scores = ops.divide(ops.sum(tiles, axis=(1, 3)), counts)
    total = row_blocks * col_blocks
    count = ops.cast(ops.round(ops.cast(sparsity, "float32") * float(total)), "int32")
    from keras_reg.pruning import _smallest

    remove = ops.reshape(_smallest(ops.reshape(scores, (total,)), count), (row_blocks, col_blocks))
    remove = ops.repeat(ops.repeat(remove, r, axis=0), c, axis=1)[:rows, :cols]
    return _zeroed(ops.reshape(remove, shape), x)


def is_pruned_m_by_n(weights, m_by_n=(2, 4), last_channel="C_OUT"):
    """Whether every block of `n` consecutive input weights holds at most `n - m` non-zeros.

    TFMOT's `is_pruned_m_by_n`, for Keras kernels on any backend. With
    `last_channel="C_OUT"` (a Keras kernel, `(..., C_in, C_out)`), the rows are
    the input channels of each output and position (TFMOT's
    `[C_out, H, W, C_in]`); with `"C_IN"` the weights are already laid out with
    the input channels last. Each row is cut into blocks of `n` from its start;
    a short last block may hold at most `n - m` non-zeros too.

    Args:
        weights: a kernel (NumPy array, tensor or `keras.Variable`) of rank 2 or more.
        m_by_n: `(m, n)`, two integers with `1 <= m < n`.
        last_channel: `"C_OUT"` (the default) or `"C_IN"`.

    Returns:
        A Python bool.

    Examples:
        >>> keras_reg.is_pruned_m_by_n(np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0], [3.0, 4.0]]))
        True
    """
    owner = "is_pruned_m_by_n"
    m, n = check_m_by_n(m_by_n, owner, name="m_by_n")
    if last_channel not in ("C_OUT", "C_IN"):
        _fail("last_channel", owner, "'C_OUT' or 'C_IN'", last_channel)
    w = np.asarray(ops.convert_to_numpy(weights))
    if w.ndim < 2:
        raise ValueError(
            f"The 'weights' argument of {owner} must have rank 2 or more. "
            f"Received: weights of shape {w.shape}"
        )
    rows = np.moveaxis(w, -1, 0) if last_channel == "C_OUT" else w
    rows = rows.reshape(-1, rows.shape[-1])
    width = rows.shape[1]
    padded = np.zeros((rows.shape[0], -(-width // n) * n), dtype=bool)
    padded[:, :width] = rows != 0
    return bool((padded.reshape(rows.shape[0], -1, n).sum(axis=-1) <= n - m).all())
