"""examples/prune_channels_digits.py, quick: MACs targets met, plans kept, accuracy recovered.

TensorFlow only, as the other example tests: it trains ten models (a minute); prune_channels
itself is tested on every backend in test_prune_channels.py.
"""

import numpy as np
import pytest
from scipy import stats

from helpers import load_example

pytestmark = pytest.mark.tensorflow_only(reason="example output; trains ten models")

# Fine-tuned global magnitude pruning at speed-up 2 against the unpruned model, accuracy
# points. Measured on TensorFlow (quick mode, 1 fine-tuning epoch): 0.2 and 1.1 points below.
MARGIN = 0.08


@pytest.fixture(scope="module")
def result():
    return load_example("prune_channels_digits").main(quick=True)


def runs(result):
    for name, info in result["models"].items():
        for run in info["runs"]:
            yield name, info, run


def test_every_method_ran_on_both_models(result):
    assert result["task"] == "digits"
    assert set(result["models"]) == {"plain", "residual"}
    for info in result["models"].values():
        methods = [r["method"] for r in info["runs"]]
        assert sorted(methods) == sorted(result["methods"]) * len(result["seeds"])
        assert len(result["methods"]) == 5


def test_every_pruned_model_meets_its_macs_target_without_overshooting_much(result):
    for name, info, run in runs(result):
        where = (name, run["method"], run["speed_up"])
        assert run["macs_ratio"] <= 1 / run["speed_up"], where
        assert run["macs_after"] / info["macs"] == pytest.approx(run["macs_ratio"]), where
        if run["speed_up"] == 2:
            assert run["macs_ratio"] > 0.3, where
        assert run["params_ratio"] < 1, where


def test_the_shrunk_model_is_what_the_plan_says(result):
    for name, _, run in runs(result):
        where = (name, run["method"])
        assert run["matches_plan"], where  # MACs, weights and every layer's width
        assert all(1 <= kept <= size for size, kept in run["groups"]), where
        assert any(kept < size for size, kept in run["groups"]), where


def test_uniform_prunes_the_same_share_of_every_group(result):
    for name, _, run in runs(result):
        if run["method"] != "uniform":
            continue
        shares = [1 - kept / size for size, kept in run["groups"]]
        step = 1 / min(size for size, _ in run["groups"])
        assert max(shares) - min(shares) <= step + 1e-9, (name, run["groups"])
        assert min(shares) > 0, name


def test_fine_tuned_global_magnitude_pruning_stays_close_to_the_unpruned_model(result):
    for name, info in result["models"].items():
        unpruned = info["unpruned"][0]
        assert unpruned > 0.9, name  # the study starts from trained models
        magnitude = next(
            r for r in info["runs"] if r["method"] == "magnitude" and r["speed_up"] == 2
        )
        assert magnitude["accuracy_finetuned"] >= unpruned - MARGIN, (name, magnitude, unpruned)


def test_fine_tuning_recovers_what_pruning_lost(result):
    for name, info in result["models"].items():
        pruned = [r["accuracy_pruned"] for r in info["runs"]]
        tuned = [r["accuracy_finetuned"] for r in info["runs"]]
        assert sum(tuned) / len(tuned) > sum(pruned) / len(pruned), name
        assert min(tuned) > 0.8, (name, tuned)


def test_the_summary_table_has_every_row(result):
    rows = {(e["model"], e["speed_up"], e["method"]) for e in result["summary"]}
    assert len(rows) == 2 * len(result["speed_ups"]) * len(result["methods"])
    for entry in result["summary"]:
        assert entry["macs_ratio_max"] <= 1 / entry["speed_up"]


def test_the_baseline_never_has_fewer_macs_than_what_it_is_compared_with(result):
    assert result["baseline_fewer_macs"] == []
    for info in result["models"].values():
        for run in info["runs"]:
            uniform = next(
                r
                for r in info["runs"]
                if r["method"] == "uniform"
                and (r["seed"], r["speed_up"]) == (run["seed"], run["speed_up"])
            )
            assert run["macs_after"] <= uniform["macs_after"], run["method"]


def test_the_paired_comparison_counts_every_seed(result):
    for entry in result["summary"]:
        if entry["method"] == "uniform":
            assert "against_baseline" not in entry
            continue
        a = entry["against_baseline"]
        assert a["above"] + a["equal"] + a["below"] == len(result["seeds"])


def test_the_paired_interval_is_scipys_paired_t_interval():
    module = load_example("prune_channels_digits")
    rng = np.random.default_rng(0)
    base = rng.uniform(0.8, 0.9, size=7)
    other = base + rng.normal(0.0, 0.01, size=7)
    runs = [{"seed": s, "accuracy_finetuned": a} for s, a in enumerate(other)]
    baseline = [{"seed": s, "accuracy_finetuned": a} for s, a in enumerate(base)]
    got = module.paired(runs, baseline)
    want = stats.ttest_rel(100 * other, 100 * base).confidence_interval(0.95)
    assert (got["low"], got["high"]) == pytest.approx((want.low, want.high), rel=1e-9)
    assert got["mean"] == pytest.approx(100 * np.mean(other - base))
    assert got["above"] == int(np.sum(other > base)) and got["below"] == int(np.sum(other < base))


def test_the_shifted_task_places_every_digit_whole_on_the_canvas(monkeypatch):
    module = load_example("prune_channels_digits")
    monkeypatch.setattr(module, "NOISE", 0.0)
    x_train, _, y_train, _ = module._common.digits(seed=0)
    x, y = module.shifted(x_train[:50], y_train[:50], 2, np.random.default_rng(1))
    assert x.shape == (100, module.CANVAS, module.CANVAS, 1)
    np.testing.assert_array_equal(y, np.tile(y_train[:50], 2))
    for image, digit in zip(x, np.tile(x_train[:50], (2, 1, 1, 1)), strict=True):
        room = module.CANVAS - 8
        places = [
            (r, c)
            for r in range(room + 1)
            for c in range(room + 1)
            if np.array_equal(image[r : r + 8, c : c + 8], digit)
        ]
        assert places, "the digit is not on the canvas"
        r, c = places[0]
        rest = image.copy()
        rest[r : r + 8, c : c + 8] = 0
        assert not rest.any()  # nothing else on the canvas


def test_slimming_puts_an_l1_penalty_on_every_batchnorm_scale_and_nothing_else():
    module = load_example("prune_channels_digits")
    for build in module.MODELS.values():
        model = build(8, 0.03)
        norms = [layer for layer in model.layers if "BatchNormalization" in type(layer).__name__]
        assert norms
        gammas = [np.asarray(layer.gamma) for layer in norms]
        want = sum(0.03 * np.abs(g).sum() for g in gammas)  # scales start at 1
        got = sum(float(np.asarray(loss)) for loss in model.losses)
        assert got == pytest.approx(want, rel=1e-6)
        assert len(model.losses) == len(norms)
        assert all(layer.beta_regularizer is None for layer in norms)
        assert not module.plain_cnn(8).losses and not module.residual_cnn(8).losses


def test_an_unknown_task_is_a_clear_error():
    module = load_example("prune_channels_digits")
    with pytest.raises(
        ValueError, match=r"task must be 'digits' or 'shifted'. Received: task='mnist'"
    ):
        module.main(task="mnist")
