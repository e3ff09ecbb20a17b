"""The Proximal examples run, in quick mode, and show what the README says."""

import importlib.util
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lasso_agreement_quick(capsys):
    rows = load("lasso_agreement").main(quick=True)
    for label, diff, same_zeros, zeros_ref, zeros_prox, zeros_plain in rows:
        assert same_zeros and zeros_prox == zeros_ref > 0, label
        assert diff < 1e-3 and zeros_plain == 0, label
    assert "max |w - w_sklearn|" in capsys.readouterr().out


def test_proximal_zeros_quick():
    rows = load("proximal_zeros").main(quick=True)
    for name, (plain, prox) in rows.items():
        assert plain[0] < 0.05 < 0.4 < prox[0], name
        assert np.isfinite(prox[2]) and prox[2] > 0.8, name
