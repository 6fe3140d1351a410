"""Each bound and identity of definitions.md, written once, applied to every producer.

Tolerance policy (also in docs/testing.md): identities that hold in exact arithmetic are
checked to a small multiple of the unit roundoff scaled by the size of the quantities
involved (1e-10 relative for the truncation error, 1e-12 relative for the energy
decomposition, 1e-9 absolute for the slack); inequalities that are theorems are checked with
the same allowance on the side of the bound and never loosened to pass a test.
"""

import numpy as np
import pytest
import scipy.linalg

from physgsa.core import structure as S
from physgsa.core.certificate import margins


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
    from physgsa.core.transport import windowed_product

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
    """Slack >= 0, and the drift bound recomputed independently (tests/brute.py): s_top of each
    side by bisection on phi(s) = log(r / H_r(s)) from numpy's singular values, the Hellinger
    residuals, and min phi' = min E_{p(s)}[log k] over a grid of the interval between the two
    exponents and over both ranks. The bound |s_r - s_l| <= (|rho_r - rho_l| + |e_r - e_l|) / min phi'
    is a theorem where both sides have the same r > 1 (the top chart has rho = phi(s_top))."""
    import brute

    assert rig.slack is None or rig.slack >= -1e-9
    sig_l = np.linalg.svd(np.asarray(left.a_hat), compute_uv=False)
    sig_r = np.linalg.svd(np.asarray(right.a_hat), compute_uv=False)
    s_l, s_r = brute.s_top(sig_l), brute.s_top(sig_r)
    rho = [float(np.log(s.shape[0] * s[0] ** 2 / np.sum(s**2))) for s in (sig_l, sig_r)]
    e_l, e_r = brute.hellinger(sig_l, s_l), brute.hellinger(sig_r, s_r)
    drift = abs(s_r - s_l)
    grid = np.linspace(min(s_l, s_r), max(s_l, s_r), 33)
    min_pp = min(brute.phi_prime(r, s) for r in (left.r, right.r) for s in grid)
    if left.r == right.r and left.r > 1:
        bound = (abs(rho[1] - rho[0]) + abs(e_r - e_l)) / min_pp
        assert drift <= bound * (1 + 1e-9) + 1e-12, (drift, bound)
        # Where the chart is well conditioned (phi' not tiny), the reported figures are these.
        if min_pp > 1e-2:
            assert rig.drift == pytest.approx(drift, rel=1e-6, abs=1e-9)
            assert rig.drift_bound == pytest.approx(bound, rel=1e-6, abs=1e-9)


def decomposition_from_blocks(a, st, part):
    """``S.decomposition_from_blocks`` whichever signature it has (``(a, s)`` or ``(a, s, part)``)."""
    import inspect

    if len(inspect.signature(S.decomposition_from_blocks).parameters) >= 3:
        return S.decomposition_from_blocks(a, st, part)
    return S.decomposition_from_blocks(a, st)


def check_decomposition(a, ref):
    """A = A∘K + A∘O + A∘N: the part energies, closure and orthogonality that the code reports
    (entry-level ``S.decomposition`` and the pipeline's ``S.decomposition_from_blocks``) against
    a brute-force recomputation: supports and degrees from A's unit energies (loops, tests/brute.py)
    under the reference thresholds, the masks from them, and sums of squares entry by entry."""
    import brute

    part, st = ref.partition, ref.structure
    groups, units = part.groups.tolist(), part.units.tolist()
    e = brute.unit_energies(a, groups, units, part.n_groups, part.n_units)
    bf = brute.structure(e, ref.theta, hub=brute.hub_degree(part.n_groups), code_active=st.active,
                         code_edges=st.edges)
    parts = brute.part_energies(a, brute.entry_codes(bf, groups, units))
    total = parts["total"]
    energy = {name: parts["energy"][c] for name, c in (("core", "K"), ("overlap", "O"), ("noise", "N"))}
    closure = abs(sum(energy.values()) - total) / total
    orthogonality = parts["inner"] / total
    # In exact arithmetic the masks are disjoint: closure and orthogonality are 0.
    assert closure <= 1e-12 and orthogonality == 0.0
    c2 = parts["scale2"]
    for d in (S.decomposition(a, S.expand_codes(st.codes, part)), decomposition_from_blocks(a, st, part)):
        assert abs(d["total"] / c2 - total) <= 1e-12 * total
        for name in ("core", "overlap", "noise"):
            assert abs(d["energy"][name] / c2 - energy[name]) <= 1e-12 * total, (name, d["energy"], energy)
        assert d["closure"] <= 1e-12 and abs(d["closure"] - closure) <= 1e-12
        assert abs(d["orthogonality"] - orthogonality) <= 1e-15
        assert d.get("block_closure", 0.0) <= 1e-10


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
