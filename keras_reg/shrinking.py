"""`shrink`: zero units and filters become a physically smaller model with the same outputs."""

import dataclasses
import math
import warnings

import keras
import numpy as np

from keras_reg import _channels, _graph
from keras_reg._channels import CONST, VAR
from keras_reg._validation import check_bool, check_built_model

__all__ = ["LayerChange", "ShrinkPlan", "plan_shrink", "shrink"]

# The relative output difference beyond which `shrink` refuses its own result, by
# the lowest precision a layer computes in (mixed precision rounds each layer).
VERIFY_TOLERANCE = {"float64": 1e-4, "float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}


@dataclasses.dataclass(frozen=True)
class LayerChange:
    """What shrinking does to one layer that has units, filters or channels.

    Attributes:
        name: the layer's name.
        kind: the layer's class name.
        units_before: output units (Dense), filters (Conv), or channels
            (DepthwiseConv, Embedding dimensions) before.
        units_after: the same after shrinking.
        params_before: number of weights (all of the layer's variables).
        params_after: the same after shrinking.
        macs_before: multiply-accumulates per sample, or `None` where a
            spatial size is unknown (or for an Embedding lookup).
        macs_after: the same after shrinking.
        constant_kept: units that output a non-zero constant but stay,
            because a layer that reads them cannot fold a constant exactly
            (a `padding="same"` convolution sees zeros at the border).
    """

    name: str
    kind: str
    units_before: int
    units_after: int
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    constant_kept: int

    def to_dict(self):
        return dataclasses.asdict(self)


class ShrinkPlan:
    """Which channels `shrink` removes, and what that does to each layer.

    Made by `keras_reg.plan_shrink(model)`; `str(plan)` is a table, `plan.rows`
    the same numbers as `LayerChange`s, `plan.to_dict()` as plain Python values.
    The plan holds the new weights too (computed from the model's current
    weights): `keras_reg.shrink(model, plan=plan)` builds the model from it.

    Attributes:
        rows: tuple of `LayerChange`, one per layer with units, filters or
            channels, in model order.
        params_before: all weights of the model.
        params_after: all weights of the shrunk model.
        macs_before: total multiply-accumulates per sample of the rows, or
            `None` if one is unknown.
        macs_after: the same after shrinking.
        kept_whole: tuple of `(layer name, reason)` for each layer whose
            channels were all kept because shrink cannot reason about it.
        inputs_kept: dict, model input name -> the indices of the input
            features (last axis) the shrunk model takes: all of them unless
            `plan_shrink(model, drop_inputs=True)`.
    """

    def __init__(self, graph, edits, rows, params_before, params_after):
        self._graph = graph
        self._edits = edits
        self.rows = tuple(rows)
        self.params_before = params_before
        self.params_after = params_after
        known = [r for r in self.rows if r.macs_before is not None]
        complete = len(known) == len(self.rows)
        self.macs_before = sum(r.macs_before for r in known) if complete else None
        self.macs_after = sum(r.macs_after for r in known) if complete else None
        self.kept_whole = tuple(dict.fromkeys(graph.unknown))
        inputs = _graph.graph_of(graph.model).inputs
        self.inputs_kept = {t.name: graph.kept(graph.ids.of(t)).tolist() for t in inputs}

    def to_dict(self):
        return {
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "rows": [r.to_dict() for r in self.rows],
            "kept_whole": [list(item) for item in self.kept_whole],
            "inputs_kept": self.inputs_kept,
        }

    def __repr__(self):
        return (
            f"ShrinkPlan(params {self.params_before:,} -> {self.params_after:,}, "
            f"layers={len(self.rows)})"
        )

    def __str__(self):
        def ratio(after, before):
            return f"{after / before:.2f}x" if before else "-"

        def macs(value):
            return "?" if value is None else f"{value:,}"

        header = ("layer", "class", "units", "params", "MACs", "const kept")
        lines = [header]
        for r in self.rows:
            lines.append(
                (
                    r.name,
                    r.kind,
                    f"{r.units_before} -> {r.units_after}",
                    f"{r.params_before:,} -> {r.params_after:,}",
                    f"{macs(r.macs_before)} -> {macs(r.macs_after)}",
                    str(r.constant_kept) if r.constant_kept else "",
                )
            )
        total = (
            "total",
            "",
            "",
            f"{self.params_before:,} -> {self.params_after:,}",
            f"{macs(self.macs_before)} -> {macs(self.macs_after)}",
            "",
        )
        widths = [max(len(line[i]) for line in lines + [total]) for i in range(len(header))]

        def fmt(line):
            return "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()

        rule = "-" * len(fmt(tuple("-" * w for w in widths)))
        out = [fmt(header), rule] + [fmt(line) for line in lines[1:]] + [rule, fmt(total)]
        out.append(
            f"params {ratio(self.params_after, self.params_before)}"
            + (
                f", MACs {ratio(self.macs_after, self.macs_before)}"
                if self.macs_before is not None
                else ""
            )
        )
        for name, reason in self.kept_whole:
            out.append(f"kept whole: {name} ({reason})")
        return "\n".join(out)


def _as_array(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable))


def _slice(kernel, rows, cols):
    """`kernel[..., rows, :][..., cols]`, without copying what is kept whole."""
    if len(rows) != kernel.shape[-2]:
        kernel = kernel.take(rows, axis=-2)
    if len(cols) != kernel.shape[-1]:
        kernel = kernel.take(cols, axis=-1)
    return kernel


def _positions(shape):
    dims = shape[1:-1]
    return None if any(d is None for d in dims) else math.prod(dims)


def _macs(layer, call, cin, cout):
    """Multiply-accumulates per sample of one call, for `cin` inputs and `cout` outputs."""
    if isinstance(layer, keras.layers.Embedding):
        return None
    positions = _positions(call.output_shapes[0])
    if positions is None:
        return None
    if isinstance(layer, keras.layers.Dense):
        return positions * cin * cout
    window = math.prod(layer.kernel_size)
    if type(layer) in _channels._DEPTHWISE:
        return positions * window * cout
    if type(layer) in _channels._SEPARABLE:
        mult = layer.depth_multiplier
        return positions * (window * cin * mult + cin * mult * cout)
    return positions * window * cin * cout


class _Planner:
    """Turns the channels kept into each layer's new config and weights."""

    def __init__(self, graph):
        self.g = graph
        self.edits = {}  # id(layer) -> {"config": {...}, "weights": {name: array}}
        self.rows = []

    def plan(self):
        seen = set()
        for call in self.g.calls:
            layer = call.op
            if id(layer) in seen or id(layer) in self.g.whole:
                continue
            seen.add(id(layer))
            kind = type(layer)
            if kind in _channels._DENSE + _channels._CONV + _channels._SEPARABLE:
                self._producer(layer)
            elif kind in _channels._DEPTHWISE:
                self._depthwise(layer)
            elif kind is keras.layers.BatchNormalization:
                self._per_channel(layer, ("gamma", "beta", "moving_mean", "moving_variance"))
            elif kind is keras.layers.Embedding:
                self._embedding(layer)
            elif kind is keras.layers.Reshape:
                self._reshape(layer)
        return self.edits, self.rows

    def _calls(self, layer):
        return self.g.calls_of[id(layer)]

    def _weights(self, layer):
        return self.g.weights(layer)

    def _row(self, layer, units_before, units_after, weights_after, macs_args):
        params_before = sum(int(np.prod(v.shape)) for v in layer.weights)
        params_after = sum(int(np.prod(w.shape)) for w in weights_after.values())
        calls = self._calls(layer)
        before = [_macs(layer, c, *macs_args[0]) for c in calls]
        after = [_macs(layer, c, *macs_args[1]) for c in calls]
        # Constant units kept in the layer's output space (a space joined by Add is
        # shared, so each producer of it shows the same count).
        constant = sum(
            self.g.kept_constant.get(self.g.groups.find(gid), 0)
            for gid, _ in self.g.layout[calls[0].outputs[0]][0]
        )
        self.rows.append(
            LayerChange(
                name=layer.name,
                kind=type(layer).__name__,
                units_before=int(units_before),
                units_after=int(units_after),
                params_before=params_before,
                params_after=params_after,
                macs_before=None if None in before else sum(before),
                macs_after=None if None in after else sum(after),
                constant_kept=constant if type(layer) not in _channels._DEPTHWISE else 0,
            )
        )

    def _producer(self, layer):
        g = self.g
        call = self._calls(layer)[0]
        tid = call.inputs[0]
        reader = next(r for r in g.readers if r.layer is layer and r.tensor == tid)
        rows = g.kept(tid)
        cols = g.kept(call.outputs[0])
        removed = np.setdiff1d(np.arange(reader.nonzero.shape[0]), rows)
        kind, value = g._rows(tid)
        live = reader.nonzero[np.ix_(removed, cols)].any(axis=1) if len(cols) else None
        if live is not None and np.any(live & (kind[removed] == VAR)):
            raise RuntimeError(  # pragma: no cover - a bug in the plan, never a user error
                f"keras_reg.shrink: internal error: layer {layer.name!r} would lose a live input."
            )
        constants = np.where(kind[removed] == CONST, value[removed], 0.0)
        fold = constants @ reader.total[np.ix_(removed, cols)] if len(removed) else 0.0
        old = self._weights(layer)
        new, config = {}, {}
        if type(layer) in _channels._SEPARABLE:
            mult = layer.depth_multiplier
            new["depthwise_kernel"] = old["depthwise_kernel"].take(rows, axis=-2)
            pw_rows = (rows[:, None] * mult + np.arange(mult)[None, :]).reshape(-1)
            new["pointwise_kernel"] = _slice(old["pointwise_kernel"], pw_rows, cols)
            config["filters"] = len(cols)
            units = layer.filters
        else:
            new["kernel"] = _slice(old["kernel"], rows, cols)
            key = "units" if isinstance(layer, keras.layers.Dense) else "filters"
            config[key] = len(cols)
            units = getattr(layer, key)
        fold = np.broadcast_to(np.asarray(fold, np.float64), (len(cols),))
        if layer.use_bias:
            new["bias"] = (old["bias"][cols].astype(np.float64) + fold).astype(old["bias"].dtype)
        elif np.any(fold != 0):
            config["use_bias"] = True
            new["bias"] = fold.astype(layer.variable_dtype)
        if len(cols) == units and len(rows) == reader.nonzero.shape[0] and "use_bias" not in config:
            config = {}
        self._store(layer, config, new)
        cin_b, cin_a = reader.nonzero.shape[0], len(rows)
        if type(layer) in _channels._CONV + _channels._SEPARABLE:
            cin_b, cin_a = old[next(iter(old))].shape[-2], new[next(iter(new))].shape[-2]
        self._row(layer, units, len(cols), new, [(cin_b, units), (cin_a, len(cols))])

    def _depthwise(self, layer):
        kept = self.g.kept(self._calls(layer)[0].inputs[0])
        old = self._weights(layer)
        new = {"kernel": old["kernel"][..., kept, :]}
        if "bias" in old:
            new["bias"] = old["bias"][kept]
        channels = old["kernel"].shape[-2]
        self._store(layer, {}, new)
        self._row(layer, channels, len(kept), new, [(channels, channels), (len(kept), len(kept))])

    def _per_channel(self, layer, names):
        kept = self.g.kept(self._calls(layer)[0].inputs[0])
        old = self._weights(layer)
        self._store(layer, {}, {name: old[name][kept] for name in names if name in old})

    def _embedding(self, layer):
        cols = self.g.kept(self._calls(layer)[0].outputs[0])
        old = self._weights(layer)["embeddings"]
        new = {"embeddings": old[:, cols]}
        self._store(layer, {"output_dim": len(cols)} if len(cols) != old.shape[1] else {}, new)
        self._row(layer, old.shape[1], len(cols), new, [(0, 0), (0, 0)])

    def _reshape(self, layer):
        kept = len(self.g.kept(self._calls(layer)[0].inputs[0]))
        target = tuple(layer.target_shape)
        if target[-1] != kept:
            self._store(layer, {"target_shape": target[:-1] + (kept,)}, None)

    def _store(self, layer, config, weights):
        edit = {}
        if config:
            edit["config"] = config
        if weights is not None:
            edit["weights"] = weights
        self.edits[id(layer)] = edit


def plan_shrink(model, drop_inputs=False):
    """Plans which units, filters and channels `shrink` removes, without building anything.

    Args:
        model: a built Functional or Sequential `keras.Model`.
        drop_inputs: bool. `True` also removes input features that no kept
            unit reads (say, rows that `GroupLasso(axis=0)` zeroed): the
            shrunk model then takes fewer features, `plan.inputs_kept` says
            which. Defaults to `False`: the input shape never changes.

    Returns:
        A `ShrinkPlan`: `str(plan)` is a per-layer table of units, parameters
        and MACs before and after.

    Raises:
        ValueError: for a subclassed model (it has no graph to read).
    """
    check_built_model(model, "plan_shrink")
    drop_inputs = check_bool(drop_inputs, "drop_inputs", "plan_shrink")
    graph = _channels.ChannelGraph(model, drop_inputs=drop_inputs)
    edits, rows = _Planner(graph).plan()
    params_before = sum(int(np.prod(v.shape)) for v in model.weights)
    delta, counted = 0, set()
    for call in graph.calls:
        layer, edit = call.op, edits.get(id(call.op))
        if not edit or "weights" not in edit or id(layer) in counted:
            continue
        counted.add(id(layer))
        before = sum(int(np.prod(v.shape)) for v in layer.weights)
        delta += sum(int(np.prod(w.shape)) for w in edit["weights"].values()) - before
    return ShrinkPlan(graph, edits, rows, params_before, params_before + delta)


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
    regularizers and constraints kept on the kept weights. `model` is not
    changed. Before returning, `shrink` runs both models on a random batch and
    refuses (`RuntimeError`) if their outputs differ by more than 1e-4
    relative (1e-2 under mixed_float16, 5e-2 under mixed_bfloat16, where every
    layer rounds): a removal that is not exact is never returned.

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
    if verify:
        _verify(model, small, plan.inputs_kept, plan._graph.calls)
    return small


class _Builder:
    """Builds the shrunk model from the plan: new layers from edited configs, then weights."""

    def __init__(self, plan):
        self.plan = plan
        self.g = plan._graph
        self.pairs = []  # (old layer, new layer)
        self.new = {}  # id(old op) -> new op

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
        graph = _graph.graph_of(model)
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
            new = keras.models.clone_model(op)
            new.set_weights(op.get_weights())
        elif isinstance(op, keras.layers.Layer):
            config = op.get_config()
            config.update(self.plan._edits.get(id(op), {}).get("config", {}))
            new = type(op).from_config(config)
            self.pairs.append((op, new))
        else:
            new = op  # a stateless keras.ops operation
        self.new[id(op)] = new
        return new

    def assign_weights(self):
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


def _sample(tensor, rng):
    shape = tuple(1 if i == 0 else (d if d is not None else 64) for i, d in enumerate(tensor.shape))
    if "int" in str(tensor.dtype):
        return np.zeros(shape, tensor.dtype)
    return rng.standard_normal(shape).astype(tensor.dtype or "float32")


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


def _verify(model, small, inputs_kept, plan_calls):
    rng = np.random.default_rng(0)
    graph = _graph.graph_of(model)
    full = [_sample(t, rng) for t in graph.inputs]
    kept = [x[..., inputs_kept[t.name]] for x, t in zip(full, graph.inputs, strict=True)]

    def structured(arrays):
        return keras.tree.pack_sequence_as(model.input, arrays) if len(arrays) > 1 else arrays[0]

    tolerance = max(
        VERIFY_TOLERANCE.get(call.op.compute_dtype, 1e-4)
        for call in plan_calls
        if isinstance(call.op, keras.layers.Layer)
    )
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
