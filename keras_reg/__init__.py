"""keras_reg: regularization and sparsity for Keras 3.

Penalties that plug into `kernel_regularizer=` like Keras' own and know their
proximal map; proximal training that makes L1 reach exact zeros; sparsity
logging and reports.

The public names are imported on first use (PEP 562), so that `keras-reg
--help` and `keras-reg report` start without importing Keras or a backend.
Saving still works as documented: "import keras_reg before loading". The
classes are registered with Keras' serialization as soon as Keras is loaded,
whether it was imported before keras_reg or after it.
"""

import importlib
import importlib.abc
import importlib.util
import os
import sys
from typing import TYPE_CHECKING

__version__ = "0.3.0.dev0"

if TYPE_CHECKING:  # what type checkers and editors see; at run time, `__getattr__` below
    from keras_reg import (
        patterns,  # noqa: F401
        prox,  # noqa: F401
        rules,  # noqa: F401
    )
    from keras_reg.attach import apply_regularizer  # noqa: F401
    from keras_reg.callbacks import SparsityLogger  # noqa: F401
    from keras_reg.optimizers import Proximal  # noqa: F401
    from keras_reg.path import max_strength, regularization_path  # noqa: F401
    from keras_reg.path_result import RegularizationPath  # noqa: F401
    from keras_reg.patterns import is_pruned_m_by_n  # noqa: F401
    from keras_reg.pruning import (  # noqa: F401
        ConstantSparsity,
        PolynomialDecay,
        PruneLowMagnitude,
        freeze_pruning,
        prune_low_magnitude,
        strip_pruning,
    )
    from keras_reg.regularizers import (  # noqa: F401
        L1,
        L1L2,
        L2,
        ElasticNet,
        GroupLasso,
        SparseGroupLasso,
        l1,
        l1_l2,
        l2,
    )
    from keras_reg.report import SparsityReport, SparsityRow, sparsity_report  # noqa: F401
    from keras_reg.rules import LayerRule, register_layer_rule  # noqa: F401
    from keras_reg.shrinking import (  # noqa: F401
        ChannelGroup,
        ChannelPlan,
        LayerChange,
        ShrinkPlan,
        plan_channels,
        plan_shrink,
        prune_channels,
        shrink,
    )
    from keras_reg.strength import StrengthScheduler  # noqa: F401

# Public name -> the module that defines it ("" for a submodule of that name).
_EXPORTS = {
    "ConstantSparsity": "pruning",
    "ElasticNet": "regularizers",
    "GroupLasso": "regularizers",
    "L1": "regularizers",
    "L1L2": "regularizers",
    "L2": "regularizers",
    "ChannelGroup": "shrinking",
    "ChannelPlan": "shrinking",
    "LayerChange": "shrinking",
    "LayerRule": "rules",
    "PolynomialDecay": "pruning",
    "Proximal": "optimizers",
    "PruneLowMagnitude": "pruning",
    "RegularizationPath": "path_result",
    "ShrinkPlan": "shrinking",
    "SparseGroupLasso": "regularizers",
    "SparsityLogger": "callbacks",
    "SparsityReport": "report",
    "SparsityRow": "report",
    "StrengthScheduler": "strength",
    "apply_regularizer": "attach",
    "freeze_pruning": "pruning",
    "is_pruned_m_by_n": "patterns",
    "l1": "regularizers",
    "l1_l2": "regularizers",
    "l2": "regularizers",
    "max_strength": "path",
    "plan_channels": "shrinking",
    "plan_shrink": "shrinking",
    "patterns": "",
    "prox": "",
    "prune_channels": "shrinking",
    "prune_low_magnitude": "pruning",
    "regularization_path": "path",
    "register_layer_rule": "rules",
    "rules": "",
    "shrink": "shrinking",
    "sparsity_report": "report",
    "strip_pruning": "pruning",
}

# The modules whose classes are registered with Keras' serialization.
_REGISTERING = ("regularizers", "optimizers", "pruning")

__all__ = sorted(_EXPORTS) + ["__version__"]


def _register():
    for name in _REGISTERING:
        importlib.import_module(f"keras_reg.{name}")


def _import_keras_module(module):
    try:
        return importlib.import_module(f"keras_reg.{module}")
    except ModuleNotFoundError as error:
        # Keras picks TensorFlow when KERAS_BACKEND is unset; a JAX or PyTorch
        # user would otherwise get a long traceback ending in "No module named
        # 'tensorflow'".
        if error.name == "tensorflow" and not os.environ.get("KERAS_BACKEND"):
            raise ImportError(
                "keras_reg needs a Keras backend, and Keras defaults to TensorFlow, which is "
                "not installed. Set KERAS_BACKEND=jax or KERAS_BACKEND=torch before importing "
                "(or install tensorflow)."
            ) from None
        raise


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keras_reg' has no attribute {name!r}")
    if module == "":
        value = _import_keras_module(name)
    else:
        value = getattr(_import_keras_module(module), name)
    _register_when_ready()  # Keras is imported by now if `name` needs it
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


def _initializing_submodules():
    """The keras_reg submodules whose import is under way (in `sys.modules`, not done)."""
    return [
        name
        for name, module in list(sys.modules.items())
        if name.startswith("keras_reg.")
        and getattr(getattr(module, "__spec__", None), "_initializing", False)
    ]


def _after(loader, then):
    """Makes `loader.exec_module` call `then()` once the module has run (one shot)."""
    exec_module = loader.exec_module

    def exec_then(module):
        try:
            exec_module(module)
        finally:
            del loader.exec_module
        then()

    loader.exec_module = exec_then


class _RegisterWhenKerasLoads(importlib.abc.MetaPathFinder):
    """Registers keras_reg's classes right after `import keras` completes (one shot).

    Keras finds a custom class in a saved file only once it is registered, and
    the rule users know is "import keras_reg before loading". With lazy names,
    `import keras_reg` alone would register nothing; this hook keeps the rule
    true without importing Keras where it is not needed (the command line).

    When Keras is first imported by a keras_reg submodule (`from
    keras_reg.schedules import PolynomialDecay` as a program's first import),
    registering at once would import `keras_reg.pruning`, which imports that
    half-run submodule: the registration waits until the submodules under way
    have finished.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras" and not fullname.startswith("keras_reg."):
            return None
        spec = self._spec(fullname, path)
        if spec is not None:
            _after(spec.loader, lambda: _register_when_ready(fullname))
        return spec

    def _spec(self, fullname, path):
        _remove_hook()  # find the module as Python would, without this finder
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        return spec


def _register_when_ready(done=None):
    """Registers keras_reg's classes once Keras is loaded and no keras_reg import is under way.

    `done`: the module that has just run (its import is still flagged as under way).
    """
    keras_module = sys.modules.get("keras")
    if keras_module is None:
        return
    if done != "keras" and getattr(keras_module.__spec__, "_initializing", False):
        return
    if any(name != done for name in _initializing_submodules()):
        return  # the hook calls again when each of them has run
    _remove_hook()
    _register()


def _remove_hook():
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _RegisterWhenKerasLoads)]


if "keras" in sys.modules:
    _register()
else:
    _remove_hook()
    sys.meta_path.insert(0, _RegisterWhenKerasLoads())
