"""The Gibbs–Cartan orbit: BW/Fisher line element, phi, tails (definitions section 2)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from physgsa.core import orbit


@given(r=st.integers(2, 2000), s=st.floats(0.0, 10.0))
def test_bw_line_element_is_quarter_r_fisher(r, s):
    # Finite difference of d_BW^2 between orbit points against (r/4) I(s): rel. error < 1e-3.
    h = 1e-4 * max(1.0, s)
    lo = max(s - h / 2, 0.0)
    hi = lo + h
    fd = orbit.bw_distance_sq(r, lo, hi) / h**2
    exact = r / 4 * orbit.fisher(r, lo + h / 2)
    assert abs(fd - exact) <= 1e-3 * exact


@given(r=st.integers(2, 5000), s=st.floats(0.0, 10.0))
def test_phi_increasing_with_derivative_mean_log(r, s):
    assert orbit.phi(r, 0.0) == pytest.approx(0.0, abs=1e-12)
    h = 1e-6
    fd = (orbit.phi(r, s + h) - orbit.phi(r, max(s - h, 0.0))) / (s + h - max(s - h, 0.0))
    assert fd == pytest.approx(orbit.phi_prime(r, s), rel=1e-5, abs=1e-10)
    assert orbit.phi_prime(r, s) > 0
    assert orbit.phi(r, s + 0.1) > orbit.phi(r, s)


def test_large_rank_and_exponent_stay_finite():
    r, s = 100_000, 10.0
    p = orbit.orbit_probs(r, s)
    assert np.all(np.isfinite(p)) and abs(p.sum() - 1) < 1e-12
    assert np.isfinite(orbit.fisher(r, s)) and np.isfinite(orbit.phi(r, s))
    assert 0 < orbit.phi(r, s) < np.log(r)


@given(r=st.integers(1, 500), s=st.floats(0.0, 8.0), data=st.data())
def test_tail_gc_matches_harmonic_numbers(r, s, data):
    k = data.draw(st.integers(1, r))
    h = lambda n: float(np.sum(np.arange(1, n + 1, dtype=float) ** -s))  # noqa: E731
    expect = r * (h(r) - h(k)) / h(r)
    assert orbit.tail_gc(r, k, s) == pytest.approx(expect, rel=1e-9, abs=1e-9 * r)


def test_tail_gc_known_values():
    # s = 0 is the flat spectrum: tail = r - k.
    assert orbit.tail_gc(10, 3, 0.0) == pytest.approx(7.0, rel=1e-14)
    assert orbit.tail_gc(10, 10, 2.0) == 0.0


@given(r=st.integers(2, 3000), s=st.floats(0.0, 10.0))
def test_inverses_recover_exponent(r, s):
    s_top, flag = orbit.invert_phi(r, orbit.phi(r, s))
    assert abs(s_top - s) <= 1e-8 * max(1.0, s) or (s == 0 and flag == "flat")
    s_mle, flag = orbit.invert_mean_log(r, orbit.phi_prime(r, s))
    assert abs(s_mle - s) <= 1e-8 * max(1.0, s) or (s == 0 and flag == "flat")


def test_inverse_edges_are_flagged():
    assert orbit.invert_phi(1, 0.0) == (0.0, "rank_one_space")
    assert orbit.invert_phi(5, 0.0) == (0.0, "flat")
    assert orbit.invert_phi(5, np.log(5)) == (orbit.S_MAX, "steep")
