"""`LayerRule`: everything keras_reg knows about one kind of Keras layer.

A rule answers four questions about a layer class, and every part of
keras_reg asks them through the rule, never through a table of its own:

- **Weights.** Which weights are kernels (`apply_regularizer(weights=
  "kernels")`, `prune_low_magnitude`), and which layer attributes hold their
  regularizer and constraint (`kernel_regularizer`, `depthwise_constraint`).
  `stored_weights(config)` names the weights a `.keras` file stores for the
  layer, from its config alone (the file reader imports no Keras).
- **Channels.** `flow(graph, call)`: how the layer's input channels (last
  axis) reach its outputs: one by one (BatchNorm), joined (Add), read through
  kernel rows into a new channel space (Dense), or not at all (kept whole).
- **Cutting.** `cut(plan, layer)`: the layer's new config and weights once some
  of its input and output channels are gone.
- **Cost.** `macs(layer, call, weights)`: multiply-accumulates per sample.

The built-in rules are registered by Keras class name and resolved to the
class on first use, so this package imports without Keras.
"""

import dataclasses

__all__ = ["Cut", "LayerRule", "weight_name"]

# Weights that are kernels by Keras' naming convention, for layers without a rule.
CONVENTIONAL_KERNELS = (
    "kernel",
    "embeddings",
    "depthwise_kernel",
    "pointwise_kernel",
    "recurrent_kernel",
)


def weight_name(variable):
    """`kernel` for the variable whose path is `model/dense/kernel`."""
    return variable.path.rsplit("/", 1)[-1]


@dataclasses.dataclass
class Cut:
    """A layer's share of a shrink plan: config changes, new weights and its row.

    Attributes:
        config: the `get_config()` entries that change (`{"units": 12}`).
        weights: weight name -> new NumPy array, or `None` when the weights
            stay as they are.
        units: `(before, after)` for the plan's table (units, filters,
            channels), or `None` for a layer without a row (BatchNorm).
    """

    config: dict = dataclasses.field(default_factory=dict)
    weights: dict | None = None
    units: tuple | None = None


class LayerRule:
    """What keras_reg knows about a Keras layer class; the default knows nothing.

    Subclass it (or use one of the ready rules in `keras_reg.rules`, such as
    `DenseLike`) and register it for your layer class with
    `keras_reg.register_layer_rule`. Every method has a safe default: a layer
    without a rule is regularized and pruned by Keras' naming convention
    (a `kernel` weight with a `kernel_regularizer` attribute), and `shrink`
    keeps all the channels it touches.

    Attributes:
        kernels: names of the weights that are kernels, or `None` for Keras'
            convention (`kernel`, `embeddings`, `depthwise_kernel`,
            `pointwise_kernel`, `recurrent_kernel`).
        prunable: names of the kernels `prune_low_magnitude` prunes, or `None`
            for all kernels but `recurrent_kernel`.
        opens_space: whether the layer's outputs are new channels (a Dense's
            units), as opposed to its input channels passed on (a depthwise
            conv's): the plan's `constant_kept` is counted for the former.
        shrink: one line for the coverage table: what `shrink` does with
            the layer's channels.
        weights_in_sublayer: whether the layer's weights belong to its one
            sub-layer (an RNN layer's cell), which its own config describes.
        weighted: whether the layer has weights (the docs' table lists those first).
        note: what the docs' table says of the layer's kernels, if not `kernels`.
        sublayer_constraint: the config key that holds the constraint of the
            kernels of the layer's sub-layers, which the layer builds from it
            (`MultiHeadAttention`'s `kernel_constraint`), or `None`.
        quantized_kernel: the name of the kernel that `model.quantize("int8")`
            or `("int4")` stores in the layout keras_reg reads (int8 as the
            float kernel's shape; int4 two values a byte along the last axis,
            with a zero point per sub-channel group), or `None` where the
            layer's quantized layout is unknown: its integer kernels are then
            not counted. Set for Keras' Dense, EinsumDense and Embedding.
    """

    kernels = None
    prunable = None
    opens_space = False
    weights_in_sublayer = False
    weighted = True
    note = None
    sublayer_constraint = None
    quantized_kernel = None
    shrink = "kept whole: its channel semantics are unknown to shrink"

    # --- weights -------------------------------------------------------------------

    def kernel_names(self, layer):
        """The names of `layer`'s kernels."""
        return CONVENTIONAL_KERNELS if self.kernels is None else tuple(self.kernels)

    def prunable_names(self, layer):
        """The names of the kernels `prune_low_magnitude` prunes."""
        if self.prunable is not None:
            return tuple(self.prunable)
        return tuple(n for n in self.kernel_names(layer) if n != "recurrent_kernel")

    def regularizer_slot(self, layer, name):
        """The attribute of `layer` that holds weight `name`'s regularizer, or `None`.

        Keras names it after the weight (`kernel_regularizer`,
        `gamma_regularizer`), or after its first word for `depthwise_kernel`,
        `pointwise_kernel` and `recurrent_kernel` (`depthwise_regularizer`).
        """
        return self._slot(layer, name, "regularizer")

    def constraint_slot(self, layer, name):
        """The attribute of `layer` that holds weight `name`'s constraint, or `None`."""
        return self._slot(layer, name, "constraint")

    def _slot(self, layer, name, kind):
        for slot in (f"{name}_{kind}", f"{name.removesuffix('_kernel')}_{kind}"):
            if hasattr(layer, slot):
                return slot
        return None

    def input_axis(self, layer, name):
        """The axis of kernel `name` that reads the layer's inputs, or `None` if none does.

        TFMOT's m-by-n and block patterns follow it (`sparsity_m_by_n` runs
        along it); the default is -2, a kernel laid out `(..., inputs, outputs)`.
        """
        return -2

    def stored_weights(self, config):
        """The names of the weights a `.keras` file stores for a layer of this config.

        In storage order, from the layer's config (a dict) alone; `None` where
        unsure. The file reader then names weights by position.
        """
        return None

    # --- channels ------------------------------------------------------------------

    def flow(self, graph, call):
        """Follows the call's channels in `graph` (a `ChannelGraph`).

        Returns `None` when done, or the reason the layer's channels must all
        stay (the plan lists it under `kept_whole`).
        """
        kind = "layer" if hasattr(call.op, "weights") else "operation"
        return f"its channel semantics are unknown to shrink ({type(call.op).__name__} {kind})"

    def cut(self, plan, layer):
        """The layer's `Cut` for the channels that stay, or `None` if nothing changes."""
        return None

    # --- slices (structured pruning: which weights belong to a channel) ----------------
    # Each returns `[(weight name, axis, index)]`, `index` an int array of shape (n, k):
    # row i lists the k indices along `axis` that belong to the i-th channel asked for.
    # A rule without them keeps the channels it touches out of `prune_channels`' groups.

    input_slices = None  # (layer, rows (n, k)) -> slices reading those input rows
    output_slices = None  # (layer, units (n,)) -> slices writing those output units
    channel_slices = None  # (layer, channels (n,)) -> a per-channel layer's slices

    def macs(self, layer, call, weights):
        """Multiply-accumulates per sample of one call, with `weights` (name -> array).

        `None` where unknown (a spatial size is unknown, an embedding lookup).
        """
        return None
