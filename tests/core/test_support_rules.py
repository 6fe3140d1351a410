"""Support rules ``quantile`` and ``gap_robust``, outlier channels and the tolerance flags (ours).

Each rule is checked against a brute-force recomputation in exact rational arithmetic
(``fractions.Fraction`` on integer energies, subsets enumerated), and on known answers.
"""

from fractions import Fraction
from itertools import combinations
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from physgsa.core import outliers as O
from physgsa.core import structure as S
from physgsa.runs.certify import CERTIFY_PARAMS, no_channel_structure

# Integer energies: their squares and sums are exact in the brute force.
energy_rows = st.lists(st.integers(0, 1000), min_size=1, max_size=8)


@st.composite
def energy_matrices(draw):
    n = draw(st.integers(1, 8))
    m = draw(st.integers(1, 4))
    return np.array([draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n)) for _ in range(m)], dtype=float)


def brute_quantile_k(row, q_s) -> int:
    """The fewest units (any subset, enumerated) whose squared energies hold q_s of the total."""
    total = sum(Fraction(int(v)) ** 2 for v in row)
    q = Fraction(q_s)
    for k in range(1, len(row) + 1):
        if any(sum(Fraction(int(row[i])) ** 2 for i in c) >= q * total for c in combinations(range(len(row)), k)):
            return k
    raise AssertionError("unreachable: all units hold the whole energy")


def brute_quantile_theta(row, q_s) -> float:
    s = sorted((float(v) for v in row), reverse=True)
    k = brute_quantile_k(row, q_s)
    return s[-1] / 2 if k == len(s) else (s[k - 1] + s[k]) / 2


def brute_outliers(row, c) -> list[int]:
    total = sum(Fraction(int(v)) ** 2 for v in row)
    n = len(row)
    return [u for u, v in enumerate(row) if Fraction(int(v)) ** 2 * n > Fraction(c) * total]


def brute_gap_robust_theta(row, c) -> float:
    s = sorted((float(v) for v in row), reverse=True)
    n = len(s)
    if n == 1:
        return s[0] / 2
    j = len(brute_outliers(row, c))
    start = j if j <= n - 2 else 0
    best, at = -1.0, None
    for i in range(start, n - 1):
        if s[i] - s[i + 1] > best:
            best, at = s[i] - s[i + 1], i
    return (s[at] + s[at + 1]) / 2


@given(e=energy_matrices(), q_s=st.sampled_from([0.1, 0.5, 0.8, 0.95, 1.0]))
def test_quantile_threshold_equals_brute_force(e, q_s):
    theta = S.fit_thresholds(e, "quantile", 0.5, q_s=q_s)
    for g, row in enumerate(e):
        assert theta[g] == brute_quantile_theta(row, q_s)
        support = row >= theta[g]
        k = brute_quantile_k(row, q_s)
        # The support is the top-k units, plus any unit tied with the k-th largest energy.
        kth = sorted(row, reverse=True)[k - 1]
        assert support.sum() == k + int(np.sum(row == kth)) - int(np.sum(np.sort(row)[::-1][:k] == kth))
        total = sum(Fraction(int(v)) ** 2 for v in row)
        assert sum(Fraction(int(v)) ** 2 for v in row[support]) >= Fraction(q_s) * total


@given(e=energy_matrices(), c=st.sampled_from([2.0, 3.0, 10.0]))
def test_gap_robust_threshold_equals_brute_force(e, c):
    theta = S.fit_thresholds(e, "gap_robust", 0.5, outlier_factor=c)
    out = S.outlier_units(e, c)
    for g, row in enumerate(e):
        assert theta[g] == brute_gap_robust_theta(row, c)
        assert np.flatnonzero(out[g]).tolist() == brute_outliers(row, c)
        # The outlier units are always in the support.
        assert np.all(row[out[g]] >= theta[g])


@given(e=energy_matrices())
def test_gap_robust_without_outliers_is_gap(e):
    c = 1e9  # no unit can hold 1e9 times the mean
    assert np.array_equal(S.fit_thresholds(e, "gap_robust", 0.5, outlier_factor=c), S.fit_thresholds(e, "gap", 0.5))


def test_quantile_known_answers():
    e = np.array([[3.0, 4.0, 0.0, 0.0],   # 16 of 25 = 0.64: q 0.5 keeps 1 unit, q 0.8 keeps 2
                  [1.0, 1.0, 1.0, 1.0],   # all alike: q 0.5 keeps 2, and their ties
                  [0.0, 0.0, 0.0, 0.0]])  # a zero group: theta 0, every unit (as gap)
    assert S.fit_thresholds(e, "quantile", 0.5, q_s=0.5).tolist() == [3.5, 1.0, 0.0]
    # q 0.8 of four alike units needs all four (3 of 4 = 0.75): theta is half the smallest.
    assert S.fit_thresholds(e, "quantile", 0.5, q_s=0.8).tolist() == [1.5, 0.5, 0.0]
    assert S.fit_thresholds(np.array([[2.0]]), "quantile", 0.5).tolist() == [1.0]
    # Exactly q_s of the energy in the top unit: it is enough (>=).
    assert S.fit_thresholds(np.array([[2.0, 1.0, 1.0, 1.0, 1.0]]), "quantile", 0.5, q_s=0.5).tolist() == [1.5]


def test_gap_robust_known_answer():
    # One outlier unit (100^2 against 10 units: share 0.99 > 10/20), then the largest drop of the
    # rest is 5 -> 1: gap stops at the outlier, gap_robust keeps 4 units.
    e = np.array([[100.0, 5.0, 4.9, 4.8] + [1.0] * 6 + [0.5] * 10])
    assert S.fit_thresholds(e, "gap", 0.5).tolist() == [52.5]
    assert S.fit_thresholds(e, "gap_robust", 0.5).tolist() == [2.9]
    assert int((e >= 2.9).sum()) == 4


def test_fit_reference_passes_rule_parameters():
    a0 = np.diag([3.0, 4.0, 0.0, 0.0])[[1], :] + np.array([[3.0, 0, 0, 0]])  # one row: [3, 4, 0, 0]
    part = S.Partition(groups=np.zeros(1, dtype=np.int64), units=np.arange(4), n_groups=1, n_units=4,
                       group_strategy="given", unit_strategy="channels")
    ref = S.fit_reference(a0, part, threshold="quantile", eta=0.5, kappa_fraction=0.05, hub_degree=3, q_s=0.5)
    assert ref.theta.tolist() == [3.5]
    assert S.fit_reference(a0, part, threshold="quantile", eta=0.5, kappa_fraction=0.05, hub_degree=3,
                           q_s=0.8).theta.tolist() == [1.5]


@st.composite
def int_matrices(draw):
    r, c = draw(st.integers(1, 5)), draw(st.integers(1, 12))
    return np.array([draw(st.lists(st.integers(-30, 30), min_size=c, max_size=c)) for _ in range(r)], dtype=float)


@given(a=int_matrices(), c=st.sampled_from([2.0, 3.0, 10.0]), frac=st.sampled_from([0.01, 0.2, 0.5]))
def test_outlier_columns_equal_brute_force(a, c, frac):
    cols = [sum(Fraction(int(x)) ** 2 for x in a[:, u]) for u in range(a.shape[1])]
    total = sum(cols)
    n = a.shape[1]
    expected = [u for u in range(n) if total > 0 and cols[u] * n > Fraction(c) * total]
    expected.sort(key=lambda u: (-cols[u], u))
    assert O.outlier_columns(a, c).tolist() == expected
    t = max(1, int(frac * n))
    top = sum(sorted(cols, reverse=True)[:t]) / total if total > 0 else 0
    share, tt = O.top_column_share(a, frac)
    assert tt == t and share == pytest.approx(float(top), rel=1e-12)
    rec = O.interface_outliers(a, factor=c, columns=frac, energy=0.5)
    assert rec["dominated"] == (top > Fraction(1, 2))


def test_outlier_columns_known_answer_and_tiny_scale():
    a = np.ones((4, 100))
    a[:, 7] = 20.0  # 400 / (99 + 400) of the energy = 0.80 > 10 / 100
    assert O.outlier_columns(a).tolist() == [7]
    assert O.interface_outliers(a)["dominated"]  # one column (1% of 100) holds 0.80 > 0.5
    assert O.outlier_columns(a * 1e-170).tolist() == [7]  # squares underflow without the scaling
    assert O.outlier_columns(np.ones((3, 50))).tolist() == []
    # Exactly c times the mean is not an outlier (strictly above): column energies 3, 1, 1, 1 with c = 2.
    b = np.array([[1.0, 1, 1, 1], [1, 0, 0, 0], [1, 0, 0, 0]])
    assert O.outlier_columns(b, 2.0).tolist() == [] and O.outlier_columns(b, 1.9).tolist() == [0]
    # Exactly half the energy in the top column is not dominated (strictly more than outlier_energy).
    d = np.array([[np.sqrt(2.0), 1.0, 1.0]])
    assert O.top_column_share(d, 0.01) == (pytest.approx(0.5, rel=1e-15), 1)
    assert not O.interface_outliers(np.array([[2.0, 1.0, 1.0, 1.0, 1.0]]), columns=0.01, energy=0.5)["dominated"]
    assert O.interface_outliers(np.array([[2.0, 1.0, 1.0, 1.0, 0.9]]), columns=0.01, energy=0.5)["dominated"]
    assert not O.interface_outliers(np.ones((3, 50)))["dominated"]


def test_full_and_identical_support_flags():
    active = np.zeros((4, 100), dtype=bool)
    active[0, :95] = True   # exactly 95% of the units: flagged at 0.95 (at least)
    active[1, :94] = True   # 94%: not flagged
    active[2, [3]] = True
    active[3, [3]] = True
    assert O.full_support_groups(active, 0.95).tolist() == [0]
    assert O.full_support_groups(active, 0.9).tolist() == [0, 1]
    assert O.identical_support_groups(active, 0.5).tolist() == [2, 3]  # 2 of 4 groups
    assert O.identical_support_groups(active, 0.6).tolist() == []
    assert O.identical_support_groups(active[:2], 0.5).tolist() == []  # no two alike


@given(bits=st.lists(st.lists(st.booleans(), min_size=5, max_size=5), min_size=1, max_size=6),
       share=st.sampled_from([0.0, 0.3, 0.5, 1.0]))
def test_identical_supports_equal_brute_force(bits, share):
    active = np.array(bits, dtype=bool)
    m = active.shape[0]
    classes: dict = {}
    for g, row in enumerate(bits):
        classes.setdefault(tuple(row), []).append(g)
    best = max(len(v) for v in classes.values())
    expected = [] if best < 2 or best < share * m else \
        min((v for v in classes.values() if len(v) == best), key=lambda v: v[0])
    assert O.identical_support_groups(active, share).tolist() == expected


def test_no_channel_structure_uses_the_tolerances():
    active = np.zeros((3, 100), dtype=bool)
    active[0, :99] = True  # 99 of 100 (as MiniLM's 380 to 383 of 384): missed by the exact rule
    active[1, :5] = True
    active[2, 50:60] = True
    s0 = SimpleNamespace(active=active, hubs=np.zeros(100, dtype=bool))
    decomp = {"fraction": {"core": 0.3}}
    p = {k: CERTIFY_PARAMS[k].default for k in ("full_support", "identical_supports")}
    reasons = no_channel_structure(s0, decomp, False, p)
    assert len(reasons) == 1 and "99 of 100 units" in reasons[0]
    assert no_channel_structure(s0, decomp, False, {**p, "full_support": 1.0}) == []
    active[2] = active[1]
    active[0] = active[1]
    assert "identical support" in " ".join(no_channel_structure(s0, decomp, False, p))


def _two_factor_chain():
    import physgsa

    rng = np.random.default_rng(3)
    return physgsa.Chain.from_arrays([("l", rng.standard_normal((12, 12))), ("r", rng.standard_normal((12, 12)))])


def test_certify_passes_the_rule_parameters_through():
    import physgsa

    res = physgsa.certify(_two_factor_chain(), threshold="quantile", support_quantile=0.5, n_perturbations=0)
    st_ = res.certificate["interfaces"][0]["structure"]
    assert res.certificate["parameters"]["support_quantile"] == 0.5
    sizes = [len(s) for s in st_["supports"]]
    res8 = physgsa.certify(_two_factor_chain(), threshold="quantile", support_quantile=0.8, n_perturbations=0)
    sizes8 = [len(s) for s in res8.certificate["interfaces"][0]["structure"]["supports"]]
    assert sum(sizes8) > sum(sizes)  # a larger q_s keeps more units in every group
    assert "n_outlier_channels" in res.interfaces.columns and res.interfaces["n_outlier_channels"][0] is not None
