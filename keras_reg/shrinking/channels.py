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

import collections
import dataclasses

import keras
import numpy as np

from keras_reg import rules
from keras_reg.shrinking import graph as _graph

__all__ = [
    "CONST",
    "VAR",
    "ZERO",
    "ChannelGraph",
    "Groups",
    "Reader",
    "activation_name",
    "elementwise",
    "pads",
]

ZERO, CONST, VAR = 0, 1, 2

# Activations applied element by element (so act(constant) is a constant).
_ELEMENTWISE_ACTIVATIONS = {
    "linear", "relu", "relu6", "sigmoid", "tanh", "swish", "silu", "gelu", "elu", "selu",
    "softplus", "softsign", "hard_sigmoid", "hard_silu", "hard_swish", "leaky_relu",
    "exponential", "mish", "log_sigmoid", "celu", "hard_tanh", "squareplus", "sparse_plus",
    "soft_shrink", "hard_shrink", "tanh_shrink", "sparse_sigmoid", "threshold",
}  # fmt: skip


def elementwise(fn, *arrays):
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


def pads(layer, input_shape):
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
        self.calls, self.ids, self.inlined, self.graphs = _graph.walk(model)
        self.groups = Groups()
        self.layout = {}  # tensor id -> (segments [(gid, size)], repeat)
        self.state = {}  # tensor id -> (kind int8[C], value float64[C]) over one repeat
        self.readers = []
        self.couplings = []  # (tensor id, [index arrays]) that stay or go together
        self.calls_of = {}  # id(layer) -> [Call]
        self.unknown = []  # (layer name, reason) of layers kept whole
        self._arrays = {}  # id(layer) -> {weight name: NumPy array}, each read once
        self.whole = set()  # id() of those layers
        graph = self.graphs[id(model)]
        for t in graph.inputs:
            tid = self.ids.of(t)
            self._fresh(tid, t.shape, None if drop_inputs else "a model input")
        # How many calls each layer has, known before any is visited: a layer called
        # twice must not fold a constant of one call into the bias both share.
        self.call_count = collections.Counter(id(call.op) for call in self.calls)
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

    def same_layout(self, tid, src):
        self.layout[tid] = self.layout[src]

    def unify(self, tids):
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
                for gid, _ in self.layout[tid][0] if tid in self.layout else ():
                    self.groups.fix(gid, f"{name}: {reason}")
        for tid, shape in zip(call.outputs, call.output_shapes, strict=True):
            self._fresh(tid, shape, f"{name}: {reason}")

    def _visit(self, call):
        op = call.op
        if id(op) in self.whole:
            self._keep_whole(call, "its weights are shared with a call kept whole")
            return
        if _graph.is_model(op):
            reason = "a nested model called more than once (shared weights)"
        else:
            reason = rules.rule_for(op).flow(self, call)
        if reason:
            self._keep_whole(call, reason)

    # --- the helpers rules use -----------------------------------------------------------

    def single(self, call):
        """A reason unless the call takes one tensor and gives one."""
        if len(call.inputs) != 1 or len(call.outputs) != 1:
            return "it is called on several tensors"
        return None

    def channels_last(self, op):
        """A reason unless the layer computes channels-last."""
        if getattr(op, "data_format", "channels_last") != "channels_last":
            return "data_format='channels_first' is not supported"
        return None

    def shared(self, call):
        """Unifies the input spaces of every call of a layer (its weights are shared)."""
        calls = self.calls_of[id(call.op)]
        if len(calls) > 1 and not self.unify([calls[0].inputs[0], call.inputs[0]]):
            return "it is shared by calls with different channel layouts"
        return None

    def per_channel_input(self, call):
        """A reason unless the call's one input can take per-channel parameters."""
        reason = self.single(call) or self.shared(call)
        if reason:
            return reason
        if self.layout[call.inputs[0]][1] != 1:
            return "per-channel parameters on a flattened tensor are not supported"
        return None

    def passes(self, call):
        """The output has the input's channels and states (a reason if it cannot)."""
        reason = self.single(call) or self.channels_last(call.op)
        if reason:
            return reason
        if self.layout[call.inputs[0]][1] != 1:
            return "it is applied to a flattened tensor"
        self.same_layout(call.outputs[0], call.inputs[0])
        self.state[call.outputs[0]] = self.state[call.inputs[0]]
        return None

    def open_space(self, call, size):
        """The call's output gets a new channel space of `size` (shared calls: the first's)."""
        first = self.calls_of[id(call.op)][0]
        if first is call:
            gid = self.groups.new(size)
            self.layout[call.outputs[0]] = ([(gid, size)], 1)
            return gid
        self.same_layout(call.outputs[0], first.outputs[0])
        return self.layout[first.outputs[0]][0][0][0]

    def read_rows(self, call, nonzero, total, foldable, activation, bias, kernel_rows=None):
        """A layer reads its input's channels through kernel rows into a new space.

        `nonzero[r, o]`: row `r` feeds output `o`; `total`: the kernel summed
        over positions (how a constant row adds to each output). A constant
        row is folded into the bias when `foldable`. Sets the output's state.
        Returns a reason if the kernel does not fit the input.
        """
        layer, tid = call.op, call.inputs[0]
        if nonzero.shape[0] != self.channels(tid) * self.layout[tid][1]:
            return "its kernel rows do not match its input's channels"
        foldable = foldable and self.call_count[id(layer)] == 1
        out_gid = self.open_space(call, nonzero.shape[1])
        self.readers.append(Reader(layer, tid, out_gid, nonzero, total, foldable))
        # The state of each output: VAR if a VAR row (or, unless foldable, a non-zero
        # constant row) feeds it; else act(bias + constants @ kernel sums).
        kind, value = self.rows(tid)
        var_rows = kind == VAR
        if not foldable:
            var_rows |= (kind == CONST) & (value != 0)
        is_var = (nonzero & var_rows[:, None]).any(axis=0)
        z = bias + np.where(kind == VAR, 0.0, value) @ total
        if activation_name(activation) is None:  # softmax: the outputs stay whole
            self.groups.fix(out_gid, f"{layer.name}: its activation mixes its outputs")
            size = nonzero.shape[1]
            self.state[call.outputs[0]] = (np.full(size, VAR, np.int8), np.zeros(size))
            return None
        self.state[call.outputs[0]] = self.activated(activation, is_var, z)
        return None

    def rows(self, tid):
        """The state per kernel row: the channel state repeated once per position."""
        _, repeat = self.layout[tid]
        kind, value = self.state[tid]
        return np.tile(kind, repeat), np.tile(value, repeat)

    def activated(self, activation, is_var, z):
        """The state of `activation(z)` where not `is_var`."""
        values = elementwise(activation, z)
        kind = np.where(is_var, VAR, np.where(values == 0, ZERO, CONST)).astype(np.int8)
        return kind, np.where(is_var, 0.0, values)

    def evaluate(self, call, fn):
        """The state after an element-wise map `fn` of NumPy arrays."""
        kind, value = self.state[call.inputs[0]]
        out = fn(np.where(kind == VAR, 0.0, value))
        new_kind = np.where(kind == VAR, VAR, np.where(out == 0, ZERO, CONST)).astype(np.int8)
        return new_kind, np.where(kind == VAR, 0.0, out)

    @staticmethod
    def unless_zero(state):
        """`state` with every non-zero constant made variable (zero borders break them)."""
        kind, value = state
        kind = np.where(kind == CONST, VAR, kind).astype(np.int8)
        return kind, np.where(kind == CONST, value, 0.0)

    def join_state(self, tids, combine, multiply=False):
        """The state of an element-wise join of `tids` computed by `combine(values)`."""
        kinds = np.stack([self.state[t][0] for t in tids])
        values = [np.where(self.state[t][0] == VAR, 0.0, self.state[t][1]) for t in tids]
        is_var = (kinds == VAR).any(axis=0)
        if multiply:  # anything times an exact zero is zero
            is_var &= ~(kinds == ZERO).any(axis=0)
        out = np.asarray(combine(values), np.float64)
        kind = np.where(is_var, VAR, np.where(out == 0, ZERO, CONST)).astype(np.int8)
        return kind, np.where(is_var, 0.0, out)

    def couple(self, tid, index_sets):
        """Channels of `tid` that stay or go together (GroupNormalization's groups)."""
        self.couplings.append((tid, [np.asarray(s, np.int64) for s in index_sets]))

    # --- which channels stay -----------------------------------------------------------

    def kept(self, tid):
        """Indices (into the tensor's flat last axis) of the channels that stay."""
        segments, repeat = self.layout[tid]
        index, offset = [], 0
        for gid, size in segments:
            index += [offset + c for c in self.alive[self.groups.find(gid)]]
            offset += size
        return np.asarray([p * offset + i for p in range(repeat) for i in index], np.int64)

    def _close(self, tid, index_sets, needed):
        """Where one channel of a coupled set is needed, all of it is."""
        segments, repeat = self.layout[tid]
        where, offset = [], 0  # flat channel -> (root, index in the space)
        for gid, size in segments:
            where += [(self.groups.find(gid), c) for c in range(size)]
            offset += size
        for index in index_sets:
            places = [where[i] for i in index]
            if any(root in needed and needed[root][c] for root, c in places):
                for root, c in places:
                    if root in needed:
                        needed[root][c] = True

    def _solve(self):
        groups = self.groups
        roots = {groups.find(g) for g in range(len(groups.parent))}
        alive = {g: list(range(groups.size[g])) for g in roots}
        free = [g for g in roots if not groups.fixed[g]]
        self.kept_constant = {}
        self.forced = {}  # root -> the channel kept in a space nothing reads
        while True:
            needed = {g: np.zeros(groups.size[g], bool) for g in free}
            by_const = {g: np.zeros(groups.size[g], bool) for g in free}
            by_var = {g: np.zeros(groups.size[g], bool) for g in free}
            for reader in self.readers:
                live = np.zeros(reader.nonzero.shape[1], bool)
                live[alive[groups.find(reader.out_gid)]] = True
                kind, value = self.rows(reader.tensor)
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
            for tid, index_sets in self.couplings:
                self._close(tid, index_sets, needed)
            changed = False
            for g in free:
                keep = [c for c in alive[g] if needed[g][c] or c in self.forced.get(g, ())]
                if not keep and alive[g]:
                    # Nothing reads this space: a Keras layer cannot have 0 units, so its
                    # first channel stays, computed as before (its readers keep its row).
                    self.forced.setdefault(g, set()).add(alive[g][0])
                    keep = alive[g][:1]
                if len(keep) != len(alive[g]):
                    alive[g], changed = keep, True
            if not changed:
                break
        # Constant channels kept only because a reader cannot fold them exactly.
        for g in free:
            only_const = by_const[g] & ~by_var[g]
            self.kept_constant[g] = int(np.sum(only_const[alive[g]]))
        return alive
