"""max_strength and regularization_path: against scikit-learn's lasso path and LassoCV, on
every backend; one trace of the train step for a whole path; the result's choice rules checked
against NumPy; bad inputs refused by name."""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LassoCV, lasso_path
from sklearn.model_selection import KFold
from sklearn.preprocessing import StandardScaler

import keras_reg
from helpers import count_traces, numpy_prox, to_numpy

BACKEND = keras.backend.backend()


def diabetes(center_y=True):
    data = load_diabetes()
    x = StandardScaler().fit_transform(data.data)
    y = data.target / data.target.std()
    return x, (y - y.mean() if center_y else y)


def sklearn_grid(x, y, n):
    """lasso_path's own grid (alpha_max down to 1e-3 of it), and its coefficients."""
    alphas, coefs, _ = lasso_path(x, y, alphas=n, eps=1e-3, tol=1e-12, max_iter=100_000)
    return alphas, coefs


def linear(reg, features=10, units=1, dtype=None, zeros=False):
    return keras.Sequential(
        [
            keras.Input((features,), dtype=dtype),
            keras.layers.Dense(
                units,
                kernel_regularizer=reg,
                kernel_initializer="zeros" if zeros else "glorot_uniform",
                dtype=dtype,
            ),
        ]
    )


# --- max_strength ----------------------------------------------------------------------------


def test_max_strength_is_sklearn_alpha_max_mapped():
    """L1(l) with "mse" is Lasso(alpha=l/2): max_strength == 2 * alpha_max, bias refitted."""
    x, y = diabetes(center_y=False)  # the bias must absorb the mean of y
    model = linear(keras_reg.L1(0.01))
    model.compile(keras_reg.Proximal(keras.optimizers.SGD(0.1)), "mse")
    top = keras_reg.max_strength(model, x.astype("float32"), y.astype("float32"))
    alphas, _ = sklearn_grid(x - x.mean(0), y - y.mean(), 3)
    np.testing.assert_allclose(top, 2 * alphas[0], rtol=1e-5)


def numpy_mse_gradient_at_zero(x, y):
    """d/dW of mean((y - x W - b)^2) over samples and outputs, at W = 0, b at the mean of y."""
    yc = (y - y.mean(0)).reshape(len(y), -1)
    return -2.0 * x.T @ yc / (len(x) * yc.shape[1])


@pytest.mark.parametrize(
    "reg",
    [
        keras_reg.L1(0.3),
        keras_reg.L1L2(l1=0.2, l2=0.5),
        keras_reg.ElasticNet(0.4, l1_ratio=0.3),
        keras_reg.GroupLasso(0.1, axis=0),
        keras_reg.SparseGroupLasso(0.1, l1_ratio=0.4, axis=0),
        keras_reg.SparseGroupLasso(0.1, l1_ratio=0.7, axis=-1),
    ],
    ids=lambda r: f"{type(r).__name__}_{getattr(r, 'axis', '')}",
)
def test_max_strength_is_the_threshold_of_the_proximal_step(reg):
    """Just above it, one proximal step from zero stays at zero; just below, it does not."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 6))
    y = x[:, :3] @ rng.normal(size=(3, 3)) + 0.5
    model = linear(reg, features=6, units=3)
    model.compile(keras_reg.Proximal(keras.optimizers.SGD(0.1)), "mse")
    top = keras_reg.max_strength(model, x.astype("float32"), y.astype("float32"))
    g = numpy_mse_gradient_at_zero(x, y)
    key = {"L1": "l1", "L1L2": "l1", "ElasticNet": "alpha"}.get(type(reg).__name__, "strength")

    def step_from_zero(strength):
        at = type(reg).from_config({**reg.get_config(), key: strength})
        return numpy_prox(at, -0.1 * g, 0.1)

    assert np.all(step_from_zero(top * (1 + 1e-4)) == 0)
    assert np.any(step_from_zero(top * (1 - 1e-4)) != 0)


# --- the path against scikit-learn -------------------------------------------------------------

# Full-batch Proximal(SGD) with step 1/L is ISTA. Many full-batch steps per epoch: the data
# tiled R times, one batch per copy, not shuffled; R steps per call where the backend allows.
REPEATS = {"tensorflow": 250, "jax": 50, "torch": 50}[BACKEND]
STEPS_PER_CALL = {"tensorflow": 250, "jax": 50, "torch": 1}[BACKEND]


def ista_model(x, top, dtype):
    """A Dense(1) from zero weights (as lasso_path starts), step 1/L."""
    lipschitz = 2 * np.linalg.eigvalsh(x.T @ x / len(x)).max()
    model = linear(keras_reg.L1(float(top)), dtype=dtype, zeros=True)
    model.compile(
        keras_reg.Proximal(keras.optimizers.SGD(1.0 / lipschitz)),
        "mse",
        steps_per_execution=STEPS_PER_CALL,
    )
    return model


@pytest.fixture
def float64():
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx("float32")


def check_zero_sets(points, steps, dtype, tie):
    x, y = diabetes()
    alphas, coefs = sklearn_grid(x, y, 10)
    strengths = list(2 * alphas[:points])  # L1(l) is Lasso(alpha=l/2)
    # At alpha_max the largest |gradient| equals the threshold: a tie that rounding in the
    # train step can break either way. The first point sits a rounding error above it.
    strengths[0] *= 1 + tie
    model = ista_model(x, strengths[0], dtype)
    path = keras_reg.regularization_path(
        model,
        np.tile(x, (REPEATS, 1)).astype(dtype),
        np.tile(y, REPEATS).astype(dtype),
        strengths=strengths,
        epochs=steps // REPEATS,
        batch_size=len(x),
        shuffle=False,
        verbose=0,
    )
    assert path.strengths == strengths
    for p in range(points):
        kernel = to_numpy(path.model(path.strengths[p]).layers[0].kernel).ravel()
        np.testing.assert_array_equal(kernel == 0, coefs[:, p] == 0, err_msg=f"point {p}")
        np.testing.assert_allclose(kernel, coefs[:, p], atol=2e-3)


@pytest.mark.skipif(BACKEND == "tensorflow", reason="the float64 test below covers it")
def test_zero_sets_equal_lasso_path_on_its_first_points():
    """Float32 (JAX's default refuses float64), the first 6 of the 10 points, 400 steps each."""
    check_zero_sets(6, 400, "float32", tie=1e-6)


@pytest.mark.tensorflow_only(reason="20,000 full-batch steps in float64")
def test_zero_sets_equal_lasso_path_on_its_own_grid(float64):
    check_zero_sets(10, 2000, "float64", tie=1e-12)


@pytest.mark.tensorflow_only(reason="3 paths of 3,000 steps in float64")
def test_cv_choice_equals_lasso_cv_on_the_same_folds(float64):
    x, y = diabetes()
    alphas, _ = sklearn_grid(x, y, 10)
    alphas = alphas[1:7]  # around LassoCV's choice on this data
    folds = list(KFold(2, shuffle=True, random_state=4).split(x))
    reference = LassoCV(alphas=alphas, cv=folds, tol=1e-12, max_iter=100_000).fit(x, y)
    assert alphas[0] > reference.alpha_ > alphas[-1]  # chosen inside the grid, not at an end
    n = len(x)
    # The same folds in the tiled data: every copy of a fold's training rows, in copy order.
    tiled = [
        (np.concatenate([train + c * n for c in range(REPEATS)]), test) for train, test in folds
    ]
    model = ista_model(x, 2 * alphas[0], "float64")
    path = keras_reg.regularization_path(
        model,
        np.tile(x, (REPEATS, 1)),
        np.tile(y, REPEATS),
        strengths=list(2 * alphas),
        cv=tiled,
        epochs=500 // REPEATS,
        batch_size=n // 2,
        shuffle=False,
        verbose=0,
    )
    np.testing.assert_allclose(path.best, 2 * reference.alpha_, rtol=1e-12)
    # Each fold's held-out MSE, as LassoCV's mse_path_ (strongest first in both).
    np.testing.assert_allclose(path.fold_scores.T, reference.mse_path_, rtol=1e-4)


# --- the path on a network: one trace, the model left as it was, the result ---------------------


def small_network(reg=None, proximal=True):
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(6, activation="tanh", kernel_regularizer=reg or keras_reg.L1(0.01)),
            keras.layers.Dense(1),
        ]
    )
    optimizer = keras.optimizers.Adam(0.02)
    model.compile(keras_reg.Proximal(optimizer) if proximal else optimizer, "mse")
    return model


def data(n=60):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8)).astype("float32")
    return x, (x[:, :2] @ np.array([[1.0], [-0.5]], "float32")).astype("float32")


def test_one_trace_for_the_whole_path_and_the_model_is_restored():
    x, y = data()
    model = small_network()
    before = [w.copy() for w in model.get_weights()]
    traces = count_traces(model)
    path = keras_reg.regularization_path(
        model, x, y, n_strengths=5, epochs=2, batch_size=60, verbose=0
    )
    if BACKEND != "torch":  # PyTorch runs the Python step every batch
        assert len(traces) == 1
    for w, w0 in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(w, w0)
    assert model.layers[0].kernel_regularizer.scale == 1.0
    # The grid: log-spaced from max_strength down to eps times it.
    top = keras_reg.max_strength(model, x, y)
    np.testing.assert_allclose(path.strengths, np.geomspace(top, top * 1e-3, 5), rtol=1e-6)


def test_each_point_trains_at_its_strength():
    """The penalty the train step adds follows the grid: loss - data loss = strength * sum|w|."""
    x, y = data()
    model = small_network()
    model.compile(keras_reg.Proximal(keras.optimizers.SGD(0.0)), "mse")  # frozen weights
    w = to_numpy(model.layers[0].kernel).astype(np.float64)
    strengths = [0.3, 0.1, 0.03]
    path = keras_reg.regularization_path(
        model, x, y, strengths=strengths, epochs=1, batch_size=60, verbose=0
    )
    data_loss = np.mean((to_numpy(model(x)) - y) ** 2)
    objectives = [row["objective"] for row in path.rows]
    np.testing.assert_allclose(
        objectives, data_loss + np.array(strengths) * np.abs(w).sum(), rtol=1e-5
    )


def test_result_table_choice_model_and_shrink(tmp_path):
    x, y = data(90)
    model = small_network()
    path = keras_reg.regularization_path(
        model, x, y, n_strengths=4, eps=1e-2, cv=3, epochs=2, batch_size=45, verbose=0
    )
    # best and the 1-SE rule, recomputed in NumPy from the folds' held-out scores.
    scores = path.fold_scores  # (folds, strengths)
    mean = scores.mean(0)
    se = scores.std(0, ddof=1) / np.sqrt(len(scores))
    best = int(np.argmin(mean))
    assert path.best == path.strengths[best]
    assert path.one_se == path.strengths[int(np.flatnonzero(mean <= mean[best] + se[best])[0])]
    rows = path.to_dict()["rows"]
    assert [r["strength"] for r in rows] == path.strengths
    np.testing.assert_allclose([r["val_score"] for r in rows], mean, rtol=1e-12)
    text = str(path)
    assert "3-fold cross-validation" in text and "1-SE" in text and "best" in text
    assert len(text.splitlines()) == 3 + 4 + 1  # title, header, rule, a row per strength, choice
    # A point's model: its weights, its strength in the penalty's config, and shrink exact.
    chosen = path.model(path.one_se)
    row = rows[path.strengths.index(path.one_se)]
    assert chosen.layers[0].kernel_regularizer.get_config() == {"l1": path.one_se}
    kernel = to_numpy(chosen.layers[0].kernel)
    assert int(np.count_nonzero(kernel)) == row["nonzero"]
    small = keras_reg.shrink(chosen, plan=keras_reg.plan_shrink(chosen, drop_inputs=True))
    assert small.count_params() == row["params"]
    (kept,) = keras_reg.plan_shrink(chosen, drop_inputs=True).inputs_kept.values()
    assert len(kept) == 8 - row["inputs_dropped"]
    np.testing.assert_allclose(to_numpy(small(x[:, kept])), to_numpy(chosen(x)), atol=1e-5)
    path.plot(tmp_path / "path.png")
    assert (tmp_path / "path.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="'strength' argument of RegularizationPath.model"):
        path.model(0.123)


def test_without_proximal_warns():
    x, y = data()
    model = small_network(proximal=False)
    with pytest.warns(UserWarning, match="not keras_reg.Proximal"):
        keras_reg.regularization_path(model, x, y, n_strengths=2, epochs=1, verbose=0)


def test_without_held_out_data_there_is_no_choice():
    x, y = data()
    path = keras_reg.regularization_path(small_network(), x, y, n_strengths=2, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="cv= .* or validation_data="):
        _ = path.best


# --- bad inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reg, message",
    [
        (None, "no keras_reg penalty"),
        (keras_reg.L2(0.1), "no L1 part"),
        (keras_reg.ElasticNet(0.1, l1_ratio=0.0), "no L1 part"),
        (keras.regularizers.L1(0.1), "use keras_reg's penalty"),
        (keras_reg.L1(0.0), "of strength 0"),
    ],
    ids=["none", "L2", "ElasticNet_ratio_0", "keras_L1", "L1_0"],
)
def test_models_the_path_cannot_drive_are_refused(reg, message):
    x, y = data()
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1, kernel_regularizer=reg)])
    model.compile(keras_reg.Proximal(keras.optimizers.SGD(0.1)), "mse")
    for call in (keras_reg.max_strength, keras_reg.regularization_path):
        with pytest.raises(ValueError, match=f"'model' argument of {call.__name__}.*{message}"):
            call(model, x, y)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"eps": 0.0}, "eps"),
        ({"eps": 1.0}, "eps"),
        ({"n_strengths": 1}, "n_strengths"),
        ({"cv": 61}, "cv"),
        ({"cv": 1}, "cv"),
        ({"cv": [([0, 1], [99])]}, "cv"),
        ({"epochs": 0}, "epochs"),
        ({"scoring": "no_such_loss"}, "scoring"),
        ({"verbose": 2}, "verbose"),
        ({"strengths": [0.1, 0.1]}, "strengths"),
    ],
    ids=repr,
)
def test_bad_arguments_name_themselves(kwargs, name):
    x, y = data()
    with pytest.raises(ValueError, match=f"'{name}' argument of regularization_path"):
        keras_reg.regularization_path(small_network(), x, y, **{"verbose": 0, **kwargs})


def test_uncompiled_model_is_refused():
    x, y = data()
    model = linear(keras_reg.L1(0.1), features=8)
    with pytest.raises(ValueError, match="'model' argument of max_strength must be compiled"):
        keras_reg.max_strength(model, x, y)
