"""The spec's gap rule, degenerate structure, and the edges of float64 (issue: structure that is
true on real networks). Each case is checked against an independent computation written here:
plain formulas, np.corrcoef, exact powers of two, or brute-force block norms."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import physgsa
from physgsa.core import structure as S
from physgsa.core.certificate import margins, perturbation_tests
from physgsa.core.spectra import compute_spectrum

DATA = Path(__file__).parent.parent / "data"


def _chain(*pairs):
    return physgsa.Chain.from_arrays(list(pairs))


# ----- the gap rule -------------------------------------------------------------------------------


def test_smallest_case_gives_the_spec_numbers():
    # l = I_3, r = [[1, .9, .5]], groups="modes". By hand: A_hat_l = I (r = 3, ||I||_F^2 = 3),
    # A_hat_r = r / ||r|| (r = 1); q = 0.9 keeps all three left modes, so A0 = M = r / ||r||.
    # Energies e = [1, .9, .5] / ||r||; the largest drop is .9 -> .5, theta = .7 / ||r||;
    # gamma = (.9 - .7) / ||r|| (one group: no pairs), so rho_static = .2 / ||r||.
    norm = np.sqrt(1 + 0.81 + 0.25)
    res = physgsa.certify(_chain(("l", np.eye(3)), ("r", np.array([[1.0, 0.9, 0.5]]))), groups="modes")
    st_ = res.certificate["interfaces"][0]["structure"]
    assert st_["theta"][0] == pytest.approx(0.7 / norm, rel=1e-13)
    assert st_["theta"][0] == pytest.approx(0.4877, abs=5e-5)
    assert st_["supports"] == [[0, 1]]
    assert res.interfaces["rho_static"][0] == pytest.approx(0.2 / norm, rel=1e-12)
    assert res.interfaces["rho_static"][0] == pytest.approx(0.1393, abs=5e-5)
    # The named option (ours) keeps today's rule: a final drop to zero, every unit active.
    old = physgsa.certify(_chain(("l", np.eye(3)), ("r", np.array([[1.0, 0.9, 0.5]]))), groups="modes",
                          threshold="gap_zero")
    assert old.certificate["interfaces"][0]["structure"]["supports"] == [[0, 1, 2]]
    assert old.interfaces["rho_static"][0] == pytest.approx(0.25 / norm, rel=1e-12)


@given(e=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=9), seed=st.integers(0, 9))
def test_gap_threshold_is_the_midpoint_of_the_largest_drop(e, seed):
    # Brute force over every consecutive pair of the sorted energies, first largest on ties.
    e = np.array(e)[np.random.default_rng(seed).permutation(len(e))][None, :]
    s = sorted(e[0].tolist(), reverse=True)
    if len(s) == 1:
        expected = s[0] / 2
    else:
        best, expected = -1.0, None
        for a, b in zip(s, s[1:]):
            if a - b > best:
                best, expected = a - b, (a + b) / 2
    assert S.fit_thresholds(e, "gap", 0.5)[0] == pytest.approx(expected, abs=1e-15)


# ----- degenerate structure, said ------------------------------------------------------------------


def test_trivial_structure_is_flagged_and_counted():
    # One row group whose units are all alike: every unit active (the spec's gap rule gives
    # theta = e, gamma = 0), no other group, so core energy is all there is... but with two
    # identical groups every unit has degree 2: no core energy, a flag.
    a = np.ones((4, 3))
    groups = {"l->r": np.array([0, 0, 1, 1])}
    res = physgsa.certify(_chain(("l", np.eye(3)), ("r", a)), groups=groups)
    flags = res.interfaces["flags"][0].split(";")
    assert "no_channel_structure" in flags
    detail = res.certificate["interfaces"][0]["no_channel_structure"]
    assert any("every unit active" in r for r in detail) and "the core energy is 0" in detail
    assert res.verdict["n_no_channel_structure"] == 1
    assert res.verdict["no_channel_structure"] == ["l->r"]
    # A planted block structure is not flagged.
    b = np.zeros((4, 4))
    b[:2, :2] = [[1.0, 0.9], [0.8, 1.0]]
    b[2:, 2:] = [[1.0, 0.7], [0.9, 1.0]]
    ok = physgsa.certify(_chain(("l", np.eye(4)), ("r", b)), groups={"l->r": np.array([0, 0, 1, 1])})
    assert "no_channel_structure" not in ok.interfaces["flags"][0]
    assert ok.verdict["n_no_channel_structure"] == 0


# ----- the edges of float64 ------------------------------------------------------------------------


def _brute_energies(a, groups, units):
    m, n = groups.max() + 1, units.max() + 1
    out = np.zeros((m, n))
    for g in range(m):
        for u in range(n):
            block = a[np.ix_(groups == g, units == u)]
            c = np.abs(block).max() if block.size else 0.0
            out[g, u] = c * np.sqrt(np.sum((block / c) ** 2)) if c > 0 else 0.0
    return out


@settings(max_examples=40)
@given(seed=st.integers(0, 10_000), exponent=st.sampled_from([-600, -540, -1, 0, 300, 480]))
def test_structure_and_radius_do_not_depend_on_the_scale(seed, exponent):
    # Multiplying A0 by 2^k is exact: every energy, theta and gamma scales by 2^k, every pair
    # weight and kappa by 4^k, rho_static by 2^k. At 2^-540 (entries near 1e-163) the squares
    # are subnormal; the result must still be the scaled one, to rounding.
    rng = np.random.default_rng(seed)
    a0 = rng.standard_normal((9, 7)) * rng.uniform(0.1, 1, (9, 7))
    part = S.Partition(groups=rng.integers(0, 3, 9), units=np.arange(7), n_groups=3, n_units=7,
                       group_strategy="given", unit_strategy="channels")
    if len(set(part.groups.tolist())) < 3:
        return
    kw = dict(threshold="relative", eta=0.4, kappa_fraction=0.05, hub_degree=2)
    ref1 = S.fit_reference(a0, part, **kw)
    scale = np.ldexp(1.0, exponent)
    ref2 = S.fit_reference(a0 * scale, part, **kw)
    np.testing.assert_allclose(ref2.structure.energies / scale, _brute_energies(a0, part.groups, part.units),
                               rtol=1e-13)
    assert S.compare(ref1.structure, ref2.structure) == []
    np.testing.assert_allclose(ref2.theta / scale, ref1.theta, rtol=1e-13)
    m1, m2 = margins(ref1), margins(ref2)
    assert m2.rho_static / scale == pytest.approx(m1.rho_static, rel=1e-12)
    assert m2.binding["kind"] == m1.binding["kind"]


def test_underflow_case_radius_holds_under_explicit_perturbations():
    # shared/cases/radius_underflow_chain.npz: interface f1->f2 has unit energies near 2e-162.
    z = np.load(DATA / "radius_underflow_chain.npz")
    chain = _chain(*[(k, z[k]) for k in z.files])
    kw = dict(q=0.999, groups="kmeans", threshold="relative", eta=0.3, hub_degree=2, seed=39)
    # Explicit perturbations form each E and recompute the structure: below the radius a change
    # raises CertificateBugError, so finishing is the test (it raised before the fix).
    res = physgsa.certify(chain, perturbation="explicit", n_perturbations=100, **kw)
    blocks = physgsa.certify(chain, **kw)
    np.testing.assert_allclose(res.interfaces["rho_static"], blocks.interfaces["rho_static"], rtol=0)
    assert (res.interfaces["rho_static"] > 0).all()


def test_underflow_case_random_draws_never_change_the_structure_below_the_radius():
    # The same interface, rebuilt at the structure level and scaled up by 2^540 (exact): both the
    # block sampler and explicit draws at 0.5 and 0.9 rho_static must leave the structure alone.
    rng = np.random.default_rng(7)
    a0 = rng.standard_normal((6, 5)) * np.ldexp(1.0, -540)
    a0[0, :2] *= 1e-3  # a spread of block sizes inside the tiny matrix
    part = S.Partition(groups=np.array([0, 0, 1, 1, 2, 2]), units=np.arange(5), n_groups=3, n_units=5,
                       group_strategy="given", unit_strategy="channels")
    ref = S.fit_reference(a0, part, threshold="relative", eta=0.3, kappa_fraction=0.05, hub_degree=2)
    rho = margins(ref).rho_static
    assert rho > 0
    for mode in ("blocks", "explicit"):
        out = perturbation_tests(a0, ref, rho, below=(0.5, 0.9), above=(), n_draws=100,
                                 rng=np.random.default_rng(1), where="tiny", mode=mode)
        assert all(level["changed"] == 0 for level in out["levels"])


def test_tiny_row_keeps_its_profile_and_the_others_their_correlations():
    # Case 3: row 3 is nonzero, but its squares underflow. The spec's kappa (np.corrcoef with the
    # centroid of all four normalized |rows|) is 0.858 / -0.469 / -0.336 for rows 0-2.
    r = 1e150 * np.array([[1, 0.5, 0.1], [0.3, 1, 0.2], [0.2, 0.1, 1], [3e-170, 1e-170, 2e-170]])
    res = physgsa.certify(_chain(("l", np.eye(3)), ("r", r)), q=0.999, groups={"l->r": np.zeros(4, dtype=int)})
    rows = res.rows.sort_values("row")
    exact = np.array([[1, 0.5, 0.1], [0.3, 1, 0.2], [0.2, 0.1, 1], [3, 1, 2]], dtype=float)
    prof = exact / np.linalg.norm(exact, axis=1, keepdims=True)
    centroid = prof.mean(axis=0)
    expected = [np.corrcoef(prof[i], centroid)[0, 1] for i in range(4)]
    np.testing.assert_allclose(rows["kappa"].to_numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(rows["kappa"].to_numpy()[:3], [0.858, -0.469, -0.336], atol=1e-3)
    assert "zero" not in set(rows["label"])


def test_product_at_rounding_level_is_flagged_never_analysed():
    # Case 4: l = Q[:, :2] G1, r = G2 Q[:, 2:4]^T, so r @ l = 0 exactly and ~1e-15 in float64.
    rng = np.random.default_rng(0)
    for _ in range(10):
        q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
        l_ = q[:, :2] @ rng.standard_normal((2, 6))
        r_ = rng.standard_normal((6, 2)) @ q[:, 2:4].T
        res = physgsa.certify(_chain(("l", l_), ("r", r_)))
        it = res.interfaces.iloc[0]
        assert "product_negligible" in it["flags"].split(";")
        assert pd_isna(it["slack"]) and not it["member"]
        assert not it["certified_a_priori"] and not it["certified_measured"]
        assert set(res.rows["label"]) == {"zero"} and not res.rows["certified"].any()


def test_small_product_without_cancellation_is_not_rounding():
    # |M| = |r||l| entrywise (no cancellation), just tiny: 1e-170 is an exact product, analysed.
    l_ = np.diag([1.0, 1e-170])
    r_ = np.array([[0.0, 1.0], [0.0, 0.0]])
    res = physgsa.certify(_chain(("l", l_), ("r", r_)))
    # M is analysed: its slack is reported (a product at rounding level has a null slack). Its
    # window A0 is 0 (l's window is e_1, which r does not read), so since issue 24 the interface
    # is flagged product_negligible for A0 (item 16), never for M.
    assert not pd_isna(res.interfaces["slack"][0])
    from physgsa.runs.certify import at_rounding_level
    a_l, a_r = l_ / np.linalg.norm([1.0, 1e-170]) * np.sqrt(2), r_ * 1.0
    assert not at_rounding_level(a_l, a_r, a_r @ a_l)


def pd_isna(x):
    import pandas as pd

    return bool(pd.isna(x))


def _spectrum(a):
    f = physgsa.Chain.from_arrays([("a", a)]).factors[0]
    return compute_spectrum(f, q=0.9, band=0.05, gap_floor=1e-3, chart="top")


def test_window_of_equal_energies_has_no_r2():
    # Case 5a: an orthogonal matrix's energies are all 1 up to rounding; R^2 would be noise.
    rng = np.random.default_rng(0)
    for n in (4, 8, 16):
        q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        s = _spectrum(q)
        assert s.window_r2 is None and "window:window_equal_energies" in s.flags
        assert s.s_window == 0.0


def test_exactly_rank_one_factors_are_steep_every_time():
    # Case 5b: rho = log r to rounding; phi^{-1} of it is infinite, clipped to S_MAX and flagged.
    rng = np.random.default_rng(1)
    for _ in range(600):  # about 1 in 100 of these landed near 49 without a flag before
        m, n = rng.integers(2, 30, size=2)
        s = _spectrum(np.outer(rng.standard_normal(m), rng.standard_normal(n)))
        assert "top:steep" in s.flags and s.s_top == 50.0


def test_modes_groups_on_repeated_singular_values_are_flagged():
    # Case 5c: argmax over source modes depends on LAPACK's basis inside a repeated cluster.
    rng = np.random.default_rng(2)
    r_ = rng.standard_normal((5, 4))
    res = physgsa.certify(_chain(("l", np.eye(4)), ("r", r_)), groups="modes")
    assert "modes_basis_dependent" in res.interfaces["flags"][0]
    distinct = np.diag([4.0, 3.0, 2.0, 1.0])
    res = physgsa.certify(_chain(("l", distinct), ("r", r_)), groups="modes")
    assert "modes_basis_dependent" not in res.interfaces["flags"][0]


# ----- column units as conv groups -----------------------------------------------------------------


def test_conv_group_units_give_block_energies():
    from physgsa.models._conv import conv_dc, grouped_channel_matrix

    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    groups, c_in, c_out = 4, 8, 12
    w = rng.standard_normal((c_out, c_in // groups, 3, 3))
    full, col_groups = grouped_channel_matrix(conv_dc(w), groups)
    # Independent: the real grouped conv on a spatially constant input, at an interior pixel.
    x = torch.zeros((c_in, c_in, 7, 7), dtype=torch.float64)
    for j in range(c_in):
        x[j, j] = 1.0
    y = torch.nn.functional.conv2d(x, torch.from_numpy(w), padding=1, groups=groups)
    np.testing.assert_allclose(full, y[:, :, 3, 3].numpy().T, atol=1e-13)
    assert col_groups.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    chain = physgsa.Chain.from_layout([("conv", full, None, None, col_groups),
                                       ("next", rng.standard_normal((5, c_out)), None, None)])
    res = physgsa.certify(chain, units="groups", groups="kmeans", n_groups=2, q=0.999)
    detail = res.certificate["interfaces"][0]
    assert res.interfaces["n_units"][0] == groups
    assert max(max(s) for s in detail["structure"]["supports"] if s) < groups
    # An interface whose left factor is not a grouped conv keeps single channels, flagged.
    plain = physgsa.certify(physgsa.Chain.from_arrays([("a", full), ("b", rng.standard_normal((5, c_out)))]),
                            units="groups")
    assert plain.interfaces["n_units"][0] == c_in
    assert "units_channels_no_conv_groups" in plain.interfaces["flags"][0]
    with pytest.raises(physgsa.InvalidParameterError, match="units='groups'"):
        S.column_units("groups", 8, heads=None, where="a->b")


def test_group_unit_energies_match_brute_force():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((6, 8))
    units = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    groups = np.array([0, 1, 0, 1, 2, 2])
    part = S.Partition(groups=groups, units=units, n_groups=3, n_units=4, group_strategy="given",
                       unit_strategy="groups")
    np.testing.assert_allclose(S.unit_energies(a, part), _brute_energies(a, groups, units), rtol=1e-14)
    tiny = a * np.ldexp(1.0, -560)
    np.testing.assert_allclose(S.unit_energies(tiny, part) / np.ldexp(1.0, -560),
                               _brute_energies(a, groups, units), rtol=1e-14)


def test_report_says_in_words_that_an_interface_has_no_structure():
    from physgsa.report.pages import render_report

    res = physgsa.certify(_chain(("l", np.eye(3)), ("r", np.ones((4, 3)))), groups={"l->r": np.array([0, 0, 1, 1])})
    html = render_report(res)
    assert "This interface shows no channel structure" in html and "the core energy is 0" in html
    assert "1 of 1 interfaces show no channel structure" in html
    planted = np.zeros((4, 4))
    planted[:2, :2] = [[1.0, 0.9], [0.8, 1.0]]
    planted[2:, 2:] = [[1.0, 0.7], [0.9, 1.0]]
    ok = physgsa.certify(_chain(("l", np.eye(4)), ("r", planted)), groups={"l->r": np.array([0, 0, 1, 1])})
    assert "shows no channel structure" not in render_report(ok)
