"""The fast route's spectral norms of row blocks (core/graded.py ``gram_spectral_norm``, issue 25).

The graded certificate's a priori bounds ``beta_g(u)`` need ``||A'[G_g, :]||_2``. The fast route
takes it from the block's Gram matrix and returns an upper bound. Checked here: it is never below
the exact norm (60-digit SVDs, mpmath), and it exceeds it by at most ``8 n u`` times the stable
rank, relatively. The block shapes are random, ill-conditioned, rank-one, wide and tall, and the
scales run from 1e-150 to 1e150.
"""

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from physgsa.core.graded import _group_spectral_norms, gram_spectral_norm
from physgsa.core.structure import Partition

U = float(np.finfo(np.float64).eps) / 2


def exact_norm(b: np.ndarray) -> float:
    with mpmath.workdps(60):
        s = mpmath.svd_r(mpmath.matrix(b.tolist()), compute_uv=False)
        return float(max(s))


def block(rng, m, n, kind, scale):
    if kind == "random":
        b = rng.standard_normal((m, n))
    elif kind == "rank_one":
        b = np.outer(rng.standard_normal(m), rng.standard_normal(n))
    else:  # ill-conditioned: singular values 1 .. 1e-12
        r = min(m, n)
        qa = np.linalg.qr(rng.standard_normal((m, r)))[0]
        qb = np.linalg.qr(rng.standard_normal((n, r)))[0]
        b = (qa * np.logspace(0, -12, r)) @ qb.T
    return b * scale


@settings(derandomize=True, max_examples=60, deadline=None)
@given(m=st.integers(1, 9), n=st.integers(1, 12), kind=st.sampled_from(["random", "rank_one", "ill"]),
       scale=st.sampled_from([1.0, 1e-150, 1e150]), seed=st.integers(0, 2**32 - 1))
def test_gram_norm_is_a_tight_upper_bound(m, n, kind, scale, seed):
    b = block(np.random.default_rng(seed), m, n, kind, scale)
    if not b.any():
        return
    want = exact_norm(b)
    got = gram_spectral_norm(b)
    stable_rank = float(np.sum(b / scale * (b / scale))) / (want / scale) ** 2
    assert want <= got <= want * (1 + 8 * max(m, n) * U * stable_rank + 8 * U)


def test_group_norms_agree_with_the_svd_route():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 64))
    part = Partition(groups=rng.integers(0, 5, 40), units=np.arange(64), n_groups=6, n_units=64,
                     group_strategy="kmeans", unit_strategy="channels")
    ref = _group_spectral_norms(x, part)
    fast = _group_spectral_norms(x, part, gram=True)
    assert ref[5] == fast[5] == 0.0  # an empty group
    assert np.all(fast >= ref) and np.all(fast <= ref * (1 + 1e-12))


def test_known_answer():
    # [[3, 0], [4, 0]] has norm 5; its Gram is [[9, 12], [12, 16]] (eigenvalues 25, 0).
    got = gram_spectral_norm(np.array([[3.0, 0.0], [4.0, 0.0]]))
    assert 5.0 <= got <= 5.0 * (1 + 1e-14)
    assert gram_spectral_norm(np.array([[2.0**-1000]])) == pytest.approx(2.0**-1000, rel=1e-15)
