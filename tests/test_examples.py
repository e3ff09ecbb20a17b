"""The examples run in their quick mode and show what they say they show.

Each example's `main` runs once per module (in this process, outputs in tmp_path); the tests
check properties of its results, not only that it ran.
"""

import json
import os
import struct

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from helpers import load_example

# Slow (the longest module on every backend) and tuned on TensorFlow: the quick runs' thresholds
# (filters removed, accuracy) were set on its initial weights; the code they run is unit-tested on
# every backend.
pytestmark = pytest.mark.tensorflow_only(
    reason="example output, thresholds tuned on TensorFlow's initial weights; slow"
)

MODULES = ("_common", "feature_selection", "digits_cnn", "claims")


@pytest.fixture(scope="module")
def examples():
    """The example modules, loaded from examples/ (which is not a package)."""
    return {name: load_example(name) for name in MODULES}


@pytest.fixture(scope="module")
def demo(examples, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_output")
    summary = examples["feature_selection"].main(quick=True, out=str(out))
    return out, summary, {run["slug"]: run for run in summary["runs"]}


@pytest.fixture(scope="module")
def digits(examples):
    return examples["digits_cnn"].main(quick=True)


@pytest.fixture(scope="module")
def claims(examples):
    return examples["claims"].main(quick=True)


def png_size(path):
    """(width, height) from a PNG's IHDR chunk; fails if the file is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


# --- feature_selection.py (make demo) ---------------------------------------------------------

PLAIN = ("none", "keras_l1", "l2")
PROXIMAL = ("l1_proximal", "elastic_net_proximal", "group_lasso_proximal")


def test_demo_trains_every_run(demo):
    _, summary, runs = demo
    assert list(runs) == list(PLAIN[:2]) + ["l1_proximal", "l2"] + list(PROXIMAL[1:])
    for run in runs.values():
        assert len(run["sparsity"]) == summary["epochs"]
        assert run["val_accuracy"] > 0.9, run


def test_demo_only_proximal_runs_reach_exact_zeros(demo):
    _, _, runs = demo
    for slug in PLAIN:  # Keras' L1 and L2 by gradient: small weights, never zero
        assert runs[slug]["kernel_nonzero"] == runs[slug]["kernel_size"]
        assert runs[slug]["sparsity"][-1] == 0.0
    for slug in PROXIMAL:
        run = runs[slug]
        assert run["sparsity"][-1] > 0.3, slug
        # SparsityLogger's last number is the zeros counted from the final weights.
        assert run["sparsity"][-1] == pytest.approx(1 - run["kernel_nonzero"] / run["kernel_size"])


def test_demo_selects_named_features(demo):
    _, _, runs = demo
    names = [str(name) for name in load_breast_cancer().feature_names]
    for slug in PLAIN:
        assert runs[slug]["features_kept"] == names
    for slug in PROXIMAL:
        kept = runs[slug]["features_kept"]
        assert 0 < len(kept) < len(names), slug
        assert set(kept) <= set(names)
    # Group lasso on the input rows removes features while accuracy stays close.
    assert len(runs["group_lasso_proximal"]["features_kept"]) <= 20
    assert runs["group_lasso_proximal"]["val_accuracy"] >= runs["none"]["val_accuracy"] - 0.05


def test_demo_shrinks_the_proximal_models(demo):
    _, _, runs = demo
    for slug in PROXIMAL:
        run, shrunk = runs[slug], runs[slug]["shrunk"]
        # A feature no unit reads is dropped; one that only dead units read may go too.
        assert set(shrunk["features"]) <= set(run["features_kept"])
        assert shrunk["units"] <= run["units_kept"]
        assert shrunk["params_after"] < shrunk["params_before"]
        assert shrunk["max_abs_diff"] < 1e-5
    assert all("shrunk" not in runs[slug] for slug in PLAIN)


def test_demo_models_reload_with_identical_predictions(demo):
    _, _, runs = demo
    for run in runs.values():
        assert os.path.getsize(run["saved_as"]) > 0
        assert run["reload_identical"], run
        assert run["reload_max_diff"] == 0.0


def test_demo_writes_figures_and_summary(demo):
    out, summary, _ = demo
    assert set(summary["figures"]) == {"sparsity", "histograms", "heatmap"}
    for path in summary["figures"].values():
        assert os.path.dirname(path) == str(out)
        width, height = png_size(path)
        assert width >= 600 and height >= 400, path
        assert os.path.getsize(path) > 10_000, path  # an empty figure is a few kB
    with open(out / "summary.json") as f:
        assert json.load(f) == json.loads(json.dumps(summary))


# --- digits_cnn.py ----------------------------------------------------------------------------


def test_digits_group_lasso_removes_filters(digits):
    assert all(layer["removed"] == 0 for layer in digits["plain_layers"])
    removed = sum(layer["removed"] for layer in digits["group_layers"])
    assert removed >= 5
    for layer in digits["group_layers"]:
        assert layer["logged"] == layer["removed"]  # SparsityLogger.zero_units agrees
        # A removed filter is a whole zero slice: at least that many zero weights.
        assert (
            layer["weights"] - layer["nonzero"]
            >= layer["removed"] * layer["weights"] // (layer["filters"])
        )
    assert digits["filters_removed_per_epoch"][-1] == removed


def test_digits_shrinks_to_the_same_predictions(digits):
    shrunk = digits["shrunk"]
    kept = {layer["layer"]: layer["filters"] - layer["removed"] for layer in digits["group_layers"]}
    # conv1's zero filters fold into the valid conv2; conv2's through pooling into the Dense.
    assert shrunk["filters_after"] == kept
    assert shrunk["same_predictions"] and shrunk["max_abs_diff"] < 1e-5
    assert shrunk["params_after"] < shrunk["params_before"]
    assert shrunk["file_bytes_after"] < shrunk["file_bytes_before"]


def test_digits_accuracy_stays_close(digits):
    assert digits["plain_accuracy"] > 0.85
    assert digits["group_accuracy"] >= digits["plain_accuracy"] - 0.05


# --- claims.py --------------------------------------------------------------------------------


def row(claims, words):
    (found,) = [r for r in claims if words in r["claim"]]
    return found


def test_claims_cover_the_article(claims, examples):
    verdicts = {
        examples["claims"].HOLDS,
        examples["claims"].PROXIMAL_ONLY,
        examples["claims"].NOT_AS_STATED,
    }
    assert len(claims) == 8
    for r in claims:
        assert r["verdict"] in verdicts
        assert r["command"].startswith("`python examples/claims.py --only ")
        assert any(ch.isdigit() for ch in r["measured"])


def test_claims_verdicts_that_do_not_depend_on_noise(claims, examples):
    module = examples["claims"]
    assert row(claims, "drives some weights")["verdict"] == module.PROXIMAL_ONLY
    assert row(claims, "feature selection")["verdict"] == module.PROXIMAL_ONLY
    assert row(claims, "reduced memory")["verdict"] == module.PROXIMAL_ONLY
    assert row(claims, "exactly to zero")["verdict"] == module.HOLDS
    # The outlier robustness belongs to the L1 loss, which beats both penalties by far.
    assert row(claims, "outliers")["verdict"] == module.NOT_AS_STATED


def test_claims_markdown_table_keeps_its_columns(claims, examples):
    header = ["claim", "verdict", "measured", "command"]
    text = examples["_common"].table(
        header, [[r[k] for k in header] for r in claims], markdown=True
    )
    for line in text.splitlines():
        unescaped = line.replace("\\|", "")
        assert unescaped.count("|") == len(header) + 1, line


def test_sparse_bytes_against_hand_count(examples):
    kernel = np.zeros((30, 16), "float32")
    kernel[[0, 3, 3], [1, 2, 5]] = 1.0
    csr, bitmask = examples["claims"].sparse_bytes(kernel)
    assert csr == 3 * 4 + 3 * 4 + 31 * 4  # values, column indices, row pointers
    assert bitmask == 480 // 8 + 3 * 4
