"""Every keras.applications shrink plan as JSON, to compare two versions of keras_reg.

    python -m benchmarks.applications_plans before.json   # on one commit
    python -m benchmarks.applications_plans after.json    # on another
    python -m benchmarks.applications_plans --compare before.json after.json

The models are those of `make bench`'s applications table (`benchmarks.shrink`),
a quarter of each kernel's units zeroed with the same seeds. Each entry is the
plan's `to_dict()` (per-layer units, parameters, MACs, the layers kept whole),
the shrunk model's weight shapes and its largest relative output difference.
"""

import argparse
import json
import sys

import keras
import numpy as np

import keras_reg
from benchmarks.shrink import APPLICATIONS, zero_units


def plans():
    out = {}
    for name, size in APPLICATIONS:
        keras.utils.set_random_seed(0)
        model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3))
        zero_units(model, 0.25, seed=1)
        x = 10 * np.random.default_rng(2).normal(size=(2, size, size, 3)).astype("float32")
        plan = keras_reg.plan_shrink(model)
        small = keras_reg.shrink(model, plan=plan)
        a = keras.ops.convert_to_numpy(model(x, training=False)).astype(np.float64)
        b = keras.ops.convert_to_numpy(small(x, training=False)).astype(np.float64)
        entry = plan.to_dict()
        entry["max_rel_diff"] = float(np.max(np.abs(a - b)) / np.max(np.abs(a)))
        entry["weights"] = [[w.path, list(w.shape)] for w in small.weights]
        out[name] = entry
        print(f"{name}: params {plan.params_after / plan.params_before:.3f}x, "
              f"MACs {plan.macs_after / plan.macs_before:.3f}x, max rel. diff "
              f"{entry['max_rel_diff']:.1e}", flush=True)  # fmt: skip
    return out


def compare(before, after):
    """Prints what differs; kept-whole reasons are words, compared apart. Returns 0 if equal."""
    status = 0
    for name in before:
        a, b = dict(before[name]), dict(after.get(name, {}))
        reasons = a.pop("kept_whole", None), b.pop("kept_whole", None)
        same = a == b
        status |= not same
        print(f"{name}: {'identical' if same else 'DIFFERENT'}"
              + ("" if reasons[0] == reasons[1] else " (kept-whole reasons reworded)"))  # fmt: skip
    return status


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--compare", action="store_true")
    args = parser.parse_args()
    if args.compare:
        before, after = (json.load(open(p)) for p in args.paths)
        return compare(before, after)
    with open(args.paths[0], "x") as f:
        json.dump(plans(), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
