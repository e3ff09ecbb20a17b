"""`shrink`: build the smaller model from the plan, then check it against the original."""

import math
import warnings

import keras
import numpy as np

from keras_reg._validation import check_bool
from keras_reg.pruning import PruneLowMagnitude, pruned_weights, strip_pruning
from keras_reg.shrinking import graph as _graph
from keras_reg.shrinking.plan import ShrinkPlan, plan_shrink

__all__ = ["shrink"]

_PRUNING_NAME = keras.saving.get_registered_name(PruneLowMagnitude)  # "keras_reg>PruneLowMagnitude"

# The relative output difference beyond which `shrink` refuses its own result, by
# the lowest precision a layer computes in (mixed precision rounds each layer).
VERIFY_TOLERANCE = {"float64": 1e-4, "float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}


def _as_array(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable))


def shrink(model, plan=None, verbose=False, verify=True, drop_inputs=False):
    """A smaller copy of `model` without the units, filters and channels that do nothing.

    Removes every output unit, filter and channel whose removal cannot change
    the model's outputs, with the weights that only served it (the next
    layer's input rows, BatchNorm entries, ...):

    - a unit whose outgoing weights are all zero (its output is unused);
    - a unit whose output is exactly zero (zero incoming weights and a zero
      bias, through ReLU, BatchNorm, pooling, ...);
    - a unit whose output is a non-zero constant (zero incoming weights give
      act(bias)), folded exactly into the biases of the layers that read it:
      a Dense layer, or a Conv / SeparableConv with `padding="valid"`, through
      pooling, global pooling and Flatten. A `padding="same"` convolution sees
      zeros at the border where the constant would be, so such a unit stays
      (`LayerChange.constant_kept` counts them).

    Channels joined by `Add`, `Subtract`, `Average`, `Maximum`, `Minimum` or
    `Multiply` (residual blocks, squeeze-and-excitation gates), depthwise
    convolutions and BatchNorm are removed together or not at all;
    `Concatenate` offsets and `Flatten` (channels-last) are followed. The
    model's inputs and outputs never change shape. Any layer whose channel
    semantics shrink does not know (LayerNormalization over channels, custom
    layers, recurrent layers, ...) keeps all the channels it touches, and is
    listed in the plan's `kept_whole`.

    The result is a new, uncompiled Keras model (like `keras.models.clone_model`):
    the same layer names and classes, nested models kept nested,
    regularizers and constraints kept on the kept weights, except
    `keras_reg.PruneLowMagnitude`: its target (a fraction of each kernel) was
    set for the old sizes, and fine-tuning would prune that fraction again of
    what is left. `shrink` drops it, with one `UserWarning` naming the layers
    (`keras_reg.strip_pruning` before `shrink` gives the same model without
    the warning); prune the shrunk model again with
    `keras_reg.prune_low_magnitude` and a target for its new sizes. `model` is
    not changed. Before returning, `shrink` runs both models on a random batch
    (one sample, valid indices for an Embedding) and refuses (`RuntimeError`)
    if their outputs differ by more than 1e-4 relative: a removal that is not
    exact is never returned. Under mixed precision both are compared as float32
    twins (same layers and weights), so float16 rounding cannot hide an error.
    A model declaring an input of more than 2**24 elements per sample is not
    run, and a warning says so. A layer whose outputs nothing reads (a dead
    branch) keeps one unit, since a Keras layer cannot have 0; the plan lists
    it under `dead`.

    Args:
        model: a built Functional or Sequential `keras.Model` (nested models
            are fine). Subclassed models have no graph to read and are refused.
        plan: a `ShrinkPlan` from `keras_reg.plan_shrink(model)`, or `None` to
            plan now.
        verbose: bool; `True` prints the plan's table.
        verify: bool; `False` skips the comparison on a random batch.
        drop_inputs: bool; `True` also removes the input features that no
            kept unit reads (see `plan_shrink`). Ignored when `plan` is given.

    Returns:
        A new `keras.Model`.

    Examples:
        >>> inputs = keras.Input((4,))
        >>> hidden = keras.layers.Dense(3, activation="relu", name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> kernel = model.get_layer("hidden").kernel
        >>> zeros = keras.ops.zeros((4, 1))
        >>> _ = kernel.assign(keras.ops.concatenate([kernel[:, :2], zeros], axis=1))
        >>> small = keras_reg.shrink(model)
        >>> small.get_layer("hidden").units, tuple(small.get_layer("out").kernel.shape)
        (2, (2, 2))

    References:
        Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023.
    """
    verbose = check_bool(verbose, "verbose", "shrink")
    verify = check_bool(verify, "verify", "shrink")
    if plan is None:
        plan = plan_shrink(model, drop_inputs=drop_inputs)
    elif not isinstance(plan, ShrinkPlan) or plan._graph.model is not model:
        raise ValueError(
            "The 'plan' argument of shrink must be None or the ShrinkPlan that "
            f"plan_shrink(model) returned for this model. Received: plan={plan!r}"
        )
    if verbose:
        print(plan)
    builder = _Builder(plan)
    small = builder.model(model)
    builder.assign_weights()
    if builder.unpruned:
        warnings.warn(
            f"keras_reg.shrink dropped the PruneLowMagnitude constraints of layers "
            f"{builder.unpruned}: their targets were set for the old sizes, and fine-tuning "
            "the shrunk model would prune that fraction again of what is left. The shrunk "
            "model is not pruned; to prune it again, call keras_reg.prune_low_magnitude on it "
            "with a target for its new sizes. (keras_reg.strip_pruning before shrink avoids "
            "this warning.)",
            stacklevel=2,
        )
    if verify:
        _verify(model, small, plan.inputs_kept, plan._graph)
    return small


class _Builder:
    """Builds the shrunk model from the plan: new layers from edited configs, then weights."""

    def __init__(self, plan):
        self.plan = plan
        self.g = plan._graph
        self.pairs = []  # (old layer, new layer)
        self.new = {}  # id(old op) -> new op
        self.unpruned = []  # names of the layers whose PruneLowMagnitude was dropped
        self.initializers = []  # (new layer, attribute, its initializer), see `_cheap_build`

    def _new_shape(self, tensor):
        tid = self.g.ids.of(tensor)
        shape = tuple(tensor.shape)
        if tid in self.g.layout and shape:
            shape = shape[:-1] + (len(self.g.kept(tid)),)
        return shape

    def _inputs(self, graph):
        return [
            keras.Input(batch_shape=self._new_shape(t), dtype=t.dtype, name=t.name)
            for t in graph.inputs
        ]

    def model(self, model):
        graph = self.g.graphs[id(model)]
        if isinstance(model, keras.Sequential):
            (new_input,) = self._inputs(graph)
            layers = [self.op(layer) for layer in model.layers]
            return keras.Sequential([new_input] + layers, name=model.name)
        inputs = self._inputs(graph)
        outputs = _graph.run(graph, inputs, self.op)
        structured = keras.tree.pack_sequence_as(model.input, inputs)
        return keras.Model(structured, outputs, name=model.name)

    def op(self, op):
        if id(op) in self.new:
            return self.new[id(op)]
        if _graph.is_model(op) and id(op) in self.g.inlined:
            new = self.model(op)
        elif _graph.is_model(op):
            pruned = {v.path.split("/")[-2] for v in pruned_weights(op)}
            self.unpruned += sorted(pruned)
            new = strip_pruning(op) if pruned else keras.models.clone_model(op)
            new.set_weights(op.get_weights())
        elif isinstance(op, keras.layers.Layer):
            config = op.get_config()
            config.update(self.plan._edits.get(id(op), {}).get("config", {}))
            dropped = [key for key, value in config.items() if _is_pruning(value)]
            if dropped:
                self.unpruned.append(op.name)
                config.update(dict.fromkeys(dropped))
            new = type(op).from_config(config)
            self._cheap_build(new)
            self.pairs.append((op, new))
        else:
            new = op  # a stateless keras.ops operation
        self.new[id(op)] = new
        return new

    def _cheap_build(self, layer):
        """Makes `layer`'s coming build draw zeros; `assign_weights` puts its initializers back.

        Every weight of the shrunk model is overwritten with a planned value, so
        drawing random initial values is wasted work, and on JAX each initializer
        at a new shape compiles a program (most of `shrink`'s time there before).
        Only the layer's own public attributes are swapped, not those a layer
        copies into sublayers it builds; the layer's config is unchanged once
        they are back.
        """
        for name, value in list(vars(layer).items()):
            if name.endswith("_initializer") and not name.startswith("_"):
                if isinstance(value, keras.initializers.Initializer):
                    self.initializers.append((layer, name, value))
                    setattr(layer, name, keras.initializers.Zeros())

    def assign_weights(self):
        for layer, name, initializer in self.initializers:
            setattr(layer, name, initializer)
        for old, new in self.pairs:
            edited = self.plan._edits.get(id(old), {}).get("weights") or {}
            before = list(old.weights)
            for i, variable in enumerate(new.weights):
                name = variable.path.rsplit("/", 1)[-1]
                value = edited.get(name)
                if value is None:
                    value = _as_array(before[i]) if i < len(before) else None
                if value is None or tuple(value.shape) != tuple(variable.shape):
                    raise RuntimeError(  # pragma: no cover - a config edit went wrong
                        f"keras_reg.shrink: internal error: {variable.path} of shape "
                        f"{tuple(variable.shape)} has no planned value that fits."
                    )
                variable.assign(value)


def _is_pruning(value):
    """Whether a config entry is a `PruneLowMagnitude` constraint (an object, or serialized)."""
    if isinstance(value, PruneLowMagnitude):
        return True
    return isinstance(value, dict) and value.get("registered_name") == _PRUNING_NAME


# The check's batch: one sample, unknown sizes as 64, and at most this many elements per
# input; a model declaring a larger input is not run (a warning says so).
SAMPLE_LIMIT = 2**24


def _sample(tensor, rng, index_bound):
    """A valid random input for `tensor`: normal floats, or indices in [1, index_bound)."""
    shape = tuple(1 if i == 0 else (d if d is not None else 64) for i, d in enumerate(tensor.shape))
    if "int" in str(tensor.dtype):
        # Index 0 is the padding of Embedding(mask_zero=True): an all-masked batch gives NaN.
        return rng.integers(1, max(2, index_bound), size=shape).astype(tensor.dtype)
    return rng.standard_normal(shape).astype(tensor.dtype or "float32")


def _index_bounds(channel_graph, inputs):
    """For each integer input, the smallest `input_dim` of the Embeddings that read it."""
    bounds = {}
    for call in channel_graph.calls:
        if isinstance(call.op, keras.layers.Embedding):
            for tid in call.inputs:
                bounds[tid] = min(bounds.get(tid, call.op.input_dim), call.op.input_dim)
    return [bounds.get(channel_graph.ids.of(t), 2) for t in inputs]


def _float32_twin(model):
    """`model` rebuilt with float32 layers and the same weights, or None if it cannot be."""

    def rebuild(layer):
        config = layer.get_config()
        if "dtype" in config:
            config["dtype"] = "float32"
        return type(layer).from_config(config)

    try:
        twin = keras.models.clone_model(model, clone_function=rebuild, recursive=True)
        twin.set_weights(model.get_weights())
    except Exception:  # a layer that cannot be rebuilt so: the check uses the model itself
        return None
    return twin


def _forward(model, inputs):
    """The model's inference outputs; compiled on JAX, where op-by-op calls compile each op."""
    if keras.backend.backend() != "jax":
        return model(inputs, training=False)
    import jax

    def run(trainable, non_trainable, x):
        return model.stateless_call(trainable, non_trainable, x, training=False)[0]

    values = [
        [v.value for v in variables]
        for variables in (model.trainable_variables, model.non_trainable_variables)
    ]
    return jax.jit(run)(*values, inputs)


def _verify(model, small, inputs_kept, channel_graph):
    """Runs both models on one random batch; refuses the shrunk one if its outputs differ.

    Under mixed precision every layer rounds to float16 (or bfloat16), which can hide a
    wrong result as large as the rounding: both models are compared as float32 twins
    (same layers and weights, float32 compute), where 1e-4 relative holds. Only if a
    model cannot be rebuilt so does the check fall back to the looser tolerance of its
    lowest precision.
    """
    rng = np.random.default_rng(0)
    graph = channel_graph.graphs[id(model)]
    sizes = [math.prod(1 if d is None else d for d in t.shape[1:]) for t in graph.inputs]
    if max(sizes, default=0) > SAMPLE_LIMIT:
        warnings.warn(
            f"keras_reg.shrink did not compare the shrunk model's outputs with the original's: "
            f"model {model.name!r} declares an input of {max(sizes):,} elements per sample, "
            f"more than the {SAMPLE_LIMIT:,} the check draws.",
            stacklevel=3,
        )
        return
    bounds = _index_bounds(channel_graph, graph.inputs)
    full = [_sample(t, rng, b) for t, b in zip(graph.inputs, bounds, strict=True)]
    kept = [x[..., inputs_kept[t.name]] for x, t in zip(full, graph.inputs, strict=True)]

    def structured(arrays):
        return keras.tree.pack_sequence_as(model.input, arrays) if len(arrays) > 1 else arrays[0]

    tolerance = max(
        VERIFY_TOLERANCE.get(call.op.compute_dtype, 1e-4)
        for call in channel_graph.calls
        if isinstance(call.op, keras.layers.Layer)
    )
    if tolerance > VERIFY_TOLERANCE["float32"]:
        twins = _float32_twin(model), _float32_twin(small)
        if None not in twins:
            model, small = twins
            tolerance = VERIFY_TOLERANCE["float32"]
    try:
        expected = keras.tree.flatten(_forward(model, structured(full)))
    except Exception as exc:  # e.g. unknown spatial sizes that this sample does not fit
        warnings.warn(
            f"keras_reg.shrink could not run model {model.name!r} on a random batch of shape "
            f"{[x.shape for x in full]} ({type(exc).__name__}), so it did not compare the "
            "shrunk model's outputs with the original's.",
            stacklevel=3,
        )
        return
    got = keras.tree.flatten(_forward(small, structured(kept)))
    for a, b in zip(expected, got, strict=True):
        a, b = _as_array(a).astype(np.float64), _as_array(b).astype(np.float64)
        scale = max(float(np.max(np.abs(a), initial=0.0)), 1e-30)
        error = float(np.max(np.abs(a - b), initial=0.0)) / scale
        if a.shape != b.shape or not error <= tolerance:
            raise RuntimeError(
                f"keras_reg.shrink refused its result for model {model.name!r}: on a random "
                f"batch its outputs differ from the original's by {error:.2e} (relative), more "
                f"than {tolerance:g}. This is a bug in keras_reg; please report it with "
                "the model. Your model is unchanged."
            )
