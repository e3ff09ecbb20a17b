"""`make bench`: keras_reg's cost next to Keras' built-ins and next to the memory floor.

    python -m benchmarks.run                 # everything, 3-4 minutes on 2 cores
    python -m benchmarks.run --quick         # small models and sizes, under a minute
    python -m benchmarks.run --sections logger,scaling --threads 1
    python -m benchmarks.run --write BENCHMARKS.md   # what `make bench` runs

Prints the machine, one table per section as it finishes, then every ratio:
comparison | ratio (median) | goal | met?. Each ratio is measured in one
process, the variants interleaved in a new shuffled order every round (the
two sides of a ratio back to back), and is the median over rounds of the
per-round ratio; the IQR column is the spread of those per-round ratios.
With `--write PATH` it also writes that summary, the method and the machine as
Markdown (BENCHMARKS.md is written so, never by hand).
"""

import argparse
import dataclasses
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

SECTIONS = (
    "penalties",
    "proximal",
    "backends",
    "group",
    "logger",
    "scaling",
    "memory",
    "report",
    "shrink",
    "channels",
    "path",
)


@dataclasses.dataclass(frozen=True)
class Config:
    rounds: int = 31  # train-step sections
    seed: int = 0
    batch: int = 64
    mlp_layers: int = 6
    mlp_units: int = 512
    mlp_steps: int = 10  # train steps per timed call (steps_per_execution)
    cnn_filters: tuple = (32, 64)
    cnn_steps: int = 4
    xla: bool = True  # also time Proximal with jit_compile=True
    group_repeat: int = 5  # compiled penalty+prox calls per timing
    logger_millions: tuple = (25, 100)
    sparsity_rounds: int = 21
    scaling_millions: tuple = (1, 10, 25, 50, 100)
    scaling_rounds: int = 15
    memory_millions: int = 100
    quick: bool = False


FULL = Config()
QUICK = Config(
    rounds=9,
    mlp_layers=3,
    mlp_units=256,
    mlp_steps=20,
    cnn_filters=(16, 32),
    cnn_steps=5,
    xla=False,
    group_repeat=3,
    logger_millions=(4,),
    sparsity_rounds=7,
    scaling_millions=(1, 2, 4),
    scaling_rounds=5,
    memory_millions=16,
    quick=True,
)


def _parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Time keras_reg next to Keras' built-ins and next to the memory floor; "
        "prints ratios measured side by side (median over interleaved rounds).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small models and sizes (under a minute)"
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of: {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--rounds", type=int, help="rounds for the train-step sections")
    parser.add_argument("--seed", type=int, default=0, help="seed of the interleaving order")
    parser.add_argument(
        "--write",
        metavar="PATH",
        help="also write the method, the machine and every figure as Markdown to PATH "
        "(make bench: BENCHMARKS.md)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="TensorFlow intra-op and inter-op threads (default: TensorFlow's, one per core); "
        "1 gives steadier ratios on a machine shared with other jobs",
    )
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        parser.error(
            f"--sections takes a comma-separated subset of {', '.join(SECTIONS)}. "
            f"Received: {args.sections!r}"
        )
    for flag in ("rounds", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag} must be a positive integer. Received: {value}")
    cfg = QUICK if args.quick else FULL
    cfg = dataclasses.replace(cfg, seed=args.seed)
    if args.rounds is not None:
        cfg = dataclasses.replace(cfg, rounds=args.rounds)
    return args, cfg, sections


LOGGED = []


def log(text=""):
    print(text, flush=True)
    LOGGED.append(text)


METHOD = """\
Every figure is a ratio of two variants timed in the same process, on the same
machine, in the same run: each round times every variant once, in a new
shuffled order (the two sides of a ratio back to back), and a figure is the
median over rounds of the per-round ratio; the IQR column is the spread of the
per-round ratios. Where a goal lies inside that spread the verdict says
"within noise". Train steps are compiled Keras train functions on one fixed
batch (TensorFlow: `steps_per_execution` steps per call; JAX and PyTorch: 10
`train_on_batch` calls per timing, in their own processes). The sparsity floor
is one `np.count_nonzero` pass over host copies of the same weights. Peak
memory is read from the kernel (VmHWM) in a fresh process per implementation.
Pending rows are goals whose code is not on this branch yet."""


def write_markdown(path, command, machine_rows, results, sections_text, elapsed):
    from benchmarks import _harness

    goals = [r for r in results if r.goal is not None and not r.pending]
    met = [r for r in goals if r.ratio <= r.goal]
    text = [
        "# keras_reg benchmarks",
        "",
        f"Written by `make bench` (`{command}`) in {elapsed:.0f} s; do not edit by hand, "
        "run it again. Goals met: "
        f"{len(met)} of {len(goals)} measured"
        + (
            f", {sum(1 for r in results if r.pending)} pending."
            if any(r.pending for r in results)
            else "."
        ),
        "",
        "## Method",
        "",
        METHOD,
        "",
        "## Machine",
        "",
        _harness.table(("", ""), machine_rows, align=["<", "<"]),
        "",
        "## Figures",
        "",
        _harness.summary_table(results),
        "",
        "## Details",
        "",
        "<details><summary>Each section's timings, as printed</summary>",
        "",
        "```text",
        *sections_text,
        "```",
        "",
        "</details>",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(text))


def main(argv=None):
    args, cfg, sections = _parse(sys.argv[1:] if argv is None else argv)
    if os.environ["KERAS_BACKEND"] != "tensorflow":
        sys.exit(
            "benchmarks.run times TensorFlow's compiled train function: run it with "
            f"KERAS_BACKEND=tensorflow (received KERAS_BACKEND={os.environ['KERAS_BACKEND']})."
        )
    start = time.perf_counter()
    import tensorflow as tf

    from benchmarks import _harness, channels, hooks, path, shrink, sparsity, train_steps

    # Every section builds many models on purpose; TF's "N out of the last N calls
    # triggered retracing" warning counts first traces of distinct models.
    tf.get_logger().setLevel("ERROR")
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    command = "python -m benchmarks.run" + (" " + " ".join(sys.argv[1:]) if argv is None else "")
    log(f"# keras_reg benchmarks ({'quick' if args.quick else 'full'}): {command.strip()}\n")
    machine_rows = _harness.machine()
    log(_harness.table(("", ""), machine_rows, align=["<", "<"]))
    details_from = len(LOGGED)
    runners = {
        "penalties": train_steps.penalties,
        "proximal": train_steps.proximal,
        "group": train_steps.group,
        "logger": sparsity.logger_vs_floor,
        "scaling": sparsity.scaling,
        "memory": sparsity.memory,
        "backends": train_steps.backends,
        "report": hooks.report_vs_h5py,
        "channels": channels.speed_up_2,
        "path": path.warm_vs_cold,
        "shrink": lambda cfg, log: (
            hooks.shrink_vs_clone(cfg, log)
            + hooks.shrunk_vs_direct(cfg, log)
            + shrink.applications(cfg, log)
        ),
    }
    results = []
    for name in sections:
        t0 = time.perf_counter()
        log(f"\n## {name}")
        results += runners[name](cfg, log)
        log(f"({name}: {time.perf_counter() - t0:.0f} s)")
    log("\n## Summary\n")
    log(_harness.summary_table(results))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    log(f"\nTotal {time.perf_counter() - start:.0f} s; load average at the end {load}.")
    if args.quick:
        log("Quick run: small models, sizes and few rounds, a smoke test; the figures of record")
        log("and their verdicts come from the full run (BENCHMARKS.md).")
    sections_text = LOGGED[details_from:]
    goals = [r for r in results if r.goal is not None and not r.pending]
    missed = [r for r in goals if r.ratio > r.goal]
    log(
        f"Goals met: {len(goals) - len(missed)} of {len(goals)}"
        + (f" ({len(missed)} missed: see the IQR column for the noise)." if missed else ".")
    )
    if args.write:
        write_markdown(
            args.write,
            command.strip(),
            machine_rows,
            results,
            sections_text,
            time.perf_counter() - start,
        )
        log(f"Wrote {args.write}.")


if __name__ == "__main__":
    main()
