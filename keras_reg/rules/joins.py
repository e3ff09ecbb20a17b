"""Rules for joins: element-wise merges of several tensors, and `Concatenate`.

An element-wise join (`Add`, `Multiply`, `x + y` in a functional model)
couples its inputs' channels one to one: they stay or go together.
`Concatenate` along the channels keeps each input's channels at an offset.
"""

import numpy as np

from keras_reg.rules.base import LayerRule

__all__ = ["ConcatenateRule", "ElementwiseOpRule", "JoinRule"]


class JoinRule(LayerRule):
    """An element-wise merge layer; `combine` computes it on NumPy vectors."""

    kernels = ()
    weighted = False
    shrink = "channels of all its inputs coupled (removed together)"

    def __init__(self, combine, multiply=False):
        self.combine, self.multiply = combine, multiply

    def flow(self, graph, call):
        if len(call.outputs) != 1 or len(call.inputs) < 2:
            return "it is not a join of several tensors"
        if len({s[-1] for s in call.input_shapes}) != 1:
            return "it broadcasts along the channel axis"
        if not graph.unify(call.inputs):
            return "its inputs have different channel layouts"
        graph.same_layout(call.outputs[0], call.inputs[0])
        graph.state[call.outputs[0]] = graph.join_state(
            call.inputs, self.combine, multiply=self.multiply
        )
        return None


JOINS = {
    "Add": JoinRule(lambda vals: sum(vals)),
    "Subtract": JoinRule(lambda vals: vals[0] - vals[1]),
    "Average": JoinRule(lambda vals: sum(vals) / len(vals)),
    "Maximum": JoinRule(lambda vals: np.maximum.reduce(vals)),
    "Minimum": JoinRule(lambda vals: np.minimum.reduce(vals)),
    "Multiply": JoinRule(lambda vals: np.multiply.reduce(vals), multiply=True),
}


class ConcatenateRule(LayerRule):
    """`Concatenate`: along the channels, each input's channels keep their offset."""

    kernels = ()
    weighted = False
    shrink = "channels followed at their offsets"

    def flow(self, graph, call):
        from keras_reg.shrinking.channels import VAR

        rank = len(call.output_shapes[0])
        if call.op.axis % rank != rank - 1:
            if not graph.unify(call.inputs):
                return "its inputs have different channel layouts"
            graph.same_layout(call.outputs[0], call.inputs[0])
            states = [graph.state[t] for t in call.inputs]
            same = all(
                np.array_equal(s[0], states[0][0]) and np.array_equal(s[1], states[0][1])
                for s in states
            )
            kind = states[0][0] if same else np.full_like(states[0][0], VAR)
            graph.state[call.outputs[0]] = (kind, states[0][1] if same else 0 * states[0][1])
            return None
        if any(graph.layout[t][1] != 1 for t in call.inputs):
            return "it concatenates flattened tensors"
        segments = [seg for t in call.inputs for seg in graph.layout[t][0]]
        graph.layout[call.outputs[0]] = (segments, 1)
        graph.state[call.outputs[0]] = tuple(
            np.concatenate([graph.state[t][i] for t in call.inputs]) for i in range(2)
        )
        return None


# keras.ops operations that act element by element (functional models built
# with `x + 3.0` or `ops.relu(x)` hold them as graph nodes).
ELEMENTWISE_OPS = {
    "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Negative", "Abs", "Absolute",
    "Square", "Sqrt", "Exp", "Log", "Log1p", "Expm1", "Maximum", "Minimum", "Clip", "Power",
    "Tanh", "Sign", "Reciprocal", "Relu", "Relu6", "Sigmoid", "HardSigmoid", "HardSilu",
    "Silu", "Gelu", "Elu", "Selu", "LeakyRelu", "Softplus", "Softsign", "Celu", "HardTanh",
    "LogSigmoid", "Mish",
}  # fmt: skip


class ElementwiseOpRule(LayerRule):
    """A `keras.ops` operation node applied element by element (`x + 3.0`, `ops.relu`)."""

    kernels = ()
    weighted = False
    shrink = "channels passed through, or coupled when it joins tensors"

    def flow(self, graph, call):
        import keras

        from keras_reg.shrinking.channels import elementwise

        args = keras.tree.flatten((call.node.arguments.args, call.node.arguments.kwargs))
        others = [a for a in args if not isinstance(a, keras.KerasTensor)]
        if any(not isinstance(a, (int, float, bool, str, type(None))) for a in others):
            return "it takes an array argument that would need slicing"
        if len(call.outputs) != 1:
            return "it has several outputs"
        if len(call.inputs) > 1:
            if len({s[-1] for s in call.input_shapes}) != 1:
                return "it broadcasts along the channel axis"
            if not graph.unify(call.inputs):
                return "its inputs have different channel layouts"
        graph.same_layout(call.outputs[0], call.inputs[0])
        tensors = call.node.input_tensors

        def combine(values):
            def apply(*padded):
                feed = {id(t): v for t, v in zip(tensors, padded, strict=True)}
                a, kw = call.node.arguments.fill_in(feed)
                return call.op(*a, **kw)

            return elementwise(apply, *values)

        graph.state[call.outputs[0]] = graph.join_state(
            call.inputs, combine, multiply=type(call.op).__name__ == "Multiply"
        )
        return None
