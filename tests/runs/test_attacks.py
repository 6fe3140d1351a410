"""Attacks on the certificate: every claim of definitions.md sections 4 to 7 checked against an
independent computation (tests/brute.py: loops, numpy SVDs, exact rational arithmetic), at and
around its bound, and with faults injected to show the loud failures really fire.
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_structure import make_reference, references

import brute
import physgsa
from physgsa import CertificateBugError, Chain, certify
from physgsa.core import structure as S
from physgsa.core.certificate import margins
from physgsa.core.icm import icm_rows
from physgsa.core.spectra import normalize
from strategies import build

EPS = np.finfo(np.float64).eps


def arrays_of(chain):
    return {f.name: np.asarray(f.matrix) for f in chain.factors}


def partition(groups, n_cols):
    groups = np.asarray(groups, dtype=np.int64)
    return S.Partition(groups=groups, units=np.arange(n_cols, dtype=np.int64), n_groups=int(groups.max()) + 1,
                       n_units=n_cols, group_strategy="given", unit_strategy="channels")


# Section 4: the threshold rule and energies at the edge of float64.

@given(ref=references())
def test_gap_threshold_is_the_spec_rule(ref):
    # theta_g is the midpoint of the largest drop between the sorted energies themselves (no
    # drop to zero appended): recomputed from the brute-force energies of A0.
    a0, _ = ref
    r = make_reference(a0, n_groups=3, threshold="gap")
    part = r.partition
    e = brute.unit_energies(a0, part.groups.tolist(), part.units.tolist(), part.n_groups, part.n_units)
    for g in range(part.n_groups):
        theta = brute.gap_threshold(e[g])
        if theta is None:
            continue  # a single unit has no drop: the spec does not define its threshold
        assert r.theta[g] == pytest.approx(theta, rel=1e-12, abs=1e-12 * e.max()), (g, e[g])


def test_relative_threshold_is_eta_times_the_largest_energy():
    a0 = normalize(build(9, 7, "gaussian", 3))[0]
    r = make_reference(a0, n_groups=3, threshold="relative")
    part = r.partition
    e = brute.unit_energies(a0, part.groups.tolist(), part.units.tolist(), part.n_groups, part.n_units)
    assert np.allclose(r.theta, 0.5 * e.max(axis=1), rtol=1e-12)


def test_unit_energies_of_tiny_blocks_are_exact():
    # One row group lives at 1e-170: its squares underflow in float64. Its energies, thresholds
    # and supports must still be those of the same block scaled up (scale before squaring).
    rng = np.random.default_rng(0)
    a0 = rng.standard_normal((6, 5))
    a0[3:] *= 1e-170
    a0[3:, 0] *= 1e-3  # a weak unit in the tiny group, so the gap rule has a drop to find
    groups = np.array([0, 0, 0, 1, 1, 1])
    r = make_reference(a0, strategy=groups, threshold="gap")
    e = brute.unit_energies(a0, groups.tolist(), list(range(5)), 2, 5)
    assert np.allclose(r.structure.energies, e, rtol=1e-12, atol=0.0)
    assert r.theta[1] == pytest.approx(brute.gap_threshold(e[1]), rel=1e-12)
    assert r.structure.active[1].tolist() == (e[1] >= brute.gap_threshold(e[1])).tolist()


def test_structure_of_a_matrix_far_above_the_reference_scale():
    # The thresholds and kappa are fitted on a tiny A0 (energies ~1e-200); the structure of
    # A1 = 1e200 A0 under them: every unit with energy is active and every pair sharing one is an
    # edge. Pair weights far above the reference's scale must not overflow (a RuntimeWarning is
    # an error in this suite) and must still be compared correctly against kappa.
    rng = np.random.default_rng(0)
    a0 = 1e-200 * rng.standard_normal((6, 5))
    a0[:3, 0] = 0.0  # a unit with no energy in group-0 rows
    r = make_reference(a0, strategy=np.array([0, 0, 0, 1, 1, 1]), threshold="gap")
    a1 = a0 * 1e200
    groups, units = [0, 0, 0, 1, 1, 1], list(range(5))
    e0 = brute.unit_energies(a0, groups, units, 2, 5)
    e1 = brute.unit_energies(a1, groups, units, 2, 5)
    s0 = brute.structure(e0, r.theta, hub=brute.hub_degree(2))
    bf = brute.structure(e1, r.theta, hub=brute.hub_degree(2), kappa_scaled=s0["kappa_scaled"], scale=s0["scale"])
    st_ = S.structure_of(a1, r)
    assert st_.active.tolist() == bf["active"]
    assert [[CODE_NAMES[int(c)] for c in row] for row in st_.codes] == bf["codes"]
    assert st_.edges.tolist() == bf["edges"] and bf["edges"][0][1]
    assert st_.hubs.tolist() == bf["hubs"]


def test_direct_check_of_a_product_far_above_its_window():
    # A chain whose window holds none of the product: ||M_w||_F ~ 1e-235, ||M||_F ~ 1e-46. The
    # direct check compares A1's energies with thresholds fitted at 1e-235: it must report the
    # change (not overflow on the way, nor certify).
    ch = Chain.from_arrays([("a", build(5, 6, "sparse", 487943326)), ("b", build(2, 5, "range", 6007698))])
    row = certify(ch, n_perturbations=0).interfaces.iloc[0]
    assert not row["direct_same"]
    assert not row["certified_measured"] and not row["certified_a_priori"]


# Section 6: the ICM profile correlation against np.corrcoef.

def icm_brute(a0, groups, codes_by_group):
    """Centroids (mean normalized |rows| of each group), kappa by np.corrcoef and f_K, f_O, f_N."""
    n_groups = max(groups) + 1
    prof = np.zeros(a0.shape)
    for i in range(a0.shape[0]):
        nrm = brute.block_norm(a0[i])
        if nrm > 0:
            prof[i] = np.abs(a0[i] / np.max(np.abs(a0[i]))) / (nrm / np.max(np.abs(a0[i])))
    centroid = np.array([prof[[i for i in range(len(groups)) if groups[i] == g]].mean(axis=0)
                         for g in range(n_groups)])
    out = []
    for i in range(a0.shape[0]):
        g = groups[i]
        x = np.abs(a0[i])
        if not x.any():
            out.append(None)
            continue
        x = x / x.max()
        c = centroid[g] / centroid[g].max()
        f = {}
        for code in "KON":
            f[code] = sum(x[j] ** 2 for j in range(x.shape[0]) if codes_by_group[g][j] == code) / np.sum(x**2)
        well = np.ptp(x) > 1e-6 and np.ptp(c) > 1e-6
        out.append({"kappa": float(np.corrcoef(x, c)[0, 1]) if well else None, "f": f})
    return centroid, out


CODE_NAMES = {S.CORE: "K", S.OVERLAP: "O", S.NOISE: "N"}


def check_icm_against_corrcoef(a0, part, codes):
    out = icm_rows(a0, np.zeros_like(a0), part, codes, tau_e=0.5, tau_rho=0.5, interface_certified=True)
    by_group = [[CODE_NAMES[int(c)] for c in codes[g][part.units]] for g in range(part.n_groups)]
    _, rows = icm_brute(a0, part.groups.tolist(), by_group)
    checked = 0
    for i, bf in enumerate(rows):
        if bf is None:
            assert out["label"][i] == "zero"
            continue
        assert out["label"][i] != "zero", i
        assert out["f_core"][i] == pytest.approx(bf["f"]["K"], abs=1e-12)
        assert out["f_overlap"][i] == pytest.approx(bf["f"]["O"], abs=1e-12)
        assert out["f_noise"][i] == pytest.approx(bf["f"]["N"], abs=1e-12)
        if bf["kappa"] is not None:
            assert out["kappa"][i] == pytest.approx(bf["kappa"], abs=1e-9), (i, out["kappa"][i], bf["kappa"])
            checked += 1
    return checked


@given(ref=references())
def test_icm_kappa_is_the_pearson_correlation_with_the_centroid(ref):
    a0, r = ref
    check_icm_against_corrcoef(a0, r.partition, r.structure.codes)


def test_icm_kappa_and_fractions_of_tiny_rows():
    # Rows around 1e-170 (their squares underflow) are not zero rows: their fractions and kappa
    # are those of the same rows scaled up.
    rng = np.random.default_rng(4)
    a0 = np.abs(rng.standard_normal((8, 6))) + 0.1
    a0[4:] *= 1e-170
    part = partition([0, 0, 1, 1, 0, 1, 0, 1], 6)
    codes = np.array([[S.CORE, S.CORE, S.OVERLAP, S.NOISE, S.NOISE, S.NOISE],
                      [S.NOISE, S.OVERLAP, S.CORE, S.CORE, S.NOISE, S.OVERLAP]], dtype=np.int8)
    assert check_icm_against_corrcoef(a0, part, codes) == 8


# Section 5: the pair-margin bound |w' - w| <= b x + n x^2 with the supports of A0.

def pair_weight_on(a, part, active, g, h, scale):
    """w_gh / scale^2 on the matrix a with the given (A0's) supports, by loops."""
    e = brute.unit_energies(a, part.groups.tolist(), part.units.tolist(), part.n_groups, part.n_units)
    return sum((e[g, u] / scale) * (e[h, u] / scale) for u in range(part.n_units) if active[g][u] and active[h][u])


def aimed_perturbations(a0, part, active, e, g, h, rng):
    """Unit-norm directions aimed at the shared units of g and h, and a random one."""
    rows_g = part.groups == g
    rows_h = part.groups == h
    shared = [u for u in range(part.n_units) if active[g][u] and active[h][u]]
    cols = np.isin(part.units, shared)
    out = []
    for sign in (1.0, -1.0):  # grow (or shrink) both groups along A0 on every shared unit
        d = np.zeros(a0.shape)
        d[np.ix_(rows_g | rows_h, cols)] = sign * a0[np.ix_(rows_g | rows_h, cols)]
        out.append(d)
    # Everything on the shared unit where the other group is strongest, split over both blocks.
    u = max(shared, key=lambda v: e[g, v] + e[h, v])
    ucols = part.units == u
    for rows, _split in ((rows_g, 1.0), (rows_g | rows_h, 0.5)):
        d = np.zeros(a0.shape)
        blk = a0[np.ix_(rows, ucols)]
        d[np.ix_(rows, ucols)] = blk if np.any(blk) else 1.0
        out.append(d)
    out.append(rng.standard_normal(a0.shape))
    return [d / np.linalg.norm(d) for d in out if np.linalg.norm(d) > 0]


@settings(max_examples=40)
@given(ref=references(), seed=st.integers(0, 2**31 - 1))
def test_pair_margin_bound_holds_against_aimed_perturbations(ref, seed):
    a0, r = ref
    part, st_ = r.partition, r.structure
    mg = margins(r)
    rng = np.random.default_rng(seed)
    e = brute.unit_energies(a0, part.groups.tolist(), part.units.tolist(), part.n_groups, part.n_units)
    scale = float(e.max())
    active = st_.active.tolist()
    kappa = r.kappa / scale**2
    for p in mg.pairs:
        g, h = p["g"], p["h"]
        shared = [u for u in range(part.n_units) if active[g][u] and active[h][u]]
        # n and b are the definitions (the supports are A0's own).
        assert p["n"] == len(shared)
        assert p["b"] == pytest.approx(sum(e[g, u] + e[h, u] for u in shared), rel=1e-12, abs=1e-300)
        w0 = pair_weight_on(a0, part, active, g, h, scale)
        rho_gh = p["rho"]
        for d in aimed_perturbations(a0, part, active, e, g, h, rng):
            for x in {0.5 * rho_gh, 0.999 * rho_gh, rho_gh, 2.0 * rho_gh, 0.1 * scale, scale}:
                if not x > 0:
                    continue
                w1 = pair_weight_on(a0 + x * d, part, active, g, h, scale)
                xs = x / scale
                bound = (p["b"] / scale) * xs + p["n"] * xs * xs
                assert abs(w1 - w0) <= bound * (1 + 1e-9) + 1e-14 * max(w0, 1.0), (g, h, x, w1, w0, bound)
                if x < rho_gh * (1 - 1e-9):  # below the pair radius the edge cannot flip
                    assert (w1 >= kappa) == (w0 >= kappa)


# Section 5: the rounding allowance against the real rounding of M = A_hat' A_hat.

def rounding_cases():
    rng = np.random.default_rng(8)
    cases = [("gaussian", rng.standard_normal((6, 5)), rng.standard_normal((4, 6))),
             ("wide", rng.standard_normal((12, 3)), rng.standard_normal((2, 12))),
             ("range", build(7, 6, "range", 1), build(5, 7, "range", 2))]
    # Adversarial: long dot products of same-sign, unrepresentable entries (every rounding error
    # of the accumulation has the same sign), with the inner size far above the outer ones.
    v = 0.1 + rng.random((64, 1))
    cases.append(("dot", v, 0.3 + rng.random((1, 64))))
    cases.append(("dot_ulps", np.r_[[[1.0]], np.full((63, 1), 0.75 * 2.0**-52)], np.ones((1, 64))))
    cases.append(("positive", 1.0 / 3.0 + rng.random((40, 2)), 1.0 / 7.0 + rng.random((2, 40))))
    return cases


@pytest.mark.parametrize("name, left, right", rounding_cases(), ids=lambda x: x if isinstance(x, str) else "")
def test_rounding_allowance_bounds_the_real_rounding_of_the_product(name, left, right):
    res = certify(Chain.from_arrays([("a", left), ("b", right)]), n_perturbations=0)
    delta = res.certificate["interfaces"][0]["verdicts"]["rounding_allowance"]
    m_l, n_l = left.shape
    p = right.shape[0]
    expect = 32 * EPS * max(p, n_l, m_l) * np.sqrt(min(m_l, n_l) * min(p, m_l))
    assert delta == pytest.approx(expect, rel=1e-12)
    lh, rh = normalize(left)[0], normalize(right)[0]  # the A_hat the pipeline multiplies
    err = brute.exact_product_error(rh, lh)
    assert err <= delta, (name, err, delta)


# Section 6: ICM certification right at its bound.

def icm_case():
    """Two groups. Row 0 is SC; row 6 is SA just below tau_E (its f_K margin binds); rows 2 and 5
    have f_K = 0, so their labels (SA, ST) rest on kappa, whose margin binds."""
    a0 = np.array([[4.0, 3.0, 0.9, 0.5, 0.4, 0.3],
                   [3.5, 3.2, 1.0, 0.7, 0.2, 0.4],
                   [0.6, 1.0, 2.0, 3.0, 2.5, 0.8],
                   [0.5, 0.9, 2.2, 2.8, 2.6, 0.7],
                   [0.7, 1.1, 1.8, 3.1, 2.4, 0.9],
                   [2.6, 0.5, 2.4, 0.6, 0.5, 2.5],
                   [1.8, 1.4, 1.6, 1.2, 0.9, 0.7]])
    part = partition([0, 0, 1, 1, 1, 1, 0], 6)
    codes = np.array([[S.CORE, S.CORE, S.OVERLAP, S.NOISE, S.NOISE, S.NOISE],
                      [S.NOISE, S.NOISE, S.OVERLAP, S.OVERLAP, S.OVERLAP, S.NOISE]], dtype=np.int8)
    return a0, part, codes


def brute_label(x, codes_row, centroid):
    ax = np.abs(x)
    f_k = sum(ax[j] ** 2 for j in range(ax.shape[0]) if codes_row[j] == "K") / np.sum(ax**2)
    if f_k >= 0.5:
        return "SC"
    return "SA" if np.corrcoef(ax, centroid)[0, 1] >= 0.5 else "ST"


@pytest.mark.parametrize("row, label, binding", [(0, "SC", "E"), (6, "SA", "E"), (2, "SA", "rho"), (5, "ST", "rho")])
def test_icm_certification_switches_exactly_at_its_bound(row, label, binding):
    # A row's label is certified iff 2||E_i|| / ||A0_i|| < delta_E (and, for SA / ST,
    # 2||E_i|| / ||A0_c,i|| < delta_rho). At 1 - 1e-9 of the tighter limit it must be certified and
    # the label recomputed on A0 + E (brute force, same masks and centroid) must not move, for
    # perturbations aimed at the label; at 1 + 1e-9 it must not be certified.
    a0, part, codes = icm_case()
    g = int(part.groups[row])
    by_group = [[CODE_NAMES[int(c)] for c in codes[h]] for h in range(2)]
    centroid, rows = icm_brute(a0, part.groups.tolist(), by_group)
    x = a0[row]
    f_k = rows[row]["f"]["K"]
    kappa = rows[row]["kappa"]
    assert brute_label(x, by_group[g], centroid[g]) == label
    xc = np.abs(x) - np.abs(x).mean()
    limit_e = abs(np.sqrt(f_k) - np.sqrt(0.5)) * np.linalg.norm(x) / 2
    limit_rho = abs(kappa - 0.5) * np.linalg.norm(xc) / 2 if label != "SC" else np.inf
    assert (limit_e < limit_rho) == (binding == "E")
    limit = min(limit_e, limit_rho)
    # Directions: core energy in and out, the profile toward and away from the centroid, random.
    core = np.array([c == "K" for c in by_group[g]])
    cc = centroid[g] - centroid[g].mean()
    directions = [np.where(core, x, -x), np.where(core, -x, x), cc, -cc, np.random.default_rng(row).standard_normal(6)]
    for d in directions:
        d = d / np.linalg.norm(d)
        for factor, certified in ((1 - 1e-9, True), (1 + 1e-9, False)):
            e = np.zeros_like(a0)
            e[row] = factor * limit * d
            out = icm_rows(a0, e, part, codes, tau_e=0.5, tau_rho=0.5, interface_certified=True)
            assert out["label"][row] == label
            assert bool(out["certified"][row]) is certified, (factor, out["bound_e"][row], out["bound_rho"][row])
            if certified:
                assert brute_label(x + e[row], by_group[g], centroid[g]) == label
    # An uncertified interface certifies no row.
    out = icm_rows(a0, np.zeros_like(a0), part, codes, tau_e=0.5, tau_rho=0.5, interface_certified=False)
    assert not out["certified"].any()


# Section 5: the window search returns the smallest passing window.

def brute_rho_static(e, theta, st0):
    """gamma and the pair radii from their definitions, in units of the largest energy."""
    gamma = min(abs(e[g, u] - theta[g]) for g in range(e.shape[0]) for u in range(e.shape[1])) / st0["scale"]
    rho = gamma
    m = e.shape[0]
    for g in range(m):
        for h in range(g + 1, m):
            shared = st0["shared"][(g, h)]
            if not shared:
                continue
            n = len(shared)
            b = sum(e[g, u] + e[h, u] for u in shared) / st0["scale"]
            mu = abs(st0["w_scaled"][g, h] - st0["kappa_scaled"])
            rho = min(rho, (-b + np.sqrt(b * b + 4 * n * mu)) / (2 * n))
    return rho * st0["scale"]


@pytest.mark.parametrize("threshold", ["relative", "gap"])
def test_window_search_reports_the_smallest_passing_window(threshold):
    ch = physgsa.example_chain(n_factors=2, width=12, seed=0)
    a, b = (np.asarray(f.matrix) for f in ch.factors)
    groups = np.arange(12) // 3
    res = certify(ch, window_search=True, n_perturbations=0, threshold=threshold, groups={"blocks.1": groups})
    ws = res.certificate["interfaces"][0]["window_search"]
    sig_a = np.linalg.svd(brute.a_hat(a), compute_uv=False)
    sig_b = np.linalg.svd(brute.a_hat(b), compute_uv=False)
    same, measured = [], []
    for step in ws["steps"]:
        k = brute.dominant_window(sig_a, step["q"], (1 - step["q"]) / 2)
        kp = brute.dominant_window(sig_b, step["q"], (1 - step["q"]) / 2)
        assert (step["k_left"], step["k_right"]) == (k, kp)
        a0, a1 = brute.pam_pair(a, b, k, kp)
        e0 = brute.unit_energies(a0, groups.tolist(), list(range(12)), 4, 12)
        e1 = brute.unit_energies(a1, groups.tolist(), list(range(12)), 4, 12)
        if threshold == "relative":
            theta = 0.5 * e0.max(axis=1)
        else:
            theta = np.array([brute.gap_threshold(row) for row in e0])
        s0 = brute.structure(e0, theta, hub=3)
        s1 = brute.structure(e1, theta, hub=3, kappa_scaled=s0["kappa_scaled"], scale=s0["scale"])
        same.append(brute.same_structure(s0, s1))
        rho = brute_rho_static(e0, theta, s0)
        err = brute.block_norm(a1 - a0)
        assert step["rho_static"] == pytest.approx(rho, rel=1e-8)
        measured.append(err < rho)
        assert step["direct_same"] == same[-1], step["q"]
        assert step["certified_measured"] == measured[-1], step["q"]
    first = same.index(True)
    assert first > 0  # some smaller window fails: the search has something to find
    assert ws["smallest_direct"]["q"] == ws["steps"][first]["q"]
    assert ws["smallest_measured"]["q"] == ws["steps"][measured.index(True)]["q"]


# Sections 3 to 7 on real chains: the pipeline's own figures against independent ones.

def test_shared_frames_with_a_spectral_cliff_certify():
    # Shared frames (C = I) and a spectrum that drops by 1e-4 after four values: the window holds
    # everything but 1e-8 of the energy, so the interface is certified both ways, and the
    # independent direct check (numpy SVDs, loops) agrees.
    rng = np.random.default_rng(0)
    n = 24
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = np.r_[[1.0, 0.9, 0.8, 0.7], 1e-4 * 2.0 ** -np.arange(n - 4)]
    ch = Chain.from_arrays([("a", (np.eye(n) * s) @ u.T), ("b", u @ (np.eye(n) * s))])
    res = certify(ch)
    row = res.interfaces.iloc[0]
    assert abs(row["slack"]) <= 1e-12
    sig = np.sqrt(n) * s / np.linalg.norm(s)
    assert row["k_left"] == row["k_right"] == brute.dominant_window(sig, 0.9, (1 - 0.9) / 2) == 4
    assert row["trunc_error"] == pytest.approx(np.sqrt(np.sum(sig[4:] ** 4)), rel=1e-8)
    assert row["certified_a_priori"] and row["certified_measured"]
    chk = brute.interface_check(res, arrays_of(ch), 0)
    assert chk["same"] and row["direct_same"]
    assert brute.block_norm(chk["a1"] - chk["a0"]) < row["rho_static"]


@pytest.mark.parametrize("chain", [
    physgsa.example_chain(n_factors=3, width=16),
    Chain.from_arrays([(f"f{i}", np.random.default_rng(i).standard_normal(s))
                       for i, s in enumerate([(10, 8), (12, 10), (9, 12)])]),
], ids=["example", "rectangular"])
def test_protocol_item_7_against_an_independent_decomposition(chain):
    # Item 7's orthogonality is max |<part_i, part_j>| / ||A0||^2: recomputed on A0 (from numpy
    # SVDs) with the masks of the brute-force supports, it is exactly 0 (the masks are disjoint),
    # and so must the reported value be. The part energies and the closure are compared with the
    # same independent computation.
    res = certify(chain, n_perturbations=0)
    for i in range(len(res.interfaces)):
        chk = brute.interface_check(res, arrays_of(chain), i)
        assert chk["s0"]["active"] == chk["code_active"]
        parts = brute.part_energies(chk["a0"], brute.entry_codes(chk["s0"], chk["groups"], chk["units"]))
        total = parts["total"]
        items = {it["item"]: it for it in chk["detail"]["protocol"]}
        item7 = items[7]["value"]
        assert item7["orthogonality"] == parts["inner"] / total == 0.0
        dec = chk["detail"]["decomposition"]
        c2 = parts["scale2"]
        assert dec["total"] / c2 == pytest.approx(total, rel=1e-9)
        for name, code in (("core", "K"), ("overlap", "O"), ("noise", "N")):
            assert abs(dec["energy"][name] / c2 - parts["energy"][code]) <= 1e-9 * total, name
            assert chk["row"][f"energy_{name}"] == pytest.approx(parts["energy"][code] / total, abs=1e-9)
        assert item7["closure"] <= 1e-12
        assert abs(sum(dec["energy"].values()) / c2 - total) <= 1e-9 * total
        assert items[7]["passed"]


# Section 5: "certified but not equal is a bug and must fail loudly".

def lying_margins(factor):
    real = margins

    def fake(ref, *args):
        mg = real(ref, *args)
        return dataclasses.replace(mg, rho_static=factor * max(mg.rho_static, 1.0))

    return fake


def test_an_inflated_radius_contradicted_by_the_direct_check_raises(monkeypatch):
    ch = physgsa.example_chain(n_factors=2, width=12, seed=0)
    assert not certify(ch, q=0.5).interfaces["direct_same"].iloc[0]  # the structure does change here
    monkeypatch.setattr("physgsa.runs.certify.margins", lying_margins(1e6))
    with pytest.raises(CertificateBugError, match="direct check differs"):
        certify(ch, q=0.5)


def test_an_inflated_radius_contradicted_by_the_perturbation_tests_raises(monkeypatch):
    ch = physgsa.example_chain(n_factors=2, width=12, seed=0)
    assert certify(ch).interfaces["direct_same"].iloc[0]  # the direct check cannot catch it here
    monkeypatch.setattr("physgsa.runs.certify.margins", lying_margins(1e3))
    with pytest.raises(CertificateBugError, match="perturbation"):
        certify(ch)


def test_a_truncation_error_above_its_bound_raises(monkeypatch):
    import physgsa.runs.certify as P

    real = P.transport

    def fake(*args, **kw):
        tr = real(*args, **kw)
        return dataclasses.replace(tr, trunc_error=tr.trunc_bound * (1 + 1e-6) + 1e-12)

    monkeypatch.setattr(P, "transport", fake)
    with pytest.raises(CertificateBugError, match="exceeds its bound"):
        certify(physgsa.example_chain(n_factors=2, width=8))


def test_a_negative_slack_raises(monkeypatch):
    import physgsa.runs.certify as P

    real = P.rigidity
    monkeypatch.setattr(P, "rigidity", lambda *a, **kw: dataclasses.replace(real(*a, **kw), slack=-1e-6))
    with pytest.raises(CertificateBugError, match="slack"):
        certify(physgsa.example_chain(n_factors=2, width=8))


def test_cli_exits_3_on_a_contradicted_certificate(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from physgsa.cli import app

    ch = physgsa.example_chain(n_factors=2, width=12, seed=0)
    np.savez(tmp_path / "chain.npz", **arrays_of(ch))
    monkeypatch.setattr("physgsa.runs.certify.margins", lying_margins(1e6))
    out = CliRunner().invoke(app, ["certify", str(tmp_path / "chain.npz"), "--q", "0.5", "--out",
                                   str(tmp_path / "out"), "--quiet"])
    assert out.exit_code == 3, out.output
    assert "internal error" in out.output and "bug in physgsa" in out.output
    assert not (tmp_path / "out" / "certificate.json").exists()
