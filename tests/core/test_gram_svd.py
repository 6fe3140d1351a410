"""The fast route's Gram SVD (core/linalg.py ``gram_svd``) and its gate (core/spectra.py
``gram_resolved``), issue 25.

``gram_svd`` returns an error level ``omega`` measured a posteriori: the computed SVD is within
``omega`` of an exact SVD of ``A + E`` with ``||E||_2 <= omega sigma_1``. Checked here against
60-digit arithmetic (mpmath) on random and ill-conditioned factors: every consequence holds
(frames' orthogonality, residual, singular values), and ``omega`` stays within a small factor of
the true errors plus its own evaluation's rounding scale ``(m + n) min(m, n) u``, so a bound
loosened 3-fold fails. ``gram_resolved`` is checked on spectra built to sit on each of its
decisions, and ``compute_spectrum(svd="gram")`` against gesdd's windows, flags and tails.
"""

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from physgsa.core import linalg
from physgsa.core.chain import Factor
from physgsa.core.spectra import GRAM_MAX_OMEGA, compute_spectrum, dominant_window, gram_resolved, normalize

U = 2.0**-53
KW = dict(q=0.9, band=None, gap_floor=1e-3, chart="top")


def mp(x: np.ndarray) -> mpmath.matrix:
    return mpmath.matrix(x.tolist())


def norm2(m: mpmath.matrix) -> float:
    return float(max(abs(v) for v in mpmath.svd_r(m, compute_uv=False)))


def factor(rng, m, n, decay):
    """Random frames and singular values from 1 down to ``10**-decay`` (0: a Gaussian matrix)."""
    if decay == 0:
        return rng.standard_normal((m, n))
    r = min(m, n)
    qa = np.linalg.qr(rng.standard_normal((m, r)))[0]
    qb = np.linalg.qr(rng.standard_normal((n, r)))[0]
    return (qa * np.logspace(0, -decay, r)) @ qb.T


@settings(derandomize=True, max_examples=40, deadline=None)
@given(m=st.integers(2, 12), n=st.integers(2, 12), decay=st.sampled_from([0, 1, 2, 4]),
       scale=st.sampled_from([1.0, 1e-120, 1e120]), seed=st.integers(0, 2**32 - 1))
def test_the_error_level_bounds_the_true_errors_and_is_not_loose(m, n, decay, scale, seed):
    a = factor(np.random.default_rng(seed), m, n, decay) * scale
    got = linalg.gram_svd(a, max_omega=1.0)
    if scale != 1.0:
        # Squares beyond float64's range: refused (the pipeline's A_hat is normalized, ||A_hat||_F^2 = r).
        if got is not None:
            assert np.all(np.isfinite(got[1]))
        return
    assert got is not None
    u, s, vt, omega = got
    r = min(m, n)
    assert u.shape == (m, r) and vt.shape == (r, n) and np.all(np.diff(s) <= 0) and s[-1] > 0
    with mpmath.workdps(60):
        am, um, vm = mp(a), mp(u), mp(vt.T)
        eye = mpmath.eye(r)
        eta_u, eta_v = norm2(um.T * um - eye), norm2(vm.T * vm - eye)
        residual = norm2(am - um * mpmath.diag(s.tolist()) * vm.T)
        exact = sorted((float(x) for x in mpmath.svd_r(am, compute_uv=False)), reverse=True)
    s1 = float(s[0])
    # Sound: frames within omega of orthonormal; the residual within (3 omega + omega^2) sigma_1 (the
    # backward error plus the frames' distance to their polar factors); Weyl on the values.
    assert eta_u <= omega and eta_v <= omega
    assert residual <= (3 * omega + omega * omega) * s1
    assert max(abs(e - g) for e, g in zip(exact, s)) <= omega * s1 * (1 + 1e-12)
    # Not loose: at most 3 times the true errors plus the check's own rounding scale (the largest
    # measured ratio is 1.7, so a bound loosened 3-fold fails here).
    scale_of = eta_u + eta_v + residual / s1 + (m + n) * r * U
    assert omega <= 3.0 * scale_of


def test_a_known_answer_is_exact():
    # A signed permutation of diag(4, 3, 2, 1): the Gram is exactly diagonal.
    a = np.zeros((5, 4))
    for i, (row, val) in enumerate(zip([3, 0, 4, 1], [-2.0, 4.0, 1.0, 3.0])):
        a[row, i] = val
    u, s, vt, omega = linalg.gram_svd(a, max_omega=1.0)
    assert s.tolist() == [4.0, 3.0, 2.0, 1.0]
    assert np.array_equal((u * s) @ vt, a)
    assert 0 < omega < 1e-13


@pytest.mark.parametrize("kind", ["rank_deficient", "ill", "zero", "overflow"])
def test_it_refuses_what_it_cannot_resolve(kind):
    rng = np.random.default_rng(5)
    a = {"rank_deficient": np.outer(rng.standard_normal(9), rng.standard_normal(6)),
         "ill": factor(rng, 30, 20, 8),
         "zero": np.zeros((6, 4)),
         "overflow": rng.standard_normal((6, 4)) * 1e200}[kind]
    assert linalg.gram_svd(a, max_omega=GRAM_MAX_OMEGA * linalg.svd_omega(a.shape)) is None


def test_wide_factors_are_decomposed_through_their_transpose():
    a = factor(np.random.default_rng(2), 7, 19, 1)
    u, s, vt, _ = linalg.gram_svd(a, max_omega=1.0)
    assert u.shape == (7, 7) and vt.shape == (7, 19)
    np.testing.assert_allclose(s, np.linalg.svd(a, compute_uv=False), rtol=1e-12)
    np.testing.assert_allclose((u * s) @ vt, a, atol=1e-13)


def spectrum(values):
    return np.sort(np.asarray(values, dtype=np.float64))[::-1]


OMEGA = 1e-10
SHAPE = (64, 64)


def test_the_gate_passes_a_spectrum_far_from_every_decision():
    s = spectrum(np.r_[np.linspace(3.0, 2.0, 8), np.linspace(1.0, 0.5, 56)])
    assert gram_resolved(s, OMEGA, SHAPE, q=0.5, band=None, gap_floor=1e-3)


def test_the_gate_refuses_a_cumulative_fraction_on_q():
    # lambda = (9, 1): the first cumulative fraction is exactly q = 0.9.
    s = np.sqrt(np.array([9.0, 1.0]))
    assert not gram_resolved(s, OMEGA, (2, 2), q=0.9, band=0.01, gap_floor=1e-3)


def test_the_gate_refuses_a_fraction_on_the_band_edge():
    s = np.sqrt(np.array([8.5, 1.5]))  # cumulative fraction 0.85 = q - (1 - q) / 2 at q = 0.9
    assert not gram_resolved(s, OMEGA, (2, 2), q=0.9, band=None, gap_floor=1e-3)


def cliffs(second_gap):
    """Three plateaus with a cliff of 1 after rank 40 and one of ``second_gap`` after rank 60."""
    return spectrum(np.r_[np.linspace(3.0, 2.0, 40), np.linspace(1.0, 0.9, 20),
                          np.linspace(0.9 - second_gap, 0.8 - second_gap, 20)])


def test_the_gate_refuses_two_candidate_gaps_within_the_error():
    s = cliffs(0.5)
    frac = np.cumsum(s**2) / np.sum(s**2)
    q, band = (frac[39] + frac[59]) / 2 + 1e-4, (frac[59] - frac[39]) / 2 + 0.01
    assert dominant_window(s, q, band)[1] == 40  # both cliffs are candidates; the first is larger
    assert gram_resolved(s, OMEGA, (80, 80), q=q, band=band, gap_floor=1e-3)
    tie = cliffs(1.0 + 1e-12)  # the second cliff larger by less than the error
    assert dominant_window(tie, q, band)[1] == 60
    assert not gram_resolved(tie, OMEGA, (80, 80), q=q, band=band, gap_floor=1e-3)
    assert gram_resolved(cliffs(1.0 + 1e-6), OMEGA, (80, 80), q=q, band=band, gap_floor=1e-3)


def test_the_gate_refuses_a_gap_on_the_floor():
    s = spectrum(np.r_[np.linspace(2.0, 1.5, 10), np.linspace(1.5 - 2e-3, 1.0, 30)])
    q = float(np.sum(s[:10] ** 2) / np.sum(s**2)) + 1e-3
    _, k, gap = dominant_window(s, q, 0.05)
    assert gram_resolved(s, OMEGA, (40, 40), q=q, band=0.05, gap_floor=gap / 2)
    assert not gram_resolved(s, OMEGA, (40, 40), q=q, band=0.05, gap_floor=gap * (1 + 1e-12))


@pytest.mark.parametrize("values", [np.r_[1.0, np.full(9, 1e-4)],  # sigma_1 / sigma_r > 1024
                                    np.full(10, 1.0) + np.linspace(1e-9, 0, 10)])  # equal energies
def test_the_gate_refuses_ill_conditioned_or_flat_spectra(values):
    # q = 0.93 with a narrow band: no cumulative fraction (0.1, 0.2, ...) is near a decision.
    assert not gram_resolved(spectrum(values), OMEGA, (10, 10), q=0.93, band=0.01, gap_floor=1e-3)
    spread = spectrum(np.linspace(1.0, 0.9, 10))
    assert gram_resolved(spread, OMEGA, (10, 10), q=0.93, band=0.01, gap_floor=1e-3)


@settings(derandomize=True, max_examples=25, deadline=None)
@given(m=st.integers(8, 40), n=st.integers(8, 40), decay=st.sampled_from([0, 1, 2]), seed=st.integers(0, 2**32 - 1))
def test_gram_spectra_decide_as_gesdd_and_bound_their_tails(m, n, decay, seed):
    a = factor(np.random.default_rng(seed), m, n, decay)
    f = Factor(name="f", matrix=a)
    gram, ref = compute_spectrum(f, svd="gram", **KW), compute_spectrum(f, **KW)
    assert ref.svd_route == "gesdd" and ref.omega == linalg.svd_omega((m, n))
    if gram.svd_route != "gram":
        assert gram.sigma.tobytes() == ref.sigma.tobytes()  # the fallback is gesdd itself
        return
    assert (gram.k_q, gram.k, gram.flags, gram.numerical_rank) == (ref.k_q, ref.k, ref.flags, ref.numerical_rank)
    assert np.max(np.abs(gram.sigma - ref.sigma)) <= (gram.omega + ref.omega) * gram.sigma[0]
    # The a priori tail bound covers the computed window of the Gram frames (60 digits).
    a_hat = normalize(a)[0]
    k = gram.k
    with mpmath.workdps(60):
        w = mp(gram.u[:, :k]) * mpmath.diag(gram.sigma[:k].tolist()) * mp(gram.vt[:k])
        tail = float(mpmath.mnorm(mp(a_hat) - w, "f") ** 2)
    assert tail <= gram.tau_upper(k)


def test_a_well_conditioned_factor_takes_the_gram_route_and_an_ill_one_gesdd():
    rng = np.random.default_rng(11)
    good = compute_spectrum(Factor(name="f", matrix=factor(rng, 30, 24, 1)), svd="gram", **KW)
    assert good.svd_route == "gram" and linalg.svd_omega((30, 24)) < good.omega
    assert good.omega <= GRAM_MAX_OMEGA * linalg.svd_omega((30, 24))
    ill = compute_spectrum(Factor(name="f", matrix=factor(rng, 30, 24, 6)), svd="gram", **KW)
    assert ill.svd_route == "gesdd" and ill.omega == linalg.svd_omega((30, 24))


@settings(derandomize=True, max_examples=30, deadline=None)
@given(n=st.integers(2, 60), log_kappa=st.floats(0.0, 12.0), seed=st.integers(0, 2**32 - 1))
def test_the_condition_screen_is_a_lower_bound(n, log_kappa, seed):
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    lam = np.logspace(0, -log_kappa, n)
    g = (q * lam) @ q.T
    g = (g + g.T) / 2
    true = float(lam[0] / lam[-1])
    got = linalg.condition_at_least(g)
    # A lower bound up to the rounding of the inverse iteration's quotient (gamma_n sqrt(n) lambda_1 absolute).
    assert got <= true * (1 + 2 * linalg.gamma(n) * np.sqrt(n) * true + 1e-9)
    if n >= 2 and log_kappa <= 8:
        assert got >= true / 50  # four steps find the extremes of a geometric spectrum closely


def test_the_screen_refuses_before_the_eigensolve_and_only_what_the_gate_refuses(monkeypatch):
    rng = np.random.default_rng(4)
    n = linalg.SCREEN_FROM
    qa, qb = np.linalg.qr(rng.standard_normal((n, n)))[0], np.linalg.qr(rng.standard_normal((n, n)))[0]
    for kappa in (100.0, 900.0):  # sigma_1 / sigma_r below 1024: the Gram SVD is taken
        a = (qa * np.logspace(0, -np.log10(kappa), n)) @ qb.T
        assert linalg.gram_svd(a, max_omega=1.0, max_condition=2.0**20) is not None, kappa
    # sigma_1 / sigma_r = 5000: refused by the screen, without the eigensolve.
    a = (qa * np.logspace(0, -np.log10(5000.0), n)) @ qb.T

    def no_eigh(*args, **kwargs):
        raise AssertionError("the eigensolve ran for a factor the screen refuses")

    monkeypatch.setattr(np.linalg, "eigh", no_eigh)
    assert linalg.gram_svd(a, max_omega=1.0, max_condition=2.0**20) is None
    # The same for a wide factor (it goes through its transpose, which must keep max_condition).
    wide = np.concatenate([a, a], axis=1) / np.sqrt(2.0)  # n x 2n, the same singular values
    assert linalg.gram_svd(wide, max_omega=1.0, max_condition=2.0**20) is None
    # A Gram that is not positive definite is screened out.
    assert linalg.condition_at_least(np.diag([1.0, 0.0, -1.0])) == np.inf
