"""`prune_channels`: structured pruning of coupled channel groups to a MACs target.

The channel graph of `shrink` already knows which channels are coupled: every
channel space (a union of tensors joined by `Add`, `Multiply`, depthwise
convolutions, BatchNorm, squeeze-excitation gates) is a *group*, and each of its
channels is pruned with every slice that touches it: the producers' output
columns and biases, the per-channel layers' entries (BatchNorm scale and offset,
depthwise kernels) and every reader's input rows. A pruned channel is then
exactly zero and unused, so `shrink` removes all of it.

Channels are ranked by an importance score, normalized per group so that wide
and narrow layers compare (Torch-Pruning's `GroupMagnitudeImportance` with mean
normalization), globally across groups by default. The number of channels
pruned is the smallest that brings the MACs (measured by the shrink plan, so
exactly those of the returned model) to at most `1 / speed_up` of the original.

References:
    Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023.
    Liu et al., "Learning Efficient Convolutional Networks through Network
    Slimming", ICCV 2017 (BatchNorm scale).
    Molchanov et al., "Importance Estimation for Neural Network Pruning",
    CVPR 2019 (first-order Taylor).
"""

import dataclasses
import math

import keras
import numpy as np

from keras_reg import rules
from keras_reg._validation import check_built_model
from keras_reg.shrinking import channels as _channels
from keras_reg.shrinking.build import shrink
from keras_reg.shrinking.plan import plan_shrink

__all__ = ["ChannelGroup", "ChannelPlan", "plan_channels", "prune_channels"]

IMPORTANCE = ("magnitude", "l1", "l2", "bn_scale", "taylor")


@dataclasses.dataclass
class ChannelGroup:
    """One coupled channel space: its channels go together in every layer listed.

    Attributes:
        layers: names of the layers with a slice of these channels.
        size: channels before.
        kept: channels after.
        scores: the importance of each channel (normalized: mean 1), a list.
    """

    layers: list
    size: int
    kept: int
    scores: list

    def to_dict(self):
        return dataclasses.asdict(self)


class ChannelPlan:
    """What `prune_channels` prunes: the groups, their scores and the MACs it reaches.

    Attributes:
        groups: tuple of `ChannelGroup`, the prunable groups in model order.
        macs_before: multiply-accumulates per sample of the original model.
        macs_after: the same for the pruned model (exact: from its shrink plan).
        params_before: weights of the original model.
        params_after: weights of the pruned model.
        speed_up: `macs_before / macs_after`.
        target: the speed-up asked for.
        shrink_plan: the `ShrinkPlan` of the zeroed model (per-layer table).
    """

    def __init__(self, groups, target, base_plan, shrink_plan, masks, model):
        self.groups = tuple(groups)
        self.target = target
        self.macs_before = base_plan.macs_before
        self.params_before = base_plan.params_before
        self.macs_after = shrink_plan.macs_after
        self.params_after = shrink_plan.params_after
        self.speed_up = self.macs_before / self.macs_after if self.macs_after else math.inf
        self.shrink_plan = shrink_plan
        self._masks = masks
        self._model = model

    def to_dict(self):
        return {
            "target": self.target,
            "speed_up": self.speed_up,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "groups": [g.to_dict() for g in self.groups],
        }

    def __repr__(self):
        return (
            f"ChannelPlan(speed_up={self.speed_up:.3f}, MACs {self.macs_before:,} -> "
            f"{self.macs_after:,}, groups={len(self.groups)})"
        )

    def __str__(self):
        lines = [str(self.shrink_plan), "", "groups (coupled channels, pruned together):"]
        for g in self.groups:
            more = f", +{len(g.layers) - 4}" if len(g.layers) > 4 else ""
            names = ", ".join(g.layers[:4]) + more
            lines.append(f"  {g.size:>5} -> {g.kept:<5} {names}")
        lines.append(
            f"speed-up {self.speed_up:.3f}x (asked {self.target:g}x): MACs "
            f"{self.macs_before:,} -> {self.macs_after:,}"
        )
        return "\n".join(lines)


class _Member:
    """One layer's slices of a group: its kind ("in", "out", "channel") and index map."""

    def __init__(self, layer, kind, offset, width=0, repeat=1):
        self.layer, self.kind, self.offset = layer, kind, offset
        self.width, self.repeat = width, repeat
        self.rule = rules.rule_for(layer)

    def slices(self, channels):
        channels = np.asarray(channels, np.int64)
        if self.kind == "in":
            rows = channels[:, None] + self.offset + self.width * np.arange(self.repeat)[None, :]
            return self.rule.input_slices(self.layer, rows)
        if self.kind == "out":
            return self.rule.output_slices(self.layer, channels + self.offset)
        return self.rule.channel_slices(self.layer, channels + self.offset)


def _segments_of(graph, tid, root):
    """`(offset, width, repeat)` of each segment of tensor `tid` in space `root`."""
    segments, repeat = graph.layout[tid]
    width = sum(size for _, size in segments)
    found, offset = [], 0
    for gid, size in segments:
        if graph.groups.find(gid) == root:
            found.append((offset, width, repeat))
        offset += size
    return found


def _groups(graph, ignored):
    """`{root: [members]}` for every prunable space, in model order."""
    g = graph.groups
    roots = []
    for call in graph.calls:
        for tid in call.outputs:
            for gid, _ in graph.layout.get(tid, ([], 1))[0]:
                root = g.find(gid)
                if root not in roots and not g.fixed[root] and g.size[root] > 1:
                    roots.append(root)
    members = {root: [] for root in roots}
    excluded = set()
    seen = set()

    def add(root, member):
        key = (root, id(member.layer), member.kind, member.offset)
        if key not in seen:
            seen.add(key)
            members[root].append(member)

    for call in graph.calls:
        layer = call.op
        if not isinstance(layer, keras.layers.Layer) or id(layer) in graph.whole:
            continue
        rule = rules.rule_for(layer)
        reader = next((r for r in graph.readers if r.layer is layer), None)
        if reader is not None:
            for tid in call.inputs[:1]:
                for root in roots:
                    for offset, width, repeat in _segments_of(graph, tid, root):
                        if rule.input_slices is None:
                            excluded.add(root)
                        else:
                            add(root, _Member(layer, "in", offset, width, repeat))
        opens = rule.opens_space
        for tid in call.outputs[:1]:
            for root in roots:
                for offset, _, _ in _segments_of(graph, tid, root):
                    if opens:
                        if rule.output_slices is None or layer.name in ignored:
                            excluded.add(root)
                        else:
                            add(root, _Member(layer, "out", offset))
        if not opens and layer.weights:
            for tid in call.inputs[:1]:
                for root in roots:
                    for offset, _, _ in _segments_of(graph, tid, root):
                        if rule.channel_slices is None or layer.name in ignored:
                            excluded.add(root)
                        else:
                            add(root, _Member(layer, "channel", offset))
    return {root: members[root] for root in roots if root not in excluded and members[root]}


def _scores(graph, members, size, importance, gradients):
    """Per-channel importance of one group (before normalization)."""
    channels = np.arange(size)
    total = np.zeros(size)
    bn = np.zeros(size)
    has_bn = False
    for member in members:
        weights = graph.weights(member.layer)
        grads = gradients.get(id(member.layer)) if gradients else None
        for name, axis, index in member.slices(channels):
            w = weights[name].astype(np.float64)
            if importance == "taylor":
                value = np.abs(w * grads[name].astype(np.float64))
            elif importance == "l1":
                value = np.abs(w)
            else:
                value = np.square(w)
            axes = tuple(a for a in range(w.ndim) if a != axis % w.ndim)
            per_index = value.sum(axis=axes) if axes else value
            total += per_index[index].sum(axis=1)
            if name == "gamma" and member.kind == "channel":
                has_bn = True
                bn += np.abs(w)[index].sum(axis=1)
    if importance == "bn_scale" and has_bn:
        return bn
    return total


def _taylor_gradients(model, x, y, loss):
    """`{id(layer): {weight name: gradient}}` of `loss(y, model(x))` at the model's weights."""
    from keras_reg._autodiff import gradients

    trainable = list(model.trainable_variables)
    non_trainable = [v.value for v in model.non_trainable_variables]
    loss_fn = keras.losses.get(loss)

    def fn(values):
        out, _ = model.stateless_call(values, non_trainable, x, training=False)
        return keras.ops.mean(loss_fn(y, out))

    grads = gradients(fn, [v.value for v in trainable])
    by_variable = {
        id(v): np.asarray(keras.ops.convert_to_numpy(g))
        for v, g in zip(trainable, grads, strict=True)
    }
    out = {}
    for layer in _all_layers(model):
        for v in layer.weights:
            if id(v) in by_variable:
                out.setdefault(id(layer), {})[rules.weight_name(v)] = by_variable[id(v)]
    return out


def _all_layers(model):
    from keras_reg._keras_private import flatten_layers

    return flatten_layers(model, include_self=False)


def _check_speed_up(speed_up):
    ok = isinstance(speed_up, (int, float, np.integer, np.floating)) and not isinstance(
        speed_up, bool
    )
    if not ok or not math.isfinite(float(speed_up)) or float(speed_up) < 1:
        raise ValueError(
            "The 'speed_up' argument of prune_channels must be a finite number >= 1 (2.0 "
            f"halves the MACs). Received: speed_up={speed_up!r}"
        )
    return float(speed_up)


def _check_options(importance, global_pruning, round_to, ignored_layers, model, x, y, loss):
    if importance not in IMPORTANCE:
        raise ValueError(
            f"The 'importance' argument of prune_channels must be one of {IMPORTANCE}. "
            f"Received: importance={importance!r}"
        )
    if not isinstance(global_pruning, bool):
        raise ValueError(
            "The 'global_pruning' argument of prune_channels must be a bool. "
            f"Received: global_pruning={global_pruning!r}"
        )
    if round_to is not None and (
        isinstance(round_to, bool) or not isinstance(round_to, (int, np.integer)) or round_to < 1
    ):
        raise ValueError(
            "The 'round_to' argument of prune_channels must be None or a positive int. "
            f"Received: round_to={round_to!r}"
        )
    if importance == "taylor" and (x is None or y is None or loss is None):
        raise ValueError(
            "importance='taylor' needs a batch and its loss: pass x=, y= and loss= to "
            f"prune_channels. Received: x={type(x).__name__}, y={type(y).__name__}, "
            f"loss={loss!r}"
        )
    names = set()
    present = {layer.name: layer for layer in _all_layers(model)}
    for item in ignored_layers or ():
        name = item if isinstance(item, str) else getattr(item, "name", None)
        if (
            not isinstance(item, (str, keras.layers.Layer))
            or name not in present
            or (isinstance(item, keras.layers.Layer) and present[name] is not item)
        ):
            raise ValueError(
                "The 'ignored_layers' argument of prune_channels must list layer names or "
                f"layers of model {model.name!r}. Received: {item!r}"
            )
        names.add(name)
    return names


def _apply(weights_of, members_of, chosen):
    """Zeroes the slices of `chosen` channels (`{root: [channels]}`); `weights_of` is mutated."""
    for root, channels in chosen.items():
        if not len(channels):
            continue
        for member in members_of[root]:
            arrays = weights_of[id(member.layer)]
            for name, axis, index in member.slices(np.asarray(channels)):
                view = np.moveaxis(arrays[name], axis, 0)
                view[index.reshape(-1)] = 0


def plan_channels(
    model,
    speed_up,
    *,
    importance="magnitude",
    global_pruning=True,
    round_to=None,
    ignored_layers=None,
    x=None,
    y=None,
    loss=None,
):
    """Plans which coupled channels `prune_channels` prunes; see `prune_channels`.

    Returns:
        A `ChannelPlan`: the groups, their scores, and the MACs reached.
    """
    check_built_model(model, "prune_channels")
    speed_up = _check_speed_up(speed_up)
    ignored = _check_options(
        importance, global_pruning, round_to, ignored_layers, model, x, y, loss
    )
    base = plan_shrink(model)
    if base.macs_before is None:
        raise ValueError(
            f"prune_channels cannot measure the MACs of model {model.name!r}: a layer's "
            "spatial size is unknown (or it has an Embedding). Build it with a fixed input shape."
        )
    target = base.macs_before / speed_up
    graph = _channels.ChannelGraph(model)
    members_of = _groups(graph, ignored)
    gradients = _taylor_gradients(model, x, y, loss) if importance == "taylor" else None
    roots = list(members_of)
    step = round_to or 1
    raw = {
        r: _scores(graph, members_of[r], graph.groups.size[r], importance, gradients) for r in roots
    }
    scores = {r: raw[r] / max(float(np.mean(raw[r])), 1e-300) for r in roots}
    # Blocks of `step` channels, lowest scores first; each group keeps at least one block.
    blocks = []  # (score, root, channels)
    for r in roots:
        order = np.argsort(scores[r], kind="stable")
        size = len(order)
        prunable = ((size - 1) // step) * step if size > step else 0
        prunable = min(prunable, size - step) if size - step >= 0 else 0
        for start in range(0, prunable, step):
            chunk = order[start : start + step]
            blocks.append((float(np.mean(scores[r][chunk])), r, chunk))
    work = keras.models.clone_model(model)
    work.set_weights(model.get_weights())
    # Only the layers of a group change: their weights, by name (a rule's names are unique).
    member_layers = {id(m.layer): m.layer for ms in members_of.values() for m in ms}
    work_of = dict(zip((id(x) for x in _all_layers(model)), _all_layers(work), strict=True))
    original = {
        key: {
            rules.weight_name(w): np.asarray(keras.ops.convert_to_numpy(w)) for w in layer.weights
        }
        for key, layer in member_layers.items()
    }

    blocks.sort(key=lambda b: b[0])
    if not global_pruning:
        # The same fraction of every group, within one block: each group's j-th weakest
        # block comes at the fraction (j + 1) / its blocks, so any count k is spread evenly.
        count = {r: 0 for r in roots}
        for block in blocks:
            count[block[1]] += 1
        order = {r: i for i, r in enumerate(roots)}
        position = {r: 0 for r in roots}
        keyed = []
        for block in blocks:
            r = block[1]
            position[r] += 1
            keyed.append((position[r] / count[r], order[r], block))
        blocks = [block for *_, block in sorted(keyed, key=lambda item: item[:2])]

    def chosen_for(k):
        picked = blocks[:k]
        chosen = {r: [] for r in roots}
        for _, r, chunk in picked:
            chosen[r].extend(chunk.tolist())
        return chosen

    def evaluate(k):
        weights = {key: {n: a.copy() for n, a in arr.items()} for key, arr in original.items()}
        chosen = chosen_for(k)
        _apply(weights, members_of, chosen)
        for key, arrays in weights.items():
            pairs = zip(member_layers[key].weights, work_of[key].weights, strict=True)
            for old, new in pairs:
                new.assign(arrays[rules.weight_name(old)])
        return plan_shrink(work), chosen

    high = len(blocks)
    plan_hi, chosen_hi = evaluate(high)
    if plan_hi.macs_after > target:
        raise ValueError(
            f"prune_channels cannot reach speed_up={speed_up:g} on model {model.name!r}: "
            f"pruning every prunable channel gives {base.macs_before / plan_hi.macs_after:.3f}x "
            f"({plan_hi.macs_after:,} of {base.macs_before:,} MACs). Ask for at most that, "
            "or leave fewer layers in ignored_layers."
        )
    low = 0
    best = (high, plan_hi, chosen_hi)
    while low < high:
        mid = (low + high) // 2
        plan_mid, chosen_mid = evaluate(mid)
        if plan_mid.macs_after <= target:
            high, best = mid, (mid, plan_mid, chosen_mid)
        else:
            low = mid + 1
    k = best[0]
    shrink_plan, chosen = evaluate(k)  # `work` holds the weights of the last evaluation
    groups = []
    for r in roots:
        layers = list(dict.fromkeys(m.layer.name for m in members_of[r]))
        size = graph.groups.size[r]
        groups.append(ChannelGroup(layers, size, size - len(chosen[r]), scores[r].tolist()))
    return ChannelPlan(groups, speed_up, base, shrink_plan, chosen, work)


def prune_channels(
    model,
    speed_up,
    *,
    importance="magnitude",
    global_pruning=True,
    round_to=None,
    ignored_layers=None,
    x=None,
    y=None,
    loss=None,
    verbose=False,
):
    """A smaller copy of `model` with at most `1 / speed_up` of its MACs: coupled channels pruned.

    Prunes whole coupled channel groups, never one layer's filters alone:
    every producer that writes a channel (convolutions and Dense layers joined
    by `Add` or `Multiply`, so the residual stream too), the per-channel layers
    on it (BatchNorm, depthwise convolutions, squeeze-excitation gates) and every
    reader's input rows. The pruned channels are zeroed entirely, then
    `keras_reg.shrink` removes them: the result equals the original with those
    channels zeroed, checked on a random batch before it is returned. `model`
    is not changed. The model's inputs and outputs never change.

    Channels are ranked by `importance`, normalized per group (mean 1) so that
    wide and narrow groups compare, and pruned lowest first across all groups
    (`global_pruning=True`; Torch-Pruning's default is per-layer) or the same
    fraction of each group. After sparsity training with an L1 penalty on the
    BatchNorm scales (`gamma_regularizer=keras_reg.L1(...)`, network slimming),
    use `importance="bn_scale"`: see the docs' "Pruning to a speed-up".
    The number pruned is the smallest that brings the MACs (exactly those of
    the returned model, from its shrink plan) to `1 / speed_up` of the
    original or below. Each group keeps at least one channel (`round_to`).

    Fine-tune the result: `small.compile(...); small.fit(...)`. Pruning in
    several smaller steps with fine-tuning between (Torch-Pruning's
    `iterative_steps`) is the recipe for large speed-ups: call it again on the
    fine-tuned model with the speed-up still missing.

    Args:
        model: a built Functional or Sequential `keras.Model`.
        speed_up: a number >= 1: MACs before / MACs after (2.0: half the MACs).
        importance: `"magnitude"` (L2 of all the group's weights, the default),
            `"l1"`, `"bn_scale"` (|gamma| of the group's BatchNorm layers;
            magnitude for a group without one), or `"taylor"` (|w * dL/dw|
            summed over the group, from `x`, `y` and `loss`).
        global_pruning: bool; `False` prunes the same fraction of every group.
        round_to: `None`, or an int: every group keeps a multiple of it.
        ignored_layers: layer names or layers whose output channels are never
            pruned (their inputs may be, with the layers that write them).
        x: a batch of inputs, for `importance="taylor"`.
        y: the batch's targets, for `importance="taylor"`.
        loss: a Keras loss (name or function), for `importance="taylor"`.
        verbose: bool; `True` prints the plan.

    Returns:
        A new, uncompiled `keras.Model`.

    Raises:
        ValueError: for a bad argument, a subclassed model, unknown MACs, or a
            speed-up that pruning every prunable channel cannot reach (the
            message says how close it gets).

    Examples:
        >>> inputs = keras.Input((8, 8, 3))
        >>> x = keras.layers.Conv2D(16, 3, activation="relu", name="c1")(inputs)
        >>> x = keras.layers.Conv2D(16, 3, activation="relu", name="c2")(x)
        >>> outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
        >>> model = keras.Model(inputs, outputs)
        >>> small = keras_reg.prune_channels(model, speed_up=2.0)
        >>> plan = keras_reg.plan_shrink(model)
        >>> 0.4 < keras_reg.plan_shrink(small).macs_before / plan.macs_before <= 0.5
        True
    """
    plan = plan_channels(
        model,
        speed_up,
        importance=importance,
        global_pruning=global_pruning,
        round_to=round_to,
        ignored_layers=ignored_layers,
        x=x,
        y=y,
        loss=loss,
    )
    if verbose:
        print(plan)
    return shrink(plan._model, plan=plan.shrink_plan)
