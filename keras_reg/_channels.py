"""The channel dependency graph of a Keras model, and which channels can go (private).

Every tensor's last axis (channels-last: units, filters, features) is a list
of *segments*, each a whole channel space (`gid`) of some size; `Concatenate`
joins segments, and `Flatten` repeats the layout once per spatial position.
Layers that act channel by channel (BatchNorm, activations, pooling, depthwise
convs) pass their input's spaces on; joins (`Add`, `Multiply`, ...) merge the
spaces of their inputs into one (union-find), so coupled channels are kept or
removed together; Dense, Conv and SeparableConv layers *read* their input's
channels through kernel rows and open a new space for their outputs. This is
Torch-Pruning's dependency graph (Fang et al., "DepGraph: Towards Any
Structural Pruning", CVPR 2023), built from the Keras graph.

Each channel of each tensor also has a *state*, found by propagating forward:
`ZERO` (exactly zero everywhere), `CONST` (the same value at every position,
for every input: a unit whose incoming weights are all zero gives act(bias))
or `VAR`. A channel can be removed when no reader needs it: every reader that
has a kernel row for it feeding a kept output either sees it `ZERO`, or sees a
`CONST` it can fold exactly into its bias (Dense; Conv and SeparableConv with
`padding="valid"`). Removing channels makes more kernel columns irrelevant, so
the search repeats until nothing changes. Spaces touching the model's inputs
or outputs, or any layer whose channel semantics are not known here, are
fixed: their channels all stay.
"""

import dataclasses
import math

import keras
import numpy as np

from keras_reg import _graph, _keras_private

ZERO, CONST, VAR = 0, 1, 2

# Activations applied element by element (so act(constant) is a constant).
_ELEMENTWISE_ACTIVATIONS = {
    "linear", "relu", "relu6", "sigmoid", "tanh", "swish", "silu", "gelu", "elu", "selu",
    "softplus", "softsign", "hard_sigmoid", "hard_silu", "hard_swish", "leaky_relu",
    "exponential", "mish", "log_sigmoid", "celu", "hard_tanh", "squareplus", "sparse_plus",
    "soft_shrink", "hard_shrink", "tanh_shrink", "sparse_sigmoid", "threshold",
}  # fmt: skip

# keras.ops operations that act element by element (functional models built
# with `x + 3.0` or `ops.relu(x)` hold them as graph nodes).
_ELEMENTWISE_OPS = {
    "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Negative", "Abs", "Absolute",
    "Square", "Sqrt", "Exp", "Log", "Log1p", "Expm1", "Maximum", "Minimum", "Clip", "Power",
    "Tanh", "Sign", "Reciprocal", "Relu", "Relu6", "Sigmoid", "HardSigmoid", "HardSilu",
    "Silu", "Gelu", "Elu", "Selu", "LeakyRelu", "Softplus", "Softsign", "Celu", "HardTanh",
    "LogSigmoid", "Mish",
}  # fmt: skip

L = keras.layers
_DENSE = (L.Dense,)
_CONV = (L.Conv1D, L.Conv2D, L.Conv3D)
_SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)
_DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
_PASS = (
    L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianNoise,
    L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization, L.Identity,
    L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
    L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
    L.UpSampling1D, L.UpSampling2D, L.UpSampling3D, L.Cropping1D, L.Cropping2D, L.Cropping3D,
)  # fmt: skip
_POOL = (
    L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D,
    L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
)  # fmt: skip
_PAD = (L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D)
_ACTIVATION = (L.Activation, L.ReLU, L.LeakyReLU, L.ELU)
_JOIN = (L.Add, L.Subtract, L.Average, L.Maximum, L.Minimum, L.Multiply)
_JOIN_FN = {
    L.Add: lambda vals: sum(vals),
    L.Subtract: lambda vals: vals[0] - vals[1],
    L.Average: lambda vals: sum(vals) / len(vals),
    L.Maximum: lambda vals: np.maximum.reduce(vals),
    L.Minimum: lambda vals: np.minimum.reduce(vals),
    L.Multiply: lambda vals: np.multiply.reduce(vals),
}
del L


def _is(op, classes):
    """Exact class match: a subclass may compute something else."""
    return type(op) in classes


def _weight_names(layer):
    return [v.path.rsplit("/", 1)[-1] for v in layer.weights]


def _elementwise(fn, *arrays):
    """`fn` (a Keras activation, layer or op) on float64 vectors, computed in float32.

    The vectors are padded to a power-of-two length, so that backends that
    compile each new shape (JAX) see a handful of shapes, not one per layer.
    """
    size = len(arrays[0])
    padded_size = 1 << max(3, (size - 1).bit_length())
    padded = [np.zeros(padded_size, np.float32) for _ in arrays]
    for buffer, array in zip(padded, arrays, strict=True):
        buffer[:size] = array
    out = np.asarray(keras.ops.convert_to_numpy(fn(*padded)), np.float64).reshape(-1)
    return out[:size]


def _pads(layer, input_shape):
    """Whether a convolution adds border zeros: "same" padding that pads, or "causal"."""
    padding = getattr(layer, "padding", "valid")
    if padding == "valid":
        return False
    if padding != "same":
        return True
    dims = input_shape[1:-1]
    if any(d is None for d in dims):
        return True
    for size, k, s, d in zip(
        dims, layer.kernel_size, layer.strides, layer.dilation_rate, strict=True
    ):
        out = -(-size // s)
        if (out - 1) * s + (k - 1) * d + 1 - size > 0:
            return True
    return False


def activation_name(fn):
    name = getattr(fn, "__name__", None)
    return name if name in _ELEMENTWISE_ACTIVATIONS else None


@dataclasses.dataclass
class Reader:
    """A layer that reads a tensor's channels through kernel rows."""

    layer: object
    tensor: int  # tensor id
    out_gid: int
    nonzero: np.ndarray  # (rows, outputs) bool: the row feeds that output
    total: np.ndarray  # (rows, outputs) float64: the kernel summed over positions
    foldable: bool  # a constant row can go into the bias exactly


class Groups:
    """Union-find over channel spaces, with the reasons a space must stay whole."""

    def __init__(self):
        self.parent, self.size, self.fixed = [], [], []

    def new(self, size, reason=None):
        self.parent.append(len(self.parent))
        self.size.append(int(size))
        self.fixed.append([reason] if reason else [])
        return len(self.parent) - 1

    def find(self, g):
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            self.fixed[a] += self.fixed[b]
        return a

    def fix(self, g, reason):
        self.fixed[self.find(g)].append(reason)


class ChannelGraph:
    """Layouts, states and readers of every tensor of a model; then the channels kept."""

    def __init__(self, model, drop_inputs=False):
        self.model = model
        self.calls, self.ids, self.inlined = _graph.walk(model)
        self.groups = Groups()
        self.layout = {}  # tensor id -> (segments [(gid, size)], repeat)
        self.state = {}  # tensor id -> (kind int8[C], value float64[C]) over one repeat
        self.readers = []
        self.calls_of = {}  # id(layer) -> [Call]
        self.unknown = []  # (layer name, reason) of layers kept whole
        self._arrays = {}  # id(layer) -> {weight name: NumPy array}, each read once
        self.whole = set()  # id() of those layers
        graph = _graph.graph_of(model)
        for t in graph.inputs:
            tid = self.ids.of(t)
            self._fresh(tid, t.shape, None if drop_inputs else "a model input")
        for call in self.calls:
            self.calls_of.setdefault(id(call.op), []).append(call)
            self._visit(call)
        for t in graph.outputs:
            for gid, _ in self.layout[self.ids.of(t)][0]:
                self.groups.fix(gid, "a model output")
        self.alive = self._solve()

    # --- building ----------------------------------------------------------------------

    def _fresh(self, tid, shape, reason=None, kind=VAR):
        size = shape[-1] if len(shape) and shape[-1] is not None else 0
        gid = self.groups.new(size, reason)
        self.layout[tid] = ([(gid, size)], 1)
        self.state[tid] = (np.full(size, kind, np.int8), np.zeros(size))
        return gid

    def weights(self, layer):
        """The layer's weights as NumPy arrays, by name (`kernel`, `bias`, ...), read once."""
        if id(layer) not in self._arrays:
            self._arrays[id(layer)] = {
                v.path.rsplit("/", 1)[-1]: np.asarray(keras.ops.convert_to_numpy(v))
                for v in layer.weights
            }
        return self._arrays[id(layer)]

    def channels(self, tid):
        segments, _ = self.layout[tid]
        return sum(size for _, size in segments)

    def _same_layout(self, tid, src):
        self.layout[tid] = self.layout[src]

    def _unify(self, tids):
        """Merges the spaces of tensors whose channels are joined one to one."""
        first = self.layout[tids[0]]
        shapes = [([s for _, s in self.layout[t][0]], self.layout[t][1]) for t in tids]
        if any(shape != shapes[0] for shape in shapes):
            return False
        for t in tids[1:]:
            for (a, _), (b, _) in zip(first[0], self.layout[t][0], strict=True):
                self.groups.union(a, b)
        return True

    def _keep_whole(self, call, reason):
        name = getattr(call.op, "name", type(call.op).__name__)
        self.unknown.append((name, reason))
        self.whole.add(id(call.op))
        # Every call of the layer keeps its channels: its weights serve them all.
        for each in self.calls_of[id(call.op)]:
            for tid in each.inputs + (each.outputs if each is not call else []):
                for gid, _ in self.layout[tid][0]:
                    self.groups.fix(gid, f"{name}: {reason}")
        for tid, shape in zip(call.outputs, call.output_shapes, strict=True):
            self._fresh(tid, shape, f"{name}: {reason}")

    def _visit(self, call):
        op = call.op
        if id(op) in self.whole:
            self._keep_whole(call, "its weights are shared with a call kept whole")
            return
        handler = self._handler(op)
        reason = handler(call) if handler else self._unknown_reason(op)
        if reason:
            self._keep_whole(call, reason)

    def _unknown_reason(self, op):
        kind = "operation" if not isinstance(op, keras.layers.Layer) else "layer"
        return f"its channel semantics are unknown to shrink ({type(op).__name__} {kind})"

    def _handler(self, op):
        if _graph.is_model(op):
            return lambda call: "a nested model called more than once (shared weights)"
        for classes, handler in (
            (_DENSE, self._producer),
            (_CONV, self._producer),
            (_SEPARABLE, self._producer),
            (_DEPTHWISE, self._depthwise),
            ((keras.layers.Embedding,), self._embedding),
            ((keras.layers.BatchNormalization,), self._batch_norm),
            (_ACTIVATION, self._activation),
            (_PASS, self._pass),
            (_POOL, self._pool),
            (_PAD, self._pad),
            ((keras.layers.Flatten,), self._flatten),
            ((keras.layers.Reshape,), self._reshape),
            (_JOIN, self._join),
            ((keras.layers.Concatenate,), self._concatenate),
            ((keras.layers.Rescaling,), self._rescaling),
        ):
            if _is(op, classes):
                return handler
        if _keras_private.keras_op_name(op) in _ELEMENTWISE_OPS:
            return self._elementwise_op
        return None

    def _single(self, call):
        if len(call.inputs) != 1 or len(call.outputs) != 1:
            return "it is called on several tensors"
        return None

    def _channels_last(self, op):
        if getattr(op, "data_format", "channels_last") != "channels_last":
            return "data_format='channels_first' is not supported"
        return None

    def _shared(self, call):
        """Unifies the input spaces of every call of a layer (its weights are shared)."""
        calls = self.calls_of[id(call.op)]
        if len(calls) > 1 and not self._unify([calls[0].inputs[0], call.inputs[0]]):
            return "it is shared by calls with different channel layouts"
        return None

    # --- layers that read channels through a kernel ----------------------------------

    def _producer(self, call):
        layer = call.op
        reason = self._single(call) or self._channels_last(layer) or self._shared(call)
        if reason:
            return reason
        if getattr(layer, "groups", 1) != 1:
            return "grouped convolutions are not supported"
        tid = call.inputs[0]
        if _is(layer, _SEPARABLE):
            expected = ["depthwise_kernel", "pointwise_kernel"]
            dw, pw = (
                self.weights(layer)["depthwise_kernel"],
                self.weights(layer)["pointwise_kernel"],
            )
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
        else:
            expected = ["kernel"]
            kernel = self.weights(layer)["kernel"]
            flat = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1])
            nonzero = (flat != 0).any(axis=0) if flat.shape[0] > 1 else flat[0] != 0
            total = flat.sum(axis=0, dtype=np.float64)
        if layer.use_bias:
            expected.append("bias")
        if _weight_names(layer) != expected:
            return f"its weights {_weight_names(layer)} are not {expected} (LoRA or quantized?)"
        if nonzero.shape[0] != self.channels(tid) * self.layout[tid][1]:
            return "its kernel rows do not match its input's channels"
        foldable = not _pads(layer, call.input_shapes[0]) and len(self.calls_of[id(layer)]) == 1
        first = self.calls_of[id(layer)][0]
        if first is call:
            out_gid = self.groups.new(nonzero.shape[1])
            self.layout[call.outputs[0]] = ([(out_gid, nonzero.shape[1])], 1)
        else:
            self._same_layout(call.outputs[0], first.outputs[0])
            out_gid = self.layout[first.outputs[0]][0][0][0]
        self.readers.append(Reader(layer, tid, out_gid, nonzero, total, foldable))
        # The state of each output: VAR if a VAR row (or, unless foldable, a non-zero
        # constant row) feeds it; else act(bias + constants @ kernel sums).
        kind, value = self._rows(tid)
        var_rows = kind == VAR
        if not foldable:
            var_rows |= (kind == CONST) & (value != 0)
        is_var = (nonzero & var_rows[:, None]).any(axis=0)
        bias = self.weights(layer)["bias"].astype(np.float64) if layer.use_bias else 0.0
        z = bias + np.where(kind == VAR, 0.0, value) @ total
        if activation_name(layer.activation) is None:  # softmax: the outputs stay whole
            self.groups.fix(out_gid, f"{layer.name}: its activation mixes its outputs")
            size = nonzero.shape[1]
            self.state[call.outputs[0]] = (np.full(size, VAR, np.int8), np.zeros(size))
            return None
        self.state[call.outputs[0]] = self._activated(layer.activation, is_var, z)
        return None

    def _rows(self, tid):
        """The state per kernel row: the channel state repeated once per position."""
        _, repeat = self.layout[tid]
        kind, value = self.state[tid]
        return np.tile(kind, repeat), np.tile(value, repeat)

    def _activated(self, activation, is_var, z):
        values = _elementwise(activation, z)
        kind = np.where(is_var, VAR, np.where(values == 0, ZERO, CONST)).astype(np.int8)
        return kind, np.where(is_var, 0.0, values)

    def _embedding(self, call):
        layer = call.op
        reason = self._single(call)
        if reason:
            return reason
        if _weight_names(layer) != ["embeddings"]:
            return f"its weights {_weight_names(layer)} are not ['embeddings']"
        for gid, _ in self.layout[call.inputs[0]][0]:  # indices, not channels: all stay
            self.groups.fix(gid, f"{layer.name}: its input holds indices")
        if len(self.calls_of[id(layer)]) > 1:
            first = self.calls_of[id(layer)][0]
            self._same_layout(call.outputs[0], first.outputs[0])
            self.state[call.outputs[0]] = self.state[first.outputs[0]]
            return None
        table = self.weights(layer)["embeddings"]
        gid = self.groups.new(table.shape[1])
        self.layout[call.outputs[0]] = ([(gid, table.shape[1])], 1)
        dead = ~(table != 0).any(axis=0)
        self.state[call.outputs[0]] = (
            np.where(dead, ZERO, VAR).astype(np.int8),
            np.zeros(table.shape[1]),
        )
        return None

    # --- layers that act channel by channel ------------------------------------------

    def _per_channel_input(self, call):
        reason = self._single(call) or self._shared(call)
        if reason:
            return reason
        if self.layout[call.inputs[0]][1] != 1:
            return "per-channel parameters on a flattened tensor are not supported"
        return None

    def _depthwise(self, call):
        layer = call.op
        reason = self._per_channel_input(call) or self._channels_last(layer)
        if reason:
            return reason
        if layer.depth_multiplier != 1:
            return "depth_multiplier > 1 is not supported"
        act = activation_name(layer.activation)
        if act is None:
            return f"its activation {layer.activation!r} is not applied element by element"
        expected = ["kernel"] + (["bias"] if layer.use_bias else [])
        if _weight_names(layer) != expected:
            return f"its weights {_weight_names(layer)} are not {expected}"
        tid = call.inputs[0]
        kernel = self.weights(layer)["kernel"].astype(np.float64)
        flat = kernel.reshape(-1, kernel.shape[-2])  # (positions, C)
        nonzero, total = (flat != 0).any(axis=0), flat.sum(axis=0)
        kind, value = self.state[tid]
        valid = not _pads(layer, call.input_shapes[0])
        is_var = nonzero & ((kind == VAR) | (~valid & (kind == CONST) & (value != 0)))
        bias = self.weights(layer)["bias"].astype(np.float64) if layer.use_bias else 0.0
        z = bias + np.where(kind == VAR, 0.0, value) * total
        self._same_layout(call.outputs[0], tid)
        self.state[call.outputs[0]] = self._activated(layer.activation, is_var, z)
        return None

    def _evaluate(self, call, fn):
        """The state after an element-wise map `fn` of NumPy arrays."""
        kind, value = self.state[call.inputs[0]]
        out = fn(np.where(kind == VAR, 0.0, value))
        new_kind = np.where(kind == VAR, VAR, np.where(out == 0, ZERO, CONST)).astype(np.int8)
        return new_kind, np.where(kind == VAR, 0.0, out)

    def _batch_norm(self, call):
        layer = call.op
        reason = self._per_channel_input(call)
        if reason:
            return reason
        rank = len(call.input_shapes[0])
        if layer.axis not in (-1, rank - 1):
            return f"it normalizes axis {layer.axis}, not the channels (last) axis"
        tid = call.inputs[0]
        self._same_layout(call.outputs[0], tid)
        weights = {k: v.astype(np.float64) for k, v in self.weights(layer).items()}
        ones = np.ones(self.channels(tid))
        gamma = weights.get("gamma", ones)
        beta = weights.get("beta", 0 * ones)
        scale = gamma / np.sqrt(weights["moving_variance"] + layer.epsilon)
        # Inference-mode BatchNorm, in float64 (the backend computes it in float32).
        kind, value = self._evaluate(call, lambda x: (x - weights["moving_mean"]) * scale + beta)
        if layer.scale:  # gamma == 0 maps anything to beta
            flat = gamma == 0
            kind = np.where(flat, np.where(beta == 0, ZERO, CONST), kind).astype(np.int8)
            value = np.where(flat, beta, value)
        self.state[call.outputs[0]] = (kind, value)
        return None

    def _activation(self, call):
        layer = call.op
        reason = self._single(call)
        if reason:
            return reason
        if type(layer) is keras.layers.Activation and activation_name(layer.activation) is None:
            return f"its activation {layer.activation!r} is not applied element by element"
        self._same_layout(call.outputs[0], call.inputs[0])
        self.state[call.outputs[0]] = self._evaluate(call, lambda x: _elementwise(layer, x))
        return None

    def _rescaling(self, call):
        layer = call.op
        if np.ndim(layer.scale) or np.ndim(layer.offset):
            return "a per-channel scale or offset is not supported"
        return self._activation(call)

    def _pass(self, call):
        reason = self._single(call) or self._channels_last(call.op)
        if reason:
            return reason
        if self.layout[call.inputs[0]][1] != 1:
            return "it is applied to a flattened tensor"
        self._same_layout(call.outputs[0], call.inputs[0])
        self.state[call.outputs[0]] = self.state[call.inputs[0]]
        return None

    def _pool(self, call):
        reason = self._pass(call)
        if reason is None and call.op.padding != "valid":
            # Backends pad "same" pooling differently: a non-zero constant may not survive.
            self.state[call.outputs[0]] = self._unless_zero(self.state[call.inputs[0]])
        return reason

    def _pad(self, call):
        reason = self._pass(call)
        if reason is None:  # zeros at the border: only a zero channel stays constant
            self.state[call.outputs[0]] = self._unless_zero(self.state[call.inputs[0]])
        return reason

    @staticmethod
    def _unless_zero(state):
        kind, value = state
        kind = np.where(kind == CONST, VAR, kind).astype(np.int8)
        return kind, np.where(kind == CONST, value, 0.0)

    def _flatten(self, call):
        reason = self._single(call) or self._channels_last(call.op)
        if reason:
            return reason
        shape = call.input_shapes[0]
        positions = shape[1:-1]
        if any(d is None for d in positions):
            return "its input has unknown spatial dimensions"
        segments, repeat = self.layout[call.inputs[0]]
        self.layout[call.outputs[0]] = (segments, repeat * math.prod(positions))
        self.state[call.outputs[0]] = self.state[call.inputs[0]]
        return None

    def _reshape(self, call):
        reason = self._single(call)
        if reason:
            return reason
        target = tuple(call.op.target_shape)
        shape = call.input_shapes[0]
        if self.layout[call.inputs[0]][1] != 1 or not target or target[-1] != shape[-1]:
            return "it moves channels off the last axis"
        if -1 in target[:-1] or any(d is None for d in shape[1:-1]):
            return "it reshapes unknown dimensions"
        if math.prod(target[:-1]) != math.prod(shape[1:-1]):
            return "it moves channels off the last axis"
        return self._pass(call)

    # --- joins -----------------------------------------------------------------------

    def _join_state(self, tids, combine, multiply=False):
        kinds = np.stack([self.state[t][0] for t in tids])
        values = [np.where(self.state[t][0] == VAR, 0.0, self.state[t][1]) for t in tids]
        is_var = (kinds == VAR).any(axis=0)
        if multiply:  # anything times an exact zero is zero
            is_var &= ~(kinds == ZERO).any(axis=0)
        out = np.asarray(combine(values), np.float64)
        kind = np.where(is_var, VAR, np.where(out == 0, ZERO, CONST)).astype(np.int8)
        return kind, np.where(is_var, 0.0, out)

    def _join(self, call):
        if len(call.outputs) != 1 or len(call.inputs) < 2:
            return "it is not a join of several tensors"
        if len({s[-1] for s in call.input_shapes}) != 1:
            return "it broadcasts along the channel axis"
        if not self._unify(call.inputs):
            return "its inputs have different channel layouts"
        self._same_layout(call.outputs[0], call.inputs[0])
        op = type(call.op)
        self.state[call.outputs[0]] = self._join_state(
            call.inputs, _JOIN_FN[op], multiply=op is keras.layers.Multiply
        )
        return None

    def _concatenate(self, call):
        rank = len(call.output_shapes[0])
        if call.op.axis % rank != rank - 1:
            if not self._unify(call.inputs):
                return "its inputs have different channel layouts"
            self._same_layout(call.outputs[0], call.inputs[0])
            states = [self.state[t] for t in call.inputs]
            same = all(
                np.array_equal(s[0], states[0][0]) and np.array_equal(s[1], states[0][1])
                for s in states
            )
            kind = states[0][0] if same else np.full_like(states[0][0], VAR)
            self.state[call.outputs[0]] = (kind, states[0][1] if same else 0 * states[0][1])
            return None
        if any(self.layout[t][1] != 1 for t in call.inputs):
            return "it concatenates flattened tensors"
        segments = [seg for t in call.inputs for seg in self.layout[t][0]]
        self.layout[call.outputs[0]] = (segments, 1)
        self.state[call.outputs[0]] = tuple(
            np.concatenate([self.state[t][i] for t in call.inputs]) for i in range(2)
        )
        return None

    def _elementwise_op(self, call):
        args = keras.tree.flatten((call.node.arguments.args, call.node.arguments.kwargs))
        others = [a for a in args if not isinstance(a, keras.KerasTensor)]
        if any(not isinstance(a, (int, float, bool, str, type(None))) for a in others):
            return "it takes an array argument that would need slicing"
        if len(call.outputs) != 1:
            return "it has several outputs"
        if len(call.inputs) > 1:
            if len({s[-1] for s in call.input_shapes}) != 1:
                return "it broadcasts along the channel axis"
            if not self._unify(call.inputs):
                return "its inputs have different channel layouts"
        self._same_layout(call.outputs[0], call.inputs[0])
        tensors = call.node.input_tensors

        def combine(values):
            def apply(*padded):
                feed = {id(t): v for t, v in zip(tensors, padded, strict=True)}
                a, kw = call.node.arguments.fill_in(feed)
                return call.op(*a, **kw)

            return _elementwise(apply, *values)

        self.state[call.outputs[0]] = self._join_state(
            call.inputs, combine, multiply=type(call.op).__name__ == "Multiply"
        )
        return None

    # --- which channels stay -----------------------------------------------------------

    def kept(self, tid):
        """Indices (into the tensor's flat last axis) of the channels that stay."""
        segments, repeat = self.layout[tid]
        index, offset = [], 0
        for gid, size in segments:
            index += [offset + c for c in self.alive[self.groups.find(gid)]]
            offset += size
        return np.asarray([p * offset + i for p in range(repeat) for i in index], np.int64)

    def _solve(self):
        groups = self.groups
        roots = {groups.find(g) for g in range(len(groups.parent))}
        alive = {g: list(range(groups.size[g])) for g in roots}
        free = [g for g in roots if not groups.fixed[g]]
        self.kept_constant = {}
        while True:
            needed = {g: np.zeros(groups.size[g], bool) for g in free}
            by_const = {g: np.zeros(groups.size[g], bool) for g in free}
            by_var = {g: np.zeros(groups.size[g], bool) for g in free}
            for reader in self.readers:
                live = np.zeros(reader.nonzero.shape[1], bool)
                live[alive[groups.find(reader.out_gid)]] = True
                kind, value = self._rows(reader.tensor)
                droppable = (kind == ZERO) | ((kind == CONST) & reader.foldable)
                uses = (reader.nonzero[:, live]).any(axis=1)
                need = uses & ~droppable
                const_need = need & (kind == CONST)
                var_need = need & (kind == VAR)
                segments, repeat = self.layout[reader.tensor]
                width = sum(size for _, size in segments)
                for p in range(repeat):
                    offset = p * width
                    for gid, size in segments:
                        root = groups.find(gid)
                        if root in needed:
                            needed[root] |= need[offset : offset + size]
                            by_const[root] |= const_need[offset : offset + size]
                            by_var[root] |= var_need[offset : offset + size]
                        offset += size
            changed = False
            for g in free:
                keep = [c for c in alive[g] if needed[g][c]]
                if len(keep) != len(alive[g]):
                    alive[g], changed = keep, True
            if not changed:
                break
        # Constant channels kept only because a reader cannot fold them exactly.
        for g in free:
            only_const = by_const[g] & ~by_var[g]
            self.kept_constant[g] = int(np.sum(only_const[alive[g]]))
        return alive
