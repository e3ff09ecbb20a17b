"""tf.distribute: penalties counted once, one proximal step per update."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
SCRIPTS = Path(__file__).parent / "scripts"


def run_script(name, timeout=600):
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / name)], capture_output=True, text=True,
        timeout=timeout, env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


@pytest.fixture(scope="module")
def mirrored():
    return run_script("mirrored_proximal.py")


def test_mirrored_runs_on_two_replicas(mirrored):
    assert mirrored["mirrored"]["replicas"] == 2
    assert mirrored["single"]["w0"] == mirrored["mirrored"]["w0"]


def test_mirrored_gives_the_single_device_weights(mirrored):
    """Same full batch, same steps: one prox per step, penalty gradient taken out once."""
    single, multi = mirrored["single"], mirrored["mirrored"]
    np.testing.assert_allclose(multi["w"], single["w"], atol=1e-5)
    assert (np.array(single["w"]) == 0).sum() >= 2  # the 4 noise features go to zero
    np.testing.assert_array_equal(np.array(multi["w"]) == 0, np.array(single["w"]) == 0)
    assert multi["iterations"] == single["iterations"] == 40


def test_mirrored_counts_the_penalty_once(mirrored):
    single, multi = mirrored["single"], mirrored["mirrored"]
    np.testing.assert_allclose(multi["first_loss"], single["first_loss"], rtol=1e-5)
    np.testing.assert_allclose(multi["loss"], single["loss"], rtol=1e-4)
