"""Rules for layers that read their input's channels through a kernel.

Dense, convolutions (1D to 3D, separable, transposed), EinsumDense and
Embedding open a new channel space (their units, filters, features);
depthwise convolutions act channel by channel. A user's layer that computes
`activation(x @ kernel + bias)` along the last axis gets `DenseLike`.
"""

import math

import numpy as np

from keras_reg.rules.base import Cut, LayerRule

__all__ = [
    "ConvLike",
    "ConvTransposeLike",
    "DenseLike",
    "DepthwiseLike",
    "EinsumDenseRule",
    "EmbeddingRule",
    "SeparableConvLike",
]


def _positions(shape):
    dims = shape[1:-1]
    return None if any(d is None for d in dims) else math.prod(dims)


def _bias_names(config, bias="bias"):
    return [bias] if config.get("use_bias", True) else []


class DenseLike(LayerRule):
    """`activation(x @ kernel + bias)` along the last axis, like `keras.layers.Dense`.

    For a user's layer class: give the names its config and weights use.

    Args:
        width: the config key of the number of outputs (`"units"`).
        kernel: the name of the `(inputs, outputs)` kernel weight.
        bias: the name of the bias weight; the layer's `use_bias` attribute
            (if it has one) says whether it exists.
        activation: the attribute holding the activation (element-wise ones
            only; a missing attribute means none).

    Examples:
        >>> class Scaled(keras.layers.Dense):  # a Dense by another name
        ...     pass
        >>> keras_reg.register_layer_rule(Scaled, keras_reg.rules.DenseLike())
        >>> keras_reg.rules.rule_for(Scaled(3)).shrink
        'units removed; a constant input unit is folded into the bias'
    """

    opens_space = True
    shrink = "units removed; a constant input unit is folded into the bias"

    def __init__(self, width="units", kernel="kernel", bias="bias", activation="activation"):
        self.width, self.kernel, self.bias, self.activation = width, kernel, bias, activation
        self.kernels = (kernel,)

    def stored_weights(self, config):
        return [self.kernel] + _bias_names(config, self.bias)

    def _expected(self, layer):
        bias = self.bias is not None and getattr(layer, "use_bias", True)
        return [self.kernel] + ([self.bias] if bias else [])

    def width_of(self, layer):
        """The number of outputs (units, filters) of `layer`."""
        return getattr(layer, self.width)

    def resized(self, layer, outputs):
        """The config entries that give `layer` `outputs` outputs."""
        return {self.width: outputs}

    def bias_added(self, layer):
        """The config entries that give a layer without a bias one."""
        return {"use_bias": True}

    def _check(self, graph, call, expected):
        layer = call.op
        reason = graph.single(call) or graph.channels_last(layer) or graph.shared(call)
        if reason:
            return reason
        if getattr(layer, "groups", 1) != 1:
            return "grouped convolutions are not supported"
        names = [v.path.rsplit("/", 1)[-1] for v in layer.weights]
        if names != expected:
            return f"its weights {names} are not {expected} (LoRA or quantized?)"
        return None

    def read(self, graph, call):
        """`(nonzero, total, foldable)` of the kernel's rows (see `ChannelGraph.read_rows`)."""
        kernel = graph.weights(call.op)[self.kernel]
        flat = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1])
        nonzero = (flat != 0).any(axis=0) if flat.shape[0] > 1 else flat[0] != 0
        return nonzero, flat.sum(axis=0, dtype=np.float64), True

    def flow(self, graph, call):
        layer = call.op
        reason = self._check(graph, call, self._expected(layer))
        if reason:
            return reason
        nonzero, total, foldable = self.read(graph, call)
        weights = graph.weights(layer)
        bias = weights[self.bias].astype(np.float64) if self.bias in weights else 0.0
        activation = getattr(layer, self.activation, None) if self.activation else None
        return graph.read_rows(call, nonzero, total, foldable, activation or _linear, bias)

    def cut_kernels(self, old, rows, cols, layer):
        """New kernel weights for the input `rows` and output `cols` kept."""
        return {self.kernel: _slice(old[self.kernel], rows, cols)}

    def input_slices(self, layer, rows):
        """`[(weight, axis, index)]`: the slices that read input rows `rows` (n, k)."""
        return [(self.kernel, -2, rows)]

    def output_slices(self, layer, units):
        """`[(weight, axis, index)]`: the slices that write output units `units` (n,)."""
        out = [(self.kernel, -1, units[:, None])]
        if self.bias is not None and getattr(layer, "use_bias", True):
            out.append((self.bias, 0, units[:, None]))
        return out

    def cut(self, plan, layer):
        reading = plan.reading(layer)
        rows, cols, removed = reading.rows, reading.cols, reading.removed
        total = plan.reader(layer).total
        fold = reading.constants @ total[np.ix_(removed, cols)] if len(removed) else 0.0
        old = plan.weights(layer)
        new = self.cut_kernels(old, rows, cols, layer)
        units = self.width_of(layer)
        config = self.resized(layer, len(cols))
        fold = np.broadcast_to(np.asarray(fold, np.float64), (len(cols),))
        if self.bias in old:
            bias = old[self.bias][cols].astype(np.float64) + fold
            new[self.bias] = bias.astype(old[self.bias].dtype)
        added = self.bias not in old and bool(np.any(fold != 0))
        if added:
            config.update(self.bias_added(layer))
            new[self.bias] = fold.astype(layer.variable_dtype)
        full_rows = len(rows) == plan.reader(layer).nonzero.shape[0]
        if len(cols) == units and full_rows and not added:
            config = {}
        return Cut(config, new, (units, len(cols)))

    def macs(self, layer, call, weights):
        positions = _positions(call.output_shapes[0])
        if positions is None:
            return None
        return positions * sum(int(np.prod(weights[k].shape)) for k in self.kernels)


def _linear(x):
    return x


_linear.__name__ = "linear"


def _slice(kernel, rows, cols, row_axis=-2, col_axis=-1):
    """`kernel` with `rows` kept along `row_axis` and `cols` along `col_axis`."""
    if len(rows) != kernel.shape[row_axis]:
        kernel = kernel.take(rows, axis=row_axis)
    if len(cols) != kernel.shape[col_axis]:
        kernel = kernel.take(cols, axis=col_axis)
    return kernel


class ConvLike(DenseLike):
    """A convolution: `(*window, in, out)` kernel, `filters` outputs.

    A constant input channel folds into the bias exactly when the convolution
    adds no border (`padding="valid"`, or "same" that pads nothing).
    """

    shrink = (
        "filters removed; a constant input channel is folded into the bias where the "
        "padding adds no border"
    )

    def __init__(self, width="filters", kernel="kernel", bias="bias", activation="activation"):
        super().__init__(width, kernel, bias, activation)

    def read(self, graph, call):
        from keras_reg.shrinking.channels import pads

        nonzero, total, _ = super().read(graph, call)
        return nonzero, total, not pads(call.op, call.input_shapes[0])


class SeparableConvLike(ConvLike):
    """A depthwise then a pointwise convolution (`SeparableConv1D/2D`)."""

    def __init__(self):
        super().__init__()
        self.kernels = ("depthwise_kernel", "pointwise_kernel")

    def stored_weights(self, config):
        return list(self.kernels) + _bias_names(config)

    def _expected(self, layer):
        return list(self.kernels) + (["bias"] if layer.use_bias else [])

    def read(self, graph, call):
        from keras_reg.shrinking.channels import pads

        weights = graph.weights(call.op)
        dw, pw = weights["depthwise_kernel"], weights["pointwise_kernel"]
        mult = dw.shape[-1]
        per_in = np.abs(dw).reshape(-1, dw.shape[-2], mult).max(axis=0) > 0  # (C, M)
        dw_sum = dw.reshape(-1, dw.shape[-2], mult).sum(axis=0).astype(np.float64)
        pw2 = pw.reshape(-1, pw.shape[-1]).astype(np.float64)  # (C*M, F)
        cin = dw.shape[-2]
        nonzero = np.zeros((cin, pw2.shape[1]), bool)
        total = np.zeros((cin, pw2.shape[1]))
        for m in range(mult):
            rows = pw2[m::mult]  # the pointwise rows of depthwise output (c, m)
            nonzero |= per_in[:, m : m + 1] & (rows != 0)
            total += dw_sum[:, m : m + 1] * rows
        return nonzero, total, not pads(call.op, call.input_shapes[0])

    def input_slices(self, layer, rows):
        mult = layer.depth_multiplier
        pw_rows = (rows[:, :, None] * mult + np.arange(mult)).reshape(len(rows), -1)
        return [("depthwise_kernel", -2, rows), ("pointwise_kernel", -2, pw_rows)]

    def output_slices(self, layer, units):
        out = [("pointwise_kernel", -1, units[:, None])]
        return out + ([("bias", 0, units[:, None])] if layer.use_bias else [])

    def cut_kernels(self, old, rows, cols, layer):
        mult = layer.depth_multiplier
        pw_rows = (rows[:, None] * mult + np.arange(mult)[None, :]).reshape(-1)
        return {
            "depthwise_kernel": old["depthwise_kernel"].take(rows, axis=-2),
            "pointwise_kernel": _slice(old["pointwise_kernel"], pw_rows, cols),
        }


class ConvTransposeLike(ConvLike):
    """A transposed convolution: `(*window, out, in)` kernel, `filters` outputs.

    Each input position scatters the whole kernel, so a constant input does
    not give a constant output (border positions get fewer taps): a constant
    input channel stays, unless it is zero.
    """

    shrink = "filters removed; constant input channels stay (only zero ones go)"

    def read(self, graph, call):
        kernel = graph.weights(call.op)[self.kernel]
        flat = np.swapaxes(kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1]), 1, 2)
        nonzero = (flat != 0).any(axis=0)
        return nonzero, flat.sum(axis=0, dtype=np.float64), False

    def _check(self, graph, call, expected):
        reason = super()._check(graph, call, expected)
        if reason is None and getattr(call.op, "output_padding", None) is not None:
            return "output_padding is not supported"
        return reason

    def cut_kernels(self, old, rows, cols, layer):
        return {self.kernel: _slice(old[self.kernel], rows, cols, row_axis=-1, col_axis=-2)}

    def input_slices(self, layer, rows):
        return [(self.kernel, -1, rows)]

    def output_slices(self, layer, units):
        out = [(self.kernel, -2, units[:, None])]
        return out + ([(self.bias, 0, units[:, None])] if layer.use_bias else [])

    def macs(self, layer, call, weights):
        positions = _positions(call.input_shapes[0])
        if positions is None:
            return None
        return positions * int(np.prod(weights[self.kernel].shape))


class EinsumDenseRule(DenseLike):
    """`keras.layers.EinsumDense` with a Dense-like equation (`"...i,io->...o"`).

    Exact for equations whose kernel has two indices, the input's last index
    contracted with the kernel's first and the kernel's second the output's
    last, the other indices passing through in order (`"ab,bc->ac"`,
    `"abc,cd->abd"`), with a bias over the output index or none. Any other
    equation keeps its channels.
    """

    shrink = (
        "output features removed for Dense-like equations (`...i,io->...o`); "
        "other equations kept whole"
    )

    def __init__(self):
        super().__init__(width="output_shape")

    @staticmethod
    def parse(layer):
        """`(input, kernel, output)` index strings if the equation is Dense-like, else None."""
        equation = layer.equation.replace(" ", "")
        try:
            lhs, out = equation.split("->")
            x, k = lhs.split(",")
        except ValueError:
            return None
        if "." in equation or len(k) != 2 or not x or not out:
            return None
        i, o = k
        if x[-1] != i or out[-1] != o or i in out or o in x or x[:-1] != out[:-1]:
            return None
        if len(set(x)) != len(x) or len(set(out)) != len(out):
            return None
        bias_axes = layer.bias_axes or ""
        if bias_axes not in ("", o):
            return None
        return x, k, out

    def stored_weights(self, config):
        return ["kernel"] + (["bias"] if config.get("bias_axes") else [])

    def input_axis(self, layer, name):
        return -2 if self.parse(layer) is not None else None

    def output_slices(self, layer, units):
        out = [("kernel", -1, units[:, None])]
        return out + ([("bias", 0, units[:, None])] if layer.bias_axes else [])

    def _expected(self, layer):
        return ["kernel"] + (["bias"] if layer.bias_axes else [])

    def flow(self, graph, call):
        if self.parse(call.op) is None:
            return f"its equation {call.op.equation!r} is not Dense-like ('...i,io->...o')"
        if getattr(call.op, "lora_enabled", False):
            return "LoRA is enabled"
        return super().flow(graph, call)

    def width_of(self, layer):
        return int(layer.kernel.shape[-1])

    def resized(self, layer, outputs):
        shape = tuple(layer.partial_output_shape)
        return {"output_shape": [*shape[:-1], outputs]}

    def bias_added(self, layer):
        return {"bias_axes": self.parse(layer)[2][-1]}

    def macs(self, layer, call, weights):
        positions = _positions(call.output_shapes[0])
        if positions is None:
            return None
        return positions * int(np.prod(weights["kernel"].shape))


class DepthwiseLike(LayerRule):
    """A depthwise convolution (`depth_multiplier=1`): channel `c` reads channel `c`."""

    kernels = ("kernel",)
    shrink = "channels removed with the channels they read"

    def stored_weights(self, config):
        return ["kernel"] + _bias_names(config)

    def regularizer_slot(self, layer, name):
        return super().regularizer_slot(layer, "depthwise_kernel" if name == "kernel" else name)

    def constraint_slot(self, layer, name):
        return super().constraint_slot(layer, "depthwise_kernel" if name == "kernel" else name)

    def flow(self, graph, call):
        from keras_reg.shrinking.channels import CONST, VAR, activation_name, pads

        layer = call.op
        reason = graph.per_channel_input(call) or graph.channels_last(layer)
        if reason:
            return reason
        if layer.depth_multiplier != 1:
            return "depth_multiplier > 1 is not supported"
        if activation_name(layer.activation) is None:
            return f"its activation {layer.activation!r} is not applied element by element"
        expected = ["kernel"] + (["bias"] if layer.use_bias else [])
        names = [v.path.rsplit("/", 1)[-1] for v in layer.weights]
        if names != expected:
            return f"its weights {names} are not {expected}"
        tid = call.inputs[0]
        kernel = graph.weights(layer)["kernel"].astype(np.float64)
        flat = kernel.reshape(-1, kernel.shape[-2])  # (positions, C)
        nonzero, total = (flat != 0).any(axis=0), flat.sum(axis=0)
        kind, value = graph.state[tid]
        valid = not pads(layer, call.input_shapes[0])
        is_var = nonzero & ((kind == VAR) | (~valid & (kind == CONST) & (value != 0)))
        bias = graph.weights(layer)["bias"].astype(np.float64) if layer.use_bias else 0.0
        z = bias + np.where(kind == VAR, 0.0, value) * total
        graph.same_layout(call.outputs[0], tid)
        graph.state[call.outputs[0]] = graph.activated(layer.activation, is_var, z)
        return None

    def channel_slices(self, layer, channels):
        """`[(weight, axis, index)]`: the slices of channels `channels` (n,)."""
        out = [("kernel", -2, channels[:, None])]
        return out + ([("bias", 0, channels[:, None])] if layer.use_bias else [])

    def cut(self, plan, layer):
        kept = plan.kept(plan.calls(layer)[0].inputs[0])
        old = plan.weights(layer)
        new = {"kernel": old["kernel"][..., kept, :]}
        if "bias" in old:
            new["bias"] = old["bias"][kept]
        return Cut({}, new, (old["kernel"].shape[-2], len(kept)))

    def macs(self, layer, call, weights):
        positions = _positions(call.output_shapes[0])
        if positions is None:
            return None
        return positions * int(np.prod(weights["kernel"].shape))


class EmbeddingRule(LayerRule):
    """`keras.layers.Embedding`: its output features are a new channel space."""

    kernels = ("embeddings",)
    opens_space = True
    shrink = "output features removed; indices (its input) stay"

    def stored_weights(self, config):
        return ["embeddings"]

    def flow(self, graph, call):
        from keras_reg.shrinking.channels import VAR, ZERO

        layer = call.op
        reason = graph.single(call)
        if reason:
            return reason
        names = [v.path.rsplit("/", 1)[-1] for v in layer.weights]
        if names != ["embeddings"]:
            return f"its weights {names} are not ['embeddings']"
        for gid, _ in graph.layout[call.inputs[0]][0]:  # indices, not channels: all stay
            graph.groups.fix(gid, f"{layer.name}: its input holds indices")
        first = graph.calls_of[id(layer)][0]
        if first is not call:
            graph.same_layout(call.outputs[0], first.outputs[0])
            graph.state[call.outputs[0]] = graph.state[first.outputs[0]]
            return None
        table = graph.weights(layer)["embeddings"]
        graph.open_space(call, table.shape[1])
        dead = ~(table != 0).any(axis=0)
        graph.state[call.outputs[0]] = (
            np.where(dead, ZERO, VAR).astype(np.int8),
            np.zeros(table.shape[1]),
        )
        return None

    def output_slices(self, layer, units):
        return [("embeddings", -1, units[:, None])]

    def cut(self, plan, layer):
        cols = plan.kept(plan.calls(layer)[0].outputs[0])
        old = plan.weights(layer)["embeddings"]
        config = {"output_dim": len(cols)} if len(cols) != old.shape[1] else {}
        return Cut(config, {"embeddings": old[:, cols]}, (old.shape[1], len(cols)))
