"""examples/prune_digits.py in quick mode: exact structured targets, then an exact shrink; then
pruning to a speed-up and fine-tuning."""

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"

# Example output, slow; pruning and shrink are tested on every backend in the unit tests.
pytestmark = pytest.mark.tensorflow_only(reason="example output; slow")


@pytest.fixture(scope="module")
def result():
    sys.path.insert(0, str(EXAMPLES))  # the examples import their `_common` module
    try:
        spec = importlib.util.spec_from_file_location("prune_digits", EXAMPLES / "prune_digits.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.main(quick=True)
    finally:
        sys.path.remove(str(EXAMPLES))


def test_each_pruned_layer_has_exactly_the_target_zero_units(result):
    for name, layer in result["layers"].items():
        assert layer["zero_units"] == round(result["target"] * layer["groups"]), name
        # SparsityLogger saw the schedule rise to the target.
        per_epoch = layer["zero_units_per_epoch"]
        assert per_epoch == sorted(per_epoch) and per_epoch[-1] == layer["zero_units"], name


def test_shrink_removes_exactly_the_zero_units_and_keeps_the_outputs(result):
    for name, layer in result["layers"].items():
        assert layer["kept"] == layer["groups"] - layer["zero_units"], name
    assert result["max_output_difference"] < 1e-5
    assert result["accuracy"]["shrunk"] == result["accuracy"]["pruned"]
    assert result["params_after"] < result["params_before"] / 20
    assert result["accuracy"]["dense"] > 0.9
    assert set(result["latency_ms"]) == {"pruned", "shrunk"}


def test_prune_channels_meets_the_speed_up_and_fine_tuning_recovers(result):
    macs = result["macs"]
    assert macs["fast"] <= macs["dense"] / result["speed_up"]
    assert macs["fast"] > 0.9 * macs["dense"] / result["speed_up"]  # as close as channels allow
    accuracy = result["accuracy"]
    assert accuracy["fast"] > accuracy["fast_before_finetuning"]
    assert accuracy["fast"] >= accuracy["dense"] - 0.05
