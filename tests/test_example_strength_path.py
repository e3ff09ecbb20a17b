"""examples/strength_path.py (the docs' "choosing a strength" page) runs and writes its figure."""

import pytest

from helpers import load_example

# Example output, slow; what it runs (max_strength, regularization_path) is tested on every
# backend in tests/test_path.py.
pytestmark = pytest.mark.tensorflow_only(reason="example output; slow")


def test_quick_path_chooses_a_sparser_model_and_draws_it(tmp_path):
    path, accuracy = load_example("strength_path").main(quick=True, out=str(tmp_path), verbose=0)
    rows = path.to_dict()["rows"]
    assert len(rows) == 4 and path.strengths == sorted(path.strengths, reverse=True)
    assert path.one_se >= path.best  # the 1-SE rule never picks a weaker strength
    assert rows[0]["sparsity"] > rows[-1]["sparsity"]  # the strongest point is the sparsest
    assert 0.5 < accuracy <= 1.0
    assert (tmp_path / "strength_path.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
