"""Keras' own regularizer tests, run with Keras' L1, L2, L1L2 swapped for ours."""

import pytest

import keras_reg

keras_tests = pytest.importorskip("keras.src.regularizers.regularizers_test")


@pytest.fixture(autouse=True)
def _ours_in_keras_place(monkeypatch):
    from keras.src import regularizers

    for name, ours in [("L1", keras_reg.L1), ("L2", keras_reg.L2), ("L1L2", keras_reg.L1L2)]:
        monkeypatch.setattr(regularizers, name, ours)
        monkeypatch.setattr(
            regularizers, name.lower().replace("l1l2", "l1_l2"), ours, raising=False
        )


class TestKerasOwnRegularizerTestsWithOurs(keras_tests.RegularizersTest):
    pass

    def test_get_method(self):
        # keras.regularizers.get("l1") builds Keras' own class from its built-in table,
        # whatever the module attribute says; ours come from instances or "keras_reg>L1".
        pytest.skip("string identifiers resolve to Keras' own classes, by design")
