"""examples/custom_layer_rule.py: a user's layer with a rule is regularized, pruned and shrunk,
and the shrunk model loads in a fresh process with the same outputs."""

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_reg
from keras_reg import rules

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location(
        "custom_layer_rule", EXAMPLES / "custom_layer_rule.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_rule_makes_a_users_layer_shrink_exactly(example, tmp_path):
    result = example.main(str(tmp_path))
    assert result["penalized"] == ["sequential/hidden/kernel", "sequential/out/kernel"]
    assert result["units"] == (64, 16)  # 75% of 64 units pruned, then removed
    assert result["kept_whole"] == ()
    assert result["difference"] < 1e-5


def test_without_the_rule_the_layer_is_kept_whole(example, monkeypatch):
    monkeypatch.delitem(rules._USER, example.MyDense)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, example.MyDense(3, name="mine")(inputs))
    plan = keras_reg.plan_shrink(model)
    assert plan.kept_whole == (
        ("mine", "its channel semantics are unknown to shrink (MyDense layer)"),
    )


@pytest.mark.slow
@pytest.mark.tensorflow_only(reason="example output, in a fresh process (20 s on JAX)")
def test_the_shrunk_model_round_trips_through_keras_in_a_fresh_process(tmp_path):
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "custom_layer_rule.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "hidden units: 64 -> 16" in run.stdout
    code = f"""
        import sys
        sys.path.insert(0, {str(EXAMPLES)!r})
        import keras, numpy as np
        import custom_layer_rule  # registers MyDense with Keras, and its rule
        small = keras.saving.load_model({str(tmp_path / "small.keras")!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        expected = np.load({str(tmp_path / "outputs.npy")!r})
        got = keras.ops.convert_to_numpy(small(x))
        assert small.get_layer("hidden").units == 16
        assert type(small.get_layer("out").kernel_regularizer).__name__ == "L2"
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        print("loaded")
    """
    load = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
    )
    assert load.returncode == 0, load.stderr
    assert load.stdout.strip().endswith("loaded")
    assert np.load(tmp_path / "outputs.npy").shape == (8, 2)
