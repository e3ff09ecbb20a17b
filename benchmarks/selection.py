"""What pruning's projection costs per call: `magnitude_prune` next to a sort and a `where`.

For kernels of 4,608, 32,768, 262,144 and 1,048,576 weights, compiled as the train step
compiles it (`tf.function`, `jax.jit`; PyTorch runs eagerly), interleaved:

- `select`: `magnitude_prune(w, 0.9)`, the selection every step runs without a guess
  (radix selection, three histograms of the weights' bits);
- `guess`: the step that reuses a threshold guess (`_prune_from_guess` when the guess
  still splits off exactly the right count: a comparison, a count and a `where`; not on JAX);
- `sort`: `ops.sort` of the magnitudes, the textbook way to find the threshold;
- `where`: `where(|w| < t, 0, w)` for a fixed `t`, the floor any projection pays (a
  fixed mask, as TFMOT applies between its pruning steps).

Prints each median time and its ratio to `where`.

    python -m benchmarks.selection                   # TensorFlow
    KERAS_BACKEND=jax python -m benchmarks.selection
"""

import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from benchmarks._harness import interleave  # noqa: E402
from keras_reg.pruning import _prune_from_guess, magnitude_prune  # noqa: E402

SIZES = (4608, 32768, 1 << 18, 1 << 20)


def compiled(fn):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


def block(result):
    return ops.convert_to_numpy(ops.sum(result))  # waits for the value on every backend


def cases(n):
    # The weights are an argument, never a closed-over constant (XLA would fold the work away).
    w = ops.convert_to_tensor(np.random.default_rng(0).normal(size=(n,)).astype("float32"))
    threshold = float(np.quantile(np.abs(ops.convert_to_numpy(w)), 0.9))
    found = {
        "select": compiled(lambda v: magnitude_prune(v, 0.9)),
        "sort": compiled(lambda v: ops.sort(ops.abs(v))),
        "where": compiled(lambda v: ops.where(ops.abs(v) < threshold, 0.0, v)),
    }
    if keras.backend.backend() != "jax":
        guess = keras.Variable(np.int32(-1), dtype="int32", trainable=False)
        _prune_from_guess(w, 0.9, guess)  # sets the guess: later calls reuse it
        found["guess"] = compiled(lambda v: _prune_from_guess(v, 0.9, guess))
    return {name: (lambda f=f: block(f(w))) for name, f in found.items()}


def main():
    print(f"backend {keras.backend.backend()}; median of 30 interleaved calls, compiled")
    print(f"{'weights':>10}  " + "  ".join(f"{c:>16}" for c in ("select", "guess", "sort")))
    for n in SIZES:
        times = interleave(cases(n), rounds=30, warmup=2)
        floor = statistics.median(times["where"])
        cells = []
        for name in ("select", "guess", "sort"):
            if name not in times:
                cells.append(f"{'-':>16}")
                continue
            t = statistics.median(times[name])
            cells.append(f"{1e3 * t:7.2f} ms {t / floor:5.1f}x")
        print(f"{n:>10}  " + "  ".join(cells) + f"   (where: {1e3 * floor:.2f} ms)")


if __name__ == "__main__":
    main()
