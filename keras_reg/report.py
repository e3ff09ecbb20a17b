"""How sparse a model is, weight by weight: `sparsity_report` and its table.

One row per weight with its zeros and, for weights of rank >= 2, its all-zero
inputs (slices along axis -2: input features of a Dense kernel, input channels
of a Conv kernel) and all-zero units (slices along the last axis: output units
of a Dense kernel, filters of a Conv kernel), the layout of Distiller's
sparsity table. A zero input can be cut from the layer's input, a zero unit
from its output.
"""

import dataclasses
import math
import warnings

from keras_reg._validation import check_float

# `keras_reg._sparsity` (which imports Keras) is imported where it is used: the
# `keras-reg report` command builds these rows (`rows_from_counts`) from its own
# NumPy counts and must not pay for Keras.

__all__ = ["SparsityReport", "SparsityRow", "sparsity_report"]


@dataclasses.dataclass(frozen=True)
class SparsityRow:
    """The zeros of one weight.

    Counts are ints and fractions are floats in [0, 1]: `zeros` and
    `sparsity`, `zero_units` out of `units`, `zero_inputs` out of `inputs`.

    Attributes:
        path: the weight's name: `weight.path` for a model, the name described
            in `keras_reg.cli` for a `.keras` file.
        shape: tuple of ints.
        size: number of elements.
        zeros: number of elements with `|w| <= threshold`.
        sparsity: `zeros / size` (0.0 for an empty weight).
        inputs: `shape[-2]`, the number of inputs (input features of a Dense
            kernel, input channels of a Conv kernel), or `None` for a weight
            of rank < 2.
        zero_inputs: number of all-zero slices along axis -2: inputs the
            layer ignores. `None` for a weight of rank < 2.
        units: `shape[-1]`, the number of units (output units of a Dense
            kernel, filters of a Conv kernel), or `None`.
        zero_units: number of all-zero slices along the last axis: units whose
            output does not depend on the layer's input. `None` for a weight
            of rank < 2.
    """

    path: str
    shape: tuple
    size: int
    zeros: int
    sparsity: float
    inputs: int | None
    zero_inputs: int | None
    units: int | None
    zero_units: int | None

    def to_dict(self):
        """The row as plain Python values (the shape as a list), ready for `json.dumps`."""
        return dict(dataclasses.asdict(self), shape=list(self.shape))

    # The names of version 0.1, where "rows" were slices along axis 0 and a
    # fraction, "cols" slices along the last axis.
    def _deprecated(self, old, new):
        warnings.warn(
            f"SparsityRow.{old} is deprecated; use {new}.", DeprecationWarning, stacklevel=3
        )

    @property
    def zero_col_count(self):
        self._deprecated("zero_col_count", "zero_units")
        return self.zero_units

    @property
    def zero_row_count(self):
        self._deprecated("zero_row_count", "zero_inputs")
        return self.zero_inputs

    @property
    def zero_cols(self):
        self._deprecated("zero_cols", "zero_units / units")
        return None if self.units is None else _fraction(self.zero_units, self.units)

    @property
    def zero_rows(self):
        self._deprecated("zero_rows", "zero_inputs / inputs")
        return None if self.inputs is None else _fraction(self.zero_inputs, self.inputs)


def _fraction(count, total):
    return count / total if total else 0.0


class SparsityReport:
    """A per-weight sparsity table and its parameter-weighted total.

    Build one with `keras_reg.sparsity_report(model)` or read one from a
    `.keras` file with `keras-reg report MODEL.keras`. `str(report)` is an
    aligned table with a total row; `report.to_dict()` the same numbers as
    plain Python values.

    Args:
        rows: sequence of `SparsityRow`.
        threshold: the threshold the rows were counted with.

    Attributes:
        rows: tuple of `SparsityRow`, one per weight.
        threshold: a weight counted as zero when `|w| <= threshold`.
        size: total number of elements.
        zeros: total number of zeros.
        sparsity: `zeros / size`, the fraction of all counted parameters that
            are zero (0.0 when there are none).
    """

    def __init__(self, rows, threshold=0.0):
        self.rows = tuple(rows)
        self.threshold = float(threshold)
        self.size = sum(row.size for row in self.rows)
        self.zeros = sum(row.zeros for row in self.rows)
        self.sparsity = self.zeros / self.size if self.size else 0.0

    def to_dict(self):
        """`{"threshold", "sparsity", "size", "zeros", "rows": [row dicts]}`, JSON-able."""
        return {
            "threshold": self.threshold,
            "sparsity": self.sparsity,
            "size": self.size,
            "zeros": self.zeros,
            "rows": [row.to_dict() for row in self.rows],
        }

    def __repr__(self):
        return (
            f"SparsityReport(sparsity={self.sparsity:.4f}, weights={len(self.rows)}, "
            f"threshold={self.threshold:g})"
        )

    def __str__(self):
        header = ("weight", "shape", "size", "zeros", "sparsity", "zero inputs", "zero units")
        lines = [header]
        for row in self.rows:
            rank2 = row.units is not None
            lines.append(
                (
                    row.path,
                    str(row.shape),
                    f"{row.size:,}",
                    f"{row.zeros:,}",
                    f"{100 * row.sparsity:.2f}%",
                    f"{row.zero_inputs}/{row.inputs}" if rank2 else "-",
                    f"{row.zero_units}/{row.units}" if rank2 else "-",
                )
            )
        total = ("total", "", f"{self.size:,}", f"{self.zeros:,}", f"{100 * self.sparsity:.2f}%")
        lines.append(total + ("", ""))
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

        def fmt(line):
            cells = [
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            ]
            return "  ".join(cells).rstrip()

        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        out = [f"Zeros: |w| <= {self.threshold:g}", fmt(header), rule]
        out += [fmt(line) for line in lines[1:-1]]
        out += [rule, fmt(lines[-1])]
        return "\n".join(out)


def rows_from_counts(counted):
    """One `SparsityRow` per `(path, shape, Counts)`, in order: the only place rows are built.

    `build_report` passes the counts of tensors in memory, `keras-reg report`
    those its NumPy block counter read from a file.
    """
    rows = []
    for path, shape, c in counted:
        shape = tuple(int(d) for d in shape)
        size = math.prod(shape)
        rank2 = len(shape) >= 2
        rows.append(
            SparsityRow(
                path=path,
                shape=shape,
                size=size,
                zeros=c.zeros,
                sparsity=_fraction(c.zeros, size),
                inputs=shape[-2] if rank2 else None,
                zero_inputs=c.zero_inputs,
                units=shape[-1] if rank2 else None,
                zero_units=c.zero_units,
            )
        )
    return rows


def build_report(paths, values, threshold, counter=None, exact=()):
    """A `SparsityReport` of named tensors, counted by the one shared routine."""
    from keras_reg import _sparsity

    counts = _sparsity.count_zeros(values, threshold, counter, exact)
    shapes = [value.shape for value in values]
    return SparsityReport(rows_from_counts(zip(paths, shapes, counts, strict=True)), threshold)


def sparsity_report(model, threshold=0.0, track="kernels"):
    """Counts the zeros of a model's weights, weight by weight.

    A weight counts as zero when `|w| <= threshold`; NaN and inf never do (a
    diverged weight is reported as non-zero, not as an error). For weights of
    rank >= 2 the report also counts the all-zero inputs (slices along axis
    -2: input features, input channels) and units (slices along the last axis:
    output units, filters). The counting is
    the one `keras_reg.SparsityLogger` logs every epoch.

    A kernel quantized to int8 or int4 (`model.quantize`) is counted by its
    stored integers: int8 as stored, int4 unpacked to its `(rows, columns)`;
    an element is zero when it dequantizes to exactly 0 (it equals its zero
    point), whatever `threshold`.

    Args:
        model: a built Keras model (or layer).
        threshold: non-negative float. Defaults to `0.0`: exact zeros only.
        track: which weights to count. `"kernels"` (default): every trainable
            weight of rank >= 2 (kernels, embeddings; not biases or
            normalization scales), and the kernels a layer froze itself: the
            int8 or int4 kernel of a layer quantized by `model.quantize`, the
            kernel under a layer's LoRA factors. `"regularized"`: every trainable weight
            with a regularizer. A callable: the weights `w` of `model.weights`
            for which `track(w)` is true. A list of weight paths
            (`weight.path`): those weights, in that order.

    Returns:
        A `SparsityReport`: `.rows` (one `SparsityRow` per weight), `.sparsity`
        (the parameter-weighted total), `str()` an aligned table,
        `.to_dict()` a JSON-able dict.

    Raises:
        ValueError: for a bad argument, or when `track` selects no weight.

    Examples:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")], name="m")
        >>> kernel = np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 0], [0, 0, 0]])
        >>> _ = model.get_layer("d").kernel.assign(kernel)
        >>> report = keras_reg.sparsity_report(model)
        >>> row = report.rows[0]
        >>> row.zeros, row.zero_inputs, row.zero_units, round(report.sparsity, 4)
        (10, 2, 1, 0.8333)
        >>> print(report)
        Zeros: |w| <= 0
        weight      shape   size  zeros  sparsity  zero inputs  zero units
        ------------------------------------------------------------------
        m/d/kernel  (4, 3)    12     10    83.33%          2/4         1/3
        ------------------------------------------------------------------
        total                 12     10    83.33%
    """
    from keras_reg import _sparsity

    threshold = check_float(threshold, "threshold", "sparsity_report")
    track = _sparsity.check_track(track, "sparsity_report")
    variables = _sparsity.select_weights(model, track, "sparsity_report")
    values, exact = _sparsity.read_values(model, variables)
    return build_report([v.path for v in variables], values, threshold, exact=exact)
