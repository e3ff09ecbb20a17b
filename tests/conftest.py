import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# XLA compiles the suite's functions at LLVM optimization level 0. On JAX every op run eagerly,
# and every random initializer at every new shape, is one more compile: the suite compiles
# thousands of small programs and runs most of them once, and LLVM's optimizations took ~40% of
# the JAX suite's time. The programs compute the same values (within the rounding the tests'
# tolerances allow); benchmarks, examples and `make demo`, run outside the suite, keep XLA's
# default level.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import keras  # noqa: E402
import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Every test runs on every backend, except those marked `tensorflow_only(reason=...)`."""
    backend = keras.backend.backend()
    for item in items:
        marker = item.get_closest_marker("tensorflow_only")
        if marker is None:
            continue
        reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else None)
        if not reason:
            raise pytest.UsageError(f"{item.nodeid}: tensorflow_only needs a reason=")
        if backend != "tensorflow":
            item.add_marker(pytest.mark.skip(reason=f"TensorFlow only: {reason}"))


@pytest.fixture(autouse=True)
def _seeded_fresh_keras():
    """Each test starts from the same seed, float32 policy and empty graph."""
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
    # Keras' global state only: its full garbage collection costs ~0.2 s of CPU per
    # test once TensorFlow is loaded, and Python collects on its own.
    keras.backend.clear_session(free_memory=False)
