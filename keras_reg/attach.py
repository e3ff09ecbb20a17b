"""`apply_regularizer`: add a penalty to the layers of a model that already exists."""

import keras

from keras_reg import _keras_private as _private
from keras_reg import rules
from keras_reg._steps import retrace
from keras_reg._validation import check_built_model

__all__ = ["apply_regularizer"]


def apply_regularizer(model, regularizer, layers=None, weights="kernels", overwrite=False):
    """Attaches `regularizer` to weights of an already built model.

    The penalty joins `model.losses` at once. The layer's config records it
    (`layer.kernel_regularizer`, `depthwise_regularizer`, ...), so
    `model.save()` / `load_model` and `keras.models.clone_model` keep it: this
    is checked for every weight before anything changes, and a weight whose
    penalty its layer's config would not keep is refused, by path, with the
    reason (for example a sub-layer that its parent builds in `__init__`, such
    as the query, key and value projections of a `MultiHeadAttention` asked for
    alone, or the layers of a subclassed model). `MultiHeadAttention` as a
    whole is supported: its own `kernel_regularizer` covers its projections.

    A weight that already has a regularizer is refused, by path, unless
    `overwrite=True`, which replaces it. Nothing changes when anything is
    refused. A compiled model's traced steps are reset, so the next `fit` or
    `evaluate` traces them again with the penalty: no recompile is needed.
    Nested functional and Sequential models are walked into. Each
    weight gets the same regularizer instance (one strength for all).

    Args:
        model: a built `keras.Model`.
        regularizer: a `keras.regularizers.Regularizer` instance (keras_reg's or
            Keras' own) or a Keras identifier such as `"l2"`.
        layers: which layers: `None` (all), a predicate `layer -> bool`, or a
            list of layer names or layer instances, each of which the model
            must have. A weight is selected when its own layer or a layer
            holding it is selected.
        weights: `"kernels"` (kernels, embeddings, depthwise, pointwise and
            recurrent kernels), `"biases"`, `"all"` (every weight that has a
            regularizer slot in its layer, e.g. `gamma_regularizer`), or a list
            of weight names, such as `["gamma"]` for BatchNormalization's scales
            only (network slimming); each name must match a weight.
        overwrite: bool. If `False` (default), weights that already have a
            regularizer are refused; if `True`, their regularizer is replaced.

    Returns:
        The same model, changed in place (as `prune_low_magnitude` does): the
        weights that got the regularizer are those whose `regularizer` is it,
        e.g. `[v.path for v in model.weights if v.regularizer is reg]`.

    Raises:
        ValueError: for a bad argument, a layer name the model lacks, when no
            weight matches, or for the weights refused as above (the message
            lists them).

    Examples:
        A model built without penalties, e.g. one from `keras.applications` or
        `keras.saving.load_model`:

        >>> model = keras.Sequential([
        ...     keras.Input((8,)),
        ...     keras.layers.Dense(4, name="hidden"),
        ...     keras.layers.Dense(1, name="out"),
        ... ], name="m")
        >>> model = keras_reg.apply_regularizer(model, keras_reg.L2(1e-4))  # every kernel
        >>> [v.path for v in model.weights if v.regularizer is not None]
        ['m/hidden/kernel', 'm/out/kernel']
        >>> model = keras_reg.apply_regularizer(  # replaces L2 on that one layer
        ...     model, keras_reg.L1(1e-5), layers=["hidden"], overwrite=True)
        >>> model.get_layer("hidden").kernel_regularizer
        L1(l1=1e-05)
    """
    check_built_model(model, "apply_regularizer")
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
    names = None
    if isinstance(weights, (list, tuple)):
        names = list(weights)
        if not names or not all(isinstance(n, str) and n for n in names):
            names = None
    if names is None and weights not in ("kernels", "biases", "all"):
        raise ValueError(
            "The 'weights' argument of apply_regularizer must be one of 'kernels', 'biases', "
            "'all', or a non-empty list of weight names such as ['gamma']. "
            f"Received: weights={weights!r}"
        )
    if not isinstance(overwrite, bool):
        raise ValueError(
            "The 'overwrite' argument of apply_regularizer must be a bool (True or False). "
            f"Received: overwrite={overwrite!r}"
        )
    select = layer_filter(layers, model, "apply_regularizer")
    plan = _plan(model, select, weights)
    if names is not None:
        found = {rules.weight_name(v) for _, _, v, _, _ in plan}
        missing = [n for n in names if n not in found]
        if missing:
            named = sorted({rules.weight_name(v) for _, _, v, _, _ in _plan(model, select, "all")})
            raise ValueError(
                f"apply_regularizer found no weight named {missing} with a regularizer slot in "
                f"the selected layers of model {model.name!r} (weights={weights!r}). Theirs are "
                f"named {named}. Nothing was changed."
            )
    if not plan:
        raise ValueError(
            f"apply_regularizer found no weights to regularize in model {model.name!r} with "
            f"weights={weights!r} and layers={layers!r}: the filter matches no layer that has "
            "such weights with a regularizer slot (e.g. kernel_regularizer)."
        )
    taken = [v.path for _, _, v, _, _ in plan if v.regularizer is not None]
    if taken and not overwrite:
        raise ValueError(
            f"apply_regularizer would replace the regularizer these weights already have: "
            f"{taken}. Pass overwrite=True to replace it, or leave their layers out with "
            "layers=..."
        )
    refused = _apply_checked(plan, regularizer)
    if refused:
        raise ValueError(
            "apply_regularizer cannot attach a penalty that save/load_model and clone_model "
            "would keep to these weights, so it changed nothing: "
            + "; ".join(f"{path}: {why}" for path, why in refused)
            + ". Leave their layers out with layers=..."
        )
    retrace(model)  # traced steps do not see the new penalty
    return model


def graph_layers(model):
    """`(layer, container)` for every layer that is not a model, in model order.

    `container` is `None` when the layer's config is saved (the layer sits in
    a functional or Sequential model, possibly nested), else the subclassed
    model that rebuilds it in its own `__init__`.
    """
    out, stack = [], [(model, None)]
    while stack:
        current, container = stack.pop()
        graph = isinstance(current, keras.Sequential) or _private.is_functional(current)
        inner = container if container is not None or graph else current
        children = []
        for layer in current.layers:
            if isinstance(layer, keras.Model):
                children.append((layer, inner))
            else:
                out.append((layer, inner))
        stack.extend(reversed(children))
    return out


def _plan(model, select, weights):
    """`(top, owner, variable, slot, container)` for every weight to regularize."""
    plan = []
    for top, container in graph_layers(model):
        whole = select(top)
        for layer in _private.flatten_layers(top, include_self=True):
            if (isinstance(layer, keras.Model) and layer is not top) or not (
                whole or select(layer)
            ):
                continue
            rule = rules.rule_for(layer)
            for variable in _private.own_variables(layer):
                name = rules.weight_name(variable)
                wanted = (
                    (isinstance(weights, (list, tuple)) and name in weights)
                    or weights == "all"
                    or (weights == "kernels" and name in rule.kernel_names(layer))
                    or (weights == "biases" and name == "bias")
                )
                slot = rule.regularizer_slot(layer, name) if wanted else None
                if slot is not None:
                    plan.append((top, layer, variable, slot, container))
    return plan


def _apply_checked(plan, regularizer):
    """Attaches, checks what save/load and clone_model keep, and undoes all if anything is lost.

    Returns the `(path, reason)` of refused weights (empty when all is kept).
    """
    undo = []

    def set_attr(obj, name, value):
        undo.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    tops = {}
    for top, owner, variable, slot, container in plan:
        set_attr(owner, slot, regularizer)
        set_attr(variable, "regularizer", regularizer)
        parent_slot = None if owner is top else _private.regularizer_attribute(top, slot)
        # A property (LSTM.kernel_regularizer) reads its cell's slot: nothing to set.
        if parent_slot is not None and not isinstance(
            getattr(type(top), parent_slot, None), property
        ):
            # A layer that builds its sub-layers from its own config
            # (MultiHeadAttention): its slot is what its config saves. The
            # check below tells whether it covers exactly the planned weights.
            set_attr(top, parent_slot, regularizer)
        tops.setdefault(id(top), (top, container))
    refused = []
    for top, container in tops.values():
        if container is not None:
            why = (
                f"its layer {top.name!r} belongs to the subclassed model {container.name!r}, "
                "which rebuilds its layers in its own __init__ on load"
            )
            refused += [(v.path, why) for t, _, v, _, _ in plan if t is top]
            continue
        refused += _lost_on_rebuild(top, plan)
    if refused:
        for obj, name, value in reversed(undo):
            setattr(obj, name, value)
    return refused


def _config_of(regularizer):
    return None if regularizer is None else keras.saving.serialize_keras_object(regularizer)


def _lost_on_rebuild(top, plan):
    """Rebuilds `top` from its config, as load_model and clone_model do; lists what differs."""
    wanted = [(v.path, _config_of(v.regularizer)) for v in top.weights]
    planned = {id(v) for t, _, v, _, _ in plan if t is top}
    if all(owner is top for t, owner, _, _, _ in plan if t is top):
        # The weights are the layer's own: its config must hold each slot.
        config = top.get_config()
        lost = [
            (v.path, f"the config of layer {top.name!r} does not record {slot!r}")
            for t, _, v, slot, _ in plan
            if t is top and _config_of(_deserialize(config.get(slot))) != _config_of(v.regularizer)
        ]
        return lost
    try:
        config = keras.layers.serialize(top)
        config["build_config"] = top.get_build_config()  # built on deserializing, as on load
        clone = keras.layers.deserialize(config)
    except Exception as exc:
        detail = " ".join(str(exc).split())
        detail = detail if len(detail) <= 200 else detail[:200] + "..."
        why = f"layer {top.name!r} cannot be rebuilt from its config to check it ({detail})"
        return [(v.path, why) for v in top.weights if id(v) in planned]
    got = [_config_of(getattr(v, "regularizer", None)) for v in clone.weights]
    if len(got) != len(wanted):
        why = f"layer {top.name!r} rebuilt from its config has other weights"
        return [(v.path, why) for v in top.weights if id(v) in planned]
    lost = []
    for (path, config), kept in zip(wanted, got, strict=True):
        if config != kept:
            why = (
                f"layer {top.name!r} rebuilt from its config (as load_model and clone_model do) "
                f"would give it {_name_of(kept)}, not {_name_of(config)}"
            )
            lost.append((path, why))
    return lost


def _name_of(config):
    return "no regularizer" if config is None else f"the regularizer {config.get('class_name')}"


def _deserialize(config):
    if config is None or isinstance(config, keras.regularizers.Regularizer):
        return config
    try:
        return keras.regularizers.deserialize(config)
    except Exception:
        return None


def layer_filter(layers, model, owner):
    """`layers` (None, a predicate, or names / layers of `model`) as a predicate on layers.

    A name or layer the model lacks is an error naming it: a typo must not
    silently select nothing. Shared by `apply_regularizer` and
    `prune_low_magnitude`, which take the same `layers` argument.
    """
    if layers is None:
        return lambda layer: True
    if callable(layers):
        return layers
    if isinstance(layers, (list, tuple, set)):
        names = {item for item in layers if isinstance(item, str)}
        ids = {id(item) for item in layers if isinstance(item, keras.layers.Layer)}
        if len(names) + len(ids) == len(layers):
            present = _private.flatten_layers(model, include_self=False)
            missing = sorted(names - {layer.name for layer in present})
            missing += [
                item.name
                for item in layers
                if isinstance(item, keras.layers.Layer) and all(item is not p for p in present)
            ]
            if missing:
                raise ValueError(
                    f"The 'layers' argument of {owner} names layers that model "
                    f"{model.name!r} does not have: {missing}. Its layers are: "
                    f"{[layer.name for layer in present][:30]}"
                )
            return lambda layer: layer.name in names or id(layer) in ids
    raise ValueError(
        f"The 'layers' argument of {owner} must be None, a callable layer -> bool, "
        f"or a list of layer names or layers. Received: layers={layers!r}"
    )
