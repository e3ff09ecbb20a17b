"""Distribution: penalties counted once, one proximal step per update.

TensorFlow: MirroredStrategy on two logical CPUs, MultiWorkerMirroredStrategy with
two worker processes on localhost. JAX: DataParallel over two host CPU devices.
Each runs in its own process: device layouts must be set before the backend starts.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from helpers import result_of, run_python

SCRIPTS = Path(__file__).parent / "scripts"
BACKEND = keras.backend.backend()
tensorflow_only = pytest.mark.tensorflow_only(reason="tf.distribute")


def run_script(name, *args, backend="tensorflow", timeout=600):
    return result_of(run_python(SCRIPTS / name, *args, backend=backend, timeout=timeout))


@pytest.fixture(scope="module")
def mirrored():
    return run_script("mirrored_proximal.py")


@tensorflow_only
def test_mirrored_runs_on_two_replicas(mirrored):
    assert mirrored["mirrored"]["replicas"] == 2
    assert mirrored["single"]["w0"] == mirrored["mirrored"]["w0"]


@tensorflow_only
def test_mirrored_gives_the_single_device_weights(mirrored):
    """Same full batch, same steps: one prox per step, penalty gradient taken out once."""
    single, multi = mirrored["single"], mirrored["mirrored"]
    np.testing.assert_allclose(multi["w"], single["w"], atol=1e-5)
    assert (np.array(single["w"]) == 0).sum() >= 2  # the 4 noise features go to zero
    np.testing.assert_array_equal(np.array(multi["w"]) == 0, np.array(single["w"]) == 0)
    assert multi["iterations"] == single["iterations"] == 40


@tensorflow_only
def test_mirrored_counts_the_penalty_once(mirrored):
    single, multi = mirrored["single"], mirrored["mirrored"]
    np.testing.assert_allclose(multi["first_loss"], single["first_loss"], rtol=1e-5)
    np.testing.assert_allclose(multi["loss"], single["loss"], rtol=1e-4)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


@tensorflow_only
@pytest.mark.slow
def test_multi_worker_gives_the_single_worker_weights(tmp_path):
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    script = str(SCRIPTS / "multiworker.py")
    ports = [free_port(), free_port()]
    workers = [
        subprocess.Popen(
            [sys.executable, script, *ports, str(i), str(tmp_path / f"w{i}.npy")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    try:
        outputs = [w.communicate(timeout=300) for w in workers]
    finally:
        for w in workers:
            w.kill()
    for w, (out, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err[-3000:]
        assert "replicas 2" in out
    run_python(script, "single", tmp_path / "s.npy", backend="tensorflow")
    reference = np.load(tmp_path / "s.npy")
    for i in range(2):
        result = np.load(tmp_path / f"w{i}.npy")
        np.testing.assert_allclose(result, reference, atol=1e-5)  # weights, then losses
    assert (reference[:6] == 0).sum() >= 2


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution on JAX")
def test_jax_data_parallel_gives_the_single_device_weights():
    result = run_script("jax_data_parallel.py", backend="jax")
    assert result["devices"] == 2
    (w1, loss1), (w2, loss2) = result["single"], result["multi"]
    np.testing.assert_allclose(w2, w1, atol=1e-5)
    np.testing.assert_allclose(loss2, loss1, rtol=1e-4)
    assert (np.array(w1) == 0).sum() >= 2
