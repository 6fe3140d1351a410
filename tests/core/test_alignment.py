"""Weight-space alignment diagnostics (definitions section 8): physgsa.core.alignment.

Every value is checked against an independent computation (exact rational arithmetic,
scipy.linalg.subspace_angles / orth, matrix_rank) or a planted / hand-worked answer.
"""

import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from physgsa.core.alignment import (
    DEFAULT_EPSS,
    commutator,
    default_ks,
    head_overlaps,
    intersection_dimensions,
    principal_cosines,
)
from physgsa.core.validation import InvalidFactorError, InvalidParameterError

FAST = settings(derandomize=True, max_examples=40, deadline=None)
SEEDS = st.integers(0, 2**32 - 1)
INV_SQRT2 = 1.0 / math.sqrt(2.0)


def orthogonal(rng, n):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def orthonormal(rng, d, k):
    return orthogonal(rng, d)[:, :k]


# --------------------------------------------------------------------------- commutator


def exact_commutator(a, b):
    """||PQ - QP||_F / (||P||_F ||Q||_F) in exact rational arithmetic (floats are exact rationals)."""
    fa = [[Fraction(float(x)) for x in row] for row in a]
    fb = [[Fraction(float(x)) for x in row] for row in b]
    m, n, p = len(fa), len(fa[0]), len(fb)
    pm = [[sum(fa[i][k] * fa[j][k] for k in range(n)) for j in range(m)] for i in range(m)]
    qm = [[sum(fb[k][i] * fb[k][j] for k in range(p)) for j in range(m)] for i in range(m)]
    pq = [[sum(pm[i][k] * qm[k][j] for k in range(m)) for j in range(m)] for i in range(m)]
    qp = [[sum(qm[i][k] * pm[k][j] for k in range(m)) for j in range(m)] for i in range(m)]
    num = sum((pq[i][j] - qp[i][j]) ** 2 for i in range(m) for j in range(m))
    den = sum(x * x for row in pm for x in row) * sum(x * x for row in qm for x in row)
    return math.sqrt(num / den)  # num / den is an exact Fraction; one rounding, then sqrt


def wide_matrix(rng, m, n, spread):
    """Gaussian entries times 10**u, u uniform in [-spread, spread], some entries exactly 0."""
    x = rng.standard_normal((m, n)) * 10.0 ** rng.uniform(-spread, spread, (m, n))
    x[rng.random((m, n)) < 0.15] = 0.0
    if not x.any():
        x[0, 0] = 1.0
    return x


@FAST
@given(m=st.integers(1, 6), n=st.integers(1, 6), p=st.integers(1, 6),
       spread=st.sampled_from([0.0, 2.0, 150.0]), scale=st.sampled_from([1.0, 1e-150, 1e150]), seed=SEEDS)
def test_commutator_matches_exact_rational(m, n, p, spread, scale, seed):
    # Covers both code paths (n + p < m projects onto range(A_l) + range(A_{l+1}^T)) and
    # entries from ~1e-300 to ~1e300 within one matrix.
    rng = np.random.default_rng(seed)
    a = wide_matrix(rng, m, n, spread) * scale
    b = wide_matrix(rng, p, m, spread)
    want = exact_commutator(a, b)
    assert want <= INV_SQRT2 + 1e-15  # the proven bound, on the exact value
    got = commutator(a, b)
    assert isinstance(got, float)
    assert abs(got - want) <= 1e-13 + 1e-10 * want


@FAST
@given(m=st.integers(1, 9), r=st.integers(1, 9), dn=st.integers(0, 3), dp=st.integers(0, 3),
       seed=SEEDS)
def test_commutator_zero_for_shared_frames(m, r, dn, dp, seed):
    # A_l = U diag(s) V^T, A_{l+1} = W diag(t) U^T with the same U (m x r): P = U s^2 U^T and
    # Q = U t^2 U^T are diagonal in one basis, so they commute. Non-square when dn, dp > 0 or r < m.
    r = min(r, m)
    n, p = r + dn, r + dp
    rng = np.random.default_rng(seed)
    u = orthonormal(rng, m, r)
    v = orthonormal(rng, n, r)
    w = orthonormal(rng, p, r)
    s = rng.uniform(0.1, 10.0, r)
    t = rng.uniform(0.1, 10.0, r)
    a = (u * s) @ v.T
    b = (w * t) @ u.T
    assert commutator(a, b) <= 1e-12
    # And a generic pair at the same shapes does not commute (the test can tell).
    if r >= 2 and m >= 2:
        assert commutator(rng.standard_normal((m, n)), rng.standard_normal((p, m))) > 1e-6


@FAST
@given(m=st.integers(1, 12), n=st.integers(1, 12), p=st.integers(1, 12), seed=SEEDS)
def test_commutator_scale_invariant(m, n, p, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, n))
    b = rng.standard_normal((p, m))
    c0 = commutator(a, b)
    for alpha, beta in [(1e-150, 1.0), (1e150, 1.0), (1.0, 1e-150), (1.0, 1e150),
                        (1e-150, 1e150), (1e150, 1e-150), (1e150, 1e150), (1e-150, 1e-150), (-3.0, 0.5)]:
        c = commutator(alpha * a, beta * b)
        assert math.isfinite(c)
        assert abs(c - c0) <= 1e-12 * max(c0, 1e-3)


def test_commutator_known_answers():
    # P = A A^T = diag(1, 0) from A = [[1, 0], [0, 0]];
    # Q = B^T B = [[1/2, 1/2], [1/2, 1/2]] from B = [[1/sqrt2, 1/sqrt2]] (1 x 2).
    # PQ = [[1/2, 1/2], [0, 0]], QP = [[1/2, 0], [1/2, 0]], PQ - QP = [[0, 1/2], [-1/2, 0]],
    # ||PQ - QP||_F = sqrt(1/4 + 1/4) = 1/sqrt2; ||P||_F = 1, ||Q||_F = sqrt(4 * 1/4) = 1;
    # value = 1/sqrt2 (the sharp upper bound for PSD pairs).
    a = np.array([[1.0, 0.0], [0.0, 0.0]])
    h = 1.0 / math.sqrt(2.0)
    assert commutator(a, np.array([[h, h]])) == pytest.approx(INV_SQRT2, abs=1e-15)
    # Same P, Q = [[1, 1], [1, 1]] from B = [[1, 1]]: PQ - QP = [[0, 1], [-1, 0]], norm sqrt2,
    # ||P||_F ||Q||_F = 1 * 2, value sqrt2 / 2 = 1/sqrt2 (scale-free: same as above).
    assert commutator(a, np.array([[1.0, 1.0]])) == pytest.approx(INV_SQRT2, abs=1e-15)
    # P = diag(2, 1) from A = diag(sqrt2, 1), Q = [[1, 1], [1, 1]]:
    # PQ = [[2, 2], [1, 1]], QP = [[2, 1], [2, 1]], PQ - QP = [[0, 1], [-1, 0]], norm sqrt2;
    # ||P||_F = sqrt(4 + 1) = sqrt5, ||Q||_F = 2; value sqrt2 / (2 sqrt5) = 1/sqrt10.
    a2 = np.diag([math.sqrt(2.0), 1.0])
    assert commutator(a2, np.array([[1.0, 1.0]])) == pytest.approx(1 / math.sqrt(10.0), rel=1e-14)
    # P = diag(1, 0), Q = diag(0, 1): both diagonal, they commute: 0.
    assert commutator(a, np.array([[0.0, 1.0]])) == 0.0
    # Low-rank path (n + p = 2 < m = 4), P = e1 e1^T, Q = (e1 + e2)(e1 + e2)^T: the 2x2 case embedded.
    a4 = np.zeros((4, 1))
    a4[0, 0] = 1.0
    b4 = np.array([[1.0, 1.0, 0.0, 0.0]])
    assert commutator(a4, b4) == pytest.approx(INV_SQRT2, abs=1e-15)


def test_commutator_rejects_bad_factors():
    with pytest.raises(InvalidFactorError, match="a_left"):
        commutator(np.zeros((3, 2)), np.ones((2, 3)))
    with pytest.raises(InvalidFactorError, match="a_right"):
        commutator(np.ones((3, 2)), np.array([[np.nan, 1.0, 1.0]]))
    with pytest.raises(InvalidFactorError, match="n_"):
        commutator(np.ones((3, 2)), np.ones((2, 2)))


# --------------------------------------------------------------------------- principal angles


@FAST
@given(d=st.integers(1, 10), k1=st.integers(1, 10), k2=st.integers(1, 10), seed=SEEDS)
def test_principal_cosines_match_scipy(d, k1, k2, seed):
    k1, k2 = min(k1, d), min(k2, d)
    rng = np.random.default_rng(seed)
    u = orthonormal(rng, d, k1)
    v = orthonormal(rng, d, k2)
    if k1 >= 2 and k2 >= 2 and d >= 3:  # plant one shared direction (a cosine of exactly 1)
        v[:, 0] = u[:, 0]
        v = np.linalg.qr(v)[0]
    got = principal_cosines(u, v)
    want = np.sort(np.cos(scipy.linalg.subspace_angles(u, v)))[::-1]
    assert got.shape == (min(k1, k2),)
    assert np.all(np.diff(got) <= 0)  # descending, as returned (not re-sorted here)
    assert np.all((got >= 0) & (got <= 1))
    np.testing.assert_allclose(got, want, atol=1e-12, rtol=0)


# --------------------------------------------------------------------------- intersection dimension


def test_default_grids():
    assert default_ks(1) == [1]
    assert default_ks(2) == [1, 2]
    assert default_ks(3) == [1, 2, 3]
    assert default_ks(8) == [1, 2, 4, 8]
    assert default_ks(12) == [1, 2, 4, 8, 12]
    assert DEFAULT_EPSS == (1e-1, 1e-2, 1e-3)
    with pytest.raises(InvalidParameterError):
        default_ks(0)


@FAST
@given(j=st.integers(0, 4), extra=st.integers(0, 4), pad=st.integers(0, 3), rl=st.integers(0, 3),
       rr=st.integers(0, 3), seed=SEEDS)
def test_intersection_dimension_planted(j, extra, pad, rl, rr, seed):
    # U_l's top k and V''s top k share exactly j directions; the other k - j directions of V'
    # sit at angles theta_i in [0.3, 1.5] rad from U_l's (cos <= cos 0.3 ~ 0.955 < 1 - 1e-2).
    k = j + extra
    if k == 0:
        k, extra = 1, 1
    d = j + 2 * extra + pad
    if d < 1:
        return
    rng = np.random.default_rng(seed)
    o = orthogonal(rng, d)
    theta = rng.uniform(0.3, 1.5, extra)
    shared = o[:, :j] @ orthogonal(rng, j) if j else o[:, :0]  # same span, another basis
    tilted = np.cos(theta) * o[:, j:k] + np.sin(theta) * o[:, k:k + extra]
    v_full = np.linalg.qr(np.concatenate([shared, tilted, rng.standard_normal((d, d - k))], axis=1))[0]
    r_l = min(d, k + rl)
    r_r = min(d, k + rr)
    u_left = o[:, :r_l]
    vt_right = v_full.T[:r_r]
    ks = list(range(j if j else 1, k + 1))
    counts, used = intersection_dimensions(u_left, vt_right, ks=ks, epss=(1e-1, 1e-2, 1e-3))
    assert used == ks
    assert counts.dtype.kind == "i" and counts.shape == (len(ks), 3)
    for i, kk in enumerate(ks):
        # Independent expectation: the planted j, plus the tilted directions inside the prefix
        # whose cosine passes 1 - 0.1 (cos theta >= 0.9); none passes 1 - 1e-2 or 1 - 1e-3.
        loose = int(np.sum(np.cos(theta[: kk - j]) >= 0.9)) if kk > j else 0
        assert counts[i].tolist() == [j + loose, j, j]


def test_intersection_dimension_known_rotation():
    # U_l = I_3; V' = rotation by 60 degrees in the (e1, e2) plane, then e3:
    # V'[:, 0] = (1/2, sqrt3/2, 0), V'[:, 1] = (-sqrt3/2, 1/2, 0), V'[:, 2] = e3.
    # k = 1: the single cosine is e1 . V'[:, 0] = 1/2 exactly; it counts for eps = 1/2
    # (1/2 >= 1 - 1/2: equality counts) and not for 1e-3.
    # k = 2: both spans are the (e1, e2) plane: cosines 1, 1. k = 3: both are R^3.
    s = math.sqrt(3.0) / 2.0
    v = np.array([[0.5, -s, 0.0], [s, 0.5, 0.0], [0.0, 0.0, 1.0]])
    counts, used = intersection_dimensions(np.eye(3), v.T, ks=[1, 2, 3, 4], epss=(0.5, 1e-3))
    assert used == [1, 2, 3]  # k = 4 > min(r_l, r') = 3 is skipped
    assert counts.tolist() == [[1, 0], [2, 2], [3, 3]]
    # eps = 0 counts exact equality only: identical coordinate subspaces, C = I exactly.
    counts0, _ = intersection_dimensions(np.eye(4), np.eye(4), ks=[1, 2, 4], epss=(0.0,))
    assert counts0.tolist() == [[1], [2], [4]]
    # Defaults: ks = default_ks(min(r_l, r')), epss = DEFAULT_EPSS.
    counts_d, used_d = intersection_dimensions(np.eye(5)[:, :5], np.eye(5)[:3])
    assert used_d == [1, 2, 3] and counts_d.shape == (3, 3)
    empty, none = intersection_dimensions(np.eye(2), np.eye(2), ks=[3], epss=(0.1,))
    assert none == [] and empty.shape == (0, 1)
    with pytest.raises(InvalidParameterError):
        intersection_dimensions(np.eye(2), np.eye(2), ks=[0], epss=(0.1,))
    with pytest.raises(InvalidParameterError):
        intersection_dimensions(np.eye(2), np.eye(2), ks=[1], epss=(-0.1,))
    with pytest.raises(InvalidFactorError):
        intersection_dimensions(np.eye(2), np.eye(3), ks=[1], epss=(0.1,))


@FAST
@given(d=st.integers(1, 10), rl=st.integers(1, 10), rr=st.integers(1, 10), seed=SEEDS)
def test_intersection_dimension_matches_subspace_angles(d, rl, rr, seed):
    rl, rr = min(rl, d), min(rr, d)
    rng = np.random.default_rng(seed)
    u = orthogonal(rng, d)[:, :rl]
    v = orthogonal(rng, d)[:, :rr]
    if min(rl, rr) >= 2:
        v[:, 1] = u[:, 0]  # a shared direction from k = 2 on
        v = np.linalg.qr(v)[0]
    ks = [1, 2, 3, 5, 8, 10]
    epss = (0.3, 1e-1, 1e-3)
    counts, used = intersection_dimensions(u, v.T, ks=ks, epss=epss)
    assert used == [k for k in ks if k <= min(rl, rr)]
    for i, k in enumerate(used):
        cos = np.cos(scipy.linalg.subspace_angles(u[:, :k], v[:, :k]))
        assert counts[i].tolist() == [int(np.sum(cos >= 1 - e)) for e in epss]


# --------------------------------------------------------------------------- head overlaps


def coordinate_heads(rng):
    """A known case in R^6 (before a rotation): writing heads of A_l, reading heads of A_{l+1}.

    Writing (columns of A_l): a spans {e0, e1}; d spans {e0, e1, e2, e3}; b spans {e3};
    c is a zero block. Reading (rows of A_{l+1}): x spans {e0, e1}; y spans {e1, e2}; z spans {e4, e5}.
    """
    e = np.eye(6)
    cols = ["a", "d", "b", "a", "c", "d", "d", "c", "d"]  # first appearance: a, d, b, c
    a = np.zeros((6, len(cols)))
    span = {"a": e[:, :2], "d": e[:, :4], "b": e[:, 3:4], "c": np.zeros((6, 1))}
    for h, basis in span.items():
        idx = [i for i, x in enumerate(cols) if x == h]
        a[:, idx] = basis @ rng.standard_normal((basis.shape[1], len(idx)))
    rows = ["y", "x", "z", "y", "x", "z", "x"]  # first appearance: y, x, z
    b = np.zeros((len(rows), 6))
    rspan = {"x": e[:, :2], "y": e[:, 1:3], "z": e[:, 4:6]}
    for h, basis in rspan.items():
        idx = [i for i, x in enumerate(rows) if x == h]
        b[idx, :] = (basis @ rng.standard_normal((2, len(idx)))).T
    return a, cols, b, rows


def test_head_overlaps_known_answers():
    rng = np.random.default_rng(7)
    a, cols, b, rows = coordinate_heads(rng)
    # Rows y, x, z (reading); columns a, d, b, c (writing). Worked by hand:
    # x = {e0,e1} vs a = {e0,e1}: identical, 2/2 = 1. x vs d = {e0..e3}: x inside d, ||.||^2 = 2,
    # min(2, 4) = 2: 1. y = {e1,e2} vs a: only e1 shared, 1/min(2,2) = 0.5 (half overlap).
    # y vs d: y inside d, 2/2 = 1. y vs b = {e3}: orthogonal, 0. x vs b: 0. z = {e4,e5}: 0 with all.
    # c (zero block): rank 0, overlaps 0.
    want = np.array([[0.5, 1.0, 0.0, 0.0],
                     [1.0, 1.0, 0.0, 0.0],
                     [0.0, 0.0, 0.0, 0.0]])
    for rotate in (False, True):
        o = orthogonal(rng, 6) if rotate else np.eye(6)  # overlaps depend on subspaces only
        res = head_overlaps(o @ a, cols, b @ o.T, rows)
        assert res.heads_left == ["a", "d", "b", "c"]
        assert res.heads_right == ["y", "x", "z"]
        assert res.ranks_left.tolist() == [2, 4, 1, 0]
        assert res.ranks_right.tolist() == [2, 2, 2]
        assert res.table.dtype == np.float64
        np.testing.assert_allclose(res.table, want, atol=1e-12)
    # A scale of 1e150 (or 1e-150) changes nothing.
    np.testing.assert_allclose(head_overlaps(a * 1e150, cols, b * 1e-150, rows).table, want, atol=1e-12)


def test_head_overlaps_rank_threshold_and_errors():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 2))
    block = np.concatenate([x, x @ rng.standard_normal((2, 2))], axis=1)  # rank 2, 4 columns
    block[:, 3] += 1e-9 * rng.standard_normal(5)  # a third direction, sigma_3 ~ 1e-9 * sigma_1
    b = rng.standard_normal((3, 5))
    res = head_overlaps(block, [0, 0, 0, 0], b, [1, 1, 2])
    assert res.ranks_left.tolist() == [3] and res.ranks_right.tolist() == [2, 1]
    assert res.heads_left == [0] and res.heads_right == [1, 2]
    res = head_overlaps(block, [0, 0, 0, 0], b, [1, 1, 2], rtol=1e-6)
    assert res.ranks_left.tolist() == [2]
    with pytest.raises(InvalidParameterError, match="col_heads_left"):
        head_overlaps(block, [0, 0, 0], b, [1, 1, 2])
    with pytest.raises(InvalidParameterError, match="rtol"):
        head_overlaps(block, [0, 0, 0, 0], b, [1, 1, 2], rtol=-1.0)
    with pytest.raises(InvalidFactorError):
        head_overlaps(block, [0, 0, 0, 0], b.T, [1, 1, 2, 3, 4])


@st.composite
def head_problem(draw):
    """A random interface with random head layouts; some head blocks of low rank or zero."""
    d = draw(st.integers(1, 8))
    n = draw(st.integers(1, 10))
    p = draw(st.integers(1, 10))
    nh_l = draw(st.integers(1, 4))
    nh_r = draw(st.integers(1, 4))
    cols = draw(st.lists(st.integers(0, nh_l - 1), min_size=n, max_size=n))
    rows = draw(st.lists(st.sampled_from("pqrs"[:nh_r]), min_size=p, max_size=p))
    seed = draw(SEEDS)
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, n))
    b = rng.standard_normal((p, d))
    for h in set(cols):  # make some heads low-rank (rank 1) or zero
        idx = [i for i, x in enumerate(cols) if x == h]
        kind = rng.integers(3)
        if kind == 1:
            a[:, idx] = np.outer(rng.standard_normal(d), rng.standard_normal(len(idx)))
        elif kind == 2 and h != cols[0]:  # the head of column 0 keeps the factor nonzero
            a[:, idx] = 0.0
    for h in set(rows):
        idx = [i for i, x in enumerate(rows) if x == h]
        if rng.integers(2):
            b[idx, :] = np.outer(rng.standard_normal(len(idx)), rng.standard_normal(d))
    return a, cols, b, rows


@FAST
@given(prob=head_problem())
def test_head_overlaps_match_independent(prob):
    a, cols, b, rows = prob
    res = head_overlaps(a, cols, b, rows)
    hl = list(dict.fromkeys(cols))
    hr = list(dict.fromkeys(rows))
    assert res.heads_left == hl and res.heads_right == hr
    assert res.table.shape == (len(hr), len(hl))
    assert np.all((res.table >= 0) & (res.table <= 1))
    for j, h in enumerate(hl):
        blk = a[:, [i for i, x in enumerate(cols) if x == h]]
        k = np.linalg.matrix_rank(blk) if blk.any() else 0
        assert res.ranks_left[j] == k
    for i, g in enumerate(hr):
        blk = b[[r for r, x in enumerate(rows) if x == g], :].T
        kq = np.linalg.matrix_rank(blk) if blk.any() else 0
        assert res.ranks_right[i] == kq
        for j, h in enumerate(hl):
            pblk = a[:, [c for c, x in enumerate(cols) if x == h]]
            kp = int(res.ranks_left[j])
            if kq == 0 or kp == 0:
                assert res.table[i, j] == 0.0
                continue
            # Independent: bases from scipy.linalg.orth, principal angles from subspace_angles.
            cos = np.cos(scipy.linalg.subspace_angles(scipy.linalg.orth(blk), scipy.linalg.orth(pblk)))
            assert res.table[i, j] == pytest.approx(np.sum(cos**2) / min(kq, kp), abs=1e-10)


@FAST
@given(prob=head_problem())
def test_head_overlaps_symmetric(prob):
    # Swapping roles (writing heads of A_{l+1}^T are A_{l+1}'s reading heads) transposes the table.
    a, cols, b, rows = prob
    res = head_overlaps(a, cols, b, rows)
    swp = head_overlaps(b.T, rows, a.T, cols)
    np.testing.assert_allclose(swp.table, res.table.T, atol=1e-12)
    assert swp.ranks_left.tolist() == res.ranks_right.tolist()
    assert swp.ranks_right.tolist() == res.ranks_left.tolist()
    # Same-subspace self-overlap: reading heads equal to the writing heads give 1 on the diagonal
    # for every head of nonzero rank.
    self_tab = head_overlaps(a, cols, a.T, cols).table
    for j, k in enumerate(res.ranks_left):
        assert self_tab[j, j] == pytest.approx(1.0 if k else 0.0, abs=1e-12)


# ----- the diagnostics as certify reports them ----------------------------------------------------


def test_certify_reports_section8_diagnostics_computed_independently(tmp_path):
    import physgsa

    rng = np.random.default_rng(11)
    d, n_heads, dh = 8, 2, 4
    heads = np.arange(n_heads * dh) // dh
    w_o = rng.standard_normal((d, n_heads * dh))
    w_v = rng.standard_normal((n_heads * dh, d))
    chain = physgsa.Chain.from_layout([("O0", w_o, None, heads), ("V1", w_v, heads, None)])
    res = physgsa.certify(chain)
    row = res.interfaces.iloc[0]
    # Commutator from the raw factors, with plain numpy (no scaling needed at this size).
    p_ = w_o @ w_o.T
    q_ = w_v.T @ w_v
    expected = np.linalg.norm(p_ @ q_ - q_ @ p_) / (np.linalg.norm(p_) * np.linalg.norm(q_))
    assert row["commutator"] == pytest.approx(expected, rel=1e-12)
    # Intersection dimension at the windows (k, k'), eps = 0.01, from scipy's principal angles.
    u = np.linalg.svd(w_o)[0][:, :int(row["k_left"])]
    v = np.linalg.svd(w_v)[2].T[:, :int(row["k_right"])]
    cos = np.cos(scipy.linalg.subspace_angles(u, v))
    assert row["intersection_dim"] == int(np.sum(cos >= 1 - 1e-2))
    # Head overlaps from orthonormal bases of each head's block (scipy.linalg.orth).
    table = res.heads.pivot(index="head_out", columns="head_in", values="overlap").to_numpy()
    for ho in range(n_heads):
        qb = scipy.linalg.orth(w_v[heads == ho].T)
        for hi in range(n_heads):
            pb = scipy.linalg.orth(w_o[:, heads == hi])
            want = np.linalg.norm(qb.T @ pb) ** 2 / min(qb.shape[1], pb.shape[1])
            assert table[ho, hi] == pytest.approx(want, rel=1e-10)
    # Saved and read back: the heads table survives.
    res.save(tmp_path / "out")
    back = physgsa.outputs.result.load_result(tmp_path / "out")
    assert back.heads.equals(res.heads)
    # A chain without heads has an empty head table, and the columns are still there.
    plain = physgsa.certify(physgsa.Chain.from_arrays([("a", w_o), ("b", w_v)]))
    assert len(plain.heads) == 0 and "commutator" in plain.interfaces.columns
