"""core.stats: Spearman against scipy, the bootstrap against a hand computation on tiny inputs."""

import itertools

import numpy as np
import pytest
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st

from physgsa.core.stats import ConstantInputError, bootstrap_ci, ranks, spearman, spearman_ci
from physgsa.core.validation import InvalidParameterError

# Small integers give ties often; the values are distinct enough to have a ranking.
_values = st.lists(st.integers(-5, 5), min_size=3, max_size=12)


def _pairs():
    return st.integers(3, 12).flatmap(lambda n: st.tuples(
        st.lists(st.integers(-5, 5), min_size=n, max_size=n), st.lists(st.integers(-5, 5), min_size=n, max_size=n)))


def _nonconstant(v):
    return len(set(v)) > 1


def test_ranks_average_ties_by_hand():
    # 10 < 20 = 20 < 30 = 30 = 30: ranks 1, (2+3)/2, (4+5+6)/3.
    assert ranks([30, 20, 10, 30, 20, 30]).tolist() == [5.0, 2.5, 1.0, 5.0, 2.5, 5.0]


def test_spearman_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # ranks (1,2,3) against (1,3,2): sum d^2 = 2, rho = 1 - 6*2/(3*8) = 0.5
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5, abs=1e-15)


@given(_pairs())
def test_spearman_matches_scipy(xy):
    x, y = xy
    if not (_nonconstant(x) and _nonconstant(y)):
        with pytest.raises(ConstantInputError):
            spearman(x, y)
        return
    assert spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)


@given(_pairs())
def test_spearman_properties(xy):
    x, y = (np.array(v, dtype=float) for v in xy)
    if not (_nonconstant(x) and _nonconstant(y)):
        return
    rho = spearman(x, y)
    assert -1.0 <= rho <= 1.0
    assert spearman(y, x) == pytest.approx(rho, abs=1e-14)  # symmetric
    # invariant under strictly increasing maps of either side; a decreasing map flips the sign
    assert spearman(np.exp(x), y ** 3 + 2 * y) == pytest.approx(rho, abs=1e-12)
    assert spearman(-x, y) == pytest.approx(-rho, abs=1e-12)


def test_spearman_refuses_constant_and_bad_input():
    with pytest.raises(ConstantInputError, match="x"):
        spearman([1, 1, 1], [1, 2, 3])
    with pytest.raises(ConstantInputError, match="y"):
        spearman([1, 2, 3], [2, 2, 2])
    with pytest.raises(InvalidParameterError):
        spearman([1, 2], [1, 2, 3])
    with pytest.raises(InvalidParameterError):
        spearman([1, np.nan, 3], [1, 2, 3])
    with pytest.raises(ConstantInputError):
        spearman_ci([5, 5, 5], [1, 2, 3], n_boot=10)


def test_bootstrap_matches_hand_loop():
    # The documented draw protocol, written out by hand: rows idx[b] of default_rng(seed).integers(0, n, (B, n)).
    v = np.array([0.3, -1.0, 2.5, 4.0, 0.0])
    n_boot, seed = 500, 7
    idx = np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))
    means = []
    for b in range(n_boot):
        total = 0.0
        for i in idx[b]:
            total += v[i]
        means.append(total / len(v))
    means.sort()
    ci = bootstrap_ci(v, np.mean, n_boot=n_boot, seed=seed, level=0.9)
    assert ci.point == pytest.approx(v.mean(), abs=1e-15)
    assert ci.low == pytest.approx(np.percentile(means, 5), abs=1e-12)
    assert ci.high == pytest.approx(np.percentile(means, 95), abs=1e-12)
    assert ci.n_undefined == 0 and ci.n_boot == n_boot


def test_bootstrap_two_values_exact_distribution():
    # n = 2, values {0, 1}: the resampled mean is 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4.
    # Its 2.5% and 97.5% quantiles are 0 and 1; the 25%..75% interval is [0.5, 0.5] up to sampling.
    ci = bootstrap_ci(np.array([0.0, 1.0]), np.mean, n_boot=4000, seed=1)
    assert (ci.low, ci.high) == (0.0, 1.0)
    mid = bootstrap_ci(np.array([0.0, 1.0]), np.mean, n_boot=4000, seed=1, level=0.4)
    assert (mid.low, mid.high) == (0.5, 0.5)


def test_bootstrap_paired_rows_stay_together():
    # base and changed differ by exactly 1 on every example: any paired resample has difference 1.
    base = np.array([0.1, 5.0, -3.0, 2.0])
    changed = base - 1.0
    ci = bootstrap_ci((base, changed), lambda a, b: np.mean(a - b), n_boot=300, seed=3)
    assert ci.point == ci.low == ci.high == pytest.approx(1.0, abs=1e-15)
    # resampled separately they would not be: check the rows really are shared, by a 2-D statistic
    both = bootstrap_ci((base[:, None], np.arange(4)), lambda a, i: float(np.all(base[i] == a[:, 0])),
                        n_boot=50, seed=0)
    assert both.low == both.high == 1.0


def test_bootstrap_enumerated_spearman_interval():
    # n = 3: all 27 resamples enumerated by hand; spearman_ci's defined resamples draw from them.
    x, y = [1.0, 2.0, 3.0], [1.0, 3.0, 2.0]
    possible = set()
    for rows in itertools.product(range(3), repeat=3):
        xs, ys = [x[i] for i in rows], [y[i] for i in rows]
        if len(set(xs)) > 1 and len(set(ys)) > 1:
            possible.add(round(scipy.stats.spearmanr(xs, ys).statistic, 12))
    ci = spearman_ci(x, y, n_boot=400, seed=0, level=0.5)
    assert ci.point == pytest.approx(0.5)
    assert ci.n_undefined > 0  # resamples of one repeated unit have no ranking
    assert min(possible) <= ci.low <= ci.high <= max(possible)


def test_bootstrap_same_bytes_and_validation():
    v = np.arange(10.0) ** 2
    a = bootstrap_ci(v, np.median, n_boot=100, seed=4)
    b = bootstrap_ci(v, np.median, n_boot=100, seed=4)
    assert a == b
    with pytest.raises(InvalidParameterError):
        bootstrap_ci(v, np.mean, n_boot=0)
    with pytest.raises(InvalidParameterError):
        bootstrap_ci(v, np.mean, level=1.0)
    with pytest.raises(InvalidParameterError):
        bootstrap_ci((v, v[:3]), lambda a, b: 0.0)
