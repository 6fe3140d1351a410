"""The graded certificate (definitions section 5b): radii, profile, per-element bounds, graded labels.

Every quantity is checked against a brute-force recomputation written here from the definitions
(plain loops over groups, units and pairs), and every bound against perturbations aimed at it.
"""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_structure import make_reference, references

import brute
from physgsa.core import graded as G
from physgsa.core import structure as S
from physgsa.core.certificate import margins
from physgsa.core.chain import Factor
from physgsa.core.spectra import compute_spectrum
from physgsa.core.validation import CertificateBugError

# ---------------------------------------------------------------------------------------------
# Brute force, from the definitions


def brute_d(e, active, margin, g, h, r):
    """D_gh(r) of section 5b, summed unit by unit."""
    n = e.shape[1]
    shared = [u for u in range(n) if active[g, u] and active[h, u]]
    unc = [u for u in range(n) if margin[g, u] <= r or margin[h, u] <= r]
    both = sorted(set(shared) | set(unc))
    if not both:
        return 0.0
    ng = math.sqrt(sum(e[g, u] ** 2 for u in both))
    nh = math.sqrt(sum(e[h, u] ** 2 for u in both))
    return sum(e[g, u] * e[h, u] for u in unc) + r * (ng + nh) + r * r


def brute_profile_at(ref, r):
    """Every share of the profile at radius r, straight from the definitions."""
    st_ = ref.structure
    e = st_.energies
    margin = np.abs(e - ref.theta[:, None])
    m, n = e.shape
    total = float(np.sum(e**2))
    unit_r = [min(margin[g, u] for g in range(m)) for u in range(n)]
    col = sum(sum(e[g, u] ** 2 for g in range(m)) for u in range(n) if unit_r[u] > r) / total
    mem = sum(e[g, u] ** 2 for g in range(m) for u in range(n) if margin[g, u] > r) / total
    mu = {(g, h): abs(float(st_.w[g, h]) - ref.kappa) for g in range(m) for h in range(g + 1, m)}
    ok = {p: brute_d(e, st_.active, margin, *p, r) < mu[p] or
          not any(st_.active[p[0], u] and st_.active[p[1], u] or margin[p[0], u] <= r or margin[p[1], u] <= r
                  for u in range(n))
          for p in mu}
    pairs = (sum(ok.values()) / len(ok)) if ok else math.nan
    edges = [p for p in mu if st_.edges[p]]
    edge = (sum(ok[p] for p in edges) / len(edges)) if edges else math.nan
    hubs = [u for u in range(n) if st_.hubs[u]]
    hub = (sum(unit_r[u] > r for u in hubs) / len(hubs)) if hubs else math.nan
    return {"column_share": col, "membership_share": mem, "pair_share": pairs, "edge_share": edge,
            "hub_share": hub}


def probe_radii(prof):
    """Radii to probe a step function at: zero, just around every step, between steps and beyond.

    Not at a step itself: a pair's step is the root of D_gh(r) = mu_gh, where the brute force's
    D and mu tie to the last bit and either answer is rounding.
    """
    r = prof.r
    mids = (r[:-1] + r[1:]) / 2 if r.shape[0] > 1 else np.zeros(0)
    around = np.concatenate([r * (1 - 1e-9), r * (1 + 1e-9)])
    return np.unique(np.concatenate([[0.0], mids, around, [r[-1] * 2 + 1.0]]))


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Radii and the profile


@given(ref=references())
def test_profile_equals_brute_force_at_many_radii(ref):
    a0, r = ref
    margin = np.abs(r.structure.energies - r.theta[:, None])
    pr = G.pair_radii(r, margin)
    prof = G.robustness_profile(r, margin, pr)
    assert prof.r[0] == 0.0 and np.all(np.diff(prof.r) > 0)
    # Scale-free comparisons: the brute force works in the matrix's own units, so keep to
    # ordinary magnitudes (the extreme ones are covered by the scaling test below).
    if not 1e-100 < float(np.max(r.structure.energies)) < 1e100:
        return
    for x in probe_radii(prof):
        want = brute_profile_at(r, float(x))
        got = prof.at(float(x))
        for k in want:
            assert same(got[k], want[k]), (k, x, got[k], want[k])


@given(ref=references())
def test_pair_radius_is_where_the_pair_bound_reaches_mu(ref):
    # r_gh = sup{r : D_gh(r) < mu_gh}: D is below mu just under r_gh and not below it just above.
    a0, r = ref
    st_ = r.structure
    margin = np.abs(st_.energies - r.theta[:, None])
    pr = G.pair_radii(r, margin)
    if not 1e-100 < float(np.max(st_.energies)) < 1e100:
        return
    m = st_.energies.shape[0]
    for g, h in itertools.combinations(range(m), 2):
        mu = abs(float(st_.w[g, h]) - r.kappa)
        rad = pr[g, h]
        assert np.isfinite(rad) and rad >= 0
        if rad > 0:
            below = rad * (1 - 1e-7)
            d = brute_d(st_.energies, st_.active, margin, g, h, below)
            empty = d == 0.0 and not (st_.active[g] & st_.active[h]).any()
            assert d < mu or empty
        above = rad * (1 + 1e-7) + 1e-300
        assert brute_d(st_.energies, st_.active, margin, g, h, above) >= mu * (1 - 1e-9)


@given(ref=references())
def test_everything_is_certified_below_rho_static(ref):
    a0, r = ref
    mg = margins(r)
    margin = np.abs(r.structure.energies - r.theta[:, None])
    prof = G.robustness_profile(r, margin, G.pair_radii(r, margin))
    if mg.rho_static > 0:
        at = prof.at(mg.rho_static * (1 - 1e-9))
        assert at["column_share"] == pytest.approx(1.0, abs=1e-12)
        assert at["membership_share"] == pytest.approx(1.0, abs=1e-12)
        for k in ("pair_share", "edge_share", "hub_share"):
            assert math.isnan(at[k]) or at[k] == 1.0, k


@given(ref=references())
def test_tightened_pair_radius_is_never_smaller_and_solves_its_equation(ref):
    a0, r = ref
    l2, l1 = margins(r, "l2"), margins(r, "l1")
    assert l2.rho_static >= l1.rho_static * (1 - 1e-12)
    e = r.structure.energies
    for p2, p1 in zip(l2.pairs, l1.pairs):
        assert p2["rho"] >= p1["rho"] * (1 - 1e-12)
        shared = r.structure.active[p2["g"]] & r.structure.active[p2["h"]]
        a = np.linalg.norm(e[p2["g"], shared]) + np.linalg.norm(e[p2["h"], shared])
        x = p2["rho"]
        if 1e-100 < a < 1e100 and p2["mu"] > 0:
            assert x * x + a * x == pytest.approx(p2["mu"], rel=1e-9)


def one_row_groups(a0):
    m, n = a0.shape
    part = S.Partition(groups=np.arange(m), units=np.arange(n), n_groups=m, n_units=n, group_strategy="given",
                       unit_strategy="channels")
    return S.fit_reference(a0, part, threshold="gap", eta=0.5, kappa_fraction=0.05, hub_degree=3)


def test_pair_radius_known_answers():
    # One row per group, so e_g(u) = |A0[g, u]|. (1) e = [[4, 3, .5], [.5, 3, 4]]: gap thresholds
    # 1.75 and 1.75, S_0 = {0, 1}, S_1 = {1, 2}, I = {1}, w = 9, kappa = 0.45, mu = 8.55; every
    # margin is 1.25 or 2.25. Below 1.25 no membership can change: D = 6 r + r^2, whose root
    # (-6 + sqrt(36 + 34.2)) / 2 comes first, so r_01 = that root = rho_static.
    ref = one_row_groups(np.array([[4.0, 3.0, 0.5], [0.5, 3.0, 4.0]]))
    assert np.allclose(ref.theta, [1.75, 1.75]) and ref.kappa == pytest.approx(0.45)
    root = (-6 + math.sqrt(36 + 4 * 8.55)) / 2
    margin = np.abs(ref.structure.energies - ref.theta[:, None])
    assert G.pair_radii(ref, margin)[0, 1] == pytest.approx(root, rel=1e-14)
    assert margins(ref).rho_static == pytest.approx(root, rel=1e-14)
    # (2) e = [[10, 10, 1], [10, 10, 9.5]]: S_0 = S_1 = {0, 1}, w = 200, mu = 190; group 1's
    # margins are all 0.25. With memberships fixed the l2 radius is the root of
    # x^2 + 2 sqrt(200) x = 190 (~5.6); but at r = 0.25 every unit turns uncertain and
    # D(0.25) = 209.5 + ... >= mu, so r_01 = 0.25 exactly.
    ref = one_row_groups(np.array([[10.0, 10.0, 1.0], [10.0, 10.0, 9.5]]))
    margin = np.abs(ref.structure.energies - ref.theta[:, None])
    assert np.allclose(margin[1], 0.25)
    assert G.pair_radii(ref, margin)[0, 1] == 0.25
    a = 2 * math.sqrt(200)
    assert margins(ref).pairs[0]["rho"] == pytest.approx((-a + math.sqrt(a * a + 4 * 190)) / 2, rel=1e-14)
    # l1 (section 5): n = 2, b = 40: 2 x^2 + 40 x = 190.
    assert margins(ref, "l1").pairs[0]["rho"] == pytest.approx((-40 + math.sqrt(1600 + 8 * 190)) / 4, rel=1e-14)


def test_profile_is_scale_free():
    # Energies near 1e-160 give the same shares, and radii scaled by the same factor.
    rng = np.random.default_rng(3)
    a0 = rng.standard_normal((12, 10))
    r1 = make_reference(a0, 3)
    r2 = make_reference(a0 * 2.0**-530, 3)
    out = []
    for r in (r1, r2):
        margin = np.abs(r.structure.energies - r.theta[:, None])
        out.append(G.robustness_profile(r, margin, G.pair_radii(r, margin)))
    # Compared as functions (two margins equal to rounding may make one step or two), away
    # from every step of either: their positions carry the two scales' own roundings.
    steps = np.concatenate([out[0].r, out[1].r * 2.0**530])
    for x in probe_radii(out[0]):
        if np.any(np.abs(steps - x) <= 1e-10 * x):
            continue
        a, b = out[0].at(x), out[1].at(x * 2.0**-530)
        for k in a:
            assert same(a[k], b[k]), (k, x)


# ---------------------------------------------------------------------------------------------
# Perturbations aimed at each element, just below its own radius


def aimed(a0, ref, g, u, norm):
    """E on the block A0[G_g, u] only, of Frobenius norm `norm`, moving e_g(u) toward theta_g."""
    part = ref.partition
    rows = np.flatnonzero(part.groups == g)
    cols = np.flatnonzero(part.units == u)
    block = a0[np.ix_(rows, cols)]
    eg = float(ref.structure.energies[g, u])
    direction = block / eg if eg > 0 else np.ones_like(block) / math.sqrt(block.size)
    sign = -1.0 if ref.structure.active[g, u] else 1.0
    e = np.zeros_like(a0)
    e[np.ix_(rows, cols)] = sign * norm * direction
    return e


@given(ref=references(), frac=st.sampled_from([0.5, 0.99, 1 - 1e-6]))
def test_a_membership_survives_every_aimed_perturbation_below_its_margin(ref, frac):
    a0, r = ref
    e = r.structure.energies
    if not 1e-100 < float(np.max(e)) < 1e100:
        return
    margin = np.abs(e - r.theta[:, None])
    for g, u in zip(*np.nonzero(margin > 0)):
        s1 = S.structure_of(a0 + aimed(a0, r, g, u, frac * margin[g, u]), r)
        assert s1.active[g, u] == r.structure.active[g, u]


def test_the_membership_margin_is_tight():
    # The same aimed perturbation just past the margin flips the membership: a margin loosened
    # by any factor above 1 would be contradicted by the aimed test above.
    rng = np.random.default_rng(0)
    a0 = rng.standard_normal((16, 12))
    r = make_reference(a0, 3)
    e = r.structure.energies
    margin = np.abs(e - r.theta[:, None])
    flipped = 0
    for g, u in zip(*np.nonzero(margin > 0)):
        s1 = S.structure_of(a0 + aimed(a0, r, g, u, (1 + 1e-6) * margin[g, u]), r)
        flipped += s1.active[g, u] != r.structure.active[g, u]
    assert flipped == np.count_nonzero(margin > 0)


def pair_attack(a0, ref, g, h, x, up):
    """E of norm x on groups g and h over I ∪ U(x): every block scaled to push w_gh up or down.

    Each block of group g is scaled by (1 + t) (up) or (1 - t) (down), with t chosen so that
    ||E||_F = x: the direction that moves w_gh fastest for a norm budget among block rescalings.
    """
    part, st_ = ref.partition, ref.structure
    e = st_.energies
    margin = np.abs(e - ref.theta[:, None])
    units = [u for u in range(e.shape[1]) if (st_.active[g, u] and st_.active[h, u]) or margin[g, u] <= x
             or margin[h, u] <= x]
    if not units:
        return np.zeros_like(a0)
    mask = np.zeros_like(a0, dtype=bool)
    for grp in (g, h):
        mask[np.ix_(part.groups == grp, np.isin(part.units, units))] = True
    blk = np.where(mask, a0, 0.0)
    nrm = np.linalg.norm(blk)
    if nrm == 0:
        return np.zeros_like(a0)
    return (1.0 if up else -1.0) * x * blk / nrm


@given(ref=references())
def test_a_pair_keeps_its_status_under_attacks_below_its_radius(ref):
    a0, r = ref
    st_ = r.structure
    if not 1e-100 < float(np.max(st_.energies)) < 1e100:
        return
    margin = np.abs(st_.energies - r.theta[:, None])
    pr = G.pair_radii(r, margin)
    m = st_.energies.shape[0]
    for g, h in itertools.combinations(range(m), 2):
        for up in (True, False):
            for frac in (0.5, 1 - 1e-6):
                s1 = S.structure_of(a0 + pair_attack(a0, r, g, h, frac * pr[g, h], up), r)
                assert s1.edges[g, h] == st_.edges[g, h]


def test_a_pair_radius_loosened_twofold_is_contradicted():
    # The pair bound is within a factor 2 of the attack above: a radius twice too large is
    # contradicted on random matrices (the test above would fail with it).
    rng = np.random.default_rng(1)
    broken = 0
    for seed in range(30):
        a0 = rng.standard_normal((12, 8)) * rng.uniform(0.1, 3, size=8)
        r = make_reference(a0, 3, seed=seed)
        margin = np.abs(r.structure.energies - r.theta[:, None])
        pr = G.pair_radii(r, margin)
        for g, h in itertools.combinations(range(r.partition.n_groups), 2):
            for up in (True, False):
                s1 = S.structure_of(a0 + pair_attack(a0, r, g, h, 2.0 * pr[g, h], up), r)
                broken += s1.edges[g, h] != r.structure.edges[g, h]
    assert broken > 0


# ---------------------------------------------------------------------------------------------
# Per-element bounds and the certificate at the truncation error


def spectra_pair(seed, shape_l=(14, 12), shape_r=(10, 14), decay=0.7):
    rng = np.random.default_rng(seed)
    mats = []
    for shp in (shape_l, shape_r):
        u, _ = np.linalg.qr(rng.standard_normal((shp[0], shp[0])))
        v, _ = np.linalg.qr(rng.standard_normal((shp[1], shp[1])))
        k = min(shp)
        s = decay ** np.arange(k) * rng.uniform(0.5, 1.5, size=k)
        mats.append(u[:, :k] @ np.diag(s) @ v[:, :k].T)
    kw = dict(q=0.9, band=None, gap_floor=1e-3, chart="top")
    return mats, [compute_spectrum(Factor(f"f{i}", m), **kw) for i, m in enumerate(mats)]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("units", ["channels", "heads"])
def test_element_bounds_dominate_the_exact_block_errors(seed, units):
    (a, b), (left, right) = spectra_pair(seed)
    rng = np.random.default_rng(seed)
    for k, kp in ((left.k, right.k), (1, 1), (3, 5), (left.r - 1, right.r - 1)):
        a0, a1 = brute.pam_pair(a, b, k, kp)
        e = a1 - a0
        groups = rng.integers(0, 3, size=a0.shape[0])
        groups[:3] = [0, 1, 2]
        heads = np.arange(a0.shape[1]) % 4 if units == "heads" else None
        uarr, nu = S.column_units(units, a0.shape[1], heads=heads, where="t")
        part = S.Partition(groups=groups, units=uarr, n_groups=3, n_units=nu, group_strategy="given",
                           unit_strategy=units)
        beta = G.element_bounds(left, right, k, kp, part)
        exact = np.array([[np.linalg.norm(e[np.ix_(groups == g, uarr == u)]) for u in range(nu)]
                          for g in range(3)])
        assert np.all(exact <= beta * (1 + 1e-10) + 1e-13)
        rows = G.row_error_bounds(left, right, k, kp)
        assert np.all(np.linalg.norm(e, axis=1) <= rows * (1 + 1e-10) + 1e-13)


def test_element_bounds_known_answer_with_nothing_dropped():
    # With full windows nothing is dropped: E = 0 and every bound is 0.
    (a, b), (left, right) = spectra_pair(0)
    part = S.Partition(groups=np.arange(10) % 2, units=np.arange(12), n_groups=2, n_units=12,
                       group_strategy="given", unit_strategy="channels")
    assert np.all(G.element_bounds(left, right, left.r, right.r, part) == 0.0)


def blockwise_perturbation(a0, part, err, rng, toward):
    """E with ||E[G_g, u]||_F = err[g, u] on every block, each aimed at its threshold or at random."""
    e = np.zeros_like(a0)
    for g in range(part.n_groups):
        rows = part.groups == g
        for u in range(part.n_units):
            cols = part.units == u
            blk = a0[np.ix_(rows, cols)]
            nb = np.linalg.norm(blk)
            d = rng.standard_normal(blk.shape) if (nb == 0 or toward[g, u] == 0) else toward[g, u] * blk / nb
            e[np.ix_(rows, cols)] = err[g, u] * d / np.linalg.norm(d)
    return e


@given(ref=references(), seed=st.integers(0, 10**6), level=st.sampled_from([0.01, 0.1, 0.5, 2.0]))
def test_certified_elements_never_change_under_blockwise_errors(ref, seed, level):
    # Errors exactly at the per-block bound (times 1 - 1e-9), each block aimed at its threshold
    # (memberships), all up or all down (pairs), or random: no certified element may change.
    a0, r = ref
    st_ = r.structure
    if not 1e-100 < float(np.max(st_.energies)) < 1e100:
        return
    rng = np.random.default_rng(seed)
    margin = np.abs(st_.energies - r.theta[:, None])
    err = level * margin * rng.uniform(0.2, 1.5, size=margin.shape) + level * 1e-3 * float(np.max(st_.energies))
    sh = G.certify_elements(r, margin, err)
    toward = np.where(st_.active, -1.0, 1.0)
    for aim in (toward, np.ones_like(toward), -np.ones_like(toward), np.zeros_like(toward)):
        e = blockwise_perturbation(a0, r.partition, err * (1 - 1e-9), rng, aim)
        G.check_elements(st_, S.structure_of(a0 + e, r), sh, "t", "test")


def test_check_elements_raises_on_a_certified_change():
    rng = np.random.default_rng(0)
    a0 = rng.standard_normal((12, 8))
    r = make_reference(a0, 3)
    margin = np.abs(r.structure.energies - r.theta[:, None])
    sh = G.certify_elements(r, margin, np.zeros_like(margin))
    assert sh.memberships.all() and sh.membership_share == pytest.approx(1.0)
    g, u = np.unravel_index(np.argmin(margin), margin.shape)
    e = aimed(a0, r, g, u, 1.5 * margin[g, u])
    with pytest.raises(CertificateBugError, match="certified membership"):
        G.check_elements(r.structure, S.structure_of(a0 + e, r), sh, "t", "test")


def test_shares_known_answer():
    # Errors of zero certify everything; errors of inf nothing; one uncertain column removes
    # exactly its energy from the column share.
    rng = np.random.default_rng(2)
    a0 = rng.standard_normal((12, 8))
    r = make_reference(a0, 3)
    e = r.structure.energies
    margin = np.abs(e - r.theta[:, None])
    none = G.certify_elements(r, margin, np.full_like(margin, np.inf))
    assert none.membership_share == 0.0 and none.column_share == 0.0 and none.n_pairs == 0
    err = np.zeros_like(margin)
    err[:, 5] = np.inf
    one = G.certify_elements(r, margin, err)
    total = np.sum(e**2)
    assert one.column_share == pytest.approx(1 - np.sum(e[:, 5] ** 2) / total, rel=1e-12)
    assert one.membership_share == pytest.approx(1 - np.sum(e[:, 5] ** 2) / total, rel=1e-12)
    assert one.n_columns == 7


# ---------------------------------------------------------------------------------------------
# Graded ICM labels


@given(ref=references(), seed=st.integers(0, 10**6), level=st.sampled_from([0.001, 0.01, 0.1]))
def test_graded_labels_never_change_under_row_errors_within_their_bound(ref, seed, level):
    from physgsa.core.icm import icm_rows

    a0, r = ref
    st_ = r.structure
    if not 1e-100 < float(np.max(st_.energies)) < 1e100:
        return
    rng = np.random.default_rng(seed)
    part = r.partition
    margin = np.abs(st_.energies - r.theta[:, None])
    err = level * float(np.max(st_.energies)) * rng.uniform(0, 1, size=margin.shape)
    sh = G.certify_elements(r, margin, err)
    icm = icm_rows(a0, np.zeros_like(a0), part, st_.codes, tau_e=0.5, tau_rho=0.5, interface_certified=True)
    # A perturbation inside the per-block bounds, and each row's own error norm as its bound.
    e = blockwise_perturbation(a0, part, err * (1 - 1e-9), rng, np.where(st_.active, -1.0, 1.0))
    row_err = np.linalg.norm(e, axis=1) * (1 + 1e-9)
    ok = G.graded_labels(a0, part, st_.codes, icm["label"], icm["delta_rho"], ~sh.columns, row_err, tau_e=0.5)
    s1 = S.structure_of(a0 + e, r)
    G.check_elements(st_, s1, sh, "t", "test")
    # Labels on A1 with A1's own masks and the centroid held fixed.
    icm1 = icm_rows(a0 + e, np.zeros_like(a0), part, s1.codes, tau_e=0.5, tau_rho=0.5, interface_certified=True,
                    centroid=icm["centroid"])
    assert np.all(icm1["label"][ok] == icm["label"][ok])


def test_graded_labels_with_no_error_and_every_column_certain_are_all_certified_off_the_levels():
    rng = np.random.default_rng(4)
    a0 = rng.standard_normal((16, 10))
    r = make_reference(a0, 3)
    from physgsa.core.icm import icm_rows

    icm = icm_rows(a0, np.zeros_like(a0), r.partition, r.structure.codes, tau_e=0.5, tau_rho=0.5,
                   interface_certified=True)
    ok = G.graded_labels(a0, r.partition, r.structure.codes, icm["label"], icm["delta_rho"],
                         np.zeros(r.partition.n_units, dtype=bool), np.zeros(16), tau_e=0.5)
    off = (icm["delta_e"] > 0) & ((icm["label"] == "SC") | (icm["delta_rho"] > 0))
    assert np.array_equal(ok, off)
    # Every column uncertain: no SC row can be certified unless its core survives losing all of them.
    ok_none = G.graded_labels(a0, r.partition, r.structure.codes, icm["label"], icm["delta_rho"],
                              np.ones(r.partition.n_units, dtype=bool), np.zeros(16), tau_e=0.5)
    assert not np.any(ok_none & (icm["label"] == "SC"))


def test_graded_shared_labels_need_their_correlation_margin():
    # An SA / ST label rests on kappa_i: with every column certain and a row error e_i, it is
    # certified only while 2 e_i / ||x_c|| < delta_rho (x_c = |x| centred), computed here directly.
    from physgsa.core.icm import icm_rows

    rng = np.random.default_rng(5)
    a0 = rng.standard_normal((30, 12))
    r = make_reference(a0, 3)
    icm = icm_rows(a0, np.zeros_like(a0), r.partition, r.structure.codes, tau_e=0.9, tau_rho=0.5,
                   interface_certified=True)
    shared = np.isin(icm["label"], ["SA", "ST"])
    assert shared.sum() >= 5
    x = np.abs(a0)
    xc = np.linalg.norm(x - x.mean(axis=1, keepdims=True), axis=1)
    for factor, want in ((0.99, True), (1.01, False)):
        row_err = factor * icm["delta_rho"] * xc / 2
        ok = G.graded_labels(a0, r.partition, r.structure.codes, icm["label"], icm["delta_rho"],
                             np.zeros(r.partition.n_units, dtype=bool), row_err, tau_e=0.9)
        # Shared rows far below tau_E keep their f_K side; the correlation side decides.
        far = shared & (np.sqrt(icm["f_core"]) + 2 * row_err / np.linalg.norm(a0, axis=1) < np.sqrt(0.9))
        assert far.sum() >= 3
        assert np.all(ok[far] == want)


def test_graded_labels_of_stacked_cases_are_each_cases_own_and_take_the_callers_profiles():
    # certify asks for the a priori and the measured labels in one call (shared row work): each
    # row of the stacked answer must be that case's own answer, bit for bit, with or without the
    # profiles the caller already holds.
    from physgsa.core.icm import icm_rows

    rng = np.random.default_rng(6)
    a0 = rng.standard_normal((40, 12))
    a0[3] = 0.0  # a zero row is never certified, in any case
    r = make_reference(a0, 3)
    part, codes = r.partition, r.structure.codes
    icm = icm_rows(a0, np.zeros_like(a0), part, codes, tau_e=0.5, tau_rho=0.5, interface_certified=True)
    unc = rng.uniform(size=(3, part.n_units)) < 0.3
    err = rng.uniform(0, 0.5, size=(3, 40)) * np.linalg.norm(a0, axis=1)
    one = [G.graded_labels(a0, part, codes, icm["label"], icm["delta_rho"], unc[i], err[i], tau_e=0.5)
           for i in range(3)]
    assert len({o.tobytes() for o in one}) > 1  # the cases differ, so a mix-up would show
    for profiles in (None, S.row_profiles_scaled(a0)):
        both = G.graded_labels(a0, part, codes, icm["label"], icm["delta_rho"], unc, err, tau_e=0.5,
                               profiles=profiles)
        assert both.shape == (3, 40) and np.array_equal(both, np.stack(one))
    assert not np.stack(one)[:, 3].any()
    with pytest.raises(ValueError, match="same leading axis"):
        G.graded_labels(a0, part, codes, icm["label"], icm["delta_rho"], unc, err[0], tau_e=0.5)
