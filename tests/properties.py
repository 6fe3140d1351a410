"""Each bound and identity of definitions.md, written once, applied to every producer.

Tolerance policy (also in docs/testing.md): identities that hold in exact arithmetic are
checked to a small multiple of the unit roundoff scaled by the size of the quantities
involved (1e-10 relative for the truncation error, 1e-12 relative for the energy
decomposition, 1e-9 absolute for the slack); inequalities that are theorems are checked with
the same allowance on the side of the bound and never loosened to pass a test.
"""

import numpy as np
import scipy.linalg

from physgsa import structure as S
from physgsa.certificate import margins


def check_spectrum(spec, matrix, q):
    """Normalization, rho range, k_q definition and tail energy against a full SVD."""
    r = min(matrix.shape)
    assert spec.r == r
    assert abs(spec.fro2_hat - r) <= 1e-10 * r
    assert -1e-12 <= spec.rho <= np.log(r) + 1e-12
    full = scipy.linalg.svdvals(spec.a_hat)
    # Tail from the window and the Frobenius norm equals the full SVD's tail.
    for k in sorted({1, spec.k, spec.k_q, r}):
        assert abs(spec.tau_at(k) - float(np.sum(full[k:] ** 2))) <= 1e-10 * r
    cum = np.cumsum(spec.sigma**2) / np.sum(spec.sigma**2)
    assert cum[spec.k_q - 1] >= q - 1e-12
    assert spec.k_q == 1 or cum[spec.k_q - 2] < q + 1e-12
    assert 1 <= spec.k <= r
    assert spec.tau >= 0 and spec.tau_gc >= 0
    assert all(np.isfinite([spec.s_top, spec.s_mle, spec.hellinger, spec.kl, spec.fisher]))


def check_transport(tr, left, right):
    """Exact truncation error = ||M - M_w||_F, the bound, and the principal-angle cosines."""
    m, mw = tr.m_full, tr.m_window
    direct = float(np.linalg.norm(m - mw))
    scale = float(np.linalg.norm(m))
    assert abs(tr.trunc_error - direct) <= 1e-10 * max(scale, 1e-300), (tr.trunc_error, direct)
    # Whichever route formed them, M_w is the windowed product and E = M - M_w is its excluded part.
    from physgsa.transport import windowed_product

    ref_w = windowed_product(left, right, right.vt @ left.u, tr.k_left, tr.k_right)
    assert np.max(np.abs(mw - ref_w), initial=0.0) <= 1e-12 * max(scale, 1e-300)
    assert np.max(np.abs(tr.m_excluded - (m - mw)), initial=0.0) <= 1e-12 * max(scale, 1e-300)
    assert tr.trunc_error <= tr.trunc_bound * (1 + 1e-10) + 1e-300
    # The a priori bound (tails from the Frobenius norm) is the full-spectrum bound, compared
    # squared (the square root amplifies rounding near zero).
    scale2 = (right.sigma[0] ** 2 + left.sigma[0] ** 2) * max(left.r, right.r)
    assert abs(tr.eps_trunc**2 - tr.trunc_bound**2) <= 1e-10 * scale2
    # Cosines of the principal angles between the dominant subspaces (when both are proper).
    k, kp = tr.k_left, tr.k_right
    uo = left.u[:, :k]
    vi = right.vt[:kp].T
    ref = scipy.linalg.svdvals(vi.T @ uo)
    assert np.allclose(np.sort(tr.cosines), np.sort(ref), atol=1e-12)
    assert np.all(tr.cosines <= 1 + 1e-12)


def check_rigidity(rig, left, right):
    assert rig.slack >= -1e-9
    if left.r == right.r and left.r > 1:
        assert rig.drift_holds


def check_decomposition(a, part, st):
    """A = A∘K + A∘O + A∘N, pairwise orthogonal, energy closed to 1e-12."""
    mask = S.expand_codes(st.codes, part)
    parts = [np.where(mask == c, a, 0.0) for c in (S.CORE, S.OVERLAP, S.NOISE)]
    total = float(np.sum(a * a))
    assert np.array_equal(parts[0] + parts[1] + parts[2], a)
    for i in range(3):
        for j in range(i + 1, 3):
            assert abs(float(np.sum(parts[i] * parts[j]))) <= 1e-12 * total
    assert abs(sum(float(np.sum(p * p)) for p in parts) - total) <= 1e-12 * total
    d = S.decomposition(a, mask)
    assert d["closure"] <= 1e-12 and d["orthogonality"] <= 1e-12
    # The pipeline's version reads the part energies off the block energies: the same figures.
    fast = S.decomposition_from_blocks(a, st)
    for name in ("core", "overlap", "noise"):
        assert abs(fast["energy"][name] - d["energy"][name]) <= 1e-12 * max(total, 1e-300)
    assert fast["closure"] <= 1e-12


def check_radius(a0, ref, rng, draws):
    """No perturbation with ||E||_F < rho_static changes the structure. Returns draws done."""
    mg = margins(ref)
    rho = mg.rho_static
    if not rho > 0:
        return 0
    done = 0
    for i in range(draws):
        kind = i % 3
        if kind == 0:
            e = rng.standard_normal(a0.shape)
        elif kind == 1:
            e = np.zeros(a0.shape)
            e.flat[rng.integers(e.size)] = 1.0
        else:
            # Aimed at the unit closest to its threshold, the worst direction.
            g, u = mg.gamma_at
            rows = np.flatnonzero(ref.partition.groups == g)
            cols = np.flatnonzero(ref.partition.units == u)
            e = np.zeros(a0.shape)
            blk = a0[np.ix_(rows, cols)]
            sign = -1.0 if ref.structure.active[g, u] else 1.0
            peak = np.max(np.abs(blk))
            e[np.ix_(rows, cols)] = sign * (blk / peak if peak > 0 else 1.0)
        e *= rng.uniform(0.0, 0.999) * rho / np.linalg.norm(e)
        s1 = S.structure_of(a0 + e, ref)
        assert S.compare(ref.structure, s1) == [], (rho, np.linalg.norm(e))
        done += 1
    return done


def icm_sqrt_fraction_bound(x, e, mask):
    """|sqrt f(x+e) - sqrt f(x)| <= 2||e||/||x|| for f = ||x∘mask||^2 / ||x||^2."""
    f = lambda v: np.linalg.norm(v[mask]) / np.linalg.norm(v)  # noqa: E731
    lhs = abs(f(x + e) - f(x))
    return lhs, 2 * np.linalg.norm(e) / np.linalg.norm(x)


def icm_corr_bound(x, e, y):
    """|corr(x+e, y) - corr(x, y)| <= 2||e||/||x_c||."""
    c = lambda v: np.corrcoef(v, y)[0, 1]  # noqa: E731
    xc = x - x.mean()
    return abs(c(x + e) - c(x)), 2 * np.linalg.norm(e) / np.linalg.norm(xc)
