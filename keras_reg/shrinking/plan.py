"""The shrink plan: which channels go, and each layer's new config, weights and row."""

import dataclasses

import numpy as np

from keras_reg import rules
from keras_reg._validation import check_bool, check_built_model
from keras_reg.shrinking import channels as _channels
from keras_reg.shrinking import graph as _graph
from keras_reg.shrinking.channels import CONST, VAR

__all__ = ["LayerChange", "Planner", "Reading", "ShrinkPlan", "plan_shrink"]


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
        other_params_before: weights outside the rows (BatchNorm's vectors,
            layers kept whole, biases of layers without units): the table's
            "(other layers)" line, so that the rows add up to the totals. Their
            MACs are not counted: MACs are those of kernels (Dense, convolutions,
            recurrent layers), the per-channel work of normalization aside.
        other_params_after: the same after shrinking.
        params_before: all weights of the model.
        params_after: all weights of the shrunk model.
        macs_before: total multiply-accumulates per sample of the rows, or
            `None` if one is unknown.
        macs_after: the same after shrinking.
        kept_whole: tuple of `(layer name, reason)` for each layer whose
            channels were all kept because shrink cannot reason about it.
        dead: names of the layers whose outputs nothing reads (a dead branch):
            each keeps one unit, computed as before, since a Keras layer cannot
            have 0 units.
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
        # Weights outside the rows (BatchNorm vectors, layers kept whole): the table's
        # "other layers" line, so that its rows add up to the totals.
        self.other_params_before = params_before - sum(r.params_before for r in self.rows)
        self.other_params_after = params_after - sum(r.params_after for r in self.rows)
        dead_roots = set(graph.forced)
        self.dead = tuple(
            dict.fromkeys(
                r.layer.name for r in graph.readers if graph.groups.find(r.out_gid) in dead_roots
            )
        )
        inputs = graph.graphs[id(graph.model)].inputs
        self.inputs_kept = {t.name: graph.kept(graph.ids.of(t)).tolist() for t in inputs}

    def to_dict(self):
        return {
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "rows": [r.to_dict() for r in self.rows],
            "other_params_before": self.other_params_before,
            "other_params_after": self.other_params_after,
            "kept_whole": [list(item) for item in self.kept_whole],
            "dead": list(self.dead),
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
        if self.other_params_before:
            lines.append(
                (
                    "(other layers)",
                    "",
                    "",
                    f"{self.other_params_before:,} -> {self.other_params_after:,}",
                    "-",
                    "",
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
        for name in self.dead:
            out.append(
                f"dead: {name} (nothing reads its outputs; it keeps 1 unit, since a Keras "
                "layer cannot have 0)"
            )
        return "\n".join(out)


@dataclasses.dataclass
class Reading:
    """What a layer that reads channels through kernel rows keeps and folds (its first call).

    Attributes:
        rows: kept rows (input channels, repeated per position after Flatten).
        cols: kept outputs.
        removed: the rows that go.
        constants: the constant each removed row carries (0 for a zero row).
    """

    rows: np.ndarray
    cols: np.ndarray
    removed: np.ndarray
    constants: np.ndarray


class Planner:
    """Turns the channels kept into each layer's `Cut`, asking the layer's rule.

    This is the object a rule's `cut(plan, layer)` gets: `kept(tensor id)`,
    `calls(layer)`, `weights(layer)`, `reader(layer)` and `reading(layer)`.
    """

    def __init__(self, graph):
        self.g = graph
        self.edits = {}  # id(layer) -> {"config": {...}, "weights": {name: array}}
        self.rows = []

    def plan(self):
        seen = set()
        for call in self.g.calls:
            layer = call.op
            if id(layer) in seen or id(layer) in self.g.whole or _graph.is_model(layer):
                continue
            seen.add(id(layer))
            rule = rules.rule_for(layer)
            cut = rule.cut(self, layer)
            if cut is None:
                continue
            self._store(layer, cut)
            if cut.units is not None:
                self._row(layer, rule, cut)
        return self.edits, self.rows

    # --- what rules read -----------------------------------------------------------------

    def kept(self, tid):
        """Indices of the channels of tensor `tid` that stay."""
        return self.g.kept(tid)

    def calls(self, layer):
        return self.g.calls_of[id(layer)]

    def weights(self, layer):
        return self.g.weights(layer)

    def reader(self, layer):
        """The `Reader` of the layer's first call's input."""
        tid = self.calls(layer)[0].inputs[0]
        return next(r for r in self.g.readers if r.layer is layer and r.tensor == tid)

    def reading(self, layer):
        """The rows and outputs kept, and the constants of the rows removed (a `Reading`)."""
        g = self.g
        call = self.calls(layer)[0]
        reader = self.reader(layer)
        rows = g.kept(call.inputs[0])
        cols = g.kept(call.outputs[0])
        removed = np.setdiff1d(np.arange(reader.nonzero.shape[0]), rows)
        kind, value = g.rows(call.inputs[0])
        live = reader.nonzero[np.ix_(removed, cols)].any(axis=1) if len(cols) else None
        if live is not None and np.any(live & (kind[removed] == VAR)):
            raise RuntimeError(  # pragma: no cover - a bug in the plan, never a user error
                f"keras_reg.shrink: internal error: layer {layer.name!r} would lose a live input."
            )
        constants = np.where(kind[removed] == CONST, value[removed], 0.0)
        return Reading(rows, cols, removed, constants)

    # --- the plan ------------------------------------------------------------------------

    def _row(self, layer, rule, cut):
        old = self.weights(layer)
        new = dict(old, **(cut.weights or {}))
        calls = self.calls(layer)
        before = [rule.macs(layer, c, old) for c in calls]
        after = [rule.macs(layer, c, new) for c in calls]
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
                units_before=int(cut.units[0]),
                units_after=int(cut.units[1]),
                params_before=sum(int(np.prod(v.shape)) for v in layer.weights),
                params_after=sum(int(np.prod(w.shape)) for w in new.values()),
                macs_before=None if None in before else sum(before),
                macs_after=None if None in after else sum(after),
                constant_kept=constant if rule.opens_space else 0,
            )
        )

    def _store(self, layer, cut):
        edit = {}
        if cut.config:
            edit["config"] = cut.config
        if cut.weights is not None:
            edit["weights"] = cut.weights
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
    edits, rows = Planner(graph).plan()
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
