"""apply_regularizer on a model that already exists."""

import keras
import numpy as np
import pytest

import keras_reg
from helpers import numpy_penalty, to_float, to_numpy

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 8)).astype("float32")
Y = (X[:, :1] - 2 * X[:, 1:2]).astype("float32")


def pretrained():
    inner = keras.Sequential(
        [keras.layers.Dense(6, activation="tanh", name="inner_dense")], name="block"
    )
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(8, activation="relu", name="first")(inputs)
    hidden = inner(hidden)
    outputs = keras.layers.Dense(1, name="head")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(X, Y, epochs=2, verbose=0)  # trained first, without any penalty
    assert model.losses == []
    return model


def penalized(model, reg):
    """Paths of the weights whose regularizer is `reg`, in model order."""
    return [v.path for v in model.weights if v.regularizer is reg]


def kernels(model):
    return {
        layer.name: to_numpy(layer.kernel)
        for layer in model._flatten_layers(include_self=False)
        if hasattr(layer, "kernel")
    }


def test_penalty_present_at_once_and_training_shrinks_weights(tmp_path):
    model = pretrained()
    reg = keras_reg.L2(0.5)
    assert keras_reg.apply_regularizer(model, reg) is model  # in place, as pruning
    paths = penalized(model, reg)
    assert sorted(p.rsplit("/", 1)[-1] for p in paths) == ["kernel"] * 3
    assert any("inner_dense" in p for p in paths)  # nested model walked into
    expected = sum(numpy_penalty(reg, k) for k in kernels(model).values())
    np.testing.assert_allclose(to_float(sum(model.losses)), expected, rtol=1e-5)

    twin = keras.models.clone_model(pretrained())  # same architecture, no penalty
    twin.set_weights(model.get_weights())
    twin.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(X, Y, epochs=3, verbose=0)
    twin.fit(X, Y, epochs=3, verbose=0)
    norm = sum(np.square(k).sum() for k in kernels(model).values())
    twin_norm = sum(np.square(k).sum() for k in kernels(twin).values())
    assert norm < 0.8 * twin_norm

    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    for layer in loaded._flatten_layers(include_self=False):
        if hasattr(layer, "kernel"):
            assert layer.kernel_regularizer.get_config() == {"l2": 0.5}
    np.testing.assert_allclose(to_float(sum(loaded.losses)), to_float(sum(model.losses)), rtol=1e-6)


def test_filter_by_predicate_and_names_and_biases():
    model = pretrained()
    l1 = keras_reg.L1(1e-3)
    keras_reg.apply_regularizer(model, l1, layers=lambda layer: layer.name == "head")
    assert [p.rsplit("/", 2)[-2:] for p in penalized(model, l1)] == [["head", "kernel"]]
    keras_reg.apply_regularizer(model, "l2", layers=["first"], weights="biases")
    biases = [v.path for v in model.weights if isinstance(v.regularizer, keras.regularizers.L2)]
    assert [p.rsplit("/", 1)[-1] for p in biases] == ["bias"]
    assert isinstance(model.get_layer("first").bias_regularizer, keras.regularizers.L2)
    assert model.get_layer("first").kernel_regularizer is None


def test_compiled_model_next_evaluate_includes_penalty():
    model = pretrained()
    before = model.evaluate(X, Y, verbose=0)
    reg = keras_reg.L1(0.1)
    keras_reg.apply_regularizer(model, reg)
    penalty = sum(numpy_penalty(reg, k) for k in kernels(model).values())
    np.testing.assert_allclose(model.evaluate(X, Y, verbose=0), before + penalty, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(model=keras.layers.Dense(2)),
            "'model' argument of apply_regularizer must be a keras.Model",
        ),
        (dict(regularizer=0.01), "'regularizer' argument of apply_regularizer must be"),
        (dict(regularizer="no-such"), "'regularizer' argument of apply_regularizer must be"),
        (dict(layers=lambda layer: False), "filter matches no layer"),
        (dict(layers=["nope"]), r"does not have: \[.nope.\]"),
        (dict(layers=3), "'layers' argument of apply_regularizer must be"),
        (dict(weights="kernel"), "'weights' argument of apply_regularizer must be one of"),
        (dict(weights=[]), "'weights' argument of apply_regularizer must be one of"),
        (dict(weights=["kernel", 3]), "'weights' argument of apply_regularizer must be one of"),
        (dict(weights=["gamma"]), r"no weight named \['gamma'\].*named \['bias', 'kernel'\]"),
        (dict(weights=["kernel", "kernal"]), r"no weight named \['kernal'\]"),
    ],
)
def test_clear_errors(kwargs, message):
    args = dict(model=pretrained(), regularizer=keras_reg.L2(0.1))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        keras_reg.apply_regularizer(**args)


def conv_bn():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    outputs = keras.layers.Dense(1, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.get_layer("bn").gamma.assign(np.array([0.5, -1.0, 2.0, 0.25], "float32"))
    model.get_layer("bn").beta.assign(np.array([1.0, 1.0, -3.0, 0.0], "float32"))
    return model


def test_weight_names_select_one_slot_network_slimming(tmp_path):
    """`weights=["gamma"]`: an L1 on BatchNorm scales only, as `gamma_regularizer=` puts it."""
    model = conv_bn()
    reg = keras_reg.L1(0.03)
    keras_reg.apply_regularizer(
        model,
        reg,
        weights=["gamma"],
        layers=lambda layer: isinstance(layer, keras.layers.BatchNormalization),
    )
    assert penalized(model, reg) == [model.get_layer("bn").gamma.path]
    assert model.get_layer("bn").beta_regularizer is None
    assert model.get_layer("conv").kernel_regularizer is None
    want = 0.03 * np.abs([0.5, -1.0, 2.0, 0.25]).sum()
    assert sum(to_float(loss) for loss in model.losses) == pytest.approx(want, rel=1e-6)
    path = tmp_path / "slim.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("bn").gamma_regularizer.get_config() == reg.get_config()
    assert loaded.get_layer("bn").beta_regularizer is None
    assert sum(to_float(loss) for loss in loaded.losses) == pytest.approx(want, rel=1e-6)


# --- every Keras layer that owns weights: what is reported survives save/load and clone ------

L = keras.layers
LAYER_CASES = {
    "Dense": (lambda: L.Dense(3), (4,)),
    "EinsumDense": (lambda: L.EinsumDense("ab,bc->ac", output_shape=3, bias_axes="c"), (4,)),
    "Embedding": (lambda: L.Embedding(10, 3), "int"),
    "ReversibleEmbedding": (lambda: L.ReversibleEmbedding(10, 3), "int"),
    "Conv1D": (lambda: L.Conv1D(2, 3), (8, 2)),
    "Conv2D": (lambda: L.Conv2D(2, 3), (6, 6, 2)),
    "Conv3D": (lambda: L.Conv3D(2, 3), (5, 5, 5, 1)),
    "Conv1DTranspose": (lambda: L.Conv1DTranspose(2, 3), (8, 2)),
    "Conv2DTranspose": (lambda: L.Conv2DTranspose(2, 3), (6, 6, 2)),
    "Conv3DTranspose": (lambda: L.Conv3DTranspose(2, 3), (4, 4, 4, 1)),
    "DepthwiseConv1D": (lambda: L.DepthwiseConv1D(3), (8, 2)),
    "DepthwiseConv2D": (lambda: L.DepthwiseConv2D(3), (6, 6, 2)),
    "SeparableConv1D": (lambda: L.SeparableConv1D(2, 3), (8, 2)),
    "SeparableConv2D": (lambda: L.SeparableConv2D(2, 3), (6, 6, 2)),
    "ConvLSTM1D": (lambda: L.ConvLSTM1D(2, 3), (3, 8, 2)),
    "ConvLSTM2D": (lambda: L.ConvLSTM2D(2, 3), (2, 5, 5, 1)),
    "ConvLSTM3D": (lambda: L.ConvLSTM3D(2, 3), (2, 4, 4, 4, 1)),
    "SimpleRNN": (lambda: L.SimpleRNN(3), (5, 4)),
    "GRU": (lambda: L.GRU(3), (5, 4)),
    "LSTM": (lambda: L.LSTM(3), (5, 4)),
    "RNN": (lambda: L.RNN(L.LSTMCell(2)), (5, 4)),
    "StackedRNNCells": (
        lambda: L.RNN(L.StackedRNNCells([L.GRUCell(2), L.SimpleRNNCell(2)])),
        (5, 4),
    ),
    "Bidirectional": (lambda: L.Bidirectional(L.LSTM(2)), (5, 4)),
    "TimeDistributed": (lambda: L.TimeDistributed(L.Dense(2)), (5, 4)),
    "BatchNormalization": (lambda: L.BatchNormalization(), (4,)),
    "LayerNormalization": (lambda: L.LayerNormalization(), (4,)),
    "GroupNormalization": (lambda: L.GroupNormalization(groups=2), (4,)),
    "PReLU": (lambda: L.PReLU(), (4,)),
    "SpectralNormalization": (lambda: L.SpectralNormalization(L.Dense(2)), (4,)),
    "MultiHeadAttention": (lambda: L.MultiHeadAttention(2, 4), "attention"),
    "GroupQueryAttention": (
        lambda: L.GroupQueryAttention(head_dim=4, num_query_heads=2, num_key_value_heads=1),
        "attention",
    ),
    # Weights without a regularizer slot: never reported, so nothing to keep.
    "RMSNormalization": (lambda: L.RMSNormalization(), (4,)),
    "Attention": (lambda: L.Attention(use_scale=True), "pair"),
    "AdditiveAttention": (lambda: L.AdditiveAttention(use_scale=True), "pair"),
    "Normalization": (lambda: L.Normalization(), (4,)),
}
# Classes of keras.layers left out above: aliases of a class above, cells (in RNN
# above), wrappers of other frameworks' code or files, and layers without weights.
NOT_OWNING_OR_COVERED = {
    "Layer", "InputLayer", "Lambda", "Wrapper", "Pipeline", "FlaxLayer", "JaxLayer",
    "TorchModuleWrapper", "TFSMLayer", "GRUCell", "LSTMCell", "SimpleRNNCell",
    "MelSpectrogram", "STFTSpectrogram",
}  # fmt: skip


def weight_owning_layer_classes():
    import inspect

    found = set()
    for name in dir(keras.layers):
        cls = getattr(keras.layers, name)
        if inspect.isclass(cls) and issubclass(cls, keras.layers.Layer):
            found.add(cls.__name__)
    return found


def test_every_weight_owning_keras_layer_class_is_covered():
    """A Keras release adding a layer with weights makes this fail until it is in LAYER_CASES."""
    import inspect

    covered = {type(make()).__name__ for make, _ in LAYER_CASES.values()}
    covered |= {"StackedRNNCells"} | NOT_OWNING_OR_COVERED
    uncovered = []
    for name in sorted(weight_owning_layer_classes() - covered):
        cls = next(
            getattr(keras.layers, n)
            for n in dir(keras.layers)
            if getattr(getattr(keras.layers, n), "__name__", "") == name
        )
        source = "".join(
            inspect.getsource(c)
            for c in cls.__mro__
            if c not in set(keras.layers.Layer.__mro__)
            and c.__module__.startswith("keras.src.layers")
        )
        if "self.add_weight(" in source or "self.add_variable(" in source:
            uncovered.append(name)
    assert uncovered == []


def build_case(name):
    make, shape = LAYER_CASES[name]
    layer = make()
    if shape == "int":
        x = keras.Input((4,), dtype="int32")
        return [x], layer(x)
    if shape in ("attention", "pair"):
        a, b = keras.Input((5, 4)), keras.Input((6, 4))
        return [a, b], layer(a, b) if shape == "attention" else layer([a, b])
    x = keras.Input(shape)
    return [x], layer(x)


@pytest.fixture(scope="module")
def every_layer(tmp_path_factory):
    """One model with a branch per layer class, regularized once, saved, loaded and cloned."""
    keras.utils.set_random_seed(0)
    inputs, outputs = [], []
    for name in LAYER_CASES:
        branch_inputs, output = build_case(name)
        inputs += branch_inputs
        outputs.append(output)
    model = keras.Model(inputs, outputs)
    reg = keras_reg.L2(0.5)
    keras_reg.apply_regularizer(model, reg, weights="all")
    paths = penalized(model, reg)
    path = tmp_path_factory.mktemp("every") / "every.keras"
    model.save(path)
    others = {
        "load_model": keras.saving.load_model(path),
        "clone_model": keras.models.clone_model(model),
    }
    return model, paths, others


@pytest.mark.tensorflow_only(
    reason="configs: a branch per Keras layer class, built, saved, loaded and cloned (24 s on "
    "JAX); the round trips above run on every backend"
)
@pytest.mark.parametrize("how", ["load_model", "clone_model"])
def test_every_reported_weight_keeps_its_penalty(every_layer, how):
    model, paths, others = every_layer
    other = others[how]
    reported = set(paths)
    assert len(reported) == len(paths) > 60
    for before, after in zip(model.weights, other.weights, strict=True):
        expected = {"l2": 0.5} if before.path in reported else None
        got = getattr(after, "regularizer", None)
        assert (got.get_config() if got else None) == expected, (how, before.path)
    # The penalties themselves, against NumPy: each reported weight's 0.5 * sum(w^2).
    other.set_weights(model.get_weights())  # a clone starts from fresh weights
    expected = sum(
        0.5 * float(np.sum(to_numpy(v) ** 2)) for v in model.weights if v.path in reported
    )
    np.testing.assert_allclose(to_float(sum(other.losses)), expected, rtol=1e-5)


def test_separable_and_depthwise_kernels_are_found():
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.SeparableConv2D(3, 3, name="sep")(inputs)
    outputs = keras.layers.DepthwiseConv2D(3, name="dw")(h)
    model = keras.Model(inputs, outputs)
    reg = keras_reg.L1(0.1)
    keras_reg.apply_regularizer(model, reg)
    paths = penalized(model, reg)
    assert paths == ["sep/depthwise_kernel", "sep/pointwise_kernel", "dw/kernel"]
    assert model.get_layer("sep").depthwise_regularizer.get_config() == {"l1": 0.1}
    assert model.get_layer("sep").pointwise_regularizer.get_config() == {"l1": 0.1}
    assert model.get_layer("dw").depthwise_regularizer.get_config() == {"l1": 0.1}


def test_part_of_multi_head_attention_is_refused_by_name():
    inputs, output = build_case("MultiHeadAttention")
    model = keras.Model(inputs, output)
    with pytest.raises(ValueError) as info:
        keras_reg.apply_regularizer(model, keras_reg.L2(0.5), layers=["query"])
    message = str(info.value)
    for sub in ("key", "value", "attention_output"):
        assert f"multi_head_attention/{sub}/kernel: layer 'multi_head_attention' rebuilt" in message
    assert model.losses == [] and all(v.regularizer is None for v in model.weights)


@keras.saving.register_keras_serializable(package="test_attach")
class DenseInside(keras.layers.Layer):
    """A custom layer that builds a Dense in __init__ and does not save its regularizer."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(2, name="inner")

    def build(self, input_shape):
        self.inner.build(input_shape)

    def call(self, x):
        return self.inner(x)


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(2, name="sub_dense")

    def call(self, x):
        return self.dense(x)


def test_custom_layer_building_its_own_dense_is_refused_by_name():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, DenseInside(name="custom")(keras.layers.Dense(3, name="d")(inputs)))
    with pytest.raises(ValueError, match=r"custom/inner/kernel: layer 'custom' rebuilt") as info:
        keras_reg.apply_regularizer(model, keras_reg.L2(0.5))
    assert "changed nothing" in str(info.value)
    assert model.losses == [] and model.get_layer("d").kernel_regularizer is None
    # Leaving it out works.
    reg = keras_reg.L2(0.5)
    keras_reg.apply_regularizer(model, reg, layers=["d"])
    assert penalized(model, reg) == ["d/kernel"]


def test_layers_of_a_subclassed_model_are_refused_by_name():
    model = Subclassed(name="sub")
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match=r"sub_dense/kernel: its layer 'sub_dense' belongs to"):
        keras_reg.apply_regularizer(model, keras_reg.L2(0.5))
    assert model.losses == []


def test_layer_names_the_model_lacks_are_named():
    model = pretrained()
    with pytest.raises(ValueError, match=r"does not have: \['first_typo'\]"):
        keras_reg.apply_regularizer(model, keras_reg.L2(0.1), layers=["first", "first_typo"])
    with pytest.raises(ValueError, match=r"does not have: \['elsewhere'\]"):
        keras_reg.apply_regularizer(
            model, keras_reg.L2(0.1), layers=[keras.layers.Dense(2, name="elsewhere")]
        )
    assert model.losses == []


def test_existing_regularizers_are_refused_unless_overwrite():
    model = pretrained()
    first = keras_reg.L2(0.1)
    keras_reg.apply_regularizer(model, first, layers=["head"])
    with pytest.raises(ValueError, match=r"already have: \['head/kernel'\].*overwrite=True"):
        keras_reg.apply_regularizer(model, keras_reg.L1(0.2))
    assert model.get_layer("head").kernel_regularizer is first
    assert model.get_layer("first").kernel_regularizer is None  # nothing changed
    second = keras_reg.L1(0.2)
    keras_reg.apply_regularizer(model, second, overwrite=True)
    paths = penalized(model, second)
    assert "head/kernel" in paths and model.get_layer("head").kernel_regularizer is second
    assert model.get_layer("head").kernel.regularizer is second
    with pytest.raises(ValueError, match=r"'overwrite' argument .* Received: overwrite='yes'"):
        keras_reg.apply_regularizer(model, second, overwrite="yes")
