"""The `keras-reg` command (also `python -m keras_reg`).

`keras-reg report MODEL.keras [--threshold T] [--json] [--all]` prints the
sparsity table of a saved model. It reads the weights straight from the
archive (see `keras_reg._archive` for how it names them): it never rebuilds
the model, so custom layers need not be importable and no code from the file
runs, and it never writes to the file.

`keras-reg shrink IN.keras OUT.keras [--force]` loads a model (safe mode on),
removes the units and filters that do nothing (`keras_reg.shrink`) and saves
the smaller model to OUT. It never writes to IN and refuses an existing OUT
unless `--force` is given.
"""

import argparse
import json
import math
import os
import stat
import sys
import tempfile

from keras_reg._archive import ArchiveError, count_weights, one_line, printable
from keras_reg._validation import check_float

__all__ = ["main"]

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
Optimizer variables are never counted. A stored dataset that cannot be
counted (no dataspace, long double, strings, links) is listed after the table
as not counted. Memory stays bounded by one block of one weight.
"""

_EPILOG = """\
examples:
  keras-reg report model.keras
  keras-reg report model.keras --threshold 1e-3
  keras-reg report model.keras --json > sparsity.json

exit status: 0 on success, 2 for a missing, unreadable or refused file (not a
regular file, not a .keras archive, crafted) or a bad argument.
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (no usage dump)."""

    def error(self, message):
        message = printable(message)  # it may quote a command-line argument
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _threshold(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    try:
        # Weights are float32: a larger threshold would round to inf, and
        # |inf| <= inf would count diverged weights as zeros.
        return check_float(value, "threshold", "keras-reg report")
    except ValueError:
        raise argparse.ArgumentTypeError(
            "must be a non-negative number that fits in float32 (at most 3.4028235e+38), "
            f"e.g. 0 or 1e-3; received {text!r}"
        ) from None


def _parser():
    parser = _Parser(
        prog=PROG,
        description="Sparsity tools for Keras 3 models (keras_reg).",
        epilog="Run 'keras-reg report --help' or 'keras-reg shrink --help' for a command.",
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
        help='print JSON: {"file", "threshold", "sparsity", "size", "zeros", "rows": [...], '
        '"skipped": [{"path", "reason"}, ...]}',
    )
    report.add_argument(
        "--all",
        action="store_true",
        help="also count weights of rank < 2 (biases, normalization parameters and statistics)",
    )
    shrink = commands.add_parser(
        "shrink",
        help="save a smaller copy of a .keras model, without its dead units and filters",
        description=_SHRINK_HELP,
        epilog=_SHRINK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    shrink.add_argument("model", metavar="IN.keras", help="a model saved with model.save()")
    shrink.add_argument("output", metavar="OUT.keras", help="where to save the smaller model")
    shrink.add_argument(
        "--force", action="store_true", help="replace OUT.keras if it exists (never IN.keras)"
    )
    return parser


_SHRINK_HELP = """Load a model saved with model.save() (safe mode on: no code from the file is
run), remove every unit, filter and channel that cannot change its outputs
(keras_reg.shrink: all-zero units, unused units, constant units folded into
the next layer's bias where that is exact), check on a random batch that the
outputs are unchanged, and save the smaller model to OUT.keras. Prints, per
layer, the units, parameters and multiply-accumulates before and after.

IN.keras is never written to. The model's custom layers and regularizers must
be importable (keras_reg's own are). The saved model is uncompiled, like
keras.models.clone_model: compile it again to train it further.
"""

_SHRINK_EPILOG = """examples:
  keras-reg shrink model.keras small.keras
  keras-reg shrink model.keras small.keras --force

exit status: 0 on success, 2 for a missing or unreadable file, an existing
OUT.keras without --force, or a model shrink cannot read; 1 if the shrunk
model failed its own check (a bug: please report it).
"""


def main(argv=None):
    """Runs `keras-reg`; returns the exit status (0, or 2 for a user's mistake)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code
    return _COMMANDS[args.command](args)


def _report(args):
    try:
        counted, skipped = count_weights(
            args.model, threshold=args.threshold, min_rank=0 if args.all else 2
        )
    except ArchiveError as exc:
        print(f"{PROG} report: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        report = _build_report(counted, args.threshold, name=str)
        skipped = [{"path": name, "reason": reason} for name, reason in skipped]
        print(json.dumps({"file": args.model, **report.to_dict(), "skipped": skipped}, indent=2))
        return 0
    # Names come from the file: escape what would drive the terminal.
    report = _build_report(counted, args.threshold, name=printable)
    print(f"{printable(args.model)}: {len(report.rows)} weights")
    print(report)
    if skipped:
        print(f"Not counted ({len(skipped)}):")
        for name, reason in skipped:
            print(f"  {printable(name)}: {printable(reason)}")
    return 0


def _build_report(counted, threshold, name):
    from keras_reg.report import SparsityReport, SparsityRow  # no Keras: plain dataclasses

    rows = []
    for path, shape, c in counted:
        size = math.prod(shape)
        rank2 = len(shape) >= 2
        rows.append(
            SparsityRow(
                path=name(path),
                shape=shape,
                size=size,
                zeros=c.zeros,
                sparsity=c.zeros / size if size else 0.0,
                inputs=shape[-2] if rank2 else None,
                zero_inputs=c.zero_inputs,
                units=shape[-1] if rank2 else None,
                zero_units=c.zero_units,
            )
        )
    return SparsityReport(rows, threshold)


def _shrink(args):
    def fail(message, status=2):
        print(f"{PROG} shrink: error: {printable(message)}", file=sys.stderr)
        return status

    source, target = args.model, args.output
    for path, role in ((source, "IN"), (target, "OUT")):
        if not path.endswith(".keras"):
            return fail(f"{path}: {role} must be a .keras file (the name must end in .keras)")
    try:
        mode = os.stat(source).st_mode
    except OSError as exc:
        return fail(f"{source}: cannot be read: {exc.strerror or exc}")
    if not stat.S_ISREG(mode):
        return fail(f"{source}: not a regular file, so not read")
    if os.path.lexists(target):
        if os.path.exists(target) and os.path.samefile(source, target):
            return fail(f"{target}: is IN.keras itself; shrink never writes to the file it reads")
        if not args.force:
            return fail(f"{target}: already exists; pass --force to replace it")
        if not os.path.isfile(target):
            return fail(f"{target}: exists and is not a regular file, so not replaced")
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        return fail(f"{target}: its folder {folder} does not exist")

    # TensorFlow 2.21 prints its oneDNN notice whatever TF_CPP_MIN_LOG_LEVEL says. Only
    # before Keras (and its backend) is loaded: main() called in a process that has it
    # already must not hand another oneDNN setting to the processes it starts later.
    if "keras" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import keras

    import keras_reg

    try:
        model = keras.saving.load_model(source, compile=False, safe_mode=True)
    except Exception as exc:  # any failure to load an untrusted file is the file's
        return fail(f"{source}: cannot be loaded ({type(exc).__name__}: {one_line(exc)})")
    try:
        plan = keras_reg.plan_shrink(model)
        small = keras_reg.shrink(model, plan=plan)
    except ValueError as exc:
        return fail(f"{source}: {one_line(exc)}")
    except RuntimeError as exc:
        return fail(one_line(exc), status=1)
    # Write next to OUT, then rename: OUT is never left half written.
    handle, partial = tempfile.mkstemp(suffix=".keras", prefix=".keras-reg-", dir=folder)
    os.close(handle)
    try:
        small.save(partial)
        os.replace(partial, target)
    except Exception as exc:
        return fail(f"{target}: cannot be written ({one_line(exc)})")
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    print(f"{printable(source)} -> {printable(target)}")
    print(plan)
    return 0


# One handler per subcommand: adding a command is a parser entry and a function here.
_COMMANDS = {"report": _report, "shrink": _shrink}
