"""Interface transport and rigidity (definitions sections 2 and 3)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from physgsa.core.chain import Factor, check_matrix
from physgsa.core.spectra import compute_spectrum
from physgsa.core.transport import rigidity, transport
from properties import check_rigidity, check_transport
from strategies import matrix_pairs

KW = dict(q=0.9, band=0.05, gap_floor=1e-3, chart="top")


def spec(a, name):
    return compute_spectrum(Factor(name=name, matrix=check_matrix(a, name)), **KW)


@given(pair=matrix_pairs(), data=st.data())
def test_truncation_error_bound_and_slack(pair, data):
    a1, a2 = pair
    left, right = spec(a1, "l"), spec(a2, "r")
    # At the dominant windows and at arbitrary windows.
    k = data.draw(st.integers(1, left.r))
    kp = data.draw(st.integers(1, right.r))
    for kk, kkp in ((left.k, right.k), (k, kp)):
        tr = transport(left, right, kk, kkp)
        check_transport(tr, left, right)
    check_rigidity(rigidity(left, right, tr.m_full, seed=0), left, right)


def shared_frames(n, s1, s2, seed=0):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    w, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (u * s1) @ v.T, (w * s2) @ u.T  # A_{l+1}'s input frame is A_l's output frame


@pytest.mark.parametrize("n", [4, 40, 80])
def test_shared_singular_frames_have_zero_slack_and_known_error(n):
    s1 = np.arange(1, n + 1) ** -0.8
    s2 = np.arange(1, n + 1) ** -1.3
    a1, a2 = shared_frames(n, s1, s2)
    left, right = spec(a1, "l"), spec(a2, "r")
    rig = rigidity(left, right, right.a_hat @ left.a_hat, seed=0)
    assert abs(rig.slack) <= 1e-12
    tr = transport(left, right, left.k, right.k)
    assert np.allclose(tr.cosines, 1.0, atol=1e-12)
    # C is the identity, so E^2 = sum_i sigma'_i^2 sigma_i^2 over i > min(k, k').
    kmin = min(left.k, right.k)
    expect = np.sqrt(np.sum(right.sigma[kmin:] ** 2 * left.sigma[kmin:] ** 2))
    assert tr.trunc_error == pytest.approx(expect, rel=1e-10)


def test_identity_chain_known_answers():
    n = 10
    left, right = spec(np.eye(n), "l"), spec(np.eye(n), "r")
    tr = transport(left, right, left.k, right.k)
    check_transport(tr, left, right)
    assert tr.trunc_error == pytest.approx(np.sqrt(n - min(left.k, right.k)), rel=1e-12)
    rig = rigidity(left, right, tr.m_full, seed=0)
    assert abs(rig.slack) <= 1e-12 and rig.drift == 0.0 and rig.drift_holds


def test_rank_one_factors_transport_exactly():
    rng = np.random.default_rng(3)
    a1 = np.outer(rng.standard_normal(6), rng.standard_normal(4))
    a2 = np.outer(rng.standard_normal(5), rng.standard_normal(6))
    left, right = spec(a1, "l"), spec(a2, "r")
    tr = transport(left, right, left.k, right.k)
    assert left.k == right.k == 1
    assert tr.trunc_error <= 1e-12 * np.linalg.norm(tr.m_full)
    check_transport(tr, left, right)


def test_non_square_interface():
    rng = np.random.default_rng(4)
    a1, a2 = rng.standard_normal((7, 3)), rng.standard_normal((2, 7))
    left, right = spec(a1, "l"), spec(a2, "r")
    tr = transport(left, right, 2, 1)
    assert (right.vt @ left.u).shape == (2, 3) and tr.m_full.shape == (2, 3)
    check_transport(tr, left, right)


def test_both_window_routes_agree_with_the_direct_product():
    # Large windows take the thin route (E first, M_w = M - E), small ones the direct product.
    from physgsa.core.transport import CBlocks, window_products, windowed_product

    rng = np.random.default_rng(7)
    left = compute_spectrum(Factor("a", rng.standard_normal((40, 40))), q=0.9, band=0.05, gap_floor=1e-3, chart="top")
    right = compute_spectrum(Factor("b", rng.standard_normal((40, 40))), q=0.9, band=0.05, gap_floor=1e-3, chart="top")
    c = right.vt @ left.u
    m = right.a_hat @ left.a_hat
    for k, kp in ((38, 37), (3, 4), (40, 40), (1, 40)):
        mw, ex = window_products(left, right, CBlocks(left, right), k, kp, m)
        mw_full, _ = window_products(left, right, CBlocks(left, right, full=c), k, kp, m)
        assert np.max(np.abs(mw_full - mw)) <= 1e-12 * np.linalg.norm(m)
        ref = windowed_product(left, right, c, k, kp)
        assert np.max(np.abs(mw - ref)) <= 1e-12 * np.linalg.norm(m)
        assert np.max(np.abs(ex - (m - ref))) <= 1e-12 * np.linalg.norm(m)
