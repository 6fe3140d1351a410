"""The per-interface speed-ups are the old arithmetic, bit for bit, or (the commutator) the same
quantity by an identity, to rounding.

Each fast path is checked against a frozen copy of the code it replaced (the ``_old_*``
functions below, kept verbatim as references): bitwise where the arithmetic is unchanged (only
copies and temporaries were removed), within 1e-12 of the normalization for
:func:`physgsa.alignment.commutator_from_svd`, whose formula is different.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from physgsa._validation import InvalidFactorError
from physgsa.alignment import commutator, commutator_from_svd
from physgsa.certificate import _block_draws, _draw_roots, _energies_at
from physgsa.icm import _row_norms
from physgsa.pipeline import ROUNDING_LEVEL, at_rounding_level
from physgsa.spectra import normalize
from physgsa.structure import (CORE, NOISE, OVERLAP, _kmeans, decomposition, fro_norm, pow2_scale, row_profiles,
                               row_profiles_scaled)

from strategies import KINDS, build

SETTINGS = settings(derandomize=True, max_examples=80, deadline=None)
SEED = st.integers(0, 2**31 - 1)
SIDE = st.integers(1, 14)


def same_bits(x, y) -> bool:
    x, y = np.asarray(x), np.asarray(y)
    return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


# --------------------------------------------------------------------------- frozen references


def _old_normalize(matrix):
    r = min(matrix.shape)
    amax = float(np.max(np.abs(matrix)))
    scaled = matrix / amax
    fro_scaled = float(np.linalg.norm(scaled))
    a_hat = scaled * (np.sqrt(r) / fro_scaled)
    fro2_hat = float(np.einsum("ij,ij->", a_hat, a_hat))
    return a_hat, amax * fro_scaled, fro2_hat


def _old_fro_norm(a):
    if a.size == 0:
        return 0.0
    c = pow2_scale(float(np.max(np.abs(a))))
    return c * float(np.sqrt(np.einsum("ij,ij->", a / c, a / c)))


def _old_at_rounding_level(a_hat_left, a_hat_right, m):
    n = a_hat_left.shape[0]
    level = ROUNDING_LEVEL * n * np.finfo(np.float64).eps / 2.0
    norm_m = _old_fro_norm(m)
    if norm_m > level * _old_fro_norm(a_hat_left) * _old_fro_norm(a_hat_right):
        return False
    return bool(norm_m <= level * _old_fro_norm(np.abs(a_hat_right) @ np.abs(a_hat_left)))


def _old_row_profiles(a):
    absx = np.abs(a)
    rmax = absx.max(axis=1) if a.shape[1] else np.zeros(a.shape[0])
    nonzero = rmax > 0
    scaled = np.divide(absx, rmax[:, None], out=np.zeros_like(absx), where=nonzero[:, None])
    rn = np.sqrt(np.einsum("ij,ij->i", scaled, scaled))
    prof = np.divide(scaled, rn[:, None], out=np.zeros_like(absx), where=nonzero[:, None])
    return prof, rmax * rn, rmax, scaled


def _old_decomposition_sums(a, mask):
    c = pow2_scale(float(np.max(np.abs(a)))) if a.size else 1.0
    a_s = a / c
    parts = {name: np.where(mask == code, a_s, 0.0) for name, code in (("core", CORE), ("overlap", OVERLAP),
                                                                       ("noise", NOISE))}
    total = float(np.einsum("ij,ij->", a_s, a_s))
    energy = {k: float(np.einsum("ij,ij->", p, p)) for k, p in parts.items()}
    names = list(parts)
    inner = max(abs(float(np.einsum("ij,ij->", parts[names[i]], parts[names[j]])))
                for i in range(3) for j in range(i + 1, 3))
    return total, energy, inner, c


def _old_energies_at(e, draws, norm):
    z, chi2, zz = draws
    s = norm / np.sqrt(zz)
    return np.hypot(e + s * z, s * np.sqrt(chi2))


def _old_kmeans(x, m, rng, max_iter=100):
    n = x.shape[0]
    sq = np.einsum("ij,ij->i", x, x)
    centers = np.empty((m, x.shape[1]))
    centers[0] = x[rng.integers(n)]
    d2 = np.maximum(sq - 2 * x @ centers[0] + centers[0] @ centers[0], 0.0)
    for j in range(1, m):
        tot = d2.sum()
        idx = int(rng.choice(n, p=d2 / tot)) if tot > 0 else int(rng.integers(n))
        centers[j] = x[idx]
        d2 = np.minimum(d2, np.maximum(sq - 2 * x @ centers[j] + centers[j] @ centers[j], 0.0))
    labels = np.full(n, -1)
    for _ in range(max_iter):
        dist = sq[:, None] - 2 * x @ centers.T + np.einsum("ij,ij->i", centers, centers)[None, :]
        new = np.argmin(dist, axis=1)
        counts = np.bincount(new, minlength=m)
        for j in np.flatnonzero(counts == 0):
            movable = counts[new] > 1
            if not movable.any():
                break
            far = int(np.argmax(np.where(movable, dist[np.arange(n), new], -np.inf)))
            counts[new[far]] -= 1
            new[far] = j
            counts[j] = 1
        if np.array_equal(new, labels):
            break
        labels = new
        onehot = np.zeros((m, n))
        onehot[labels, np.arange(n)] = 1.0
        nz = counts > 0
        centers[nz] = (onehot[nz] @ x) / counts[nz, None]
    return labels


# --------------------------------------------------------------------------- commutator (an identity)


def _pair(m, extra, p, kind_l, kind_r, seed_l, seed_r):
    """A_l (m x n, n >= m: square U) and A_{l+1} (p x m), neither zero."""
    a = build(m, m + extra, kind_l, seed_l)
    b = build(p, m, kind_r, seed_r)
    return a, b


@SETTINGS
@given(m=SIDE, extra=st.integers(0, 6), p=SIDE, kind_l=st.sampled_from(KINDS), kind_r=st.sampled_from(KINDS),
       seed_l=SEED, seed_r=SEED)
def test_commutator_from_svd_equals_brute_force(m, extra, p, kind_l, kind_r, seed_l, seed_r):
    # Random, low-rank, repeated singular values, power laws, 1e-150..1e150 entries, spikes,
    # sparse and identity-like factors; square and wide A_l, wide and tall A_{l+1}.
    a, b = _pair(m, extra, p, kind_l, kind_r, seed_l, seed_r)
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    _, sp, vt = np.linalg.svd(b, full_matrices=False)
    assert u.shape == (m, m)
    want = commutator(a, b)
    got = commutator_from_svd(u, s, vt, sp)
    # c is relative to ||P||_F ||Q||_F already: 1e-12 of that normalization.
    assert abs(got - want) <= 1e-12, (got, want)


@SETTINGS
@given(m=st.integers(2, 14), r=st.integers(1, 14), seed=SEED, repeat=st.booleans())
def test_commutator_from_svd_zero_on_shared_frames(m, r, seed, repeat):
    # P and Q diagonal in one basis (repeated singular values too): the commutator is 0 to rounding.
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((m, m)))
    s1 = np.full(m, 1.5) if repeat else rng.uniform(0.1, 2.0, m)
    s2 = rng.uniform(0.1, 2.0, m)
    a = (q * s1) @ np.linalg.qr(rng.standard_normal((m, m)))[0]
    k = min(r, m)
    b = q[:, :k].T * s2[:k, None]  # Q = q_k diag(s2^2) q_k^T: diagonal in P's eigenbasis
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    _, sp, vt = np.linalg.svd(b, full_matrices=False)
    assert commutator_from_svd(u, s, vt, sp) <= 1e-12
    assert abs(commutator_from_svd(u, s, vt, sp) - commutator(a, b)) <= 1e-12


def test_commutator_from_svd_known_answer_and_refusals():
    # P = diag(1, 0), Q = [[1, 1], [1, 1]]: c = 1/sqrt(2) exactly (the sharp bound).
    a = np.array([[1.0, 0.0], [0.0, 0.0]])
    b = np.array([[1.0, 1.0]])
    u, s, _ = np.linalg.svd(a)
    _, sp, vt = np.linalg.svd(b, full_matrices=False)
    assert commutator_from_svd(u, s, vt, sp) == pytest.approx(1 / np.sqrt(2), abs=1e-15)
    with pytest.raises(InvalidFactorError, match="square U"):
        commutator_from_svd(np.eye(3)[:, :2], np.ones(2), np.eye(3), np.ones(3))
    with pytest.raises(InvalidFactorError, match="zero"):
        commutator_from_svd(np.eye(2), np.zeros(2), np.eye(2), np.ones(2))


def test_certify_uses_the_identity_only_where_u_is_square():
    import physgsa

    rng = np.random.default_rng(5)
    wide, tall = rng.standard_normal((6, 9)), rng.standard_normal((9, 4))
    nxt = rng.standard_normal((5, 6))
    res = physgsa.certify(physgsa.Chain.from_arrays([("w", wide), ("n", nxt)]), n_perturbations=0)
    assert abs(res.interfaces.iloc[0]["commutator"] - commutator(wide, nxt)) <= 1e-12
    # Thin U (a tall left factor): the brute-force formula itself, bit for bit.
    res = physgsa.certify(physgsa.Chain.from_arrays([("t", tall), ("w", wide)]), n_perturbations=0)
    from physgsa.spectra import normalize as nz
    a_l, a_r = nz(tall)[0], nz(wide)[0]
    assert res.interfaces.iloc[0]["commutator"] == commutator(a_l, a_r)


# --------------------------------------------------------------------------- bitwise: same arithmetic


@SETTINGS
@given(m=SIDE, n=SIDE, kind=st.sampled_from(KINDS), seed=SEED, order=st.sampled_from("CF"))
def test_normalize_bitwise(m, n, kind, seed, order):
    a = np.asarray(build(m, n, kind, seed), order=order)
    got, want = normalize(a), _old_normalize(a)
    assert same_bits(got[0], want[0]) and got[1:] == want[1:]
    assert got[0].flags.c_contiguous == want[0].flags.c_contiguous


@SETTINGS
@given(m=SIDE, n=SIDE, kind=st.sampled_from(KINDS), seed=SEED, scale=st.sampled_from([1.0, 1e-160, 1e160]))
def test_fro_norm_bitwise(m, n, kind, seed, scale):
    a = build(m, n, kind, seed) * scale
    assert same_bits(fro_norm(a), _old_fro_norm(a))


@SETTINGS
@given(n=SIDE, kind_l=st.sampled_from(KINDS), kind_r=st.sampled_from(KINDS), seed=SEED,
       which=st.sampled_from(["product", "zero", "noise", "level"]))
def test_at_rounding_level_same_answer(n, kind_l, kind_r, seed, which):
    rng = np.random.default_rng(seed)
    a_l, a_r = build(n, n, kind_l, seed), build(n, n, kind_r, seed + 1)
    a_l, a_r = normalize(a_l)[0], normalize(a_r)[0]
    level = ROUNDING_LEVEL * n * np.finfo(np.float64).eps / 2.0
    if which == "product":
        m = a_r @ a_l
    elif which == "zero":
        m = np.zeros((n, n))
    elif which == "noise":  # entries at rounding level: the slow path decides
        m = level * rng.standard_normal((n, n)) * rng.uniform(0.01, 10.0)
    else:  # one entry just around the fast test's own level
        m = np.zeros((n, n))
        bound = np.sqrt(a_l.size) * np.abs(a_l).max() * np.sqrt(a_r.size) * np.abs(a_r).max()
        m[0, 0] = 2.0 * level * bound * rng.choice([0.999, 1.001])
    assert at_rounding_level(a_l, a_r, m) == _old_at_rounding_level(a_l, a_r, m)


@SETTINGS
@given(m=SIDE, n=SIDE, kind=st.sampled_from(KINDS), seed=SEED, zero_rows=st.integers(0, 3))
def test_row_profiles_bitwise(m, n, kind, seed, zero_rows):
    a = build(m, n, kind, seed)
    a[: min(zero_rows, m)] = 0.0
    got, want = row_profiles_scaled(a), _old_row_profiles(a)
    assert all(same_bits(x, y) for x, y in zip(got, want))
    assert all(same_bits(x, y) for x, y in zip(row_profiles(a), want[:3]))


@SETTINGS
@given(m=SIDE, n=SIDE, kind=st.sampled_from(KINDS), seed=SEED)
def test_row_norms_bitwise(m, n, kind, seed):
    a = build(m, n, kind, seed)
    assert same_bits(_row_norms(a), np.linalg.norm(a, axis=1))
    b = a.copy()
    assert same_bits(_row_norms(b, inplace=True), np.linalg.norm(a, axis=1))


@SETTINGS
@given(m=SIDE, n=SIDE, kind=st.sampled_from(KINDS), seed=SEED)
def test_decomposition_bitwise(m, n, kind, seed):
    a = build(m, n, kind, seed)
    mask = np.random.default_rng(seed).integers(0, 3, size=a.shape).astype(np.int8)
    d = decomposition(a, mask)
    total, energy, inner, c = _old_decomposition_sums(a, mask)
    assert same_bits(d["total_scaled"], total) and d["scale"] == c
    assert all(same_bits(d["energy"][k], v * c * c) for k, v in energy.items())
    assert same_bits(d["orthogonality"], inner / total if total else 0.0)


@SETTINGS
@given(groups=st.integers(1, 6), units=st.integers(1, 20), draws=st.sampled_from([None, 1, 7]), seed=SEED,
       norm=st.sampled_from([1e-300, 1e-3, 1.0, 1e150]))
def test_energies_at_bitwise(groups, units, draws, seed, norm):
    rng = np.random.default_rng(seed)
    e = rng.random((groups, units)) * 10.0 ** rng.uniform(-160, 3)
    dof = rng.integers(0, 40, size=(groups, units))
    d = _block_draws(e, dof, rng, draws)
    want = _old_energies_at(e, d, norm)
    assert same_bits(_energies_at(e, d, norm), want)
    assert same_bits(_energies_at(e, d, norm, _draw_roots(d)), want)


@SETTINGS
@given(n=st.integers(1, 60), cols=st.integers(1, 12), m=st.integers(1, 8), kind=st.sampled_from(KINDS), seed=SEED)
def test_kmeans_bitwise(n, cols, m, kind, seed):
    x = row_profiles(build(n, cols, kind, seed))[0]
    m = min(m, n)
    got = _kmeans(x, m, np.random.default_rng(seed))
    want = _old_kmeans(x, m, np.random.default_rng(seed))
    assert np.array_equal(got, want)
