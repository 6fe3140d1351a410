"""The PAM structure (definitions section 4): groups, thresholds, masks, graph, blocks."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import brute
from physgsa import InvalidParameterError
from physgsa.core import structure as S
from physgsa.core.spectra import normalize
from properties import check_decomposition
from strategies import matrices


def make_reference(a0, n_groups=3, threshold="gap", heads=None, seed=0, strategy="kmeans"):
    rng = np.random.default_rng(seed)
    g, m, gs = S.row_groups(strategy, a0, incidence=None, heads=None, n_groups=n_groups, rng=rng, where="t")
    if heads is None:
        units, nu = S.column_units("channels", a0.shape[1], heads=None, where="t")
        us = "channels"
    else:
        units, nu = S.column_units("heads", a0.shape[1], heads=heads, where="t")
        us = "heads"
    part = S.Partition(groups=g, units=units, n_groups=m, n_units=nu, group_strategy=gs, unit_strategy=us)
    return S.fit_reference(a0, part, threshold=threshold, eta=0.5, kappa_fraction=0.05, hub_degree=3)


@st.composite
def references(draw):
    # A0 is always a product of Frobenius-normalized factors in the pipeline: normalize it the
    # same way (the extreme dynamic range of the entries is kept).
    a0 = normalize(draw(matrices(min_side=2, max_side=12)))[0]
    n_groups = draw(st.integers(1, 5))
    threshold = draw(st.sampled_from(["gap", "relative"]))
    heads = None
    if draw(st.booleans()):
        nh = draw(st.integers(1, a0.shape[1]))
        heads = np.arange(a0.shape[1]) % nh
    seed = draw(st.integers(0, 1000))
    return a0, make_reference(a0, n_groups, threshold, heads, seed)


@given(ref=references())
def test_decomposition_orthogonal_and_energy_closed(ref):
    a0, r = ref
    check_decomposition(a0, r)


@given(ref=references())
def test_block_energy_sums_to_one_and_partitions_units(ref):
    a0, r = ref
    b, labels, block = S.block_energy(a0, r.partition, r.structure)
    assert b.shape == (r.partition.n_groups, r.partition.n_groups + 3) and len(labels) == b.shape[1]
    assert b.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(block >= 0)


@given(ref=references())
def test_structure_is_consistent(ref):
    a0, r = ref
    st_ = r.structure
    assert np.array_equal(st_.degree, st_.active.sum(axis=0))
    assert np.array_equal(st_.edges, st_.edges.T) and not np.any(np.diag(st_.edges))
    for g, h in st_.edge_list():
        assert st_.w[g, h] >= r.kappa and st_.w[g, h] > 0 and len(st_.shared(g, h)) > 0
    for g in range(r.partition.n_groups):
        excl = st_.exclusive(g)
        assert np.all(st_.degree[excl] == 1) and np.all(st_.active[g, excl])
    # The reference structure against a brute-force recomputation from A0 (tests/brute.py: loops
    # over groups and units, nothing from physgsa but the partition and the fitted thresholds).
    assert_matches_brute_force(a0, r)


CODE_NAMES = {S.CORE: "K", S.OVERLAP: "O", S.NOISE: "N"}


def assert_matches_brute_force(a0, r):
    """Energies, supports, degrees, masks, pair weights, kappa, graph, hubs and SRS sets of the
    reference ``r`` on ``A0`` equal their definitions (section 4), recomputed by loops."""
    part, st_ = r.partition, r.structure
    m, nu = part.n_groups, part.n_units
    e = brute.unit_energies(a0, part.groups.tolist(), part.units.tolist(), m, nu)
    # e_g(u) = ||A0[G_g, cols(u)]||_F, relative to the largest energy (tiny blocks included).
    assert np.allclose(st_.energies, e, rtol=1e-12, atol=1e-12 * e.max())
    assert brute.hub_degree(m) == r.hub_degree
    bf = brute.structure(e, r.theta, hub=brute.hub_degree(m), code_active=st_.active, code_edges=st_.edges)
    assert st_.active.tolist() == bf["active"]
    assert st_.degree.tolist() == bf["degree"]
    assert [[CODE_NAMES[int(c)] for c in row] for row in st_.codes] == bf["codes"]
    # w_gh = sum over the shared units of e_g e_h; kappa = 0.05 max w (compared in units of the
    # largest energy, squared, where the code's own units may underflow).
    c2 = bf["scale"] ** 2
    w_code = np.asarray(st_.w, dtype=np.float64)
    if np.max(bf["w_scaled"], initial=0.0) * c2 > 1e-250:
        assert np.allclose(w_code / c2, bf["w_scaled"], rtol=1e-12, atol=1e-12 * np.max(bf["w_scaled"], initial=0.0))
        if m > 1:
            assert r.kappa / c2 == pytest.approx(bf["kappa_scaled"], rel=1e-12, abs=1e-300)
    assert st_.edges.tolist() == bf["edges"]
    assert st_.hubs.tolist() == bf["hubs"]
    assert [st_.exclusive(g).tolist() for g in range(m)] == bf["exclusive"]
    for (g, h), shared in bf["shared"].items():
        assert st_.shared(g, h).tolist() == shared
    assert sorted(st_.edge_list()) == sorted((g, h) for g in range(m) for h in range(g + 1, m) if bf["edges"][g][h])


def test_gap_threshold_known_answer():
    e = np.array([[10.0, 9.0, 1.0, 0.5]])
    theta = S.fit_thresholds(e, "gap", 0.5)
    assert theta[0] == pytest.approx(5.0)
    # All alike: the spec's largest drop is 0, at the energies themselves (gamma = 0); the
    # gap_zero rule (ours) appends a drop to zero and puts theta at half the energy.
    assert S.fit_thresholds(np.array([[2.0, 2.0, 2.0]]), "gap", 0.5)[0] == 2.0
    assert S.fit_thresholds(np.array([[2.0, 2.0, 2.0]]), "gap_zero", 0.5)[0] == pytest.approx(1.0)
    # The smallest case: energies 1, 0.9, 0.5: the largest drop is 0.9 -> 0.5 (spec),
    # where gap_zero takes 0.5 -> 0 and keeps all three.
    e3 = np.array([[1.0, 0.9, 0.5]])
    assert S.fit_thresholds(e3, "gap", 0.5)[0] == pytest.approx(0.7, abs=1e-15)
    assert S.fit_thresholds(e3, "gap_zero", 0.5)[0] == pytest.approx(0.25, abs=1e-15)
    # One unit: no drop; half its energy (ours), so it is active with margin e / 2.
    assert S.fit_thresholds(np.array([[3.0]]), "gap", 0.5)[0] == 1.5
    assert S.fit_thresholds(e, "relative", 0.5)[0] == pytest.approx(5.0)


def test_planted_blocks_are_found():
    # Two row groups with disjoint supports plus one shared hub column.
    rng = np.random.default_rng(0)
    a0 = np.zeros((8, 6))
    a0[:4, :2] = 1 + 0.1 * rng.random((4, 2))
    a0[4:, 2:4] = 1 + 0.1 * rng.random((4, 2))
    a0[:, 5] = 1.0
    r = make_reference(a0, n_groups=2)
    st_ = r.structure
    assert sorted(np.bincount(r.partition.groups).tolist()) == [4, 4]
    g0 = r.partition.groups[0]
    assert set(np.flatnonzero(st_.active[g0])) == {0, 1, 5}
    assert st_.degree[5] == 2 and st_.codes[g0, 0] == S.CORE and st_.codes[g0, 5] == S.OVERLAP
    assert st_.edge_list() == [(0, 1)]


def test_kmeans_is_deterministic_and_canonical():
    a0 = np.random.default_rng(5).standard_normal((40, 12))
    r1 = make_reference(a0, n_groups=5, seed=7)
    r2 = make_reference(a0, n_groups=5, seed=7)
    assert np.array_equal(r1.partition.groups, r2.partition.groups)
    assert r1.partition.groups[0] == 0 and r1.partition.n_groups == 5


def test_modes_and_heads_and_given_groups():
    rng = np.random.default_rng(2)
    a0 = rng.standard_normal((6, 4))
    inc = np.array([[1, 0], [0, 2], [3, 0], [0, 1], [1, 0], [0, 5]], float)
    g, m, s = S.row_groups("modes", a0, incidence=inc, heads=None, n_groups=8, rng=rng, where="t")
    assert s == "modes" and m == 2 and g.tolist() == [0, 1, 0, 1, 0, 1]
    g, m, s = S.row_groups("heads", a0, incidence=None, heads=np.array([2, 2, 0, 0, 1, 1]), n_groups=8, rng=rng,
                           where="t")
    assert m == 3 and g.tolist() == [0, 0, 1, 1, 2, 2]
    g, m, s = S.row_groups(np.array([5, 5, 5, 1, 1, 1]), a0, incidence=None, heads=None, n_groups=8, rng=rng, where="t")
    assert s == "given" and g.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(InvalidParameterError, match="heads"):
        S.row_groups("heads", a0, incidence=None, heads=None, n_groups=8, rng=rng, where="a->b")
    with pytest.raises(InvalidParameterError, match="length 6"):
        S.row_groups(np.array([0, 1]), a0, incidence=None, heads=None, n_groups=8, rng=rng, where="a->b")
