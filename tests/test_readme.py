"""The README's quick start runs as written (with `x, y` from load_breast_cancer)."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).parent.parent / "README.md"


def quick_start_blocks():
    text = README.read_text()
    section = text[text.index("## Quick start") : text.index("## The penalties")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_quick_start_runs(tmp_path, monkeypatch, capsys):
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    monkeypatch.chdir(tmp_path)
    x, y = load_breast_cancer(return_X_y=True)
    namespace = {"x": StandardScaler().fit_transform(x).astype("float32"), "y": y}
    blocks = quick_start_blocks()
    assert len(blocks) == 3
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    sparsity = namespace["history"].history["sparsity"]
    assert len(sparsity) == 20 and sparsity[-1] > 0.2  # exact zeros, as the README says
    assert (tmp_path / "model.keras").exists()
    assert "total" in capsys.readouterr().out  # the printed report's total row
    reloaded = namespace["model"]
    np.testing.assert_allclose(reloaded.predict(namespace["x"][:5], verbose=0).shape, (5, 1))
