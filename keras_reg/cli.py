"""The `keras-reg` command (also `python -m keras_reg`).

`keras-reg report MODEL.keras [--threshold T] [--json] [--all]` prints the
sparsity table of a saved model. It reads the weights straight from the
archive (see `keras_reg._archive.reader` for how it names them): it never rebuilds
the model, so custom layers need not be importable and no code from the file
runs, and it never writes to the file.

`keras-reg shrink IN.keras OUT.keras [--force] [--drop-inputs]` checks the
archive's members (`keras_reg._archive.screen`: zip bombs, odd names) before
Keras opens it, loads the model (safe mode on), removes the units and filters
that do nothing (`keras_reg.shrink`) and saves the smaller model to OUT. It
never writes to IN and refuses an existing OUT unless `--force` is given.

`keras-reg --version` prints the version; `--help`, `--version` and `report`
never import Keras.
"""

import argparse
import copy
import dataclasses
import json
import math
import os
import stat
import sys
import tempfile

from keras_reg import __version__
from keras_reg._archive import ArchiveError, count_weights, one_line, printable
from keras_reg._archive.screen import screen_archive
from keras_reg._validation import check_float
from keras_reg.report import SparsityReport, rows_from_counts  # no Keras: plain dataclasses

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
        epilog="Run 'keras-reg COMMAND --help' (report, shrink, prune) for a command.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
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
    shrink.add_argument(
        "--drop-inputs",
        action="store_true",
        help="also remove the input features no kept unit reads (keras_reg.plan_shrink("
        "drop_inputs=True)); the smaller model then takes fewer features: the kept ones are "
        "printed per input",
    )
    prune = commands.add_parser(
        "prune",
        help="save a copy of a .keras model with coupled channels pruned to a speed-up",
        description=_PRUNE_HELP,
        epilog=_PRUNE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prune.add_argument("model", metavar="IN.keras", help="a model saved with model.save()")
    prune.add_argument("output", metavar="OUT.keras", help="where to save the pruned model")
    prune.add_argument(
        "--speed-up",
        type=_speed_up,
        required=True,
        metavar="S",
        help="MACs before / MACs after, a number >= 1 (2: half the MACs)",
    )
    prune.add_argument(
        "--importance",
        choices=("magnitude", "l1", "bn_scale"),
        default="magnitude",
        help="how channels are ranked (default: magnitude, the L2 norm of each coupled "
        "group's weights); 'taylor' needs data: use keras_reg.prune_channels in Python",
    )
    prune.add_argument(
        "--uniform",
        action="store_true",
        help="prune the same fraction of every group instead of ranking them globally",
    )
    prune.add_argument(
        "--round-to", type=_positive_int, metavar="N", help="keep channel counts multiples of N"
    )
    prune.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="LAYER",
        help="a layer whose output channels are never pruned (repeat for several)",
    )
    prune.add_argument(
        "--force", action="store_true", help="replace OUT.keras if it exists (never IN.keras)"
    )
    return parser


def _speed_up(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a finite number >= 1, e.g. 2 for half the MACs; received {text!r}"
        )
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; received {text!r}")
    return value


_PRUNE_HELP = """Load a model saved with model.save() (safe mode on: no code from the file is
run), prune coupled channel groups to the speed-up asked for
(keras_reg.prune_channels: every layer that writes or reads a channel loses
it together, residual streams included; channels ranked globally by
importance), remove them (keras_reg.shrink, checked on a random batch), and
save the smaller model to OUT.keras. Prints the per-layer table and the
speed-up reached: MACs at most 1/S of the original's. Fine-tune the result.

The same rules as 'keras-reg shrink' hold: IN.keras is never written to and
is checked before Keras opens it; OUT.keras is replaced only with --force.
"""

_PRUNE_EPILOG = """examples:
  keras-reg prune model.keras small.keras --speed-up 2
  keras-reg prune model.keras small.keras --speed-up 4 --round-to 8 --ignore stem_conv

exit status: 0 on success; 2 for the mistakes 'keras-reg shrink' refuses, and
for a speed-up that pruning every prunable channel cannot reach (the message
says how close it gets); 1 if the pruned model failed its own check (a bug).
"""


_SHRINK_HELP = """Load a model saved with model.save() (safe mode on: no code from the file is
run), remove every unit, filter and channel that cannot change its outputs
(keras_reg.shrink: all-zero units, unused units, constant units folded into
the next layer's bias where that is exact), check on a random batch that the
outputs are unchanged, and save the smaller model to OUT.keras. Prints, per
layer, the units, parameters and multiply-accumulates before and after. When
nothing can be removed it says so and does not write OUT.keras.

IN.keras is never written to. The model's custom layers and regularizers must
be importable (keras_reg's own are). The saved model is uncompiled, like
keras.models.clone_model: compile it again to train it further. OUT.keras gets
the permissions model.save() would give it (those the umask allows).

IN.keras is untrusted: before Keras opens it, its zip directory is checked
(no data read). Refused: a corrupt or truncated zip; a member Keras does not
write (only config.json, metadata.json, model.weights.h5 and assets/...), an
absolute name or one with '..'; a member of over 1 MiB inflating to over 100
times its stored size (a zip bomb); config.json over 16 MiB, metadata.json
over 1 MiB, assets over 256 MiB in all; model.weights.h5 over half the memory
available (loading holds the weights in memory); with assets, members
inflating to more than the temporary folder's free space less 1 GiB.
"""

_SHRINK_EPILOG = """examples:
  keras-reg shrink model.keras small.keras
  keras-reg shrink model.keras small.keras --force
  keras-reg shrink model.keras small.keras --drop-inputs

exit status: 0 on success (also when there is nothing to remove: then OUT.keras
is not written); 2 for a missing, unreadable or refused IN.keras, an existing
OUT.keras without --force, a folder of OUT.keras that is missing or cannot be
written, OUT.keras that cannot be written (disk full), or a model shrink
cannot read; 1 if the shrunk model failed its own check (a bug: please report
it).
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
    rows = rows_from_counts((name(path), shape, c) for path, shape, c in counted)
    return SparsityReport(rows, threshold)


def _shrink(args):
    """`keras-reg shrink` and `keras-reg prune`: load IN, transform, check, save OUT."""

    def fail(message, status=2):
        print(f"{PROG} {args.command}: error: {printable(message)}", file=sys.stderr)
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
            return fail(
                f"{target}: is IN.keras itself; {args.command} never writes to the file it reads"
            )
        if not args.force:
            return fail(f"{target}: already exists; pass --force to replace it")
        if not os.path.isfile(target):
            return fail(f"{target}: exists and is not a regular file, so not replaced")
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        return fail(f"{target}: its folder {folder} does not exist")
    # Before Keras reads a byte: the members, their sizes and names (bombs, traversal).
    try:
        screen_archive(source)
    except ArchiveError as exc:
        return fail(str(exc))
    # OUT is written next to itself, then renamed: it is never left half written. The
    # temporary file is made now, before the (long) load, so that a folder that cannot be
    # written is said at once; it is removed whatever happens.
    try:
        handle, partial = tempfile.mkstemp(suffix=".keras", prefix=".keras-reg-", dir=folder)
    except OSError as exc:
        return fail(f"{target}: cannot be written in {folder}: {exc.strerror or exc}")
    try:
        os.close(handle)
        return _load_shrink_save(args, partial, fail)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _load_shrink_save(args, partial, fail):
    source, target = args.model, args.output
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
    if args.command == "prune":
        return _prune_save(args, model, partial, fail)
    try:
        plan = keras_reg.plan_shrink(model, drop_inputs=args.drop_inputs)
        if _removes_nothing(plan):
            print(
                f"{printable(source)}: nothing to remove (every unit, filter and channel is "
                f"used); {printable(target)} not written"
            )
            return 0
        small = keras_reg.shrink(model, plan=plan)
    except ValueError as exc:
        return fail(f"{source}: {one_line(exc)}")
    except RuntimeError as exc:
        return fail(one_line(exc), status=1)
    status = _save(small, partial, target, fail)
    if status:
        return status
    print(f"{printable(source)} -> {printable(target)}")
    print(_printable_plan(plan))
    if args.drop_inputs:
        for name, kept in plan.inputs_kept.items():
            print(f"input {printable(name)} keeps features {kept}")
    return 0


def _save(small, partial, target, fail):
    try:
        small.save(partial)
        # mkstemp made it 0600; model.save would give what the umask allows.
        os.chmod(partial, 0o666 & ~_umask())
        os.replace(partial, target)
    except Exception as exc:
        return fail(f"{target}: cannot be written ({one_line(exc)})")
    return 0


def _prune_save(args, model, partial, fail):
    import keras_reg

    try:
        plan = keras_reg.plan_channels(
            model,
            args.speed_up,
            importance=args.importance,
            global_pruning=not args.uniform,
            round_to=args.round_to,
            ignored_layers=args.ignore or None,
        )
        small = keras_reg.shrink(plan._model, plan=plan.shrink_plan)
    except ValueError as exc:
        return fail(f"{args.model}: {one_line(exc)}")
    except RuntimeError as exc:
        return fail(one_line(exc), status=1)
    status = _save(small, partial, args.output, fail)
    if status:
        return status
    print(f"{printable(args.model)} -> {printable(args.output)}")
    print(_printable_plan(plan.shrink_plan))
    print(
        f"speed-up {plan.speed_up:.3f}x (asked {args.speed_up:g}x): MACs "
        f"{plan.macs_before:,} -> {plan.macs_after:,}, params {plan.params_before:,} -> "
        f"{plan.params_after:,}"
    )
    return 0


def _removes_nothing(plan):
    return plan.params_after == plan.params_before and all(
        row.units_after == row.units_before for row in plan.rows
    )


def _printable_plan(plan):
    """The plan's table with the names from the file escaped before it is laid out."""
    shown = copy.copy(plan)
    shown.rows = tuple(
        dataclasses.replace(row, name=printable(row.name), kind=printable(row.kind))
        for row in plan.rows
    )
    shown.kept_whole = tuple((printable(name), printable(why)) for name, why in plan.kept_whole)
    shown.dead = tuple(printable(name) for name in plan.dead)
    return str(shown)


def _umask():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # pragma: no cover - no /proc: read it by setting it back
    os.umask(mask)
    return mask


# One handler per subcommand: adding a command is a parser entry and a function here.
_COMMANDS = {"report": _report, "shrink": _shrink, "prune": _shrink}
