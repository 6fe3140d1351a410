"""The compare page's binned ``|A|`` panels (:func:`physgsa.core.heatmaps.binned_abs`, issue 25).

Checked against a brute force written here: every block of ``np.array_split`` taken entry by
entry, its mean in exact rational arithmetic. One-entry blocks must be ``|a|`` exactly; larger
blocks within ``gamma_(h + w)`` of the exact mean, relative (all terms are nonnegative).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from physgsa.core.heatmaps import binned_abs, changed_bins
from physgsa.core.linalg import gamma


def exact_bins(a: np.ndarray, order: np.ndarray, size: int) -> list[list[Fraction]]:
    x = a[order]
    rows = np.array_split(np.arange(x.shape[0]), min(size, x.shape[0]))
    cols = np.array_split(np.arange(x.shape[1]), min(size, x.shape[1]))
    return [[sum((Fraction(abs(float(x[i, j]))) for i in r for j in c), Fraction(0)) / (len(r) * len(c))
             for c in cols] for r in rows], [len(r) for r in rows], [len(c) for c in cols]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(m=st.integers(1, 40), n=st.integers(1, 40), size=st.integers(1, 12), seed=st.integers(0, 2**32 - 1),
       spread=st.sampled_from([0.0, 3.0, 150.0]))
def test_binned_means_are_within_their_bound_of_the_exact_means(m, n, size, seed, spread):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, n)) * 10.0 ** rng.uniform(-spread, spread, (m, n))
    a[rng.random((m, n)) < 0.1] = 0.0
    order = rng.permutation(m)
    got = binned_abs(a, order, size)
    want, hs, ws = exact_bins(a, order, size)
    assert got.shape == (len(hs), len(ws))
    for i, h in enumerate(hs):
        for j, w in enumerate(ws):
            exact = want[i][j]
            if h * w == 1:
                assert Fraction(float(got[i, j])) == exact
            else:
                assert abs(Fraction(float(got[i, j])) - exact) <= Fraction(gamma(h + w + 1)) * exact


def test_small_panels_are_the_absolute_entries_and_bins_match_changed_bins():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((30, 20))
    order = rng.permutation(30)
    assert np.array_equal(binned_abs(a, order, 96), np.abs(a[order]))
    # changed_bins and binned_abs cut the columns the same way: a column's bin holds it.
    n, size = 250, 96
    b = binned_abs(np.eye(n)[:1], np.arange(1), size)  # row 0 of the identity: only column 0 is 1
    assert b.shape == (1, size) and b[0, 0] > 0 and not np.any(b[0, 1:])
    hit = changed_bins([0, 249], n, size)
    assert hit[0] and hit[-1] and hit.sum() == 2
