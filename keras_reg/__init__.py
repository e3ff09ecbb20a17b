"""keras_reg: regularization and sparsity for Keras 3.

Penalties that plug into `kernel_regularizer=` like Keras' own and know their
proximal map; proximal training that makes L1 reach exact zeros; sparsity
logging and reports.
"""

__version__ = "0.1.0"

from keras_reg import prox
from keras_reg.attach import apply_regularizer
from keras_reg.callbacks import SparsityLogger
from keras_reg.optimizers import Proximal
from keras_reg.pruning import (
    ConstantSparsity,
    PolynomialDecay,
    PruneLowMagnitude,
    prune_low_magnitude,
    strip_pruning,
)
from keras_reg.regularizers import (
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
from keras_reg.report import SparsityReport, SparsityRow, sparsity_report
from keras_reg.shrinking import LayerChange, ShrinkPlan, plan_shrink, shrink
from keras_reg.strength import StrengthScheduler

__all__ = [
    "ConstantSparsity",
    "ElasticNet",
    "GroupLasso",
    "L1",
    "L1L2",
    "L2",
    "LayerChange",
    "PolynomialDecay",
    "Proximal",
    "PruneLowMagnitude",
    "ShrinkPlan",
    "SparseGroupLasso",
    "StrengthScheduler",
    "SparsityLogger",
    "SparsityReport",
    "SparsityRow",
    "__version__",
    "apply_regularizer",
    "l1",
    "l1_l2",
    "l2",
    "plan_shrink",
    "prox",
    "prune_low_magnitude",
    "shrink",
    "sparsity_report",
    "strip_pruning",
]
