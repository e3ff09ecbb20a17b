"""Zero counts of an array read block by block, in NumPy (private).

`keras-reg report` counts weights it reads from a file without holding any of
them in memory: `count_blocks` asks for one block of at most `BLOCK` elements
at a time and keeps only the counts and one flag per unit (or per input, for a
weight with very many units), plus one per input channel for a weight of rank
3 or more.

The numbers are those of `keras_reg._sparsity.count_zeros`: the same casts
(float64 stays float64, every other dtype is compared as float32), the same
threshold rounded to that dtype, `x == 0` at threshold 0 and `|x| <= threshold`
otherwise, so NaN and inf never count; inputs are the slices along axis -2,
units the slices along the last axis.
"""

import itertools
import math

import numpy as np

from keras_reg._counts import Counts

# Elements per block: 4 MiB of float32.
BLOCK = 2**20
# A weight with more units than this keeps one flag per input instead (see
# `count_blocks`), so the flags never take more than max(inputs, units).
_MAX_FLAGS = 2**22


def _zero_mask(block, threshold):
    block = np.asarray(block)
    if block.dtype != np.float64:
        block = block.astype(np.float32, copy=False)
    if threshold == 0.0:
        return block == 0
    return np.abs(block) <= block.dtype.type(threshold)


def row_major_blocks(shape, limit=BLOCK):
    """Index tuples covering an array of `shape` in C order, each of <= `limit` elements.

    Yields `(index, axis)`: `index` holds ints for the axes before `axis` and a
    slice along `axis`; the axes after it are whole.
    """
    rank = len(shape)
    axis = next(a for a in range(rank) if math.prod(shape[a + 1 :]) <= limit)
    step = max(1, limit // max(1, math.prod(shape[axis + 1 :])))
    for lead in itertools.product(*(range(n) for n in shape[:axis])):
        for start in range(0, shape[axis], step):
            yield lead + (slice(start, min(start + step, shape[axis])),), axis


def count_blocks(read, shape, threshold, limit=BLOCK):
    """Counts the zeros of an array of `shape`, reading it one block at a time.

    Args:
        read: function from an index tuple (ints and slices, as NumPy and h5py
            take them) to the NumPy block it selects.
        shape: tuple of ints.
        threshold: non-negative float that fits in float32.
        limit: the most elements read at once.

    Returns:
        `Counts(zeros, zero_inputs, zero_units)` of Python ints; `zero_inputs`
        and `zero_units` are `None` for a shape of rank < 2.
    """
    shape = tuple(int(d) for d in shape)
    rank = len(shape)
    if rank == 0:
        return Counts(int(np.count_nonzero(_zero_mask(read(()), threshold))), None, None)
    if math.prod(shape) == 0:
        return Counts(0, 0, 0) if rank >= 2 else Counts(0, None, None)
    if rank == 1:
        zeros = sum(
            int(np.count_nonzero(_zero_mask(read(index), threshold)))
            for index, _ in row_major_blocks(shape, limit)
        )
        return Counts(zeros, None, None)
    if shape[-1] > _MAX_FLAGS:
        return _count_column_major(read, shape, threshold, limit)
    if rank > 2:
        return _count_slabs(read, shape, threshold, limit)
    # Rank 2: the inputs are the rows, counted as the blocks stream past.
    zeros, zero_rows, row, row_zero = 0, 0, None, True
    col_zero = np.ones(shape[-1], dtype=bool)
    for index, axis in row_major_blocks(shape, limit):
        mask = _zero_mask(read(index), threshold)
        zeros += int(np.count_nonzero(mask))
        if axis == 0:  # whole rows
            zero_rows += int(np.count_nonzero(mask.reshape(mask.shape[0], -1).all(axis=1)))
            col_zero &= mask.reshape(-1, shape[-1]).all(axis=0)
            continue
        if index[0] != row:  # part of one row: its flag spans blocks
            zero_rows += int(row is not None and row_zero)
            row, row_zero = index[0], True
        row_zero = row_zero and bool(mask.all())
        if axis == rank - 1:
            col_zero[index[-1]] &= mask
        else:
            col_zero &= mask.reshape(-1, shape[-1]).all(axis=0)
    zero_rows += int(row is not None and row_zero)
    return Counts(zeros, zero_rows, int(np.count_nonzero(col_zero)))


def _count_slabs(read, shape, threshold, limit):
    """Rank >= 3 (a Conv kernel): one flag per input channel and one per unit (filter)."""
    rank, n_in, n_units = len(shape), shape[-2], shape[-1]
    if n_in > _MAX_FLAGS:
        raise ValueError(f"a weight of shape {shape} is too large to count in blocks")
    zeros = 0
    input_zero = np.ones(n_in, dtype=bool)
    unit_zero = np.ones(n_units, dtype=bool)
    for index, axis in row_major_blocks(shape, limit):
        mask = _zero_mask(read(index), threshold)
        zeros += int(np.count_nonzero(mask))
        if axis < rank - 2:  # whole (inputs, units) slabs
            slabs = mask.reshape(-1, n_in, n_units)
            input_zero &= slabs.all(axis=(0, 2))
            unit_zero &= slabs.all(axis=(0, 1))
        elif axis == rank - 2:  # some inputs, all their units
            input_zero[index[axis]] &= mask.all(axis=-1)
            unit_zero &= mask.all(axis=0)
        else:  # some units of one input
            input_zero[index[rank - 2]] &= bool(mask.all())
            unit_zero[index[-1]] &= mask
    return Counts(zeros, int(np.count_nonzero(input_zero)), int(np.count_nonzero(unit_zero)))


def _count_column_major(read, shape, threshold, limit):
    """A weight with very many units: blocks of whole units, one flag per input."""
    lead = math.prod(shape[:-1])
    if lead > limit:
        raise ValueError(f"a weight of shape {shape} is too large to count in blocks")
    width = max(1, limit // lead)
    zeros, zero_units = 0, 0
    input_zero = np.ones(shape[-2], dtype=bool)
    for start in range(0, shape[-1], width):
        mask = _zero_mask(read((Ellipsis, slice(start, start + width))), threshold)
        zeros += int(np.count_nonzero(mask))
        input_zero &= mask.reshape(-1, shape[-2], mask.shape[-1]).all(axis=(0, 2))
        zero_units += int(np.count_nonzero(mask.reshape(-1, mask.shape[-1]).all(axis=0)))
    return Counts(zeros, int(np.count_nonzero(input_zero)), zero_units)
