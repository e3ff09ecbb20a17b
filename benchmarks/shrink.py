"""`keras_reg.shrink`: its cost next to `clone_model`, and the shrunk model's speed.

- `shrink_vs_clone`: `keras_reg.shrink(ResNet50)` (plan, rebuild, weights, the
  check on a random batch) / `keras.models.clone_model(ResNet50)` (rebuild
  only), a quarter of every kernel's units zeroed. Goal <= 3.
- `shrunk_vs_direct`: predict latency of the shrunk model / the original, next
  to the MACs ratio, and / the same architecture built directly at the shrunk
  sizes (goal <= 1.10: no gather layers, no leftovers), for a Dense net
  (784-1024-1024-10, 75% of the hidden units zero) and the digits CNN of
  `examples/digits_cnn.py` (half the filters zero), batch 2048.
- `applications`: every `keras.applications` family of the shrinking issue,
  a random quarter of each kernel's units zeroed and BatchNorm statistics and
  biases randomized, shrunk and compared with the original on a random batch.
"""

import functools
import time

import keras
import numpy as np

import keras_reg
from benchmarks._harness import Ratio, interleave, table

APPLICATIONS = (
    ("MobileNetV2", 64),
    ("MobileNetV3Small", 64),
    ("ResNet50", 64),
    ("ResNet50V2", 64),
    ("EfficientNetB0", 64),
    ("DenseNet121", 64),
    ("VGG16", 64),
    ("ConvNeXtTiny", 64),
    ("Xception", 71),
    ("InceptionV3", 75),
)


def zero_units(model, fraction, seed=0, randomize=True):
    """Zeroes a random `fraction` of each kernel's units (depthwise: channels).

    With `randomize`, BatchNorm statistics and biases get non-trivial values
    first, so that a zeroed unit is a non-zero constant, not a zero.
    """
    rng = np.random.default_rng(seed)
    for layer in _leaf_layers(model):
        if randomize:
            for v in layer.weights:
                name = v.path.rsplit("/", 1)[-1]
                if name in ("moving_mean", "beta", "bias"):
                    v.assign(rng.normal(0, 0.5, size=v.shape).astype(v.dtype))
                elif name in ("moving_variance", "gamma"):
                    v.assign(rng.uniform(0.5, 1.5, size=v.shape).astype(v.dtype))
        target = getattr(layer, "pointwise_kernel", None)
        if target is None:
            target = getattr(layer, "kernel", None)
        if target is None or len(target.shape) < 2:
            continue
        values = keras.ops.convert_to_numpy(target).copy()
        axis = -2 if isinstance(layer, keras.layers.DepthwiseConv2D) else -1
        n = values.shape[axis]
        index = rng.choice(n, int(n * fraction), replace=False)
        np.moveaxis(values, axis, 0)[index] = 0
        target.assign(values)


def _leaf_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def shrink_vs_clone(cfg, log):
    size = 64 if cfg.quick else 224
    model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
    zero_units(model, 0.25)
    times = interleave(
        {
            "shrink": lambda: keras_reg.shrink(model),
            "clone_model": lambda: keras.models.clone_model(model),
        },
        rounds=3 if cfg.quick else 7,
        groups=[("shrink", "clone_model")],
    )
    log(
        table(
            (f"ResNet50, input {size}", "median s"),
            [[name, f"{np.median(t):.2f}"] for name, t in times.items()],
        )
    )
    return [
        Ratio.from_times(
            "shrink",
            f"shrink(ResNet50 {size}x{size}) / clone_model",
            times,
            "shrink",
            "clone_model",
            goal=3.0,
            note="shrink includes its check on a random batch",
        )
    ]


def _dense(hidden):
    inputs = keras.Input((784,))
    h = inputs
    for i, units in enumerate(hidden):
        h = keras.layers.Dense(units, activation="relu", name=f"hidden{i}")(h)
    return keras.Model(inputs, keras.layers.Dense(10, name="out")(h))


def _cnn(filters):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(filters[0], 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(filters[1], 3, padding="valid", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="out"),
        ]
    )


def _zero_dead(model, fraction, seed=0):
    """A `fraction` of each hidden layer's units with zero kernel column and zero bias."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not hasattr(layer, "kernel") or layer.name == "out":
            continue
        kernel = keras.ops.convert_to_numpy(layer.kernel).copy()
        bias = keras.ops.convert_to_numpy(layer.bias).copy()
        index = rng.choice(kernel.shape[-1], int(kernel.shape[-1] * fraction), replace=False)
        kernel[..., index] = 0
        bias[index] = 0
        layer.kernel.assign(kernel)
        layer.bias.assign(bias)


def shrunk_vs_direct(cfg, log):
    results = []
    batch = 1024 if cfg.quick else 2048
    rng = np.random.default_rng(0)
    cases = [
        ("Dense 784-1024-1024-10, 75% units zero", _dense((1024, 1024)), _dense((256, 256)), 0.75,
         rng.normal(size=(batch, 784)).astype("float32")),
        ("digits CNN 16-32 filters, half zero", _cnn((16, 32)), _cnn((8, 16)), 0.5,
         rng.normal(size=(batch, 8, 8, 1)).astype("float32")),
    ]  # fmt: skip
    rows = []
    for label, model, direct, fraction, x in cases:
        _zero_dead(model, fraction)
        plan = keras_reg.plan_shrink(model)
        small = keras_reg.shrink(model, plan=plan)
        assert small.count_params() == direct.count_params(), label
        fns = {
            name: functools.partial(m.predict_on_batch, x)
            for name, m in (("original", model), ("shrunk", small), ("direct", direct))
        }
        times = interleave(
            fns,
            rounds=7 if cfg.quick else 21,
            warmup=2,
            groups=[("shrunk", "direct", "original")],
        )
        macs = plan.macs_after / plan.macs_before
        rows.append([label, f"{macs:.3f}"] + [f"{1e3 * np.median(t):.2f}" for t in times.values()])
        results.append(
            Ratio.from_times(
                "shrink",
                f"predict {label}: shrunk / original (MACs {macs:.3f}x)",
                times,
                "shrunk",
                "original",
            )
        )
        results.append(
            Ratio.from_times(
                "shrink",
                f"predict {label}: shrunk / built directly",
                times,
                "shrunk",
                "direct",
                goal=1.10,
            )
        )
    log(
        table(
            (f"model, batch {batch}", "MACs ratio", "original ms", "shrunk ms", "direct ms"),
            rows,
        )
    )
    return results


def applications(cfg, log):
    """The applications table: shrunk or refused, never wrong. No ratio with a goal."""
    rows = []
    names = APPLICATIONS[:3] if cfg.quick else APPLICATIONS
    for name, size in names:
        keras.utils.set_random_seed(0)
        model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3))
        zero_units(model, 0.25, seed=1)
        x = 10 * np.random.default_rng(2).normal(size=(2, size, size, 3)).astype("float32")
        start = time.perf_counter()
        try:
            plan = keras_reg.plan_shrink(model)
            small = keras_reg.shrink(model, plan=plan)
        except (ValueError, RuntimeError) as exc:
            rows.append([name, "refused", "", "", "", f"{type(exc).__name__}: {exc}"[:60]])
            continue
        seconds = time.perf_counter() - start
        a = keras.ops.convert_to_numpy(model(x, training=False)).astype(np.float64)
        b = keras.ops.convert_to_numpy(small(x, training=False)).astype(np.float64)
        error = np.max(np.abs(a - b)) / np.max(np.abs(a))
        rows.append(
            [
                name,
                f"{plan.params_after / plan.params_before:.3f}",
                f"{plan.macs_after / plan.macs_before:.3f}",
                f"{error:.1e}",
                f"{seconds:.1f}",
                f"{len(plan.kept_whole)} kept whole" if plan.kept_whole else "",
            ]
        )
    log(
        table(
            ("application", "params ratio", "MACs ratio", "max rel. diff", "shrink s", "note"),
            rows,
        )
    )
    return []
