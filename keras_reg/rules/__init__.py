"""Layer rules: one object per Keras layer class, the one place keras_reg keeps layer knowledge.

`apply_regularizer`, `prune_low_magnitude`, `shrink` / `plan_shrink` and the
`.keras` file reader all ask `rule_for(layer)` (or `rule_for_config`) what a
layer's kernels are, how its channels flow, how to cut it and what it costs.
A user's layer gets the same treatment as Keras' own once it has a rule:

>>> class Projection(keras.layers.Layer):  # x @ w, along the last axis
...     def __init__(self, units, kernel_regularizer=None, **kwargs):
...         super().__init__(**kwargs)
...         self.units = units
...         self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
...     def build(self, input_shape):
...         self.kernel = self.add_weight(
...             (input_shape[-1], self.units), regularizer=self.kernel_regularizer, name="kernel")
...     def call(self, x):
...         return x @ self.kernel
>>> keras_reg.register_layer_rule(Projection, keras_reg.rules.DenseLike(bias=None))
>>> keras_reg.rules.rule_for(Projection(4)).kernel_names(None)
('kernel',)

The rules match a layer's exact class: a subclass of `Dense` may compute
something else, so it needs its own rule. This package imports without
Keras (the file reader runs without it); Keras' classes are looked up by name
on first use.
"""

import inspect

from keras_reg.rules.base import CONVENTIONAL_KERNELS, Cut, LayerRule, weight_name  # noqa: F401
from keras_reg.rules.channelwise import (
    ActivationRule,
    BatchNormalizationRule,
    FlattenRule,
    GroupNormalizationRule,
    KeptWhole,
    PaddingRule,
    PassThrough,
    PoolingRule,
    RescalingRule,
    ReshapeRule,
    _layer_norm_weights,
)
from keras_reg.rules.joins import ELEMENTWISE_OPS, JOINS, ConcatenateRule, ElementwiseOpRule
from keras_reg.rules.kernels import (
    ConvLike,
    ConvTransposeLike,
    DenseLike,
    DepthwiseLike,
    EinsumDenseRule,
    EmbeddingRule,
    SeparableConvLike,
)
from keras_reg.rules.recurrent import RecurrentRule

__all__ = [
    "ConvLike",
    "ConvTransposeLike",
    "Cut",
    "DenseLike",
    "DepthwiseLike",
    "KeptWhole",
    "LayerRule",
    "PassThrough",
    "register_layer_rule",
    "rule_for",
    "rule_for_config",
    "weight_name",
]

PREPROCESSING = "a preprocessing layer (no channels to remove)"
_PASS = PassThrough()
_POOL = PoolingRule()
_PAD = PaddingRule()
_ACTIVATION = ActivationRule()
_RECURRENT = RecurrentRule(gates=1, candidate=0)
_MIXES = "it mixes channels in a way no exact cut follows"
_ADAPTIVE = "its output size does not follow its input's: not yet followed"
_CONV_RNN = "convolutional recurrent units are not followed yet"
_CELL = "a cell outside its RNN layer"
_CELL_KERNELS = "its cell's `kernel`, `recurrent_kernel`"
_RNN_KERNELS = ("kernel", "recurrent_kernel")
_WRAPS = "it wraps another layer"
_WRAPPED = "the wrapped layer's"


def _quantizable(rule, kernel):
    """`rule`, for a layer whose `model.quantize` layout of `kernel` is known (Keras 3.14, 3.15).

    keras/src/layers/core/dense.py, einsum_dense.py and embedding.py
    (`_int8_build`, `_int4_build`); see `keras_reg._quantized`.
    """
    rule.quantized_kernel = kernel
    return rule


# Keras layer class name -> its rule. Every class in `keras.layers` is here (a test checks it),
# so the coverage table in the docs is complete; the classes shrink cannot follow say why.
BUILTIN = {
    # Layers that read channels through a kernel.
    "Dense": _quantizable(DenseLike(), "kernel"),
    "Conv1D": ConvLike(),
    "Conv2D": ConvLike(),
    "Conv3D": ConvLike(),
    "Conv1DTranspose": ConvTransposeLike(),
    "Conv2DTranspose": ConvTransposeLike(),
    "Conv3DTranspose": ConvTransposeLike(),
    "SeparableConv1D": SeparableConvLike(),
    "SeparableConv2D": SeparableConvLike(),
    "DepthwiseConv1D": DepthwiseLike(),
    "DepthwiseConv2D": DepthwiseLike(),
    "EinsumDense": _quantizable(EinsumDenseRule(), "kernel"),
    "Embedding": _quantizable(EmbeddingRule(), "embeddings"),
    "SimpleRNN": RecurrentRule(gates=1, candidate=0),
    "GRU": RecurrentRule(gates=3, candidate=2),
    "LSTM": RecurrentRule(gates=4, candidate=2),
    # Normalization.
    "BatchNormalization": BatchNormalizationRule(),
    "GroupNormalization": GroupNormalizationRule(),
    "LayerNormalization": KeptWhole(
        "its statistics over the channels change with their number",
        kernels=(),
        stored=_layer_norm_weights,
    ),
    "RMSNormalization": KeptWhole(
        "its statistics over the channels change with their number", kernels=()
    ),
    # Channel by channel, or channels moved without mixing.
    "Activation": _ACTIVATION,
    "ReLU": _ACTIVATION,
    "LeakyReLU": _ACTIVATION,
    "ELU": _ACTIVATION,
    "Rescaling": RescalingRule(),
    "Dropout": _PASS,
    "SpatialDropout1D": _PASS,
    "SpatialDropout2D": _PASS,
    "SpatialDropout3D": _PASS,
    "GaussianNoise": _PASS,
    "GaussianDropout": _PASS,
    "AlphaDropout": _PASS,
    "ActivityRegularization": _PASS,
    "Identity": _PASS,
    "GlobalAveragePooling1D": _PASS,
    "GlobalAveragePooling2D": _PASS,
    "GlobalAveragePooling3D": _PASS,
    "GlobalMaxPooling1D": _PASS,
    "GlobalMaxPooling2D": _PASS,
    "GlobalMaxPooling3D": _PASS,
    "UpSampling1D": _PASS,
    "UpSampling2D": _PASS,
    "UpSampling3D": _PASS,
    "Cropping1D": _PASS,
    "Cropping2D": _PASS,
    "Cropping3D": _PASS,
    "MaxPooling1D": _POOL,
    "MaxPooling2D": _POOL,
    "MaxPooling3D": _POOL,
    "AveragePooling1D": _POOL,
    "AveragePooling2D": _POOL,
    "AveragePooling3D": _POOL,
    "ZeroPadding1D": _PAD,
    "ZeroPadding2D": _PAD,
    "ZeroPadding3D": _PAD,
    "Flatten": FlattenRule(),
    "Reshape": ReshapeRule(),
    # Joins.
    **JOINS,
    "Concatenate": ConcatenateRule(),
    # Kept whole, with why.
    "MultiHeadAttention": KeptWhole(
        "its heads' projections are not followed yet",
        kernels=(),
        note="its `query`, `key`, `value`, `output` EinsumDense sub-layers' `kernel`",
        sublayer_constraint="kernel_constraint",
    ),
    "GroupedQueryAttention": KeptWhole(
        "its heads' projections are not followed yet",
        kernels=(),
        note="its `query`, `key`, `value`, `output` EinsumDense sub-layers' `kernel`",
        sublayer_constraint="kernel_constraint",
    ),
    "Attention": KeptWhole(_MIXES, kernels=(), note="none (a scalar `scale` at most)"),
    "AdditiveAttention": KeptWhole(_MIXES, kernels=(), note="none (a `scale` vector)"),
    "Dot": KeptWhole(_MIXES, kernels=(), weighted=False),
    "Softmax": KeptWhole("softmax mixes the channels", kernels=(), weighted=False),
    "PReLU": KeptWhole("its per-position slopes are not followed yet", kernels=()),
    "ConvLSTM1D": KeptWhole(_CONV_RNN, kernels=(), note=_CELL_KERNELS),
    "ConvLSTM2D": KeptWhole(_CONV_RNN, kernels=(), note=_CELL_KERNELS),
    "ConvLSTM3D": KeptWhole(_CONV_RNN, kernels=(), note=_CELL_KERNELS),
    "RNN": KeptWhole(
        "a generic RNN runs any cell: its units are not known", kernels=(), note="its cell's"
    ),
    "LSTMCell": KeptWhole(
        _CELL, kernels=_RNN_KERNELS, stored=_RECURRENT.stored_weights, prunable=_RNN_KERNELS
    ),
    "GRUCell": KeptWhole(
        _CELL, kernels=_RNN_KERNELS, stored=_RECURRENT.stored_weights, prunable=_RNN_KERNELS
    ),
    "SimpleRNNCell": KeptWhole(
        _CELL, kernels=_RNN_KERNELS, stored=_RECURRENT.stored_weights, prunable=_RNN_KERNELS
    ),
    "StackedRNNCells": KeptWhole("a stack of cells", kernels=(), note="its cells'"),
    "Bidirectional": KeptWhole(_WRAPS, kernels=(), note=_WRAPPED),
    "TimeDistributed": KeptWhole(_WRAPS, kernels=(), note=_WRAPPED),
    "Wrapper": KeptWhole(_WRAPS, kernels=(), note=_WRAPPED),
    "SpectralNormalization": KeptWhole(_WRAPS, kernels=(), note=_WRAPPED),
    "ReversibleEmbedding": KeptWhole(
        "its table is also read as an output projection", kernels=("embeddings",)
    ),
    "Lambda": KeptWhole("it runs arbitrary code", kernels=(), weighted=False),
    "Layer": KeptWhole("the base class runs arbitrary code", note="by Keras' names"),
    "InputLayer": KeptWhole("a model input never changes", kernels=(), weighted=False),
    "TFSMLayer": KeptWhole("a SavedModel is opaque", kernels=(), note="none (opaque)"),
    "JaxLayer": KeptWhole("a JAX function is opaque", kernels=(), note="none (opaque)"),
    "FlaxLayer": KeptWhole("a Flax module is opaque", kernels=(), note="none (opaque)"),
    "TorchModuleWrapper": KeptWhole("a torch module is opaque", kernels=(), note="none (opaque)"),
    "Pipeline": KeptWhole("it runs a sequence of preprocessing layers", weighted=False),
    "Masking": KeptWhole("its mask reads every channel", kernels=(), weighted=False),
    "Permute": KeptWhole("it may move the channels off the last axis", weighted=False),
    "RepeatVector": KeptWhole("it adds an axis before the channels", weighted=False),
    "CategoryEncoding": KeptWhole("its outputs are categories, not channels", weighted=False),
    "UnitNormalization": KeptWhole(
        "its norm over the channels changes with their number", kernels=(), weighted=False
    ),
    "Normalization": KeptWhole(
        "its mean and variance are per channel, not yet followed",
        kernels=(),
        note="none (non-trainable mean and variance)",
    ),
    "AdaptiveAveragePooling1D": KeptWhole(_ADAPTIVE, kernels=(), weighted=False),
    "AdaptiveAveragePooling2D": KeptWhole(_ADAPTIVE, kernels=(), weighted=False),
    "AdaptiveAveragePooling3D": KeptWhole(_ADAPTIVE, kernels=(), weighted=False),
    "AdaptiveMaxPooling1D": KeptWhole(_ADAPTIVE, kernels=(), weighted=False),
    "AdaptiveMaxPooling2D": KeptWhole(_ADAPTIVE, kernels=(), weighted=False),
    "AdaptiveMaxPooling3D": KeptWhole(_ADAPTIVE, kernels=(), weighted=False),
}

# Preprocessing and augmentation layers: no weights, and they read whole images or strings.
for _name in (
    "AugMix", "AutoContrast", "CenterCrop", "ContrastLimitedAdaptiveHistogramEqualization",
    "CutMix", "Discretization", "Equalization", "HashedCrossing", "Hashing", "IntegerLookup",
    "MaxNumBoundingBoxes", "MelSpectrogram", "MixUp", "RandAugment", "RandomBrightness",
    "RandomColorDegeneration", "RandomColorJitter", "RandomContrast", "RandomCrop",
    "RandomElasticTransform", "RandomErasing", "RandomFlip", "RandomGaussianBlur",
    "RandomGrayscale", "RandomHue", "RandomInvert", "RandomPerspective", "RandomPosterization",
    "RandomRotation", "RandomSaturation", "RandomSharpness", "RandomShear", "RandomTranslation",
    "RandomZoom", "Resizing", "STFTSpectrogram", "Solarization", "StringLookup",
    "TextVectorization",
):  # fmt: skip
    BUILTIN[_name] = KeptWhole(PREPROCESSING, kernels=(), weighted=False)
del _name

_USER = {}  # layer class -> rule, from register_layer_rule
_DEFAULT = LayerRule()
_OP = ElementwiseOpRule()


def register_layer_rule(layer_class, rule):
    """Makes `rule` the rule for `layer_class` (its exact class, not its subclasses).

    Once registered, `apply_regularizer` and `prune_low_magnitude` find the
    layer's kernels through the rule, and `shrink` cuts the layer instead of
    keeping it whole. A rule registered for one of Keras' own classes replaces
    the built-in one.

    Args:
        layer_class: a subclass of `keras.layers.Layer`.
        rule: a `keras_reg.LayerRule` instance, e.g. `keras_reg.rules.DenseLike()`.

    Raises:
        ValueError: if `layer_class` is not a layer class or `rule` not a `LayerRule`.
    """
    import keras

    if not (inspect.isclass(layer_class) and issubclass(layer_class, keras.layers.Layer)):
        raise ValueError(
            "The 'layer_class' argument of register_layer_rule must be a subclass of "
            f"keras.layers.Layer. Received: layer_class={layer_class!r}"
        )
    if not isinstance(rule, LayerRule):
        raise ValueError(
            "The 'rule' argument of register_layer_rule must be a keras_reg.LayerRule instance, "
            f"such as keras_reg.rules.DenseLike(). Received: rule={rule!r}"
        )
    _USER[layer_class] = rule


def _keras_name(cls):
    """The `keras.layers` name of `cls` if it is one of Keras' own layer classes, else None."""
    import keras

    name = cls.__name__
    from keras_reg import _keras_private

    own = getattr(keras.layers, name, None) is cls or _keras_private.is_keras_layer_class(cls)
    return name if own else None


def rule_for(op):
    """The rule for a layer (by its exact class) or a `keras.ops` operation node."""
    cls = type(op)
    if cls in _USER:
        return _USER[cls]
    name = _keras_name(cls)
    if name in BUILTIN:
        return BUILTIN[name]
    if name is None:
        import keras

        from keras_reg import _keras_private

        if not isinstance(op, keras.layers.Layer):
            if _keras_private.keras_op_name(op) in ELEMENTWISE_OPS:
                return _OP
    return _DEFAULT


def rule_for_config(entry):
    """The built-in rule for a layer's entry in a saved `config.json`, or None.

    A custom class (registered name, or a module outside Keras) gets None: its
    weights may be anything. Needs no Keras.
    """
    if not isinstance(entry, dict):
        return None
    module = entry.get("module")
    if entry.get("registered_name") is not None or not str(module).startswith("keras"):
        return None
    return BUILTIN.get(entry.get("class_name"))
