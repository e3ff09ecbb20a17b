"""Timing, memory reading, the machine's description and the result table.

On a shared, noisy machine only ratios measured side by side mean anything:
`interleave` times every variant once per round, in a new shuffled order each
round, and `ratio` takes the median over rounds of the per-round ratio, so a
slow spell hits both sides of a ratio alike.
"""

import dataclasses
import datetime
import gc
import os
import platform
import random
import statistics
import time


def interleave(cases, rounds, warmup=1, seed=0, groups=None):
    """Times each callable of `cases` once per round, in a shuffled order.

    Args:
        cases: dict, name -> callable taking no argument.
        rounds: number of rounds.
        warmup: calls of each case before timing (tracing, caches).
        seed: seed of the order's shuffling.
        groups: optional list of tuples of names timed back to back within a
            round (the two sides of a ratio, so that a burst of load from
            another job hits both); the groups' order and the order within
            each group are shuffled. Names in no group are groups of one.

    Returns:
        dict, name -> list of `rounds` durations in seconds (round `r` at `[r]`).
    """
    names = list(cases)
    grouped = [tuple(g) for g in (groups or [])]
    in_groups = {name for g in grouped for name in g}
    grouped += [(name,) for name in names if name not in in_groups]
    for name in names:
        for _ in range(warmup):
            cases[name]()
    rng = random.Random(seed)
    times = {name: [] for name in names}
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            order = grouped[:]
            rng.shuffle(order)
            for group in order:
                group = list(group)
                rng.shuffle(group)
                for name in group:
                    start = time.perf_counter()
                    cases[name]()
                    times[name].append(time.perf_counter() - start)
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def quartiles(values):
    """(first quartile, median, third quartile) of a list of numbers."""
    values = sorted(values)
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def per_round_ratios(times, a, b):
    return [x / y for x, y in zip(times[a], times[b], strict=True)]


@dataclasses.dataclass
class Ratio:
    """One row of the final table: a median ratio, its spread, and its goal.

    `q1`/`q3` are the quartiles of the per-round ratios: where a goal lies
    between them, the machine's noise is as large as the distance to the goal.
    """

    section: str
    comparison: str
    ratio: float
    q1: float
    q3: float
    goal: float | None = None
    note: str = ""
    pending: str = ""  # why there is no figure yet (a hook whose code is not here)

    @classmethod
    def pending_row(cls, section, comparison, goal, reason):
        nan = float("nan")
        return cls(section, comparison, nan, nan, nan, goal, pending=reason)

    @classmethod
    def from_times(cls, section, comparison, times, a, b, goal=None, note=""):
        q1, q2, q3 = quartiles(per_round_ratios(times, a, b))
        return cls(section, comparison, q2, q1, q3, goal, note)

    @property
    def met(self):
        if self.pending:
            return "pending"
        if self.goal is None:
            return "-"
        verdict = "yes" if self.ratio <= self.goal else "NO"
        if self.q1 <= self.goal <= self.q3:
            verdict += " (within noise)"
        return verdict


def format_ratio(x):
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def table(header, rows, align=None):
    """A Markdown table, padded so that it also reads as plain text."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(r[i]) for r in [list(header), *rows]) for i in range(len(header))]
    align = align or ["<"] + [">"] * (len(header) - 1)

    def fmt(row):
        cells = [
            cell.ljust(w) if a == "<" else cell.rjust(w)
            for cell, w, a in zip(row, widths, align, strict=True)
        ]
        return "| " + " | ".join(cells) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if a == ">" else "-" * (w + 2)
            for w, a in zip(widths, align, strict=True)
        )
        + "|"
    )
    return "\n".join([fmt(header), rule, *[fmt(r) for r in rows]])


def summary_table(results):
    header = ("section", "comparison", "ratio (median)", "IQR of rounds", "goal", "met?")
    rows = [
        (
            r.section,
            r.comparison
            + (f" ({r.note})" if r.note else "")
            + (f" [{r.pending}]" if r.pending else ""),
            "-" if r.pending else format_ratio(r.ratio),
            "-" if r.pending else f"{format_ratio(r.q1)}-{format_ratio(r.q3)}",
            "-" if r.goal is None else f"<= {r.goal:g}",
            r.met,
        )
        for r in results
    ]
    return table(header, rows, align=["<", "<", ">", ">", ">", "<"])


# --- memory ------------------------------------------------------------------------
#
# tracemalloc sees only Python's allocator, not TensorFlow's buffers; the kernel's
# resident-set figures see everything. Writing "5" to /proc/self/clear_refs resets
# the peak (VmHWM) to the current RSS, so the peak of one call can be read.


def proc_status_kib(field):
    """A `kB` field of /proc/self/status (`VmRSS`, `VmHWM`) in KiB, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss():
    """Resets VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


# --- the machine ---------------------------------------------------------------------


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or "unknown CPU"
    fields = {}
    for line in info.splitlines():
        if ":" in line:
            key, value = (s.strip() for s in line.split(":", 1))
            fields.setdefault(key, value)
    name = fields.get("model name", "unknown CPU")
    extra = []
    if "cpu family" in fields and "model" in fields:
        extra.append(f"family {fields['cpu family']} model {fields['model']}")
    flags = fields.get("flags", "").split()
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16") if f in flags]
    if simd:
        extra.append("/".join(simd))
    if "hypervisor" in flags:
        extra.append("virtual machine")
    return name + (f" ({', '.join(extra)})" if extra else "")


def _mem_total_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def machine():
    """The machine and the software, as (label, value) pairs."""
    import keras
    import numpy as np

    import keras_reg

    backend = keras.backend.backend()
    versions = [f"keras {keras.__version__}", f"numpy {np.__version__}"]
    threads = ""
    if backend == "tensorflow":
        import tensorflow as tf

        versions.insert(0, f"tensorflow {tf.__version__}")
        intra = tf.config.threading.get_intra_op_parallelism_threads()
        inter = tf.config.threading.get_inter_op_parallelism_threads()
        threads = f"; TF threads intra-op {intra or 'default'}, inter-op {inter or 'default'}"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem = _mem_total_gib()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return [
        ("date", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
        ("CPU", _cpu_model()),
        ("cores", f"{os.cpu_count()} logical, {usable} usable{threads}"),
        ("memory", f"{mem:.1f} GiB" if mem else "unknown"),
        ("GPU", "none used (CPU benchmarks)"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("backend", f"{backend}: " + ", ".join(versions) + f"; keras_reg {keras_reg.__version__}"),
        ("load average at start", " ".join(f"{x:.2f}" for x in load) if load else "unknown"),
    ]
