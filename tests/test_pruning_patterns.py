"""TFMOT's pruning API in keras_reg: m-by-n and block patterns against TFMOT's own mask functions
(re-implemented here in NumPy from tensorflow_model_optimization's pruning_utils.py and
pruning_impl.py), keyword names, the per-layer form, recurrent and attention kernels, custom
layers through a rule, and frozen masks across a save and a resume in a fresh process."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

import keras_reg

# --- TFMOT's mask functions, in NumPy ----------------------------------------------------------
# From tensorflow_model_optimization/python/core/sparsity/keras/pruning_utils.py
# (weights_rearrange, generate_m_by_n_mask, m_by_n_sparsity_mask_prepare, factorized_pool,
# expand_tensor) and pruning_impl.py (Pruning._update_mask, _maybe_update_block_mask).
# Checked once against TFMOT's TensorFlow code on 24 m-by-n and 120 block cases: equal masks.


def tfmot_m_by_n_mask(weights, m, n):
    """generate_m_by_n_mask on weights_rearrange's view, mapped back (rank 2 and 4 only)."""
    w = np.asarray(weights)
    if w.ndim == 2:  # [C_in, C_out] -> [C_out, C_in]
        prepared = w.T
    else:  # [H, W, C_in, C_out] -> [C_out, H, W, C_in] -> [C_out * H * W, C_in]
        prepared = np.transpose(w, (3, 0, 1, 2)).reshape(-1, w.shape[2])
    a = np.abs(prepared)
    a = np.pad(a, ((0, 0), (0, n - a.shape[-1] % n)))  # TFMOT pads n even when it divides
    blocks = a.reshape(-1, n)
    top = np.argsort(-blocks, axis=1, kind="stable")[:, : n - m]  # tf.math.top_k, k = n - m
    mask = np.zeros_like(blocks)
    np.put_along_axis(mask, top, 1.0, axis=1)
    mask = mask.reshape(a.shape)[:, : prepared.shape[1]]
    if w.ndim == 2:
        return mask.T
    return np.transpose(mask.reshape(w.shape[3], w.shape[0], w.shape[1], w.shape[2]), (1, 2, 3, 0))


def _same_pool(x, k, kind):
    """tf.nn.pool over the last axis, window = stride = k, padding "SAME"."""
    length = x.shape[-1]
    out = -(-length // k)
    before = ((out - 1) * k + k - length) // 2
    cells = []
    for i in range(out):
        seg = x[..., max(i * k - before, 0) : min(i * k - before + k, length)]
        cells.append(seg.max(axis=-1) if kind == "MAX" else seg.mean(axis=-1))
    return np.stack(cells, axis=-1)


def tfmot_block_mask(matrix, sparsity, block, kind):
    """_maybe_update_block_mask on a rank-2 weight: pool, threshold, expand, slice."""
    a = np.abs(np.asarray(matrix, np.float32))
    r, c = block
    pooled = _same_pool(_same_pool(a.T, r, kind).T, c, kind)  # factorized_pool: rows, then columns
    flat = pooled.reshape(-1)
    keep = max(int(np.round(np.float32(flat.size) * (np.float32(1) - np.float32(sparsity)))), 1)
    order = np.argsort(-flat, kind="stable")
    mask = pooled >= flat[order[keep - 1]]
    mask.reshape(-1)[order[keep - 1]] = True
    return np.kron(mask, np.ones((r, c)))[: a.shape[0], : a.shape[1]]


# --- helpers -------------------------------------------------------------------------------------


def project(model, kernels, values):
    """Sets `kernels` to `values` and runs one optimizer update that changes nothing (SGD,
    learning rate 0), so that the kernels come out as the constraint alone makes them."""
    for variable, value in zip(kernels, values, strict=True):
        variable.assign(value)
    optimizer = keras.optimizers.SGD(learning_rate=0.0)
    variables = model.trainable_variables
    optimizer.apply([ops.zeros(v.shape, v.dtype) for v in variables], variables)
    return [ops.convert_to_numpy(v) for v in kernels]


def kernels_of(model, names):
    return [v for v in model.trainable_variables if v.path.rsplit("/", 1)[-1] in names]


MODELS = {
    "dense": lambda: keras.Sequential([keras.Input((10,)), keras.layers.Dense(6, name="p")]),
    "conv2d": lambda: keras.Sequential(
        [keras.Input((6, 6, 5)), keras.layers.Conv2D(4, 3, name="p")]
    ),
    "depthwise": lambda: keras.Sequential(
        [keras.Input((6, 6, 6)), keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="p")]
    ),
    "lstm": lambda: keras.Sequential([keras.Input((3, 7)), keras.layers.LSTM(5, name="p")]),
}
KERNELS = ("kernel", "recurrent_kernel")
ROOT = Path(__file__).parent.parent  # the subprocess imports this checkout's keras_reg


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("m_by_n", [(2, 4), (3, 8)])
@pytest.mark.parametrize("ties", [False, True])
def test_m_by_n_equals_tfmots_mask(kind, m_by_n, ties):
    keras.utils.set_random_seed(0)
    model = MODELS[kind]()
    keras_reg.prune_low_magnitude(model, sparsity_m_by_n=m_by_n)
    kernels = kernels_of(model, KERNELS)
    assert len(kernels) == (2 if kind == "lstm" else 1)
    rng = np.random.default_rng(1)
    if ties:  # magnitudes 0, 1 and 2 only, signs mixed: most blocks break ties by position
        values = [rng.integers(-2, 3, size=v.shape).astype("float32") for v in kernels]
    else:
        values = [rng.normal(size=v.shape).astype("float32") for v in kernels]
    for value, out in zip(values, project(model, kernels, values), strict=True):
        np.testing.assert_array_equal(out, value * tfmot_m_by_n_mask(value, *m_by_n))
        assert keras_reg.is_pruned_m_by_n(out, m_by_n)


# (block, sparsity) where TFMOT's "SAME" pooling windows line up with its mask blocks (each size a
# multiple of the block, or one short of it): elsewhere TFMOT pools windows shifted by half the
# padding against the blocks it zeroes, and keras_reg pools the blocks it zeroes. The sparsity
# zeroes a whole number of blocks, where TFMOT's "keep round(N (1 - s))" and keras_reg's
# "zero round(s N)" agree. Kernels as matrices: dense (10, 6), conv2d (45, 4), depthwise (54, 2),
# LSTM (7, 20) and (5, 20).
BLOCKS = {
    "dense": [((2, 3), 0.5), ((5, 2), 0.5), ((1, 3), 0.25), ((5, 6), 0.5)],
    "conv2d": [((5, 2), 0.5), ((9, 4), 0.4), ((2, 2), 0.5)],
    "depthwise": [((6, 1), 0.5), ((5, 1), 0.5), ((9, 2), 0.5)],
    "lstm": [((2, 4), 0.2), ((1, 5), 0.25)],
}


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("pooling", ["AVG", "MAX"])
def test_blocks_equal_tfmots_mask(kind, pooling):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(2)
    for block, sparsity in BLOCKS[kind]:
        model = MODELS[kind]()
        kernels = kernels_of(model, KERNELS)
        schedule = keras_reg.ConstantSparsity(sparsity, begin_step=0, frequency=1)
        keras_reg.prune_low_magnitude(
            model, pruning_schedule=schedule, block_size=block, block_pooling_type=pooling
        )
        values = [rng.normal(size=v.shape).astype("float32") for v in kernels]
        outs = project(model, kernels, values)
        for value, out in zip(values, outs, strict=True):
            matrix = value.reshape(-1, value.shape[-1])
            rows, cols = matrix.shape
            assert rows % block[0] in (0, block[0] - 1) and cols % block[1] in (0, block[1] - 1)
            blocks = -(-rows // block[0]) * -(-cols // block[1])
            assert float(sparsity * blocks).is_integer()
            mask = tfmot_block_mask(matrix, sparsity, block, pooling).reshape(value.shape)
            np.testing.assert_array_equal(out, value * mask)


def test_m_by_n_and_blocks_hold_through_training():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(32, 6, 6, 5)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, size=32)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 5)),
            keras.layers.Conv2D(8, 3, name="c"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, name="d"),
        ]
    )
    keras_reg.prune_low_magnitude(model, sparsity_m_by_n=(2, 4), layers=["c"])
    keras_reg.prune_low_magnitude(model, 0.5, layers=["d"], block_size=(16, 1))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    conv = ops.convert_to_numpy(model.get_layer("c").kernel)
    rows = np.transpose(conv, (3, 0, 1, 2)).reshape(-1, 5)  # TFMOT's [C_out * H * W, C_in]
    assert (np.count_nonzero(rows[:, :4], axis=1) == 2).all()
    assert keras_reg.is_pruned_m_by_n(conv) and not keras_reg.is_pruned_m_by_n(conv, (3, 4))
    dense = ops.convert_to_numpy(model.get_layer("d").kernel)
    per_block = (dense.reshape(8, 16, 3) != 0).sum(axis=1)
    assert set(per_block.reshape(-1)) <= {0, 16} and (per_block == 0).sum() == 12


def test_is_pruned_m_by_n_against_numpy():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(3, 3, 6, 4)).astype("float32")
    pruned = w * tfmot_m_by_n_mask(w, 2, 4)
    assert keras_reg.is_pruned_m_by_n(pruned) and not keras_reg.is_pruned_m_by_n(w)
    assert keras_reg.is_pruned_m_by_n(keras.Variable(pruned), (2, 4))
    broken = pruned.copy()
    broken[0, 0, np.flatnonzero(pruned[0, 0, :4, 0] == 0)[0], 0] = 1.0  # a third non-zero
    assert not keras_reg.is_pruned_m_by_n(broken)
    tflite = np.transpose(pruned, (3, 0, 1, 2))  # [C_out, H, W, C_in]
    assert keras_reg.is_pruned_m_by_n(tflite, last_channel="C_IN")


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"sparsity_m_by_n": (4, 4)}, "sparsity_m_by_n"),
        ({"sparsity_m_by_n": (5, 4)}, "sparsity_m_by_n"),
        ({"sparsity_m_by_n": (0, 4)}, "sparsity_m_by_n"),
        ({"sparsity_m_by_n": (2.0, 4)}, "sparsity_m_by_n"),
        ({"sparsity_m_by_n": (True, 4)}, "sparsity_m_by_n"),
        ({"sparsity_m_by_n": "2:4"}, "sparsity_m_by_n"),
        ({"sparsity_m_by_n": (2, 4, 8)}, "sparsity_m_by_n"),
        ({"sparsity_m_by_n": (2, 4), "axis": -1}, "axis"),
        ({"sparsity_m_by_n": (2, 4), "block_size": (2, 2)}, "block_size"),
        ({"schedule_or_sparsity": 0.5, "block_size": (0, 2)}, "block_size"),
        ({"schedule_or_sparsity": 0.5, "block_size": (2,)}, "block_size"),
        ({"schedule_or_sparsity": 0.5, "block_size": (2.5, 2)}, "block_size"),
        ({"schedule_or_sparsity": 0.5, "block_size": "2x2"}, "block_size"),
        ({"schedule_or_sparsity": 0.5, "block_size": (2, 2), "axis": -1}, "block_size"),
        ({"schedule_or_sparsity": 0.5, "block_pooling_type": "MIN"}, "block_pooling_type"),
        ({"schedule_or_sparsity": 0.5, "block_pooling_type": "avg"}, "block_pooling_type"),
        ({"schedule_or_sparsity": 0.5, "pruning_schedule": 0.5}, "pruning_schedule"),
        ({}, "sparsity target"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, argument):
    model = MODELS["dense"]()
    with pytest.raises(ValueError, match=argument):
        keras_reg.prune_low_magnitude(model, **kwargs)


def test_bad_arguments_of_is_pruned_m_by_n():
    w = np.zeros((4, 4))
    with pytest.raises(ValueError, match="'last_channel' argument of is_pruned_m_by_n"):
        keras_reg.is_pruned_m_by_n(w, last_channel="C_MID")
    with pytest.raises(ValueError, match="'m_by_n' argument of is_pruned_m_by_n"):
        keras_reg.is_pruned_m_by_n(w, (4, 2))
    with pytest.raises(ValueError, match="'weights' argument of is_pruned_m_by_n"):
        keras_reg.is_pruned_m_by_n(np.zeros(4))


def test_m_by_n_with_a_schedule_follows_tfmot_and_warns():
    model = MODELS["dense"]()
    with pytest.warns(UserWarning, match="not used"):
        keras_reg.prune_low_magnitude(model, 0.9, sparsity_m_by_n=(2, 4))
    constraint = model.get_layer("p").kernel.constraint
    assert constraint.schedule is None and constraint.sparsity_m_by_n == (2, 4)


def attention_model():
    inputs = keras.Input((4, 8))
    x = keras.layers.MultiHeadAttention(2, 4, name="mha")(inputs, inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="o")(keras.layers.Flatten()(x)))


def test_patterns_refuse_attention_kernels_and_leave_them_out_with_a_warning():
    with pytest.raises(ValueError, match="laid out"):
        keras_reg.prune_low_magnitude(attention_model(), sparsity_m_by_n=(2, 4), layers=["mha"])
    with pytest.raises(ValueError, match="laid out"):
        keras_reg.prune_low_magnitude(keras.layers.MultiHeadAttention(2, 4), sparsity_m_by_n=(2, 4))
    model = attention_model()
    with pytest.warns(UserWarning, match="mha/query/kernel"):
        keras_reg.prune_low_magnitude(model, sparsity_m_by_n=(2, 4))
    pruned = keras_reg.pruning.pruned_weights(model)
    assert [v.path.split("/")[-2:] for v in pruned] == [["o", "kernel"]]


def fit(model, x, y, epochs=1, optimizer="adam"):
    model.compile(optimizer, "mse")
    model.fit(x, y, epochs=epochs, batch_size=8, verbose=0)


def zeros_of(model, names):
    return {n: ops.convert_to_numpy(model.get_layer(n).kernel) == 0 for n in names}


def test_per_layer_form_and_tfmot_keywords(tmp_path):
    keras.utils.set_random_seed(0)
    schedule = keras_reg.ConstantSparsity(0.75, begin_step=0, frequency=1)
    model = keras.Sequential(
        [
            keras.Input((5, 3)),
            keras_reg.prune_low_magnitude(
                keras.layers.LSTM(4, name="r"), pruning_schedule=schedule
            ),
            keras_reg.prune_low_magnitude(keras.layers.Dense(8, name="d"), 0.5),
            keras.layers.Dense(2, name="o"),
        ]
    )
    x = np.random.default_rng(0).normal(size=(16, 5, 3)).astype("float32")
    fit(model, x, np.ones((16, 2)))
    cell = model.get_layer("r").cell
    for variable, size in ((cell.kernel, 3 * 16), (cell.recurrent_kernel, 4 * 16)):
        assert np.sum(ops.convert_to_numpy(variable) == 0) == round(0.75 * size)
    assert np.sum(ops.convert_to_numpy(model.get_layer("d").kernel) == 0) == 16
    assert not np.any(ops.convert_to_numpy(model.get_layer("o").kernel) == 0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    kinds = {"/".join(v.path.split("/")[-2:]): type(v.constraint) for v in loaded.weights}
    assert kinds["lstm_cell/recurrent_kernel"] is keras_reg.PruneLowMagnitude
    assert kinds["lstm_cell/kernel"] is keras_reg.PruneLowMagnitude
    assert kinds["d/kernel"] is keras_reg.PruneLowMagnitude and kinds["o/kernel"] is type(None)
    layers = keras_reg.prune_low_magnitude([keras.layers.Dense(3), keras.layers.Dense(4)], 0.5)
    assert all(isinstance(layer.kernel_constraint, keras_reg.PruneLowMagnitude) for layer in layers)


def test_recurrent_kernels_of_a_model_are_pruned_through_the_layers_argument():
    keras.utils.set_random_seed(0)
    for cls in (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN):
        model = keras.Sequential([keras.Input((5, 3)), cls(4, name="r"), keras.layers.Dense(2)])
        keras_reg.prune_low_magnitude(model, 0.5, layers=["r"])
        cell = model.get_layer("r").cell
        assert isinstance(cell.recurrent_constraint, keras_reg.PruneLowMagnitude)
        assert cell.recurrent_kernel.constraint is cell.recurrent_constraint


def test_attention_pruning_survives_saving(tmp_path):
    keras.utils.set_random_seed(0)
    model = attention_model()
    keras_reg.prune_low_magnitude(model, 0.5, layers=["mha"])
    x = np.random.default_rng(0).normal(size=(16, 4, 8)).astype("float32")
    fit(model, x, np.ones((16, 2)))
    model.save(tmp_path / "a.keras")
    loaded = keras.saving.load_model(tmp_path / "a.keras")
    mha = loaded.get_layer("mha")
    projections = [mha._query_dense, mha._key_dense, mha._value_dense, mha._output_dense]
    assert all(isinstance(p.kernel.constraint, keras_reg.PruneLowMagnitude) for p in projections)
    fit(loaded, x, np.zeros((16, 2)), epochs=2, optimizer=keras.optimizers.SGD(0.5))
    for p in projections:
        kernel = ops.convert_to_numpy(p.kernel)
        assert np.sum(kernel == 0) == round(0.5 * kernel.size)
    with pytest.raises(ValueError, match="only some of the kernels of MultiHeadAttention"):
        keras_reg.prune_low_magnitude(attention_model(), 0.5, layers=["query"])
    stripped = keras_reg.strip_pruning(loaded)
    assert stripped.get_layer("mha")._kernel_constraint is None


class Projection(keras.layers.Layer):
    """`x @ w`, its constraint slot named after its weight (`w_constraint`)."""

    def __init__(self, units, w_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.w_constraint = keras.constraints.get(w_constraint)

    def build(self, input_shape):
        self.w = self.add_weight(
            (input_shape[-1], self.units), constraint=self.w_constraint, name="w"
        )

    def call(self, x):
        return x @ self.w

    def get_config(self):
        w_constraint = keras.constraints.serialize(self.w_constraint)
        return {**super().get_config(), "units": self.units, "w_constraint": w_constraint}


def test_a_custom_layer_is_pruned_through_its_rule():
    def model():
        return keras.Sequential([keras.Input((8,)), Projection(6, name="p")])

    with pytest.raises(ValueError, match="found no kernel to prune"):
        keras_reg.prune_low_magnitude(model(), 0.5, layers=["p"])
    keras_reg.register_layer_rule(Projection, keras_reg.rules.DenseLike(kernel="w", bias=None))
    pruned = keras_reg.prune_low_magnitude(model(), 0.5, layers=["p"])
    fit(pruned, np.ones((8, 8)), np.ones((8, 6)))
    assert np.sum(ops.convert_to_numpy(pruned.get_layer("p").w) == 0) == 24
    assert isinstance(pruned.get_layer("p").get_config()["w_constraint"], dict)


RESUME = """
import sys
import numpy as np
import keras
import keras_reg

model = keras.saving.load_model(sys.argv[1])
x = np.random.default_rng(5).normal(size=(48, 12)).astype("float32")
model.fit(x, np.ones((48, 3)), epochs=3, batch_size=8, verbose=0)
np.savez(sys.argv[2], **{n: keras.ops.convert_to_numpy(model.get_layer(n).kernel) for n in "ab"})
"""


def test_frozen_zeros_stay_through_training_saving_and_a_fresh_process(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((12,)), keras.layers.Dense(8, name="a"), keras.layers.Dense(3, name="b")]
    )
    schedule = keras_reg.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=6, frequency=2)
    keras_reg.prune_low_magnitude(model, schedule)
    x = np.random.default_rng(0).normal(size=(48, 12)).astype("float32")
    y = np.random.default_rng(1).normal(size=(48, 3)).astype("float32")
    fit(model, x, y, optimizer=keras.optimizers.SGD(0.3))  # 6 steps: the schedule's end
    at_end = zeros_of(model, "ab")
    assert at_end["a"].sum() == 72 and at_end["b"].sum() == 18
    before = {n: ops.convert_to_numpy(model.get_layer(n).kernel) for n in "ab"}
    keras_reg.freeze_pruning(model)
    model.fit(x, -y, epochs=2, batch_size=8, verbose=0)
    assert all(np.array_equal(z, at_end[n]) for n, z in zeros_of(model, "ab").items())
    moved = ops.convert_to_numpy(model.get_layer("a").kernel)
    assert not np.allclose(moved[~at_end["a"]], before["a"][~at_end["a"]])  # it did train
    path = tmp_path / "frozen.keras"
    model.save(path)
    out = tmp_path / "after.npz"
    done = subprocess.run(
        [sys.executable, "-c", RESUME, str(path), str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    after = np.load(out)
    for name in "ab":
        assert np.array_equal(after[name] == 0, at_end[name]), name
    assert not np.allclose(after["a"], moved)
    config = json.loads(json.dumps(model.get_layer("a").get_config()))
    assert config["kernel_constraint"]["config"]["frozen"] is not None


def test_freeze_pruning_refuses_a_model_without_pruning():
    with pytest.raises(ValueError, match="found no pruned kernel"):
        keras_reg.freeze_pruning(MODELS["dense"]())
