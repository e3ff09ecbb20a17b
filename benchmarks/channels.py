"""`keras_reg.prune_channels(model, speed_up=2)` on keras.applications: MACs, params, latency.

For each family of the structured-pruning issue (64x64 inputs, 10 classes, `weights=None`):
the MACs and parameter ratios of the pruned model, the largest output difference from the
original with the pruned channels zeroed (the check `prune_channels` itself runs), and the
predict latency of the pruned model / the original, interleaved, batch 32. Goal: latency
within 1.3x of the MACs ratio (latency ratio / MACs ratio <= 1.3).

`make bench` runs it on TensorFlow, as a section of `python -m benchmarks.run`. On its own it
runs on any backend, the table only:

    KERAS_BACKEND=jax python -m benchmarks.channels
    KERAS_BACKEND=torch python -m benchmarks.channels --quick   # the first two, batch 8
"""

import argparse
import functools
import time
import types

import keras
import numpy as np

import keras_reg
from benchmarks._harness import Ratio, interleave, table

APPLICATIONS = (
    "ResNet50V2",
    "MobileNetV2",
    "VGG16",
    "DenseNet121",
    "EfficientNetB0",
    "ConvNeXtTiny",
)


def speed_up_2(cfg, log):
    results, rows = [], []
    names = APPLICATIONS[:2] if cfg.quick else APPLICATIONS
    batch = 8 if cfg.quick else 32
    for name in names:
        keras.utils.set_random_seed(0)
        model = getattr(keras.applications, name)(weights=None, input_shape=(64, 64, 3), classes=10)
        start = time.perf_counter()
        plan = keras_reg.plan_channels(model, 2.0)
        small = keras_reg.shrink(plan._model, plan=plan.shrink_plan)
        seconds = time.perf_counter() - start
        x = np.random.default_rng(1).normal(size=(batch, 64, 64, 3)).astype("float32")
        zeroed = keras.ops.convert_to_numpy(plan._model(x, training=False)).astype(np.float64)
        got = keras.ops.convert_to_numpy(small(x, training=False)).astype(np.float64)
        error = float(np.max(np.abs(zeroed - got)) / max(np.max(np.abs(zeroed)), 1e-30))
        fns = {
            "original": functools.partial(model.predict_on_batch, x),
            "pruned": functools.partial(small.predict_on_batch, x),
        }
        times = interleave(fns, rounds=5 if cfg.quick else 15, warmup=2)
        macs = plan.macs_after / plan.macs_before
        latency = float(np.median(times["pruned"]) / np.median(times["original"]))
        rows.append(
            [
                name,
                f"{plan.params_after / plan.params_before:.3f}",
                f"{macs:.3f}",
                f"{latency:.3f}",
                f"{latency / macs:.2f}",
                f"{error:.1e}",
                f"{seconds:.0f}",
            ]
        )
        results.append(
            Ratio.from_times(
                "channels",
                f"predict {name} (speed_up=2, MACs {macs:.3f}x): pruned / original",
                times,
                "pruned",
                "original",
                goal=round(1.3 * macs, 3),
            )
        )
    log(
        table(
            (
                "application",
                "params ratio",
                "MACs ratio",
                "latency ratio",
                "latency / MACs",
                "max rel. diff",
                "prune s",
            ),
            rows,
        )
    )
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the first two, batch 8, 5 rounds")
    args = parser.parse_args()
    start = time.perf_counter()
    speed_up_2(types.SimpleNamespace(quick=args.quick), print)
    print(f"backend {keras.backend.backend()}, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
