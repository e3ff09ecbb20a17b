"""The Proximal examples run, in quick mode, and show what the README says."""

import numpy as np

from helpers import load_example as load


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


def test_schedule_quick():
    fixed, warmed = load("schedule").main(quick=True)
    expected = [min(1.0, epoch / 5) for epoch in range(10)]
    np.testing.assert_allclose(warmed["strength_scale"], expected, rtol=1e-6)  # float32 scale
    assert warmed["sparsity"][0] == 0.0 < fixed["sparsity"][0]  # scale 0: no zeros yet
    assert warmed["sparsity"][-1] > 0.5 and fixed["sparsity"][-1] > 0.5
