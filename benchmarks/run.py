"""`make bench`: keras_reg's cost next to Keras' built-ins and next to the memory floor.

    python -m benchmarks.run                 # everything, 3-4 minutes on 2 cores
    python -m benchmarks.run --quick         # small models and sizes, under a minute
    python -m benchmarks.run --sections logger,scaling --threads 1

Prints the machine, one table per section as it finishes, then every ratio:
comparison | ratio (median) | goal | met?. Each ratio is measured in one
process, the variants interleaved in a new shuffled order every round (the
two sides of a ratio back to back), and is the median over rounds of the
per-round ratio; the IQR column is the spread of those per-round ratios.
"""

import argparse
import dataclasses
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

SECTIONS = ("penalties", "proximal", "group", "logger", "scaling", "memory")


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
    logger_millions: int = 25
    sparsity_rounds: int = 21
    scaling_millions: tuple = (1, 10, 25, 50, 100)
    scaling_rounds: int = 15
    memory_millions: int = 100


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
    logger_millions=4,
    sparsity_rounds=7,
    scaling_millions=(1, 2, 4),
    scaling_rounds=5,
    memory_millions=16,
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


def log(text=""):
    print(text, flush=True)


def main(argv=None):
    args, cfg, sections = _parse(sys.argv[1:] if argv is None else argv)
    if os.environ["KERAS_BACKEND"] != "tensorflow":
        sys.exit(
            "benchmarks.run times TensorFlow's compiled train function: run it with "
            f"KERAS_BACKEND=tensorflow (received KERAS_BACKEND={os.environ['KERAS_BACKEND']})."
        )
    start = time.perf_counter()
    import tensorflow as tf

    from benchmarks import _harness, sparsity, train_steps

    # Every section builds many models on purpose; TF's "N out of the last N calls
    # triggered retracing" warning counts first traces of distinct models.
    tf.get_logger().setLevel("ERROR")
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    command = "python -m benchmarks.run" + (" " + " ".join(sys.argv[1:]) if argv is None else "")
    log(f"# keras_reg benchmarks ({'quick' if args.quick else 'full'}): {command.strip()}\n")
    log(_harness.table(("", ""), _harness.machine(), align=["<", "<"]))
    runners = {
        "penalties": train_steps.penalties,
        "proximal": train_steps.proximal,
        "group": train_steps.group,
        "logger": sparsity.logger_vs_floor,
        "scaling": sparsity.scaling,
        "memory": sparsity.memory,
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
    goals = [r for r in results if r.goal is not None]
    missed = [r for r in goals if r.ratio > r.goal]
    log(
        f"Goals met: {len(goals) - len(missed)} of {len(goals)}"
        + (" (BENCHMARKS.md says what bounds the others)." if missed else ".")
    )


if __name__ == "__main__":
    main()
