"""`SparsityLogger` and `sparsity_report`: time against the memory floor, scaling, peak memory.

The floor is one `np.count_nonzero` pass over the same weights already in host
memory: a single read of every weight, the least any count can cost. The
obvious implementation is `model.get_weights()` then NumPy, computing what the
logger computes (zeros, all-zero rows, all-zero columns).

Models are stacks of Dense(1000) layers on a 1000-feature input, so a model of
N million kernel weights has N kernels of 1000 x 1000; half of each kernel's
entries and a tenth of its columns are zero, as after proximal training.

Run as `python -m benchmarks.sparsity --probe-memory IMPL MILLIONS` it is the
child process of the memory section (see `memory`).
"""

import gc
import json
import os
import subprocess
import sys
import time

import keras
import numpy as np

import keras_reg
from benchmarks._harness import (
    Ratio,
    interleave,
    per_round_ratios,
    proc_status_kib,
    quartiles,
    reset_peak_rss,
    table,
)

WIDTH = 1000


def dense_stack(millions, width=WIDTH, seed=0):
    """A model of `millions` Dense(width) layers: `millions` x 1e6 kernel weights (width 1000)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((width,))] + [keras.layers.Dense(width) for _ in range(millions)]
    )
    sparsify(model, seed)
    return model


def one_kernel(side, seed=0):
    """One Dense(side) on `side` features: a single `side` x `side` kernel."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((side,)), keras.layers.Dense(side)])
    sparsify(model, seed)
    return model


def sparsify(model, seed):
    """Zeroes half of every kernel's entries and a tenth of its columns, in place."""
    rng = np.random.default_rng(seed)
    for w in kernels(model):
        value = np.array(w.numpy())
        value[rng.random(value.shape, dtype=np.float32) < 0.5] = 0.0
        value[:, : value.shape[-1] // 10] = 0.0
        w.assign(value)
        del value


def kernels(model):
    return [w for w in model.trainable_weights if len(w.shape) >= 2]


def weight_bytes(model):
    return sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in kernels(model))


def make_logger(model):
    callback = keras_reg.SparsityLogger(threshold=0.0)
    callback.set_model(model)

    def run():
        callback.on_epoch_end(0, {})

    return run


def make_report(model):
    def run():
        keras_reg.sparsity_report(model)

    return run


def make_floor(model):
    """One `np.count_nonzero` over host copies of the kernels (made once, outside the timing)."""
    host = [np.array(w.numpy(), copy=True) for w in kernels(model)]

    def run():
        for array in host:
            np.count_nonzero(array)

    return run


def make_obvious(model):
    """`get_weights()` then NumPy: zeros, all-zero rows and columns of every kernel."""

    def run():
        for array in model.get_weights():
            if array.ndim < 2:
                continue
            zero = array == 0.0
            np.count_nonzero(zero)
            np.count_nonzero(zero.all(axis=tuple(range(1, array.ndim))))
            np.count_nonzero(zero.all(axis=tuple(range(array.ndim - 1))))

    return run


MAKERS = {
    "logger": make_logger,
    "report": make_report,
    "floor": make_floor,
    "obvious": make_obvious,
}


def _ms_rows(times, order, millions):
    rows = []
    for name in order:
        q1, q2, q3 = quartiles(times[name])
        rows.append(
            (
                name,
                f"{1e3 * q2:.1f}",
                f"{1e3 * q1:.1f}-{1e3 * q3:.1f}",
                f"{1e3 * q2 / millions:.2f}",
            )
        )
    return rows


def logger_vs_floor(cfg, log):
    """Epoch-end cost of the logger against the floor and the obvious implementation.

    At each size of `cfg.logger_millions` (25M and 100M weights in the full run),
    on N kernels of 1000 x 1000 and on one square kernel of the same size; one
    model in memory at a time.
    """
    results = []
    for millions in cfg.logger_millions:
        side = int(round((millions * 1e6) ** 0.5))
        builders = {
            f"{millions} x (1000, 1000)": lambda m=millions: dense_stack(m),
            f"1 x ({side}, {side})": lambda s=side: one_kernel(s),
        }
        for label, build in builders.items():
            results += _logger_vs_floor_on(build(), label, cfg, log)
            keras.backend.clear_session()
            gc.collect()
    return results


# The goal of the performance issue: an epoch end within 1.2x one read of the weights.
LOGGER_GOAL = 1.2


def _logger_vs_floor_on(model, label, cfg, log):
    cases = {name: make(model) for name, make in MAKERS.items()}
    # The first call of a new logger selects the weights and traces its counter.
    start = time.perf_counter()
    cases["logger"]()
    first = time.perf_counter() - start
    times = interleave(cases, cfg.sparsity_rounds, warmup=2, seed=cfg.seed)
    n = sum(int(np.prod(w.shape)) for w in kernels(model)) / 1e6
    log(
        f"\nEpoch end on {n:.1f}M kernel weights, kernels {label}, {cfg.sparsity_rounds} "
        f"rounds; the logger's first call (tracing its counter): {1e3 * first:.0f} ms"
    )
    log(
        table(
            ("implementation", "ms (median)", "IQR", "ms per M weights"),
            _ms_rows(times, list(cases), n),
        )
    )
    section = f"SparsityLogger, {n:.0f}M weights"
    # The goal is stated from 25M weights up; a smaller model carries the fixed cost
    # of a call (~1 ms) on a smaller floor.
    goal = LOGGER_GOAL if n >= 25 else None
    return [
        Ratio.from_times(
            section, "logger / floor", times, "logger", "floor", goal=goal, note=label
        ),
        Ratio.from_times(
            section,
            "logger / obvious (get_weights + NumPy)",
            times,
            "logger",
            "obvious",
            note=label,
        ),
        Ratio.from_times(section, "sparsity_report / floor", times, "report", "floor", note=label),
    ]


def scaling(cfg, log):
    """The logger and the report from the smallest to the largest size: cost per M weights.

    All sizes are built first and timed in the same rounds, so that the machine's
    load changes hit every size alike; linearity is the median over rounds of
    (cost per M weights at the largest size) / (cost per M weights at the reference).
    """
    sizes = cfg.scaling_millions
    models = {millions: dense_stack(millions) for millions in sizes}
    cases = {
        (name, millions): MAKERS[name](model)
        for millions, model in models.items()
        for name in ("logger", "report", "floor")
    }
    times = interleave(cases, cfg.scaling_rounds, warmup=1, seed=cfg.seed)
    per_m = {key: [t / key[1] for t in values] for key, values in times.items()}
    rows = []
    for millions in sizes:
        med = {
            name: quartiles(times[(name, millions)])[1] for name in ("logger", "report", "floor")
        }
        logger_floor = quartiles(per_round_ratios(times, ("logger", millions), ("floor", millions)))
        rows.append(
            (
                f"{millions}M",
                f"{1e3 * med['logger']:.1f}",
                f"{1e3 * med['report']:.1f}",
                f"{1e3 * med['floor']:.1f}",
                f"{1e3 * med['logger'] / millions:.2f}",
                f"{1e3 * med['report'] / millions:.2f}",
                f"{1e3 * med['floor'] / millions:.2f}",
                f"{logger_floor[1]:.2f}",
            )
        )
    log(f"\nScaling: N x Dense(1000) kernels, all sizes interleaved, {cfg.scaling_rounds} rounds")
    log(
        table(
            (
                "weights",
                "logger ms",
                "report ms",
                "floor ms",
                "logger ms/M",
                "report ms/M",
                "floor ms/M",
                "logger/floor",
            ),
            rows,
        )
    )
    # Linear growth: the cost per million weights stays flat from the reference size
    # up. The smallest size carries the fixed cost of a call (and fits in cache), so
    # the reference is the second size when there are three or more.
    ref = sizes[1] if len(sizes) > 2 else sizes[0]
    top = sizes[-1]
    results = []
    for name in ("logger", "report", "floor"):
        results.append(
            Ratio.from_times(
                "scaling",
                f"{name}: cost per M weights at {top}M / at {ref}M",
                per_m,
                (name, top),
                (name, ref),
                goal=None if name == "floor" else 1.2,
                note="1.0 = linear",
            )
        )
    del cases, models
    keras.backend.clear_session()
    gc.collect()
    return results


# --- peak memory ---------------------------------------------------------------------
#
# tracemalloc sees only Python's allocator, not TensorFlow's buffers; the kernel's
# resident-set figures see everything, provided freed memory leaves the process. Each
# implementation therefore runs in a fresh process in which:
# - TF_ENABLE_ONEDNN_OPTS=0: TensorFlow's CPU buffers come from malloc, not from
#   oneDNN's BFC pool, which keeps freed memory and would hide the temporaries;
# - MALLOC_MMAP_THRESHOLD_=131072: glibc serves every buffer above 128 KiB with its own
#   mmap and unmaps it when freed, so the resident set follows the live memory.
# VmHWM is reset just before each call; peak - RSS after the call is the memory the call
# needed for itself (its temporaries), `after - before` what it kept (the traced
# function, on the first call).


def _probe(impl, millions, calls=3):
    model = dense_stack(millions)
    run = MAKERS[impl](model)
    out = {"impl": impl, "weight_bytes": weight_bytes(model), "calls": []}
    for _ in range(calls):
        gc.collect()
        before = proc_status_kib("VmRSS")
        if not reset_peak_rss():
            out["error"] = "cannot reset VmHWM (/proc/self/clear_refs)"
            break
        run()
        peak = proc_status_kib("VmHWM")
        gc.collect()
        after = proc_status_kib("VmRSS")
        out["calls"].append({"before": before * 1024, "peak": peak * 1024, "after": after * 1024})
    print(json.dumps(out))


# "No second copy of the weights": a call may need at most a quarter of their bytes.
MEMORY_GOAL = 0.25

MEMORY_ENV = {"TF_ENABLE_ONEDNN_OPTS": "0", "MALLOC_MMAP_THRESHOLD_": "131072"}


def memory(cfg, log):
    """Peak memory of one logger / report / get_weights call, against the weights' bytes."""
    millions = cfg.memory_millions
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **MEMORY_ENV)
    names = {
        "logger": "SparsityLogger",
        "report": "sparsity_report",
        "obvious": "get_weights + NumPy",
    }
    # One fresh process per implementation, all at once: each reads its own RSS.
    procs = {
        impl: subprocess.Popen(
            [sys.executable, "-m", "benchmarks.sparsity", "--probe-memory", impl, str(millions)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for impl in names
    }
    rows, results = [], []
    for impl, name in names.items():
        stdout, stderr = procs[impl].communicate()
        lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
        if procs[impl].returncode != 0 or not lines:
            log(f"memory probe for {impl} failed:\n{stderr[-2000:]}")
            continue
        out = json.loads(lines[-1])
        if "error" in out:
            log(f"memory probe for {impl}: {out['error']}")
            continue
        size = out["weight_bytes"]
        calls = out["calls"]
        temporary = max(c["peak"] - c["after"] for c in calls)
        kept = calls[0]["after"] - calls[0]["before"]
        mib = 2**20
        rows.append(
            (
                name,
                f"{size / mib:.0f}",
                " / ".join(f"{(c['peak'] - c['before']) / mib:.1f}" for c in calls),
                f"{kept / mib:.1f}",
                f"{temporary / mib:.1f}",
                f"{temporary / size:.3f}",
            )
        )
        ratio = temporary / size
        results.append(
            Ratio(
                f"peak memory, {millions}M weights",
                f"{name}: peak temporary memory / weights' bytes",
                ratio,
                ratio,
                ratio,
                goal=MEMORY_GOAL if impl != "obvious" else None,
                note="1.0 = a second copy",
            )
        )
    log(
        f"\nPeak RSS of one call, {millions}M kernel weights, a fresh process per row, "
        f"{' '.join(f'{k}={v}' for k, v in MEMORY_ENV.items())}"
    )
    log(
        table(
            (
                "implementation",
                "weights MiB",
                "peak growth per call MiB",
                "kept by 1st call MiB",
                "temporary MiB (max)",
                "temporary / weights",
            ),
            rows,
        )
    )
    return results


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--probe-memory":
        _probe(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit("usage: python -m benchmarks.sparsity --probe-memory IMPL MILLIONS")
