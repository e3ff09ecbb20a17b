"""Every private Keras name keras_reg uses, behind one door (private).

Keras keeps some of what keras_reg needs private: the optimizers' per-variable
state (`_velocities`, `_u`, ...), a layer's own variables and sub-layers, the
functional model class. A Keras release may rename any of them; keeping them
here makes that one place to fix, and each accessor says what happens when
its name is gone:

- optimizer state (`slot`, `has_slots`): `Proximal` checks at build time that
  the slots its step rule reads exist, and otherwise falls back to the
  learning-rate step with its warning, instead of failing inside `fit`;
- `scale_loss_for_distribution`: written here with public names only;
- layer walking (`flatten_layers`, `own_variables`, `is_functional`): no
  public equivalent, so a missing name raises an error that names the Keras
  version and this module.

Names used (Keras 3.15): `Optimizer._get_variable_index`, `_velocities`,
`_velocity_hats`, `_u`, `_accumulators`, `_average_gradients`, `_iterations`,
`_variables`, `_trainable_variables`;
`Layer._flatten_layers`, `_trainable_variables`, `_non_trainable_variables`;
`keras.src.models.functional.Functional`; `MultiHeadAttention._kernel_regularizer`,
`_bias_regularizer` and `_kernel_constraint`; `Functional._nodes_by_depth`,
`Functional._run_through_graph` and `Sequential._functional` (the graph `shrink` reads
and reruns); the modules
`keras.src.ops.numpy` and `keras.src.ops.nn`, where `keras.ops` functions keep
their graph operations; Keras' name-scope stack (`global_state`
"name_scope_stack", whose scopes name their `caller`: the optimizer whose
`apply` runs, for pruning constraints); `Variable._value` and `Trainer._metrics`
(StrengthScheduler's scales ride in the metric state on JAX); `Trainer._compile_loss` (the
compiled loss without the penalties: `max_strength`'s gradient, `regularization_path`'s score).
`tests/test_keras_private.py` checks every one of them against the installed Keras.
"""

import contextlib

import keras

# The optimizer slots that Proximal's step rules read, by optimizer family.
OPTIMIZER_SLOTS = (
    "_velocities",
    "_velocity_hats",
    "_u",
    "_accumulators",
    "_average_gradients",
)
LAYER_NAMES = ("_flatten_layers", "_trainable_variables", "_non_trainable_variables")
# A functional graph as Keras' own `clone_model` reads and reruns it (`shrink`).
GRAPH_NAMES = ("_nodes_by_depth", "_run_through_graph", "_functional")


def _missing(what):
    return RuntimeError(
        f"keras_reg needs {what}, which Keras {keras.__version__} does not have. "
        "Please report it: keras_reg/_keras_private.py is the one place to update."
    )


# --- optimizers ---------------------------------------------------------------------------


def has_slots(optimizer, names):
    """True when `optimizer` has the state `names` and, if any, the per-variable lookup."""
    needed = (*names, "_get_variable_index") if names else ()
    return all(hasattr(optimizer, name) for name in needed)


def slot(optimizer, name, variable):
    """The optimizer's state `name` (e.g. `"_velocities"`) for `variable`."""
    return getattr(optimizer, name)[optimizer._get_variable_index(variable)]


def raw_iterations(optimizer):
    """The count of `apply` calls; `iterations` counts updates under gradient accumulation."""
    if not hasattr(optimizer, "_iterations"):
        raise _missing("Optimizer._iterations (for gradient_accumulation_steps)")
    return optimizer._iterations


def optimizer_variables(optimizer):
    """The variables an optimizer created itself (`BaseOptimizer._variables`)."""
    return optimizer._variables


def optimizer_trainable_variables(optimizer):
    """The model variables an optimizer was built for (`BaseOptimizer._trainable_variables`)."""
    return optimizer._trainable_variables


def scale_loss_for_distribution(value):
    """`value / replicas` under `tf.distribute`, as Keras scales each replica's extra losses.

    The same arithmetic as `keras.src.losses.loss.scale_loss_for_distribution`
    (keras-team/keras#20609), with public names only.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            value = keras.ops.multiply(value, keras.ops.cast(1.0 / replicas, value.dtype))
    return value


def variables_created_eagerly():
    """A context where a new `keras.Variable` is made at once, even inside a traced step.

    TensorFlow lifts it out of the `tf.function` being traced (`tf.init_scope`,
    public TensorFlow); PyTorch runs eagerly. JAX cannot carry a variable made
    there through its stateless step: callers do not cache state on JAX.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.init_scope()
    return contextlib.nullcontext()


def tf_xla_compiling():
    """Whether TensorFlow is compiling the function being traced with XLA (`jit_compile=True`).

    Private TensorFlow (`tensorflow.python.ops.control_flow_util.
    GraphOrParentsInXlaContext`); where it is missing, True, so that callers
    take their XLA-safe path. False off TensorFlow.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:
        return True
    check = getattr(control_flow_util, "GraphOrParentsInXlaContext", None)
    if check is None:
        return True
    return bool(check(tf.compat.v1.get_default_graph()))


def under_tf_distribute():
    """Whether a `tf.distribute` strategy is in use (always False off TensorFlow)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.distribute.has_strategy()


# --- layers and models --------------------------------------------------------------------


def flatten_layers(layer, include_self=True):
    """`layer` (if `include_self`) and every layer inside it, depth first."""
    if not hasattr(layer, "_flatten_layers"):
        raise _missing("Layer._flatten_layers")
    return list(layer._flatten_layers(include_self=include_self))


def own_variables(layer):
    """The variables `layer` created itself, not those of its sub-layers."""
    if not all(hasattr(layer, name) for name in LAYER_NAMES[1:]):
        raise _missing("Layer._trainable_variables and Layer._non_trainable_variables")
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def regularizer_attribute(layer, slot):
    """Where `layer` keeps the regularizer its config saves as `slot`, or None.

    Most layers keep it public (`Dense.kernel_regularizer`); a few that pass it
    to sub-layers they build themselves keep it private
    (`MultiHeadAttention._kernel_regularizer`).
    """
    for name in (slot, f"_{slot}"):
        if hasattr(layer, name):
            return name
    return None


def config_attribute(layer, slot):
    """Where `layer` keeps what its config saves as `slot` (`kernel_constraint`), or None.

    `MultiHeadAttention` keeps the kernel constraint it passes to its
    projections private (`_kernel_constraint`); `GroupedQueryAttention` public.
    """
    return regularizer_attribute(layer, slot)


def is_functional(model):
    """True for a model built from a graph of layers (`keras.Model(inputs, outputs)`)."""
    return isinstance(model, functional_class())


def functional_class():
    """The class of models built from a graph of layers."""
    try:
        from keras.src.models.functional import Functional
    except ImportError:
        raise _missing("keras.src.models.functional.Functional") from None
    return Functional


def sequential_graph(model):
    """The functional graph a built Sequential model runs, or None before it is built."""
    if not hasattr(model, "_functional"):
        raise _missing("Sequential._functional")
    return model._functional


def nodes_by_depth(graph):
    """A functional graph's nodes, deepest (the inputs) first: the order to run them in."""
    if not hasattr(graph, "_nodes_by_depth"):
        raise _missing("Functional._nodes_by_depth")
    by_depth = graph._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def run_through_graph(graph, inputs, operation_fn):
    """Reruns a functional graph on new inputs, calling `operation_fn(op)` for each op.

    This is how `keras.models.clone_model` rebuilds a functional model.
    """
    if not hasattr(graph, "_run_through_graph"):
        raise _missing("Functional._run_through_graph")
    return graph._run_through_graph(inputs, operation_fn=operation_fn)


# Where `keras.ops` keeps the operations that functional graphs record (`x + 1.0`).
OPS_MODULES = ("keras.src.ops.numpy", "keras.src.ops.nn")


def is_keras_layer_class(cls):
    """Whether `cls` is a layer class of Keras' own (exported or not: GroupedQueryAttention,
    the applications' LayerScale), judged by the module that defines it."""
    return issubclass(cls, keras.layers.Layer) and cls.__module__.startswith("keras.src.")


def keras_op_name(op):
    """The class name of a `keras.ops` graph operation (e.g. `"Add"`), or None for others."""
    if isinstance(op, keras.layers.Layer) or type(op).__module__ not in OPS_MODULES:
        return None
    return type(op).__name__


def applying_optimizer():
    """The innermost Keras optimizer whose `apply` is running, or None.

    `BaseOptimizer.apply` opens `backend.name_scope(self.name, caller=self)`; the
    scope stack lives in Keras' global state (`keras.src.backend.common.global_state`,
    attribute "name_scope_stack"). Pruning constraints read the step from it.
    """
    try:
        from keras.src.backend.common import global_state
    except ImportError:
        raise _missing("keras.src.backend.common.global_state") from None
    stack = global_state.get_global_attribute("name_scope_stack") or []
    for scope in reversed(stack):
        if isinstance(getattr(scope, "caller", None), keras.optimizers.Optimizer):
            return scope.caller
    return None


# --- variables and models on JAX (StrengthScheduler) ------------------------------------------


def variable_value(variable):
    """A JAX `keras.Variable`'s stored value (`Variable._value`), read during tracing."""
    if not hasattr(variable, "_value"):
        raise _missing("Variable._value")
    return variable._value


def set_variable_value(variable, value):
    """Sets `Variable._value` (a traced value while the train step is traced)."""
    if not hasattr(variable, "_value"):
        raise _missing("Variable._value")
    variable._value = value


def model_metrics(model):
    """The model's own metric list (`Trainer._metrics`, which `Trainer.metrics` reads)."""
    if not hasattr(model, "_metrics"):
        raise _missing("Trainer._metrics")
    return model._metrics


# --- the compiled loss (regularization_path, max_strength) -----------------------------------


def compiled_loss(model):
    """The loss `compile` built (`Trainer._compile_loss`): `fn(y_true, y_pred)`, no penalties.

    `Trainer.compute_loss` adds the penalties (`model.losses`) to it; the path
    scores held-out data and takes the data gradient with this part alone.
    """
    if not hasattr(model, "_compile_loss"):
        raise _missing("Trainer._compile_loss")
    return model._compile_loss
