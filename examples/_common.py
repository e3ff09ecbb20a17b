"""What the examples share: data, command-line options, tables, figures (not part of keras_reg).

The examples import it as `_common`: running `python examples/NAME.py` puts `examples/` on
`sys.path`; the tests add it themselves.
"""

import argparse
import os
import sys

# TensorFlow prints log lines when it is imported, and with 2.21 TF_CPP_MIN_LOG_LEVEL alone no
# longer hides the oneDNN notice: the examples set both before any of them imports Keras. (oneDNN's
# custom CPU ops change results only at float round-off; set the variable to 1 to keep them.)
# Only before TensorFlow is loaded: afterwards they would not describe this process, yet reach
# the processes it starts (the demo reloads its models in one and compares bit for bit).
if "tensorflow" not in sys.modules:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


def parse_args(doc, out=None):
    """`--quick` (the test suite's mode), and `--out DIR` when the example writes files."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs (for the test suite)")
    if out is not None:
        parser.add_argument("--out", default=out, help=f"output folder (default: {out})")
    return parser.parse_args()


def breast_cancer(seed=0, test_size=0.25):
    """Stratified train/validation split of `load_breast_cancer`, standardized on the training part.

    Returns `(x_train, x_val, y_train, y_val, feature_names)`, float32 inputs and 0/1 targets.
    """
    data = load_breast_cancer()
    x_train, x_val, y_train, y_val = train_test_split(
        data.data, data.target, test_size=test_size, random_state=seed, stratify=data.target
    )
    scaler = StandardScaler().fit(x_train)
    x_train, x_val = (scaler.transform(x).astype("float32") for x in (x_train, x_val))
    return x_train, x_val, y_train, y_val, [str(name) for name in data.feature_names]


def digits(seed=0, test_size=0.25):
    """`load_digits` as (n, 8, 8, 1) images in [0, 1], stratified split: `(x_train, x_val, y_train,
    y_val)`."""
    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    return train_test_split(
        x, data.target, test_size=test_size, random_state=seed, stratify=data.target
    )


def kept_rows(kernel):
    """Boolean mask of the rows (input features of a Dense kernel) with a non-zero weight."""
    kernel = np.asarray(kernel)
    return np.any(kernel.reshape(kernel.shape[0], -1) != 0, axis=1)


def table(header, rows, markdown=False):
    """An aligned plain-text table (first column left, others right), or a markdown one."""
    rows = [[str(cell) for cell in row] for row in rows]
    if markdown:
        escape = [[cell.replace("|", "\\|") for cell in row] for row in rows]
        lines = [header, ["---"] * len(header), *escape]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    widths = [max(len(str(line[i])) for line in [header, *rows]) for i in range(len(header))]

    def fmt(line):
        cells = [
            str(cell).ljust(w) if i == 0 else str(cell).rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([fmt(header), rule, *(fmt(row) for row in rows)])


def pyplot():
    """matplotlib's pyplot on the Agg backend: files only, no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
