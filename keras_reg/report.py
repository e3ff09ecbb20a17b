"""How sparse a model is, weight by weight: `sparsity_report` and its table.

One row per weight with its zeros and, for weights of rank >= 2, its all-zero
rows (slices along axis 0: input features of a Dense kernel) and all-zero
columns (slices along the last axis: output units of a Dense kernel, filters
of a Conv kernel), the layout of Distiller's sparsity table.
"""

import dataclasses
import math

from keras_reg import _sparsity
from keras_reg._validation import check_float

__all__ = ["SparsityReport", "SparsityRow", "sparsity_report"]


@dataclasses.dataclass(frozen=True)
class SparsityRow:
    """The zeros of one weight.

    Attributes:
        path: the weight's name: `weight.path` for a model, the name described
            in `keras_reg.cli` for a `.keras` file.
        shape: tuple of ints.
        size: number of elements.
        zeros: number of elements with `|w| <= threshold`.
        sparsity: `zeros / size` (0.0 for an empty weight).
        zero_rows: fraction of all-zero slices along axis 0, or `None` for a
            weight of rank < 2.
        zero_cols: fraction of all-zero slices along the last axis (output
            units, filters), or `None` for a weight of rank < 2.
        zero_row_count: number of all-zero rows, or `None`.
        zero_col_count: number of all-zero columns (filters), or `None`.
    """

    path: str
    shape: tuple
    size: int
    zeros: int
    sparsity: float
    zero_rows: float | None
    zero_cols: float | None
    zero_row_count: int | None
    zero_col_count: int | None

    def to_dict(self):
        """The row as plain Python values (the shape as a list), ready for `json.dumps`."""
        return dict(dataclasses.asdict(self), shape=list(self.shape))


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
        header = ("weight", "shape", "size", "zeros", "sparsity", "zero rows", "zero cols")
        lines = [header]
        for row in self.rows:
            rank2 = row.zero_row_count is not None
            lines.append(
                (
                    row.path,
                    str(row.shape),
                    f"{row.size:,}",
                    f"{row.zeros:,}",
                    f"{100 * row.sparsity:.2f}%",
                    f"{row.zero_row_count}/{row.shape[0]}" if rank2 else "-",
                    f"{row.zero_col_count}/{row.shape[-1]}" if rank2 else "-",
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


def build_report(paths, values, threshold, counter=None):
    """A `SparsityReport` of named tensors, counted by the one shared routine."""
    rows = []
    for path, value, c in zip(
        paths, values, _sparsity.count_zeros(values, threshold, counter), strict=True
    ):
        shape = tuple(int(d) for d in value.shape)
        size = math.prod(shape)
        rank2 = c.zero_rows is not None
        rows.append(
            SparsityRow(
                path=path,
                shape=shape,
                size=size,
                zeros=c.zeros,
                sparsity=c.zeros / size if size else 0.0,
                zero_rows=(c.zero_rows / shape[0] if shape[0] else 0.0) if rank2 else None,
                zero_cols=(c.zero_cols / shape[-1] if shape[-1] else 0.0) if rank2 else None,
                zero_row_count=c.zero_rows,
                zero_col_count=c.zero_cols,
            )
        )
    return SparsityReport(rows, threshold)


def sparsity_report(model, threshold=0.0, track="kernels"):
    """Counts the zeros of a model's weights, weight by weight.

    A weight counts as zero when `|w| <= threshold`; NaN and inf never do (a
    diverged weight is reported as non-zero, not as an error). For weights of
    rank >= 2 the report also counts the all-zero rows (slices along axis 0)
    and columns (slices along the last axis: units, filters). The counting is
    the one `keras_reg.SparsityLogger` logs every epoch.

    Args:
        model: a built Keras model (or layer).
        threshold: non-negative float. Defaults to `0.0`: exact zeros only.
        track: which weights to count. `"kernels"` (default): every trainable
            weight of rank >= 2 (kernels, embeddings; not biases or
            normalization scales). `"regularized"`: every trainable weight
            with a regularizer. A callable: the weights `w` of `model.weights`
            for which `track(w)` is true. A list of weight paths
            (`weight.path`): those weights, in that order.

    Returns:
        A `SparsityReport`: `.rows` (one `SparsityRow` per weight), `.sparsity`
        (the parameter-weighted total), `str()` an aligned table,
        `.to_dict()` a JSON-able dict.

    Raises:
        ValueError: for a bad argument, or when `track` selects no weight.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    >>> model.get_layer("d").kernel.assign(np.diag([1.0, 2.0, 0.0])[[0, 1, 2, 2]])
    >>> report = keras_reg.sparsity_report(model)
    >>> report.sparsity, report.rows[0].zeros, report.rows[0].zero_col_count
    (0.8333333333333334, 10, 1)
    >>> print(report)
    Zeros: |w| <= 0
    weight               shape   size  zeros  sparsity  zero rows  zero cols
    ------------------------------------------------------------------------
    sequential/d/kernel  (4, 3)    12     10    83.33%        2/4        1/3
    ------------------------------------------------------------------------
    total                          12     10    83.33%
    """
    threshold = check_float(threshold, "threshold", "sparsity_report")
    track = _sparsity.check_track(track, "sparsity_report")
    variables = _sparsity.select_weights(model, track, "sparsity_report")
    return build_report([v.path for v in variables], [v.value for v in variables], threshold)
