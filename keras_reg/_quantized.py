"""Kernels that a layer froze itself: quantized by Keras, or under LoRA (private).

After `model.quantize("int8")` or `("int4")`, a Dense, EinsumDense or
Embedding layer's kernel is a non-trainable int8 variable (keras/src/layers/
core/dense.py, `_int8_build`, `_int4_build`); after `layer.enable_lora(r)` its
float kernel is frozen and the LoRA factors train. Both are still the layer's
kernel, so `track="kernels"` counts them (see `keras_reg._sparsity`).

An int8 kernel is counted as stored: AbsMax quantization has no zero point,
so a stored 0 is a weight of exactly 0. An int4 kernel is stored two values a
byte along its last axis; it is counted unpacked, as `(rows, columns)`, and,
with sub-channel groups (Keras' default `block_size=128`), minus its group's
zero point: `(q - zero) * scale` is exactly 0 where `q == zero`. These zeros
are exact whatever the threshold: the threshold is in weight units, and an
integer kernel's zeros are those its stored integers say. The `.keras` file
reader does the same in NumPy (`keras_reg._archive.quantized`).
"""

import keras
from keras import ops

from keras_reg import _keras_private as _private
from keras_reg import rules

INTEGER_MODES = ("int8", "int4")


def mode_of(layer):
    """`"int8"`, `"int4"`, `"float8"`, `"gptq"`, `"awq"`, or `None` for a float layer."""
    return getattr(layer, "quantization_mode", None)


def frozen_kernels(model):
    """`{id(variable): (layer, mode)}` for the kernels a layer froze itself.

    The int8 and int4 kernels of quantized layers whose layer rule knows
    their layout (`LayerRule.quantized_kernel`: Keras' Dense, EinsumDense and
    Embedding), and the float kernel under a layer's LoRA factors. A float8 kernel
    stays a trainable float kernel: `track="kernels"` selects it as any other.
    """
    found = {}
    for layer in _private.flatten_layers(model):
        mode = mode_of(layer)
        rule = rules.rule_for(layer)
        integer = mode in INTEGER_MODES and rule.quantized_kernel is not None
        if not (integer or getattr(layer, "lora_enabled", False)):
            continue
        names = (rule.quantized_kernel,) if integer else rule.kernel_names(layer)
        for variable in _private.own_variables(layer):
            if rules.weight_name(variable) in names and len(variable.shape) >= 2:
                found[id(variable)] = (layer, mode if integer else None)
    return found


def counted_value(variable, frozen):
    """What the zero counter reads for `variable`: its value, an int4 kernel unpacked.

    `frozen` is `frozen_kernels(model)`. Returns `(value, exact)`: `exact` is
    `True` for an integer kernel, whose zeros are counted exactly.
    """
    layer, mode = frozen.get(id(variable), (None, None))
    if mode == "int8":
        return variable.value, True
    if mode != "int4":
        return variable.value, False
    name = rules.weight_name(variable)
    embedding = name == "embeddings"  # its int4 values are packed along the output axis
    if embedding:
        columns = layer.output_dim
    else:
        columns = int(getattr(layer, f"{name}_scale").shape[-1])
    q = ops.cast(keras.quantizers.unpack_int4(variable.value, columns, axis=-1), "int32")
    zero = getattr(layer, f"{name}_zero", None)
    if zero is not None:
        groups = ops.cast(layer.g_idx, "int32")
        zero = ops.take(ops.cast(zero, "int32"), groups, axis=1 if embedding else 0)
        q = ops.subtract(q, zero)
    return q, True
