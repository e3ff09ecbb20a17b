"""The `keras-reg` command (also `python -m keras_reg`).

`keras-reg report MODEL.keras [--threshold T] [--json] [--all]` prints the
sparsity table of a saved model. It reads the weights straight from the
archive (see `keras_reg._archive` for how it names them): it never rebuilds
the model, so custom layers need not be importable and no code from the file
runs, and it never writes to the file.
"""

import argparse
import json
import math
import sys

from keras_reg._archive import ArchiveError, read_weights

PROG = "keras-reg"

_REPORT_HELP = """\
Print how sparse a saved model is: for every weight of rank >= 2 (kernels,
embeddings) its size, zeros, sparsity, its all-zero inputs (slices along
axis -2: input features, input channels) and all-zero units (slices along
the last axis: output units, filters), then the parameter-weighted total.

The weights are read from the .keras archive itself: the model is not
rebuilt, so its custom layers need not be importable, no code from the file
is run, and the file is opened read-only.

Weights are named as Keras names them in weight.path: layer names, then the
weight's name, e.g. "dense_1/kernel" or "sequential/dense_1/kernel". A weight
of a layer that is not one of Keras' own Dense, Conv, Embedding or
normalization layers is named by its stored position, e.g. "my_block/vars/0".
Optimizer variables are never counted.
"""

_EPILOG = """\
examples:
  keras-reg report model.keras
  keras-reg report model.keras --threshold 1e-3
  keras-reg report model.keras --json > sparsity.json

exit status: 0 on success, 2 for a missing or unreadable file or a bad argument.
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _threshold(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"must be a non-negative number, e.g. 0 or 1e-3; received {text!r}"
        )
    return value


def _parser():
    parser = _Parser(
        prog=PROG,
        description="Sparsity tools for Keras 3 models (keras_reg).",
        epilog="Run 'keras-reg report --help' for the report command.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    report = commands.add_parser(
        "report",
        help="print the per-weight sparsity table of a .keras file",
        description=_REPORT_HELP,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("model", metavar="MODEL.keras", help="a model saved with model.save()")
    report.add_argument(
        "--threshold",
        type=_threshold,
        default=0.0,
        metavar="T",
        help="count a weight as zero when |w| <= T (default: 0, exact zeros only)",
    )
    report.add_argument(
        "--json",
        action="store_true",
        help='print JSON: {"file", "threshold", "sparsity", "size", "zeros", "rows": [...]}',
    )
    report.add_argument(
        "--all",
        action="store_true",
        help="also count weights of rank < 2 (biases, normalization parameters and statistics)",
    )
    return parser


def main(argv=None):
    """Runs `keras-reg`; returns the exit status (0, or 2 for a user's mistake)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code
    try:
        weights = read_weights(args.model, min_rank=0 if args.all else 2)
    except ArchiveError as exc:
        print(f"{PROG} report: error: {exc}", file=sys.stderr)
        return 2
    from keras_reg.report import build_report  # imports Keras: only once the file is read

    names = [name for name, _ in weights]
    report = build_report(names, [value for _, value in weights], args.threshold)
    if args.json:
        print(json.dumps({"file": args.model, **report.to_dict()}, indent=2))
    else:
        print(f"{args.model}: {len(report.rows)} weights")
        print(report)
    return 0
