"""`apply_regularizer`: add a penalty to the layers of a model that already exists."""

import keras

__all__ = ["apply_regularizer"]

_KERNELS = ("kernel", "embeddings", "depthwise_kernel", "pointwise_kernel")


def _weight_name(variable):
    return variable.path.rsplit("/", 1)[-1]


def apply_regularizer(model, regularizer, layers=None, weights="kernels"):
    """Attaches `regularizer` to weights of an already built model.

    The penalty joins `model.losses` at once. The layer's config records it
    (`layer.kernel_regularizer`, ...), so `model.save()` / `load_model` keep it.
    A compiled model's train and test functions are reset, so the next `fit` or
    `evaluate` traces them again with the penalty: no recompile is needed.
    Nested models are walked into. Each weight gets the same regularizer
    instance (one strength for all).

    Args:
        model: a built `keras.Model`.
        regularizer: a `keras.regularizers.Regularizer` instance (keras_reg's or
            Keras' own) or a Keras identifier such as `"l2"`.
        layers: which layers: `None` (all), a predicate `layer -> bool`, or a
            list of layer names or layer instances.
        weights: `"kernels"` (kernels and embeddings), `"biases"`, or `"all"`
            (every weight `w` of a layer that has a `w_regularizer` slot).

    Returns:
        The list of paths of the weights that got the regularizer.

    Example:

    >>> model = keras.saving.load_model("pretrained.keras")
    >>> keras_reg.apply_regularizer(model, keras_reg.L2(1e-4))
    >>> keras_reg.apply_regularizer(
    ...     model, keras_reg.L1(1e-5), layers=lambda l: isinstance(l, keras.layers.Dense))
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            "The 'model' argument of apply_regularizer must be a keras.Model. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            "The 'model' argument of apply_regularizer must be built (call it on data or "
            f"give it an Input). Received: the unbuilt model {model.name!r}"
        )
    given = regularizer
    if isinstance(regularizer, str):
        try:
            regularizer = keras.regularizers.get(regularizer)
        except ValueError:
            regularizer = None
    if not isinstance(regularizer, keras.regularizers.Regularizer):
        raise ValueError(
            "The 'regularizer' argument of apply_regularizer must be a keras Regularizer "
            "instance, such as keras_reg.L2(1e-4), or the name of one of Keras' own "
            f"('l1', 'l2', 'l1_l2'). Received: regularizer={given!r}"
        )
    if weights not in ("kernels", "biases", "all"):
        raise ValueError(
            "The 'weights' argument of apply_regularizer must be one of 'kernels', 'biases', "
            f"'all'. Received: weights={weights!r}"
        )
    select = _layer_filter(layers)
    applied = []
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.Model) or not select(layer):
            continue
        for variable in layer._trainable_variables + layer._non_trainable_variables:
            name = _weight_name(variable)
            slot = f"{name}_regularizer"
            wanted = (
                weights == "all"
                or (weights == "kernels" and name in _KERNELS)
                or (weights == "biases" and name == "bias")
            )
            if wanted and hasattr(layer, slot):
                setattr(layer, slot, regularizer)
                variable.regularizer = regularizer
                applied.append(variable.path)
    if not applied:
        raise ValueError(
            f"apply_regularizer found no {weights} to regularize in model {model.name!r} with "
            f"layers={layers!r}: the filter matches no layer that has such weights."
        )
    # Traced train/test steps do not see the new penalty: have Keras trace them again.
    model.train_function = model.test_function = None
    return applied


def _layer_filter(layers):
    if layers is None:
        return lambda layer: True
    if callable(layers):
        return layers
    if isinstance(layers, (list, tuple, set)):
        names = {item for item in layers if isinstance(item, str)}
        ids = {id(item) for item in layers if isinstance(item, keras.layers.Layer)}
        if len(names) + len(ids) == len(layers):
            return lambda layer: layer.name in names or id(layer) in ids
    raise ValueError(
        "The 'layers' argument of apply_regularizer must be None, a callable layer -> bool, "
        f"or a list of layer names or layers. Received: layers={layers!r}"
    )
