"""Train-step time: keras_reg's penalties next to Keras', `Proximal` next to plain optimizers,
group lasso next to L1.

A variant is a compiled model whose `train_function` runs `steps` train steps
per call (`steps_per_execution`) on one fixed batch from a `tf.data` iterator,
so a timing holds the train steps and almost nothing else. All the variants of
a section are built and warmed up first, then timed round-robin.
"""

import collections

import keras
import numpy as np
import tensorflow as tf

import keras_reg
from benchmarks._harness import Ratio, interleave, quartiles, table

STRENGTH = 1e-4

# Penalties computing the same thing: keras_reg's next to Keras' built-in.
# ElasticNet(alpha, 0.5) = alpha/2 * sum|w| + alpha/4 * sum w^2: the work of L1L2.
PENALTY_PAIRS = (
    ("L1", lambda: keras_reg.L1(STRENGTH), lambda: keras.regularizers.L1(STRENGTH)),
    ("L2", lambda: keras_reg.L2(STRENGTH), lambda: keras.regularizers.L2(STRENGTH)),
    (
        "L1L2",
        lambda: keras_reg.L1L2(STRENGTH, STRENGTH),
        lambda: keras.regularizers.L1L2(STRENGTH, STRENGTH),
    ),
    (
        "ElasticNet",
        lambda: keras_reg.ElasticNet(2 * STRENGTH, 0.5),
        lambda: keras.regularizers.L1L2(STRENGTH, STRENGTH),
    ),
)


def mlp(regularizer_fn, layers, units, features):
    """`layers` x Dense(units, relu) with the penalty on every kernel, then Dense(10)."""
    reg = regularizer_fn or (lambda: None)
    return keras.Sequential(
        [keras.Input((features,))]
        + [
            keras.layers.Dense(units, activation="relu", kernel_regularizer=reg())
            for _ in range(layers)
        ]
        + [keras.layers.Dense(10, kernel_regularizer=reg())]
    )


def cnn(regularizer_fn, filters):
    """A small CNN on 28x28x1 images, the penalty on every kernel."""
    reg = regularizer_fn or (lambda: None)
    f1, f2 = filters
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(f1, 3, activation="relu", kernel_regularizer=reg()),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(f2, 3, activation="relu", kernel_regularizer=reg()),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu", kernel_regularizer=reg()),
            keras.layers.Dense(10, kernel_regularizer=reg()),
        ]
    )


def n_kernel_weights(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights if len(w.shape) >= 2)


class TrainStep:
    """Calling it runs `steps` compiled train steps of `model` on one fixed batch."""

    def __init__(self, model, optimizer, data, steps, jit_compile=False):
        # jit_compile=False is what Keras' "auto" picks on a CPU-only machine.
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            steps_per_execution=steps,
            jit_compile=jit_compile,
        )
        dataset = tf.data.Dataset.from_tensors(data).repeat()
        # One short fit builds the optimizer and the train function.
        model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
        self.model = model
        self.steps = steps
        self.data = data
        # The iterator kind that fit passes, so the traced function is reused.
        self.iterator = iter(model.distribute_strategy.experimental_distribute_dataset(dataset))

    def __call__(self):
        logs = self.model.train_function(self.iterator)
        # Synchronous on CPU already; reading the loss makes sure the steps ran.
        float(logs["loss"])


def graph_ops(step):
    """Op types and counts of one traced train step of `step.model` (traced, not run)."""
    x, y = step.data
    fn = tf.function(step.model.train_step)
    graph = fn.get_concrete_function((tf.constant(x), tf.constant(y))).graph
    return collections.Counter(op.type for op in graph.get_operations())


def ops_difference(ours, theirs):
    """'same ops', or the op types one traced step has more or fewer of, e.g. '+1 Const'."""
    more, fewer = ours - theirs, theirs - ours
    parts = [f"+{n} {op}" for op, n in sorted(more.items())]
    parts += [f"-{n} {op}" for op, n in sorted(fewer.items())]
    return ", ".join(parts) if parts else "same ops"


def _batch(shape, batch, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *shape)).astype("float32")
    y = rng.integers(0, 10, size=(batch,)).astype("int32")
    return x, y


def _build(builder, reg_fn, optimizer_fn, data, steps, seed=0, jit_compile=False):
    keras.utils.set_random_seed(seed)
    return TrainStep(builder(reg_fn), optimizer_fn(), data, steps, jit_compile)


def _ms_table(times, steps, order, unit="ms / step"):
    rows = []
    for name in order:
        q1, q2, q3 = quartiles(times[name])
        rows.append(
            (name, f"{1e3 * q2 / steps:.2f}", f"{1e3 * q1 / steps:.2f}-{1e3 * q3 / steps:.2f}")
        )
    return table(("variant", f"{unit} (median)", "IQR"), rows)


def _penalties_on(model_name, builder, data, steps, cfg, log):
    variants = {"no penalty": None}
    for name, ours, theirs in PENALTY_PAIRS:
        variants[f"keras_reg.{name}"] = ours
        if name != "ElasticNet":
            variants[f"keras.{name}"] = theirs

    def sgd():
        return keras.optimizers.SGD(1e-3)

    cases = {name: _build(builder, reg, sgd, data, steps) for name, reg in variants.items()}
    size = n_kernel_weights(cases["no penalty"].model)
    pairs = [
        (f"keras_reg.{name}", "keras.L1L2" if name == "ElasticNet" else f"keras.{name}")
        for name, _, _ in PENALTY_PAIRS
    ]
    groups = [
        ("keras_reg.L1", "keras.L1", "no penalty"),
        ("keras_reg.L2", "keras.L2"),
        ("keras_reg.L1L2", "keras.L1L2", "keras_reg.ElasticNet"),
    ]
    times = interleave(cases, cfg.rounds, warmup=2, seed=cfg.seed, groups=groups)
    log(
        f"\n{model_name}: {size:,} kernel weights, batch {len(data[0])}, SGD, {steps} steps per "
        f"call, {cfg.rounds} rounds"
    )
    log(_ms_table(times, steps, list(variants)))
    # The penalty's share of a step is a few percent, about the machine's noise: the
    # traced graphs say whether keras_reg's step does any work Keras' does not.
    ops = {name: graph_ops(cases[name]) for pair in pairs for name in pair}
    graph_rows = [
        (f"{a} vs {b}", sum(ops[a].values()), sum(ops[b].values()), ops_difference(ops[a], ops[b]))
        for a, b in pairs
    ]
    log("")
    log(table(("traced train step", "ops", "Keras' ops", "difference"), graph_rows))
    section = f"penalty, {model_name}"
    results = []
    for a, b in pairs:
        results.append(
            Ratio.from_times(
                section,
                f"{a} / {b}",
                times,
                a,
                b,
                goal=1.02,
                note="graph: " + ops_difference(ops[a], ops[b]),
            )
        )
    for owner in ("keras", "keras_reg"):
        results.append(
            Ratio.from_times(
                section, f"{owner}.L1 / no penalty", times, f"{owner}.L1", "no penalty"
            )
        )
    return results


def penalties(cfg, log):
    """keras_reg L1, L2, L1L2, ElasticNet against Keras' L1, L2, L1L2 and no penalty."""
    features = cfg.mlp_units
    mlp_data = _batch((features,), cfg.batch, seed=1)
    results = _penalties_on(
        f"MLP {cfg.mlp_layers}xDense({cfg.mlp_units})",
        lambda reg: mlp(reg, cfg.mlp_layers, cfg.mlp_units, features),
        mlp_data,
        cfg.mlp_steps,
        cfg,
        log,
    )
    cnn_data = _batch((28, 28, 1), cfg.batch, seed=2)
    results += _penalties_on(
        f"CNN conv{cfg.cnn_filters[0]}-conv{cfg.cnn_filters[1]}-dense128",
        lambda reg: cnn(reg, cfg.cnn_filters),
        cnn_data,
        cfg.cnn_steps,
        cfg,
        log,
    )
    return results


def proximal(cfg, log):
    """`Proximal(SGD)` and `Proximal(Adam)` against the plain optimizer, same penalty.

    Also with `jit_compile=True` (XLA) for both sides: what the cost becomes when
    the elementwise work is fused (Keras' default on GPU, not on CPU).
    """
    features = cfg.mlp_units
    data = _batch((features,), cfg.batch, seed=1)

    def builder(reg):
        return mlp(reg, cfg.mlp_layers, cfg.mlp_units, features)

    def l1():
        return keras_reg.L1(STRENGTH)

    optimizers = {
        "SGD": lambda: keras.optimizers.SGD(1e-3),
        "Proximal(SGD)": lambda: keras_reg.Proximal(keras.optimizers.SGD(1e-3)),
        "Adam": lambda: keras.optimizers.Adam(1e-4),
        "Proximal(Adam)": lambda: keras_reg.Proximal(keras.optimizers.Adam(1e-4)),
    }
    modes = (False, True) if cfg.xla else (False,)
    cases = {}
    for jit in modes:
        suffix = ", XLA" if jit else ""
        for name, opt in optimizers.items():
            cases[name + suffix] = _build(builder, l1, opt, data, cfg.mlp_steps, jit_compile=jit)
    groups = [
        (f"Proximal({inner}){suffix}", inner + suffix)
        for inner in ("SGD", "Adam")
        for suffix in (["", ", XLA"] if cfg.xla else [""])
    ]
    times = interleave(cases, cfg.rounds, warmup=2, seed=cfg.seed, groups=groups)
    log(
        f"\nMLP {cfg.mlp_layers}xDense({cfg.mlp_units}), keras_reg.L1 on every kernel, batch "
        f"{cfg.batch}, {cfg.mlp_steps} steps per call, {cfg.rounds} rounds"
        + ("; XLA = compile(jit_compile=True)" if cfg.xla else "")
    )
    log(_ms_table(times, cfg.mlp_steps, list(cases)))
    section = "Proximal, MLP + L1"
    results = []
    for jit in modes:
        suffix = ", XLA" if jit else ""
        for inner in ("SGD", "Adam"):
            results.append(
                Ratio.from_times(
                    section,
                    f"Proximal({inner}) / {inner}" + (" (both jit_compile=True)" if jit else ""),
                    times,
                    f"Proximal({inner}){suffix}",
                    inner + suffix,
                    goal=1.02 if jit else 1.05,
                )
            )
    return results


# Interpreters of the other backends' virtualenvs (the Makefile creates them).
BACKEND_PYTHONS = {"jax": ".venv-jax/bin/python", "torch": ".venv-torch/bin/python"}


def backends(cfg, log):
    """`Proximal(SGD)` / SGD and `Proximal(Adam)` / Adam on JAX and PyTorch, in child processes.

    Each backend runs in its own process with its own virtualenv's interpreter
    (`BACKEND_PYTHONS`, or `KERAS_REG_BENCH_<BACKEND>_PYTHON`); both run at once,
    so that the machine's load hits both alike. See `benchmarks/backend_steps.py`.
    """
    import json
    import os
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    procs, results = {}, []
    for backend, default in BACKEND_PYTHONS.items():
        python = os.environ.get(f"KERAS_REG_BENCH_{backend.upper()}_PYTHON", default)
        python = os.path.join(root, python)
        if not os.path.exists(python):
            log(f"\n{backend}: no interpreter at {python} (make .venv-{backend}/...): skipped")
            continue
        procs[backend] = subprocess.Popen(
            [
                python,
                "-m",
                "benchmarks.backend_steps",
                str(cfg.rounds),
                str(cfg.seed),
                "quick" if cfg.quick else "full",
            ],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3"),
        )
    for backend, proc in procs.items():
        stdout, stderr = proc.communicate()
        lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT")]
        if proc.returncode != 0 or not lines:
            log(f"\n{backend}: the benchmark failed:\n{stderr[-2000:]}")
            continue
        out = json.loads(lines[-1][len("RESULT") :])
        times = out["times"]
        versions = ", ".join(f"{k} {v}" for k, v in out["versions"].items())
        log(f"\n{backend} ({versions}): {out['model']}, train_on_batch, {cfg.rounds} rounds")
        log(_ms_table(times, 10, list(times)))
        for inner in ("SGD", "Adam"):
            results.append(
                Ratio.from_times(
                    f"Proximal on {backend}",
                    f"Proximal({inner}) / {inner}",
                    times,
                    f"Proximal({inner})",
                    inner,
                    goal=1.05,
                    note="keras_reg.L1 on every kernel",
                )
            )
    return results


def _penalty_and_prox(reg, kernels, lr=1e-3):
    """One compiled call: the penalty, its gradient and the proximal map of every kernel."""

    @tf.function(autograph=False)
    def fn():
        total = tf.constant(0.0)
        outputs = []
        for kernel in kernels:
            w = tf.convert_to_tensor(kernel)
            with tf.GradientTape() as tape:
                tape.watch(w)
                penalty = reg(w)
            grad = tape.gradient(penalty, w)
            outputs.append(reg.prox(w - lr * grad, lr))
            total = total + penalty
        return total, outputs

    return fn


def group(cfg, log):
    """GroupLasso's penalty and proximal map against L1's, on the same kernels."""
    features = cfg.mlp_units
    keras.utils.set_random_seed(0)
    model = mlp(None, cfg.mlp_layers, cfg.mlp_units, features)
    kernels = [w for w in model.trainable_weights if len(w.shape) >= 2]
    regs = {
        "L1": keras_reg.L1(STRENGTH),
        "GroupLasso(axis=-1)": keras_reg.GroupLasso(STRENGTH, axis=-1),
        "GroupLasso(axis=0)": keras_reg.GroupLasso(STRENGTH, axis=0),
    }
    fns = {name: _penalty_and_prox(reg, kernels) for name, reg in regs.items()}
    repeat = cfg.group_repeat

    def looped(fn):
        def run():
            for _ in range(repeat):
                fn()

        return run

    times = interleave({k: looped(f) for k, f in fns.items()}, cfg.rounds, warmup=2, seed=cfg.seed)
    log(
        f"\nPenalty + gradient + prox, one compiled call over the {len(kernels)} kernels of the "
        f"MLP ({n_kernel_weights(model):,} weights), {cfg.rounds} rounds"
    )
    log(_ms_table(times, repeat, list(regs), unit="ms / call"))

    data = _batch((features,), cfg.batch, seed=1)

    def builder(reg):
        return mlp(reg, cfg.mlp_layers, cfg.mlp_units, features)

    steps = {
        "SGD + L1": (lambda: keras_reg.L1(STRENGTH), lambda: keras.optimizers.SGD(1e-3)),
        "SGD + GroupLasso": (
            lambda: keras_reg.GroupLasso(STRENGTH),
            lambda: keras.optimizers.SGD(1e-3),
        ),
        "Proximal(SGD) + L1": (
            lambda: keras_reg.L1(STRENGTH),
            lambda: keras_reg.Proximal(keras.optimizers.SGD(1e-3)),
        ),
        "Proximal(SGD) + GroupLasso": (
            lambda: keras_reg.GroupLasso(STRENGTH),
            lambda: keras_reg.Proximal(keras.optimizers.SGD(1e-3)),
        ),
    }
    cases = {
        name: _build(builder, reg, opt, data, cfg.mlp_steps) for name, (reg, opt) in steps.items()
    }
    groups = [
        ("SGD + L1", "SGD + GroupLasso"),
        ("Proximal(SGD) + L1", "Proximal(SGD) + GroupLasso"),
    ]
    step_times = interleave(cases, cfg.rounds, warmup=2, seed=cfg.seed, groups=groups)
    log(f"\nTrain step, MLP {cfg.mlp_layers}xDense({cfg.mlp_units}), {cfg.rounds} rounds")
    log(_ms_table(step_times, cfg.mlp_steps, list(steps)))
    section = "GroupLasso vs L1"
    return [
        Ratio.from_times(
            section, "penalty+grad+prox, axis=-1 / L1", times, "GroupLasso(axis=-1)", "L1"
        ),
        Ratio.from_times(
            section, "penalty+grad+prox, axis=0 / L1", times, "GroupLasso(axis=0)", "L1"
        ),
        Ratio.from_times(
            section, "train step, SGD: GroupLasso / L1", step_times, "SGD + GroupLasso", "SGD + L1"
        ),
        Ratio.from_times(
            section,
            "train step, Proximal(SGD): GroupLasso / L1",
            step_times,
            "Proximal(SGD) + GroupLasso",
            "Proximal(SGD) + L1",
        ),
    ]
