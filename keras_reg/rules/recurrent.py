"""Rules for `SimpleRNN`, `GRU` and `LSTM`: units removed on every side at once.

A unit of a recurrent layer has three sides: its kernel columns (one per gate),
its recurrent-kernel row and columns (it reads itself and the other units),
and its output. A unit goes when nothing that stays reads it: no later layer
(its output rows are unused or it is exactly zero) and no kept unit (its
recurrent row is zero there, or it is exactly zero). A unit is exactly zero
when its candidate gate (the `tanh` one) gets no input, no recurrent input
from a non-zero unit and no bias, and its activation maps 0 to 0: then its
cell state and output stay 0 from the zero initial state on. A constant input
channel folds exactly into the input bias (it adds the same amount at every
step).
"""

import numpy as np

from keras_reg.rules.base import Cut, LayerRule

__all__ = ["RecurrentRule"]


class RecurrentRule(LayerRule):
    """`SimpleRNN` (1 gate), `GRU` (3: update, reset, candidate), `LSTM` (4: i, f, c, o).

    Args:
        gates: the number of gate blocks in the kernel's columns.
        candidate: the index of the candidate block (its activation is `activation`).
    """

    kernels = ("kernel", "recurrent_kernel")
    prunable = ("kernel", "recurrent_kernel")  # as TFMOT's registry prunes the cells
    opens_space = True
    weights_in_sublayer = True
    shrink = "units removed on the input, recurrent and output sides together"

    def __init__(self, gates, candidate):
        self.gates, self.candidate = gates, candidate

    def stored_weights(self, config):
        return ["kernel", "recurrent_kernel"] + (["bias"] if config.get("use_bias", True) else [])

    def _why_not(self, graph, call):
        from keras_reg.shrinking.channels import activation_name

        layer = call.op
        if layer.return_state:
            return "return_state=True is not supported"
        if layer.stateful:
            return "stateful=True is not supported"
        mask = call.node.arguments.kwargs.get("mask")
        if len(call.inputs) != (1 if mask is None else 2) or len(call.outputs) != 1:
            return "it is called with initial states"
        reason = graph.shared(call)
        if reason:
            return reason
        cell = layer.cell
        for name in ("activation", "recurrent_activation"):
            fn = getattr(cell, name, None)
            if fn is not None and activation_name(fn) is None:
                return f"its {name} {fn!r} is not applied element by element"
        names = [v.path.rsplit("/", 1)[-1] for v in layer.weights]
        expected = ["kernel", "recurrent_kernel"] + (["bias"] if cell.use_bias else [])
        if names != expected:
            return f"its weights {names} are not {expected}"
        if graph.layout[call.inputs[0]][1] != 1:
            return "its input is a flattened tensor"
        return None

    def _blocks(self, matrix, units):
        """`(rows, gates, units)` view of a `(rows, gates * units)` matrix."""
        return matrix.reshape(matrix.shape[0], self.gates, units)

    def flow(self, graph, call):
        from keras_reg.shrinking.channels import VAR, ZERO, Reader, elementwise

        reason = self._why_not(graph, call)
        if reason:
            return reason
        layer = call.op
        weights = graph.weights(layer)
        units = layer.cell.units
        kernel = self._blocks(weights["kernel"], units)
        recurrent = self._blocks(weights["recurrent_kernel"], units)
        tid, out = call.inputs[0], call.outputs[0]
        gid = graph.open_space(call, units)
        if graph.layout[out][0][0][0] != gid:  # pragma: no cover - shared calls are refused
            return "it is shared"
        graph.readers.append(Reader(layer, tid, gid, (kernel != 0).any(axis=1), None, True))
        # Its own output, read back through the recurrent kernel; never foldable.
        graph.readers.append(Reader(layer, out, gid, (recurrent != 0).any(axis=1), None, False))
        # Which units are exactly zero: a fixed point from "all zero".
        kind, _ = graph.state[tid]
        bias = weights.get("bias")
        candidate_bias = np.zeros(units)
        if bias is not None:
            b = self._blocks(np.atleast_2d(bias), units)[:, self.candidate]
            candidate_bias = np.abs(b).sum(axis=0)
        fed = (kernel[kind != ZERO, self.candidate] != 0).any(axis=0) | (candidate_bias != 0)
        activation = getattr(layer.cell, "activation", None)
        maps_zero = activation is None or elementwise(activation, np.zeros(1))[0] == 0
        alive = fed | (not maps_zero)
        while True:
            grown = alive | (recurrent[alive, self.candidate] != 0).any(axis=0)
            if np.array_equal(grown, alive):
                break
            alive = grown
        graph.state[out] = (np.where(alive, VAR, ZERO).astype(np.int8), np.zeros(units))
        return None

    def input_slices(self, layer, rows):
        return [("kernel", 0, rows)]

    def output_slices(self, layer, units):
        n = layer.cell.units
        cols = (np.arange(self.gates) * n)[None, :] + units[:, None]
        out = [("kernel", -1, cols), ("recurrent_kernel", -1, cols)]
        out.append(("recurrent_kernel", 0, units[:, None]))
        return out + ([("bias", -1, cols)] if layer.cell.use_bias else [])

    def cut(self, plan, layer):
        reading = plan.reading(layer)
        rows, cols = reading.rows, reading.cols
        units = layer.cell.units
        old = plan.weights(layer)
        columns = (np.arange(self.gates)[:, None] * units + cols[None, :]).reshape(-1)
        kernel = old["kernel"]
        new = {
            "kernel": kernel[rows][:, columns],
            "recurrent_kernel": old["recurrent_kernel"][cols][:, columns],
        }
        fold = reading.constants @ kernel[reading.removed][:, columns].astype(np.float64)
        config = {"units": len(cols)}
        if "bias" in old:
            bias = old["bias"][..., columns].astype(np.float64)
            if bias.ndim == 2:  # GRU with reset_after: row 0 is the input bias
                bias[0] += fold
            else:
                bias += fold
            new["bias"] = bias.astype(old["bias"].dtype)
        elif np.any(fold != 0):
            config["use_bias"] = True
            if getattr(layer.cell, "reset_after", False):
                fold = np.stack([fold, np.zeros_like(fold)])
            new["bias"] = fold.astype(layer.variable_dtype)
        if len(cols) == units and len(rows) == kernel.shape[0] and "use_bias" not in config:
            config = {}
        return Cut(config, new, (units, len(cols)))

    def macs(self, layer, call, weights):
        steps = call.input_shapes[0][1]
        if steps is None:
            return None
        return steps * sum(int(np.prod(weights[k].shape)) for k in self.kernels)
