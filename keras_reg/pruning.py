"""Magnitude pruning to a sparsity target, on every backend: `prune_low_magnitude`.

A sparsity target is the constraint "at most k non-zeros"; its proximal map is
the projection that keeps the k largest magnitudes (hard thresholding). Keras
applies `variable.constraint` right after every optimizer update, inside the
compiled train step, for any optimizer: that is where the projection runs.

Where the state lives: nowhere new. The projection is a pure function of the
weight and of the optimizer's iteration count, which every backend threads
through its train step (JAX's stateless step maps the optimizer's variables;
a mask variable of the model would be baked into the trace as a constant there)
and which `model.save()` stores with the optimizer. So there is no mask to
keep in sync, no callback to forget, and a model reloaded mid-schedule goes on
exactly where it stopped.
"""

import warnings

import keras
from keras import ops

from keras_reg import _keras_private as _private
from keras_reg import rules
from keras_reg._keras_private import flatten_layers
from keras_reg._steps import retrace
from keras_reg._validation import check_built_model, check_config_keys, check_float, check_int
from keras_reg.attach import graph_layers, layer_filter
from keras_reg.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule

# The schedules are re-exported so that the package imports pruning in one line.
__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PruneLowMagnitude",
    "magnitude_prune",
    "prune_low_magnitude",
    "pruned_weights",
    "strip_pruning",
]

# (shift, bits) of the radix passes over a non-negative float32's 31 bits.
_PASSES = ((21, 10), (10, 11), (0, 10))


def _kth_key(keys, count):
    """The `count`-th smallest of non-negative int32 `keys` (1-based; `count >= 1`).

    Radix selection from the top bits: three histograms over the candidates
    instead of a full sort (TensorFlow's sort of a 32k vector costs several
    milliseconds on CPU; this, a fraction of one).
    """
    prefix = ops.zeros((), "int32")
    remaining = count
    for shift, bits in _PASSES:
        digit = ops.bitwise_and(ops.right_shift(keys, shift), (1 << bits) - 1)
        if shift == _PASSES[0][0]:
            weights = ops.ones_like(keys)
        else:
            high = shift + bits
            same = ops.equal(ops.right_shift(keys, high), ops.right_shift(prefix, high))
            weights = ops.cast(same, "int32")
        # A static number of bins (JAX's bincount needs it concrete; segment_sum takes it).
        hist = ops.segment_sum(weights, digit, num_segments=1 << bits)
        before = ops.cumsum(hist) - hist
        # The digit of the wanted key: the last one with fewer than `remaining` keys before it.
        chosen = ops.sum(ops.cast(ops.less(before, remaining), "int32")) - 1
        remaining = remaining - ops.take(before, chosen)
        prefix = ops.bitwise_or(prefix, ops.left_shift(chosen, shift))
    return prefix


def _smallest(values, count):
    """Bool mask of the `count` smallest entries of a 1-D float tensor; ties to lower indices."""
    # The bits of a non-negative float32 sort as its value does (NaN above inf).
    keys = ops.view(ops.abs(ops.cast(values, "float32")), "int32")
    tau = _kth_key(keys, ops.maximum(count, 1))
    below = ops.less(keys, tau)
    at = ops.equal(keys, tau)
    need = count - ops.sum(ops.cast(below, "int32"))
    rank_in_ties = ops.cumsum(ops.cast(at, "int32"))
    chosen = ops.logical_or(below, ops.logical_and(at, ops.less_equal(rank_in_ties, need)))
    return ops.logical_and(chosen, ops.greater(count, 0))


def _check_axis(axis, shape, owner):
    rank = len(shape)
    if not -rank <= axis < rank:
        raise ValueError(
            f"The 'axis' argument of {owner} must be in [{-rank}, {rank - 1}] for a weight of "
            f"shape {tuple(shape)}. Received: axis={axis}"
        )
    return axis % rank


def magnitude_prune(x, sparsity, axis=None):
    """Sets the smallest entries (or groups) of `x` to zero: the k-sparse projection.

    Unstructured (`axis=None`): exactly `round(sparsity * n)` of the `n` entries
    with the smallest `|x|` become zero, which is `argmin_y ||y - x||` over the
    tensors with at most `n - round(sparsity * n)` non-zeros. Structured: one
    group per index along `axis` (the groups of `GroupLasso(axis=...)`), and
    exactly `round(sparsity * groups)` groups with the smallest L2 norm become
    zero. Ties go to the lower (flattened) index, so the result is
    deterministic. Entries already zero count among the smallest: a tensor
    with more zeros than the target keeps them.

    Args:
        x: tensor.
        sparsity: float or scalar tensor in [0, 1).
        axis: `None` for unstructured pruning, or the axis whose indices name
            the groups (`-1`: output units of a Dense kernel, filters of a conv
            kernel).

    Returns:
        A tensor of the shape and dtype of `x`.

    References:
        Blumensath & Davies, "Iterative hard thresholding for compressed
        sensing", Applied and Computational Harmonic Analysis 27(3), 2009.
    """
    x = ops.convert_to_tensor(x)
    shape = tuple(int(d) for d in x.shape)
    sparsity = ops.cast(sparsity, "float32")
    if axis is None:
        n = 1
        for d in shape:
            n *= d
        count = ops.cast(ops.round(sparsity * float(n)), "int32")
        magnitudes = ops.reshape(ops.abs(ops.cast(x, "float32")), (n,))
        remove = ops.reshape(_smallest(magnitudes, count), shape)
    else:
        axis = _check_axis(axis, shape, "magnitude_prune")
        others = tuple(a for a in range(len(shape)) if a != axis)
        squares = ops.sum(ops.square(ops.cast(x, "float32")), axis=others)
        count = ops.cast(ops.round(sparsity * float(shape[axis])), "int32")
        kept_shape = [1] * len(shape)
        kept_shape[axis] = shape[axis]
        remove = ops.reshape(_smallest(squares, count), kept_shape)
    return ops.where(remove, ops.zeros_like(x), x)


def _as_schedule(schedule, owner):
    if isinstance(schedule, PruningSchedule):
        return schedule
    try:
        sparsity = check_float(schedule, "schedule", owner, low=0.0, high=1.0)
    except ValueError:
        sparsity = 1.0
    if sparsity >= 1.0:
        raise ValueError(
            f"The 'schedule' argument of {owner} must be a pruning schedule "
            "(keras_reg.PolynomialDecay, keras_reg.ConstantSparsity) or a float in [0, 1) for a "
            f"constant target. Received: schedule={schedule!r}"
        )
    return ConstantSparsity(sparsity, begin_step=0, end_step=-1, frequency=1)


@keras.saving.register_keras_serializable(package="keras_reg")
class PruneLowMagnitude(keras.constraints.Constraint):
    """A weight constraint that keeps the largest magnitudes, following a schedule.

    After every optimizer update the weight is projected onto the tensors with
    exactly `round(s * n)` zeros (`magnitude_prune`), where `s =
    schedule.target(step)` is the sparsity of the last pruning step at or
    before `step`, the optimizer's iteration count after this update (the first
    update is step 1). So between pruning steps the sparsity is held exactly,
    never dipping, and from `end_step` on it is exactly the final sparsity.
    With `axis`, whole groups (units, filters) are zeroed: `round(s * groups)`
    of them, smallest L2 norm first.

    The projection is applied at every step, not only at pruning steps: this
    is projected gradient descent (iterative hard thresholding) on the k-sparse
    set. A pruned weight gets gradients and may come back if it outgrows a kept
    one (the count of zeros never changes between pruning steps), which
    TFMOT's fixed masks do not allow; it needs no mask variable, so it works
    inside JAX's stateless train step.

    Pass it as a layer's `kernel_constraint` to write a pruned model, or let
    `keras_reg.prune_low_magnitude` attach it to an existing model. It runs
    inside any Keras optimizer's `apply` (`model.fit`, or a custom loop calling
    `optimizer.apply`), under `Proximal`, `LossScaleOptimizer` and
    `tf.distribute`; called outside an optimizer it raises a `RuntimeError`.

    Args:
        schedule: a `keras_reg.PolynomialDecay` or `keras_reg.ConstantSparsity`,
            or a float in [0, 1) for a constant target from the first update.
        axis: `None` (default) for unstructured pruning, or the axis whose
            indices name the groups, as in `keras_reg.GroupLasso`.

    Examples:
        >>> layer = keras.layers.Dense(
        ...     64, kernel_constraint=keras_reg.PruneLowMagnitude(
        ...         keras_reg.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000)))
    """

    def __init__(self, schedule, axis=None):
        self.schedule = _as_schedule(schedule, "PruneLowMagnitude")
        self.axis = None if axis is None else check_int(axis, "axis", "PruneLowMagnitude")

    def __call__(self, w):
        optimizer = _private.applying_optimizer()
        if optimizer is None:
            raise RuntimeError(
                "keras_reg.PruneLowMagnitude reads the optimizer's step and runs inside a Keras "
                "optimizer's apply() (model.fit, or optimizer.apply in a custom loop); it was "
                f"called outside one, on a weight of shape {tuple(w.shape)}."
            )
        if self.axis is not None:
            _check_axis(self.axis, tuple(w.shape), "PruneLowMagnitude")
        value = w.value if isinstance(w, keras.Variable) else w
        target = self.schedule.target(optimizer.iterations + 1)
        # No cond for target 0: it prunes nothing, and a cond costs more than the projection.
        return magnitude_prune(value, target, self.axis)

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule), "axis": self.axis}

    @classmethod
    def from_config(cls, config):
        check_config_keys(config, ("schedule", "axis"), "PruneLowMagnitude")
        config = dict(config)
        schedule = config.pop("schedule")
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        return cls(schedule, **config)


def _kernels(layer):
    """`(variable, slot, why_not)` for each prunable kernel of `layer` (its own).

    `why_not` is `None` for a kernel that can be pruned, else why it cannot. A
    frozen kernel (`trainable=False`) is left out: no update ever changes it.
    """
    if isinstance(layer, keras.Model):
        return []
    rule = rules.rule_for(layer)
    found = []
    for variable in _private.own_variables(layer):
        name = rules.weight_name(variable)
        if name not in rule.prunable_names(layer):
            continue
        slot = rule.constraint_slot(layer, name)
        if getattr(layer, "lora_enabled", False) and name in ("kernel", "embeddings"):
            why = (
                "LoRA is enabled on it (enable_lora): its kernel is frozen and the LoRA "
                "factors are added to it, so a pruned kernel would not be sparse. Prune "
                "before enable_lora (and strip_pruning before enabling LoRA on a pruned "
                "layer), or merge the LoRA factors into the kernel first"
            )
        elif not variable.trainable:
            continue
        elif slot is None:
            why = (
                f"layer class {type(layer).__name__} has no constraint slot for it, no "
                f"`{name}_constraint` attribute that its config saves: add one, or register "
                "a rule that names one with keras_reg.register_layer_rule"
            )
        else:
            why = None
        found.append((variable, slot, why))
    return found


def _has_kernel(layer):
    """Whether `layer` has a kernel of its own (pruned or not, frozen or not)."""
    if isinstance(layer, keras.Model):
        return False
    names = rules.rule_for(layer).prunable_names(layer)
    return any(rules.weight_name(v) in names for v in _private.own_variables(layer))


def _selected_layers(model, select):
    """Every layer of `model` that `select` picks, itself or through a layer holding it."""
    chosen, seen = [], set()
    for top, _ in graph_layers(model):
        whole = select(top)
        for layer in flatten_layers(top, include_self=True):
            if id(layer) in seen or (isinstance(layer, keras.Model) and layer is not top):
                continue
            if whole or select(layer):
                seen.add(id(layer))
                chosen.append(layer)
    return chosen


def _readable_graph(model):
    """The functional graph that runs `model`, or None (a subclassed model has none)."""
    if isinstance(model, keras.Sequential):
        return _private.sequential_graph(model)
    functional = _private.functional_class()
    if isinstance(model, functional) and type(model).call is functional.call:
        return model
    return None


def _units_reaching(graph, tensors):
    """What computes `tensors` of a functional `graph`, back to the first kernels.

    Returns `(layers, inputs)`: the layers with a prunable kernel whose units
    reach `tensors` through no other kernel (through activations, dropout,
    normalization, pooling, joins, reshapes: zeroing a unit there zeroes, or
    makes constant, part of an output), and the positions of the graph's inputs
    reached the same way. Nested models are followed inside. `None` when a
    model on the way has no graph to read (subclassed).
    """
    producers = {}
    for node in _private.nodes_by_depth(graph):
        for index, tensor in enumerate(node.outputs):
            producers[id(tensor)] = (node, index)
    positions = {id(t): i for i, t in enumerate(keras.tree.flatten(graph.inputs))}
    layers, inputs, seen = [], set(), set()
    stack = list(tensors)
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if id(tensor) in positions:
            inputs.add(positions[id(tensor)])
            continue
        node, index = producers.get(id(tensor), (None, None))
        if node is None or node.operation is None or node.is_input:
            continue
        op = node.operation
        if isinstance(op, keras.Model):
            inner = _readable_graph(op)
            if inner is None:
                return None
            reached = _units_reaching(inner, [keras.tree.flatten(inner.outputs)[index]])
            if reached is None:
                return None
            layers += reached[0]
            stack += [node.input_tensors[i] for i in sorted(reached[1])]
            continue
        if isinstance(op, keras.layers.Layer):
            held = [layer for layer in flatten_layers(op, include_self=True) if _has_kernel(layer)]
            if held:
                layers += held
                continue
        stack += list(node.input_tensors)
    return layers, inputs


def _protected_outputs(model):
    """The output layers that structured pruning with `layers=None` leaves out, or a refusal."""
    found = _output_layers(model)
    if found is None:
        raise ValueError(
            f"prune_low_magnitude cannot tell which layers compute the outputs of model "
            f"{model.name!r}: it (or a model inside it) is a subclassed keras.Model, whose "
            "graph of layers cannot be read. Structured pruning (axis=...) with layers=None "
            "never prunes the output units (a classifier's classes), so it needs to know them: "
            "pass `layers=` with the layers to prune."
        )
    return found


def _output_layers(model):
    """The layers whose units are `model`'s output units (a classifier's last Dense).

    Each model output traced back through the layers without kernels
    (activations, softmax, dropout, normalization, pooling, joins, reshapes)
    to the layers with kernels that compute it, nested models included.
    `None` when that cannot be read (a subclassed model on the way).
    """
    graph = _readable_graph(model)
    if graph is None:
        return None
    reached = _units_reaching(graph, keras.tree.flatten(graph.outputs))
    return None if reached is None else reached[0]


def prune_low_magnitude(model, schedule_or_sparsity, layers=None, axis=None):
    """Prunes the kernels of a built model to a sparsity target during training, in place.

    Attaches a `keras_reg.PruneLowMagnitude` constraint to every kernel
    (`kernel`, `embeddings`, `depthwise_kernel`, `pointwise_kernel`) of the
    chosen layers, nested models included: after each optimizer update, each
    such weight keeps exactly its `n - round(s * n)` largest magnitudes (or,
    with `axis`, its largest groups by L2 norm), `s` following the schedule.
    No callback is needed. The layers' configs record the constraint, so
    `model.save()` / `keras.saving.load_model` (after `import keras_reg`) keep
    it, and the step lives in the optimizer: a model saved mid-schedule goes
    on where it stopped. A compiled model's train function is reset, so the
    next `fit` traces the constraint in. `keras_reg.strip_pruning` removes it
    for export (and before `layer.enable_lora`, which refuses a constraint).

    What `layers=None` leaves out:

    - with `axis` on the units (`-1`, the last axis of the kernel), the units
      of the layers that compute the model's outputs: a classifier's last
      Dense would otherwise answer only its bias for the pruned classes. They
      are found through the model's graph, from each output back through the
      layers without kernels (activations, softmax, dropout, normalization,
      pooling, joins) to the layers with kernels, nested models included. Name
      such a layer in `layers=` to prune its units anyway. A subclassed model
      has no graph to read, so it is refused: pass `layers=`.
    - kernels it cannot prune, with one warning naming them and why: a custom
      layer's kernel without a constraint slot (`kernel_constraint`; register
      a rule with `keras_reg.register_layer_rule`), and a layer with LoRA
      enabled (prune before `enable_lora`, or merge the LoRA factors first).
      Named in `layers=`, such a layer is refused with a `ValueError`.
    - frozen kernels (`trainable=False`): no update ever changes them.

    Returns:
        The same model, pruned in place (TFMOT's `prune_low_magnitude` returns
        a new, wrapped one).

    Examples:
        >>> x = np.random.default_rng(0).normal(size=(64, 20)).astype("float32")
        >>> y = (x[:, 0] > 0).astype("int32")
        >>> model = keras.Sequential([
        ...     keras.Input((20,)), keras.layers.Dense(10, name="d"), keras.layers.Dense(2)
        ... ])
        >>> model = keras_reg.prune_low_magnitude(model, 0.9, layers=["d"])  # or a schedule
        >>> model.compile("adam", "sparse_categorical_crossentropy")
        >>> _ = model.fit(x, y, epochs=1, verbose=0)
        >>> int(np.sum(keras.ops.convert_to_numpy(model.get_layer("d").kernel) == 0))  # of 200
        180
    """
    owner = "prune_low_magnitude"
    check_built_model(model, owner)
    schedule = _as_schedule(schedule_or_sparsity, owner)
    if axis is not None:
        axis = check_int(axis, "axis", owner)
    select = layer_filter(layers, model, "prune_low_magnitude")
    outputs = _protected_outputs(model) if layers is None and axis is not None else []
    chosen, skipped, kept_outputs = [], [], []
    for layer in _selected_layers(model, select):
        for variable, slot, why_not in _kernels(layer):
            if why_not is not None:
                skipped.append(f"{variable.path!r} ({why_not})")
                continue
            current = getattr(layer, slot)
            if current is not None and not isinstance(current, PruneLowMagnitude):
                raise ValueError(
                    f"prune_low_magnitude cannot prune {variable.path!r}: it already has the "
                    f"constraint {current!r} in {layer.name}.{slot}, and a weight has one "
                    "constraint. Remove it first, or leave this layer out with `layers=`."
                )
            if axis is not None:
                try:
                    units_axis = _check_axis(axis, tuple(variable.shape), owner)
                except ValueError as error:
                    raise ValueError(f"{error} (weight {variable.path!r})") from None
                if units_axis == len(variable.shape) - 1 and any(o is layer for o in outputs):
                    kept_outputs.append(layer.name)
                    continue
            chosen.append((layer, variable, slot))
    if skipped and layers is not None:
        raise ValueError(
            f"prune_low_magnitude cannot prune these kernels of the layers chosen with "
            f"layers={layers!r}: {'; '.join(skipped)}. Leave their layers out of `layers=`."
        )
    if skipped:
        warnings.warn(
            f"prune_low_magnitude left out these kernels of model {model.name!r}: "
            f"{'; '.join(skipped)}. The other kernels are pruned; pass `layers=` to choose "
            "the layers and silence this warning.",
            stacklevel=2,
        )
    if not chosen and kept_outputs:
        raise ValueError(
            f"prune_low_magnitude found nothing to prune in model {model.name!r}: its only "
            f"kernels are those of the layers that compute its outputs "
            f"({sorted(set(kept_outputs))}), whose units structured pruning with layers=None "
            "leaves out. Name them in `layers=` to prune their units anyway."
        )
    if not chosen:
        raise ValueError(
            f"prune_low_magnitude found no kernel to prune in model {model.name!r} with "
            f"layers={layers!r}: the filter matches no layer that has a kernel."
        )
    constraint = PruneLowMagnitude(schedule, axis=axis)
    for layer, variable, slot in chosen:
        setattr(layer, slot, constraint)
        variable.constraint = constraint
    retrace(model)  # a traced train step does not apply the new constraint
    return model


def pruned_weights(model):
    """The variables of `model` that a `PruneLowMagnitude` constraint prunes, in model order."""
    return [
        v for v in model.weights if isinstance(getattr(v, "constraint", None), PruneLowMagnitude)
    ]


def strip_pruning(model):
    """A copy of `model` without the pruning constraints, zeros kept, for export.

    The copy has the same architecture and weights (so the same zeros) and no
    `PruneLowMagnitude` constraint: it trains as a plain model and loads
    without keras_reg (unless other keras_reg objects are in it). The model
    given is not changed.

    Args:
        model: a built Sequential or Functional `keras.Model` (nested ones
            included).

    Returns:
        A new `keras.Model`.

    Examples:
        >>> model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(10, name="d")])
        >>> model = keras_reg.prune_low_magnitude(model, 0.5)
        >>> model.compile("sgd", "mse")
        >>> _ = model.fit(np.ones((8, 20)), np.ones((8, 10)), verbose=0)
        >>> stripped = keras_reg.strip_pruning(model)
        >>> stripped.get_layer("d").kernel_constraint is None  # plain Keras again
        True
        >>> int(np.sum(keras.ops.convert_to_numpy(stripped.get_layer("d").kernel) == 0))  # kept
        100
    """
    check_built_model(model, "strip_pruning")
    try:
        copy = keras.models.clone_model(model, recursive=True)
    except ValueError as error:
        raise ValueError(
            "strip_pruning copies the model with keras.models.clone_model, which takes "
            f"Sequential and Functional models only. Received: model {model.name!r} of type "
            f"{type(model).__name__} ({error})"
        ) from None
    copy.set_weights(model.get_weights())
    for layer in flatten_layers(copy, include_self=False):
        rule = rules.rule_for(layer)
        for variable in [] if isinstance(layer, keras.Model) else _private.own_variables(layer):
            slot = rule.constraint_slot(layer, rules.weight_name(variable))
            if slot and isinstance(getattr(layer, slot, None), PruneLowMagnitude):
                setattr(layer, slot, None)
    for variable in copy.weights:
        if isinstance(getattr(variable, "constraint", None), PruneLowMagnitude):
            variable.constraint = None
    return copy
