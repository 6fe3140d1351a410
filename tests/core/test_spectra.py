"""Per-factor spectra (definitions section 2): charts, windows, tails, edge cases."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import brute
from physgsa.core import orbit
from physgsa.core.chain import Factor, check_matrix
from physgsa.core.spectra import chart_window, compute_spectrum, dominant_window, effective_rank
from properties import check_spectrum
from strategies import matrices

KW = dict(q=0.9, band=0.05, gap_floor=1e-3, chart="top")


def spectrum(a, name="A", **kw):
    return compute_spectrum(Factor(name=name, matrix=check_matrix(a, name)), **{**KW, **kw})


def orbit_matrix(r, s, extra_rows=0, seed=None):
    """A matrix whose normalized spectrum is exactly p(s): diagonal, or in random frames."""
    sig = np.sqrt(r * orbit.orbit_probs(r, s))
    a = np.zeros((r + extra_rows, r))
    a[np.arange(r), np.arange(r)] = sig
    if seed is not None:
        rng = np.random.default_rng(seed)
        u, _ = np.linalg.qr(rng.standard_normal((r + extra_rows, r + extra_rows)))
        v, _ = np.linalg.qr(rng.standard_normal((r, r)))
        a = u @ a @ v.T
    return a


@given(a=matrices())
def test_spectrum_properties_on_random_and_adversarial(a):
    check_spectrum(spectrum(a), a, 0.9)


@given(r=st.integers(3, 200), s=st.floats(0.05, 10.0), extra=st.integers(0, 3))
def test_charts_recover_exact_orbit_exponent(r, s, extra):
    sp = spectrum(orbit_matrix(r, s, extra))
    for chart_s in (sp.s_top, sp.s_mle, sp.s_window):
        assert abs(chart_s - s) <= 1e-8 * max(1.0, s)
    assert sp.window_r2 == pytest.approx(1.0, abs=1e-12)
    assert sp.hellinger <= 1e-15 and sp.kl <= 1e-12
    assert abs(sp.tail_error) <= 1e-9 * r


@given(r=st.integers(3, 60), s=st.floats(0.05, 3.0), seed=st.integers(0, 10**6))
def test_charts_recover_exponent_in_random_frames(r, s, seed):
    sp = spectrum(orbit_matrix(r, s, 2, seed))
    for chart_s in (sp.s_top, sp.s_mle, sp.s_window):
        assert abs(chart_s - s) <= 1e-8 * max(1.0, s)


def test_flat_spectrum_clips_to_zero_and_is_flagged():
    sp = spectrum(np.eye(10))
    assert sp.rho == 0.0 and sp.s_top == 0.0 and sp.s_mle == 0.0
    assert "top:flat" in sp.flags and "mle:flat" in sp.flags
    assert sp.window_gap == 0.0 and "window_gap_below_floor" in sp.flags


def test_rank_one_factor():
    rng = np.random.default_rng(0)
    a = np.outer(rng.standard_normal(7), rng.standard_normal(5))
    sp = spectrum(a)
    assert sp.r == 5 and sp.numerical_rank == 1 and sp.k_q == 1
    assert sp.rho == pytest.approx(np.log(5), abs=1e-12)
    assert sp.s_top == orbit.S_MAX and "top:steep" in sp.flags
    assert sp.tau == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("shape", [(1, 9), (9, 1), (3, 8), (8, 3)])
def test_non_square_and_vector_factors(shape):
    a = np.random.default_rng(1).standard_normal(shape)
    sp = spectrum(a)
    check_spectrum(sp, a, 0.9)
    assert sp.u.shape == (shape[0], min(shape)) and sp.vt.shape == (min(shape), shape[1])


def test_effective_rank_known_answer():
    lam = np.array([5.0, 3.0, 1.0, 1.0])  # cumulative 0.5, 0.8, 0.9, 1.0
    assert effective_rank(lam, 0.5) == 1
    assert effective_rank(lam, 0.8) == 2
    assert effective_rank(lam, 0.85) == 3
    assert effective_rank(lam, 0.95) == 4


def test_window_moves_to_largest_gap_in_band():
    # Energy fractions: ranks 1..4 hold 0.86, 0.88, 0.92, 0.95 of the energy: all in [0.85, 0.95].
    sigma = np.sqrt(np.array([86.0, 2.0, 4.0 - 1e-9, 3.0, 5.0])[[0, 2, 1, 3, 4]])
    sigma = np.sort(sigma)[::-1]
    k_q, k, gap = dominant_window(sigma, 0.9, 0.05)
    gaps = (sigma[:-1] - sigma[1:]) / sigma[0]
    frac = np.cumsum(sigma**2) / np.sum(sigma**2)
    cand = [i for i in range(len(sigma) - 1) if 0.85 <= frac[i] <= 0.95]
    assert k == cand[int(np.argmax(gaps[cand]))] + 1
    assert gap == pytest.approx(gaps[k - 1])


def test_window_chart_undefined_is_none_not_nan():
    s, r2, flag = chart_window(np.array([1.0, 0.0, 0.0]), 1)
    assert s is None and r2 is None and flag == "window_chart_undefined"


@given(a=matrices(min_side=1, max_side=12))
def test_values_only_spectrum_matches_svd(a):
    # The Gram path's energies are exact to (m + n) eps ||A||_F^2, and it is taken only when every
    # energy is resolved, so the rank agrees with the SVD's; otherwise the SVD itself is used.
    from physgsa.core.spectra import gram_energies, normalize

    ref = np.linalg.svd(normalize(a)[0], compute_uv=False)
    ours = compute_spectrum(Factor("a", a), q=0.9, band=0.05, gap_floor=1e-3, chart="top", vectors=False).sigma
    r = min(a.shape)
    assert np.all(np.abs(ours**2 - ref**2) <= 2 * sum(a.shape) * np.finfo(float).eps * r + 1e-300)
    assert np.count_nonzero(ours > max(a.shape) * np.finfo(float).eps * ours[0]) == \
        np.count_nonzero(ref > max(a.shape) * np.finfo(float).eps * ref[0])
    got = gram_energies(a)
    if got is not None:  # resolved: every energy is far above the rounding floor
        assert got[0][-1] > 0


def test_gram_path_is_taken_for_ordinary_weights_and_refused_for_rank_deficient():
    from physgsa.core.spectra import gram_energies

    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 48))
    assert gram_energies(a) is not None
    assert gram_energies(a[:, :10] @ rng.standard_normal((10, 48))) is None
    # Entries near 1e150 are scaled first, so the squares do not overflow.
    lam, c = gram_energies(a * 1e150)
    assert np.all(np.isfinite(lam)) and c > 1e149


@given(sigma=st.lists(st.floats(1e-6, 1e3), min_size=2, max_size=300),
       q=st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999]))
def test_default_band_keeps_q_to_within_half_the_tail(sigma, q):
    # Definitions section 2 (revised): with the default band (1 - q) / 2, a window moved off k_q
    # keeps between q - (1-q)/2 and q + (1-q)/2 of the energy; k_q itself keeps at least q.
    sigma = np.sort(np.asarray(sigma))[::-1]
    k_q, k, _ = dominant_window(sigma, q, None)
    kept = float(np.sum(sigma[:k] ** 2) / np.sum(sigma**2))
    half = (1.0 - q) / 2.0
    slack = 1e-12  # rounding of the cumulative sums
    if k == k_q:
        assert kept >= q - slack
    else:
        assert q - half - slack <= kept <= q + half + slack
    # An independent recomputation of the window with the band written out (tests/brute.py).
    assert k == brute.dominant_window(list(sigma), q, half)


def test_default_band_at_q_0999_is_the_spec_band_and_at_09_the_old_one():
    # Known answers: at q = 0.999 a spectrum with its largest gap at 95% energy keeps its window
    # inside [0.9985, 0.9995]; at q = 0.9 the default band equals the old fixed 0.05.
    sigma = np.sqrt(np.r_[np.full(95, 1.0), np.full(5, 0.01), np.geomspace(1e-3, 1e-6, 900)])
    k_q, k, _ = dominant_window(sigma, 0.999, None)
    kept = np.sum(sigma[:k] ** 2) / np.sum(sigma**2)
    assert 0.9985 <= kept <= 0.9995
    # The old fixed band of 0.05 jumps to the big gap after the first 95 values (95% of the energy).
    assert dominant_window(sigma, 0.999, 0.05)[1] == 95
    rng = np.random.default_rng(0)
    for _ in range(50):
        s = np.sort(rng.pareto(1.5, 200) + 1e-3)[::-1]
        assert dominant_window(s, 0.9, None) == dominant_window(s, 0.9, 0.05)
