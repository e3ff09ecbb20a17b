"""Rules for layers that act channel by channel, or move channels without mixing them.

Normalization, activations, dropout, pooling, padding, cropping, upsampling,
Flatten and Reshape: the output's channels are the input's (a channel removed
before is removed after), each with the state the layer gives it.
"""

import math

import numpy as np

from keras_reg.rules.base import Cut, LayerRule

__all__ = [
    "ActivationRule",
    "BatchNormalizationRule",
    "FlattenRule",
    "GroupNormalizationRule",
    "KeptWhole",
    "PassThrough",
    "PaddingRule",
    "PoolingRule",
    "RescalingRule",
    "ReshapeRule",
]


def _norm_weights(config, moving=False):
    names = ["gamma"] if config.get("scale", True) else []
    names += ["beta"] if config.get("center", True) else []
    return names + (["moving_mean", "moving_variance"] if moving else [])


class KeptWhole(LayerRule):
    """A layer whose channels `shrink` keeps, with the reason (its weights still regularize).

    Args:
        reason: why the channels cannot be removed, for the plan and the docs.
        kernels: names of its kernel weights (`None`: Keras' convention).
        stored: function from the layer's config to its stored weight names.
        weighted: whether the layer has weights of its own or of sub-layers.
        note: what the docs' kernels column says instead of `kernels`.
        prunable: names of the kernels `prune_low_magnitude` prunes (`None`:
            all but `recurrent_kernel`).
        sublayer_constraint: the config key holding its sub-layers' kernel
            constraint (see `LayerRule`).
    """

    def __init__(
        self,
        reason,
        kernels=None,
        stored=None,
        weighted=True,
        note=None,
        prunable=None,
        sublayer_constraint=None,
    ):
        self.reason, self.kernels, self._stored = reason, kernels, stored
        self.weighted, self.note = weighted, note
        self.prunable, self.sublayer_constraint = prunable, sublayer_constraint
        self.shrink = f"kept whole: {reason}"

    def stored_weights(self, config):
        return self._stored(config) if self._stored else None

    def flow(self, graph, call):
        return self.reason


def _layer_norm_weights(config):
    """LayerNormalization's stored weights (rms_scaling keeps gamma only)."""
    if config.get("rms_scaling", False):
        return ["gamma"]
    return _norm_weights(config)


class PassThrough(LayerRule):
    """The output's channels are the input's, with the same states (Dropout, GlobalPooling)."""

    kernels = ()
    weighted = False
    shrink = "channels passed through"

    def flow(self, graph, call):
        return graph.passes(call)


class PoolingRule(PassThrough):
    """Pooling: `"same"` pooling may not keep a non-zero constant (backends pad it differently)."""

    shrink = "channels passed through (non-zero constants stay variable under 'same' padding)"

    def flow(self, graph, call):
        reason = graph.passes(call)
        if reason is None and call.op.padding != "valid":
            graph.state[call.outputs[0]] = graph.unless_zero(graph.state[call.inputs[0]])
        return reason


class PaddingRule(PassThrough):
    """ZeroPadding: zeros at the border, so only a zero channel stays constant."""

    shrink = "channels passed through (zeros at the border keep only zero channels constant)"

    def flow(self, graph, call):
        reason = graph.passes(call)
        if reason is None:
            graph.state[call.outputs[0]] = graph.unless_zero(graph.state[call.inputs[0]])
        return reason


class ActivationRule(LayerRule):
    """An element-wise activation layer (`Activation`, `ReLU`, `LeakyReLU`, `ELU`)."""

    kernels = ()
    weighted = False
    shrink = "channels passed through (element-wise activations only)"

    def flow(self, graph, call):
        from keras_reg.shrinking.channels import activation_name, elementwise

        layer = call.op
        reason = graph.single(call)
        if reason:
            return reason
        if hasattr(layer, "activation") and activation_name(layer.activation) is None:
            name = getattr(layer.activation, "__name__", layer.activation)
            return f"its activation {name!r} is not applied element by element"
        graph.same_layout(call.outputs[0], call.inputs[0])
        graph.state[call.outputs[0]] = graph.evaluate(call, lambda x: elementwise(layer, x))
        return None


class RescalingRule(ActivationRule):
    """`Rescaling` with a scalar scale and offset."""

    shrink = "channels passed through (scalar scale and offset only)"

    def flow(self, graph, call):
        layer = call.op
        if np.ndim(layer.scale) or np.ndim(layer.offset):
            return "a per-channel scale or offset is not supported"
        return super().flow(graph, call)


class BatchNormalizationRule(LayerRule):
    """`BatchNormalization` over the last axis: its four vectors are cut with the channels."""

    kernels = ()
    shrink = "entries removed with their channels (inference form for constants)"
    _VECTORS = ("gamma", "beta", "moving_mean", "moving_variance")

    def stored_weights(self, config):
        return _norm_weights(config, moving=True)

    def flow(self, graph, call):
        layer = call.op
        reason = graph.per_channel_input(call)
        if reason:
            return reason
        rank = len(call.input_shapes[0])
        if layer.axis not in (-1, rank - 1):
            return f"it normalizes axis {layer.axis}, not the channels (last) axis"
        tid = call.inputs[0]
        graph.same_layout(call.outputs[0], tid)
        weights = {k: v.astype(np.float64) for k, v in graph.weights(layer).items()}
        ones = np.ones(graph.channels(tid))
        gamma = weights.get("gamma", ones)
        beta = weights.get("beta", 0 * ones)
        scale = gamma / np.sqrt(weights["moving_variance"] + layer.epsilon)
        # Inference-mode BatchNorm, in float64 (the backend computes it in float32).
        kind, value = graph.evaluate(call, lambda x: (x - weights["moving_mean"]) * scale + beta)
        if layer.scale:  # gamma == 0 maps anything to beta
            from keras_reg.shrinking.channels import CONST, ZERO

            flat = gamma == 0
            kind = np.where(flat, np.where(beta == 0, ZERO, CONST), kind).astype(np.int8)
            value = np.where(flat, beta, value)
        graph.state[call.outputs[0]] = (kind, value)
        return None

    def channel_slices(self, layer, channels):
        """`[(weight, axis, index)]`: its scale and offset of channels `channels` (n,)."""
        names = (["gamma"] if layer.scale else []) + (["beta"] if layer.center else [])
        return [(name, 0, channels[:, None]) for name in names]

    def cut(self, plan, layer):
        kept = plan.kept(plan.calls(layer)[0].inputs[0])
        old = plan.weights(layer)
        return Cut({}, {name: old[name][kept] for name in self._VECTORS if name in old})


class GroupNormalizationRule(LayerRule):
    """`GroupNormalization` over the last axis: channels go a whole group at a time.

    A group's statistics change when one of its channels goes, so a group
    stays whole while any of its channels is needed. A group with no
    variable channel outputs constants (per channel), computed exactly.
    """

    kernels = ()
    shrink = "whole groups removed (a group's statistics need all its channels)"

    def stored_weights(self, config):
        return _norm_weights(config)

    def flow(self, graph, call):
        from keras_reg.shrinking.channels import CONST, VAR, ZERO

        layer = call.op
        reason = graph.per_channel_input(call)
        if reason:
            return reason
        rank = len(call.input_shapes[0])
        if layer.axis not in (-1, rank - 1):
            return f"it normalizes axis {layer.axis}, not the channels (last) axis"
        tid = call.inputs[0]
        channels = graph.channels(tid)
        size = channels // layer.groups
        groups = [np.arange(g * size, (g + 1) * size) for g in range(layer.groups)]
        graph.same_layout(call.outputs[0], tid)
        graph.couple(tid, groups)
        kind, value = graph.state[tid]
        weights = {k: v.astype(np.float64) for k, v in graph.weights(layer).items()}
        gamma = weights.get("gamma", np.ones(channels))
        beta = weights.get("beta", np.zeros(channels))
        out_kind = np.full(channels, VAR, np.int8)
        out_value = np.zeros(channels)
        for index in groups:
            if (kind[index] == VAR).any():
                continue
            x = value[index]
            # The layer's float32 arithmetic: mean and variance of the constants.
            mean, var = x.mean(), x.var()
            y = (x - mean) / np.sqrt(var + layer.epsilon) * gamma[index] + beta[index]
            out_kind[index] = np.where(y == 0, ZERO, CONST)
            out_value[index] = y
        graph.state[call.outputs[0]] = (out_kind, out_value)
        return None

    def cut(self, plan, layer):
        kept = plan.kept(plan.calls(layer)[0].inputs[0])
        old = plan.weights(layer)
        channels = next(iter(old.values())).shape[0] if old else None
        if channels is None:
            channels = plan.calls(layer)[0].input_shapes[0][-1]
        groups = layer.groups * len(kept) // channels
        config = {"groups": groups} if groups != layer.groups else {}
        return Cut(config, {name: old[name][kept] for name in ("gamma", "beta") if name in old})


class FlattenRule(LayerRule):
    """`Flatten` (channels-last): the layout repeats once per spatial position."""

    kernels = ()
    weighted = False
    shrink = "channels followed into the next layer's rows ((h*W+w)*C+c)"

    def flow(self, graph, call):
        reason = graph.single(call) or graph.channels_last(call.op)
        if reason:
            return reason
        positions = call.input_shapes[0][1:-1]
        if any(d is None for d in positions):
            return "its input has unknown spatial dimensions"
        segments, repeat = graph.layout[call.inputs[0]]
        graph.layout[call.outputs[0]] = (segments, repeat * math.prod(positions))
        graph.state[call.outputs[0]] = graph.state[call.inputs[0]]
        return None


class ReshapeRule(LayerRule):
    """`Reshape` that keeps the channels on the last axis (the squeeze-excitation reshape)."""

    kernels = ()
    weighted = False
    shrink = "channels passed through where the last axis stays; else kept whole"

    def flow(self, graph, call):
        reason = graph.single(call)
        if reason:
            return reason
        target = tuple(call.op.target_shape)
        shape = call.input_shapes[0]
        if graph.layout[call.inputs[0]][1] != 1 or not target or target[-1] != shape[-1]:
            return "it moves channels off the last axis"
        if -1 in target[:-1] or any(d is None for d in shape[1:-1]):
            return "it reshapes unknown dimensions"
        if math.prod(target[:-1]) != math.prod(shape[1:-1]):
            return "it moves channels off the last axis"
        return graph.passes(call)

    def cut(self, plan, layer):
        kept = len(plan.kept(plan.calls(layer)[0].inputs[0]))
        target = tuple(layer.target_shape)
        if target[-1] == kept:
            return None
        return Cut({"target_shape": target[:-1] + (kept,)}, None)
