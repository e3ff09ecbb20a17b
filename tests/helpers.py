"""Small shared helpers for the tests (Keras keeps its own private)."""

import numpy as np

import keras_reg

# One instance of every public regularizer, with non-default numbers so that a
# round trip that falls back on defaults is caught.
REGULARIZERS = [
    keras_reg.L1(0.03),
    keras_reg.L2(0.07),
    keras_reg.L1L2(l1=0.02, l2=0.05),
    keras_reg.ElasticNet(alpha=0.04, l1_ratio=0.3),
    keras_reg.GroupLasso(strength=0.06, axis=0),
    keras_reg.SparseGroupLasso(strength=0.05, l1_ratio=0.25, axis=0),
]


def reg_id(reg):
    return type(reg).__name__


def groups_along(w, axis):
    """NumPy reference: the group of each index along `axis`, flattened."""
    w = np.moveaxis(np.asarray(w, dtype=np.float64), axis, 0)
    return w.reshape(w.shape[0], -1)


def numpy_penalty(reg, w):
    """Each class's penalty as its docstring states it, written independently in NumPy."""
    w = np.asarray(w, dtype=np.float64)
    name = type(reg).__name__
    if name == "L1":
        return reg.l1 * np.abs(w).sum()
    if name == "L2":
        return reg.l2 * (w**2).sum()
    if name == "L1L2":
        return reg.l1 * np.abs(w).sum() + reg.l2 * (w**2).sum()
    if name == "ElasticNet":
        r = reg.l1_ratio
        return reg.alpha * (r * np.abs(w).sum() + 0.5 * (1 - r) * (w**2).sum())
    groups = groups_along(w, reg.axis)
    group_term = np.sqrt(groups.shape[1]) * np.linalg.norm(groups, axis=1).sum()
    if name == "GroupLasso":
        return reg.strength * group_term
    if name == "SparseGroupLasso":
        r = reg.l1_ratio
        return reg.strength * (r * np.abs(w).sum() + (1 - r) * group_term)
    raise AssertionError(name)


def numpy_prox(reg, w, t):
    """Each class's proximal map (its closed form, as documented), in NumPy, for a scalar step t."""
    w = np.asarray(w, dtype=np.float64)

    def st(x, tau):
        return np.sign(x) * np.maximum(np.abs(x) - tau, 0)

    def group(x, tau):
        g = np.moveaxis(x, reg.axis, 0)
        flat = g.reshape(g.shape[0], -1)
        norms = np.linalg.norm(flat, axis=1, keepdims=True)
        weight = tau * np.sqrt(flat.shape[1])
        with np.errstate(divide="ignore", invalid="ignore"):
            shrink = np.where(norms > 0, np.maximum(0, 1 - weight / norms), 0)
        return np.moveaxis((flat * shrink).reshape(g.shape), 0, reg.axis)

    name = type(reg).__name__
    if name == "L1":
        return st(w, t * reg.l1)
    if name == "L2":
        return w / (1 + 2 * t * reg.l2)
    if name == "L1L2":
        return st(w, t * reg.l1) / (1 + 2 * t * reg.l2)
    if name == "ElasticNet":
        r = reg.l1_ratio
        return st(w, t * reg.alpha * r) / (1 + t * reg.alpha * (1 - r))
    if name == "GroupLasso":
        return group(w, t * reg.strength)
    if name == "SparseGroupLasso":
        r = reg.l1_ratio
        return group(st(w, t * reg.strength * r), t * reg.strength * (1 - r))
    raise AssertionError(name)


def to_float(value):
    """A scalar tensor of any backend as a Python float (detached on torch)."""
    import keras

    return float(keras.ops.convert_to_numpy(value))


def to_numpy(value):
    import keras

    return keras.ops.convert_to_numpy(value)


# --- fresh processes and the examples ----------------------------------------------------

EXAMPLES = __import__("pathlib").Path(__file__).resolve().parent.parent / "examples"


def run_python(*args, code=None, backend=None, env=None, cwd=None, timeout=300, check=True):
    """Runs Python in a fresh process: `python ARGS...`, or `python -c CODE ARGS...`.

    A fresh process is needed where device layouts, a backend or `sys.modules`
    must start clean. `backend` sets `KERAS_BACKEND`; `env` adds variables to
    the current environment. With `check`, fails the test (showing the end of
    stderr) unless the process exits with status 0.

    Returns:
        The `subprocess.CompletedProcess`, text mode, output captured.
    """
    import os
    import subprocess
    import sys

    environment = dict(os.environ, **(env or {}))
    if backend is not None:
        environment["KERAS_BACKEND"] = backend
    command = [sys.executable] + (["-c", code] if code is not None else []) + [str(a) for a in args]
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=environment, cwd=cwd
    )
    if check:
        assert run.returncode == 0, run.stderr[-3000:]
    return run


def result_of(run, tag="RESULT"):
    """The JSON a child process printed on its line starting with `tag`."""
    import json

    line = next(ln for ln in run.stdout.splitlines() if ln.startswith(tag))
    return json.loads(line[len(tag) :])


def load_example(name):
    """A fresh copy of the module examples/NAME.py, leaving `sys.path` and `sys.modules` as found.

    The examples import their siblings (`_common`, `feature_selection`) by name,
    so examples/ is on `sys.path` while the module runs its imports; afterwards
    the sibling modules it imported are dropped from `sys.modules`, so that the
    next load (and every other test) imports them afresh.
    """
    import importlib.util
    import sys

    before = set(sys.modules)
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
        for added in set(sys.modules) - before:
            origin = getattr(sys.modules[added], "__file__", None) or ""
            if origin.startswith(str(EXAMPLES)):
                del sys.modules[added]
    return module


def count_traces(model):
    """Counts the calls of `model.train_step`: one per trace where the step is compiled."""
    calls = []
    train_step = model.train_step

    def counted(*args, **kwargs):
        calls.append(1)
        return train_step(*args, **kwargs)

    model.train_step = counted
    return calls
