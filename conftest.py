"""Setup for the docstring examples: `pytest --doctest-modules keras_reg`.

Every example gets `keras`, `keras_reg` and `np` (NumPy), a fixed seed and a
fresh Keras session, as a reader running it in a new Python session would.
The tests' own setup is `tests/conftest.py`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_reg  # noqa: E402


@pytest.fixture(autouse=True)
def _docstring_example_namespace(request):
    if not request.node.nodeid.startswith("keras_reg/"):
        yield
        return
    namespace = request.getfixturevalue("doctest_namespace")
    namespace.update(keras=keras, keras_reg=keras_reg, np=np)
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("float32")
    yield
    keras.backend.clear_session()
