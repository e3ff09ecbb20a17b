"""The call graph of a Functional or Sequential Keras model, nested models inlined (private).

`walk(model)` returns the model's layer and operation calls in an order where
every call comes after the calls that produce its inputs. A model nested in
another (a backbone, ConvNeXt's stem) is opened up: its inner input tensors
are the same tensors as the ones the outer call passed in, its outputs the
same as the outer call's outputs, so channel dependencies cross model
boundaries. Tensors are named by `TensorIds`, which resolves those aliases.

Reading the graph needs a few private Keras attributes (a functional model's
nodes by depth, a Sequential model's inner functional graph), read through
`keras_reg._keras_private`.
"""

import dataclasses

import keras

from keras_reg import _keras_private as private

__all__ = ["Call", "TensorIds", "graph_of", "is_model", "run", "walk"]


def graph_of(model):
    """The functional graph that runs `model`, or raises a `ValueError` naming it."""
    functional = private.functional_class()
    if isinstance(model, keras.Sequential):
        graph = private.sequential_graph(model)
        if graph is None:
            raise ValueError(
                f"The Sequential model {model.name!r} has no graph to read: build it with an "
                "input shape first (start it with keras.Input(shape), or call model.build)."
            )
        return graph
    if isinstance(model, functional):
        if type(model).call is not functional.call:
            raise ValueError(
                f"The model {model.name!r} ({type(model).__name__}) overrides call(): its "
                "graph does not say what it computes, so it cannot be transformed."
            )
        return model
    raise ValueError(
        f"The model {model.name!r} is a subclassed keras.Model ({type(model).__name__}): it "
        "has no graph of layers to read, so its channels cannot be traced. Build it as a "
        "Functional or Sequential model."
    )


def run(graph, inputs, operation_fn):
    """Calls `operation_fn(op)` in place of each operation of `graph`, on new inputs."""
    return private.run_through_graph(graph, inputs, operation_fn)


def is_model(op):
    return isinstance(op, keras.Model)


@dataclasses.dataclass
class Call:
    """One call of a layer or operation: its tensors, and the Keras node behind it."""

    op: object
    inputs: list  # tensor ids, in the node's flattened order
    outputs: list  # tensor ids
    node: object  # the Keras node (its `arguments` hold non-tensor arguments)
    input_shapes: list
    output_shapes: list


class TensorIds:
    """Names each tensor by an int, resolving a nested model's boundary aliases."""

    def __init__(self):
        self._alias = {}

    def of(self, tensor):
        key = id(tensor)
        while key in self._alias:
            key = self._alias[key]
        return key

    def alias(self, tensor, same_as):
        self._alias[id(tensor)] = self.of(same_as)


def _nodes_in_order(graph):
    for node in private.nodes_by_depth(graph):
        if node.operation is not None and not node.is_input:
            yield node


def walk(model, ids=None, calls=None, owners=None, graphs=None):
    """All calls of `model`, producers first, nested models inlined.

    Returns `(calls, ids, owners, graphs)`: `owners` maps each inlined nested
    model (by id) to the number of times it is called; a nested model called
    more than once is not inlined but kept as one opaque call (its weights are
    shared). `graphs` maps the model and each inlined one (by id) to its
    functional graph, read once here for the planner and the builder.
    """
    ids = ids or TensorIds()
    calls = [] if calls is None else calls
    owners = {} if owners is None else owners
    graphs = {} if graphs is None else graphs
    graph = graphs[id(model)] = graphs.get(id(model)) or graph_of(model)
    nested_calls = {}
    for node in _nodes_in_order(graph):
        if is_model(node.operation):
            nested_calls[id(node.operation)] = nested_calls.get(id(node.operation), 0) + 1
    for node in _nodes_in_order(graph):
        op = node.operation
        if is_model(op) and nested_calls[id(op)] == 1:
            owners[id(op)] = 1
            inner = graphs[id(op)] = graph_of(op)
            for inner_input, outer_input in zip(inner.inputs, node.input_tensors, strict=True):
                ids.alias(inner_input, outer_input)
            walk(op, ids, calls, owners, graphs)
            for outer_output, inner_output in zip(node.outputs, inner.outputs, strict=True):
                ids.alias(outer_output, inner_output)
            continue
        calls.append(
            Call(
                op=op,
                inputs=[ids.of(t) for t in node.input_tensors],
                outputs=[ids.of(t) for t in node.outputs],
                node=node,
                input_shapes=[tuple(t.shape) for t in node.input_tensors],
                output_shapes=[tuple(t.shape) for t in node.outputs],
            )
        )
    return calls, ids, owners, graphs
