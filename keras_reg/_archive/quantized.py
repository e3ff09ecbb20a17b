"""The weights of layers quantized by Keras (`model.quantize`), as a `.keras` file stores them.

Private, NumPy only (the file reader imports no Keras). Keras 3.15's Dense,
EinsumDense and Embedding store, per quantization mode, the weights their
`variable_serialization_spec` lists (keras/src/layers/core/dense.py,
einsum_dense.py, embedding.py):

- `int8`: the kernel as int8 of the float kernel's shape, then its scale
  (AbsMax, no zero point: a stored 0 dequantizes to exactly 0).
- `int4`: the kernel 2-D as `(rows, columns)` (an EinsumDense kernel
  flattened: reduced axes into rows), two signed 4-bit values per int8 byte
  along the last axis (low nibble first, a padding nibble when `columns` is
  odd), then its scale; with sub-channel groups (`int4/<block_size>`, Keras'
  default `block_size=128`) also an int8 zero point per group and `g_idx`,
  each row's (each column's, for Embedding) group. A stored value equal to its
  group's zero point dequantizes to exactly 0 ((q - zero) * scale).
- `float8`: the float kernel unchanged, then scales and amax histories; it is
  cast to float8 only inside `call`.

`gptq` and `awq` kernels (packed along another axis, in uint8) are not read.
"""

import numpy as np

from keras_reg.rules import rule_for_config

# Keras' quantized dtype policies (keras/src/dtype_policies/dtype_policy.py).
_POLICIES = (
    "QuantizedDTypePolicy",
    "QuantizedFloat8DTypePolicy",
    "Int4DTypePolicy",
    "GPTQDTypePolicy",
    "AWQDTypePolicy",
)

_FLOAT8_EXTRA = [
    "inputs_scale",
    "inputs_amax_history",
    "kernel_scale",
    "kernel_amax_history",
    "outputs_grad_scale",
    "outputs_grad_amax_history",
]


def layer_mode(layer):
    """`(mode, block_size)` of a layer's config entry: `("int4", 128)`, `("int8", None)`.

    `(None, None)` for a layer that is not quantized (or whose dtype policy is
    not one of Keras' quantized policies).
    """
    cfg = layer.get("config") if isinstance(layer, dict) else None
    dtype = cfg.get("dtype") if isinstance(cfg, dict) else None
    if not isinstance(dtype, dict):
        return None, None
    name = dtype.get("class_name")
    inner = dtype.get("config")
    if name not in _POLICIES:
        return None, None
    mode = inner.get("mode") if isinstance(inner, dict) else None
    if not isinstance(mode, str):
        return "unknown", None
    base, _, rest = mode.partition("/")
    block_size = None
    if base == "int4" and rest:
        try:
            block_size = int(rest)
        except ValueError:
            return "unknown", None
        block_size = block_size if block_size > 0 else None
    return base, block_size


def stored_names(layer, names, mode, block_size):
    """The names of a quantized layer's stored weights, in order, or `None` where unsure.

    Args:
        layer: the layer's config entry (a dict with `class_name`).
        names: the names its layer rule gives the unquantized layer's weights
            (`["kernel", "bias"]`).
        mode, block_size: from `layer_mode`.
    """
    rule = rule_for_config(layer)  # its `quantized_kernel`: the layout is known
    kernel = rule.quantized_kernel if rule is not None else None
    if kernel is None or not names or names[0] != kernel:
        return None
    rest = names[1:]
    if mode == "int8":
        return [kernel, *rest, f"{kernel}_scale"]
    if mode == "int4":
        groups = [f"{kernel}_zero", "g_idx"] if block_size else []
        return [kernel, *rest, f"{kernel}_scale", *groups]
    if mode == "float8" and kernel == "kernel":
        return [kernel, *rest, *_FLOAT8_EXTRA]
    return None


def unpack_int4(packed, columns):
    """Signed 4-bit values from int8 bytes packed along the last axis, as Keras packs them.

    `packed[..., j]` holds column `2j` in its low nibble and `2j + 1` in its
    high nibble; `columns` drops a padding nibble. Returns int8 in [-8, 7].
    """
    packed = np.asarray(packed).view(np.uint8)
    low = (packed & 0x0F).astype(np.int8)
    high = (packed >> 4).astype(np.int8)
    out = np.stack([low, high], axis=-1).reshape(*packed.shape[:-1], 2 * packed.shape[-1])
    out = ((out ^ 8) - 8).astype(np.int8)  # 0..15 -> -8..7
    return out[..., :columns]


class Int4Kernel:
    """Reads blocks of an int4 kernel as `q - zero point`: 0 exactly where the weight is 0.

    Args:
        ds: the packed dataset, `(rows, ceil(columns / 2))` int8.
        columns: the unpacked number of columns.
        zero: the zero points, or `None` (per-channel: no zero point).
            `(groups, columns)` for a Dense or EinsumDense kernel,
            `(rows, groups)` for an Embedding table.
        g_idx: each row's group (each column's, for an Embedding), or `None`.
        groups_on_columns: `True` for an Embedding table.
    """

    def __init__(self, ds, columns, zero=None, g_idx=None, groups_on_columns=False):
        self.ds, self.columns = ds, columns
        self.shape = (int(ds.shape[0]), columns)
        self.zero = None
        if zero is not None:
            zero = np.asarray(zero, dtype=np.int16)
            groups = np.asarray(g_idx)
            if groups.ndim != 1 or not np.all(np.isfinite(groups)):
                raise ValueError("its g_idx is not a vector of group numbers")
            groups = groups.astype(np.int64)
            axis = 1 if groups_on_columns else 0
            length = self.shape[1] if groups_on_columns else self.shape[0]
            other = self.shape[0] if groups_on_columns else self.shape[1]
            if (
                zero.ndim != 2
                or len(groups) != length
                or zero.shape[1 - axis] != other
                or groups.min(initial=0) < 0
                or groups.max(initial=0) >= zero.shape[axis]
            ):
                raise ValueError("its zero points and g_idx do not fit its kernel")
            # One zero point per row (per column for an Embedding), broadcast on read.
            self.zero = np.take(zero, groups, axis=axis)

    def read(self, index):
        """The block of `(rows, columns)` that `index` selects, as int16 `q - zero point`."""
        index = tuple(index)
        if index and index[0] is Ellipsis:
            index = (slice(None), *index[1:])
        rows = index[0] if index else slice(None)
        cols = index[1] if len(index) > 1 else slice(None)
        start, stop, _ = cols.indices(self.columns)
        packed = np.asarray(self.ds[rows, start // 2 : (stop + 1) // 2])
        values = unpack_int4(packed, 2 * packed.shape[-1])
        offset = start - 2 * (start // 2)
        values = values[..., offset : offset + stop - start].astype(np.int16)
        if self.zero is not None:
            values = values - self.zero[rows, start:stop]
        return values
