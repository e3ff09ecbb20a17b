"""examples/strength_sweep.py (the docs' "choosing a strength" plot) runs and shows a trade-off."""

import pytest

from helpers import load_example

# Example output, slow; what it trains (penalties, Proximal, SparsityLogger) is tested on every
# backend in the unit tests.
pytestmark = pytest.mark.tensorflow_only(reason="example output; slow")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    return load_example("strength_sweep").main(quick=True, out=str(out)), out


def test_more_strength_gives_more_zeros_and_fewer_features(sweep):
    results, _ = sweep
    none, weak, strong = results[None], results[1e-3], results[3e-2]
    assert none["sparsity"] == 0.0 and none["features_kept"] == 30  # no penalty, no zeros
    assert 0 < weak["sparsity"] < strong["sparsity"] < 1
    assert strong["features_kept"] < weak["features_kept"] <= 30
    assert strong["units_kept"] <= weak["units_kept"] <= 16
    for r in results.values():
        assert 0.5 < r["val_accuracy"] <= 1.0


def test_the_plot_is_written(sweep):
    _, out = sweep
    head = (out / "strength_sweep.png").read_bytes()[:8]
    assert head == b"\x89PNG\r\n\x1a\n"
