"""The section 8 commutator's two routes and their error bounds (issue 25; docs/definitions.md, "Routes").

``commutator_bounded`` (route "direct", the reference: the factors' Gram products) and
``commutator_from_frames`` (route "fast": from the SVDs at hand) each return a bound on their
distance to the exact commutator of the exact factors. Checked here:

- soundness: against the commutator in exact rational arithmetic (``exact_commutator``), the
  error never exceeds the bound, on random, ill-conditioned (singular values down to 1e-12),
  nearly commuting (shared frames plus a tiny turn) and rectangular factors;
- the two routes agree within the sum of their bounds at sizes exact arithmetic cannot reach;
- the bound is not vacuous: it stays below ``BOUND_CEILING (d + 4)^2 eps`` (``d`` the largest
  dimension), so loosening it (or an error term blowing up) fails the test.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_alignment import exact_commutator, orthogonal

from physgsa.core.alignment import commutator, commutator_bounded, commutator_from_frames

EPS = float(np.finfo(np.float64).eps)
#: The largest bound allowed, in units of (d + 4)^2 eps.
BOUND_CEILING = 32.0
FAST = settings(derandomize=True, max_examples=60, deadline=None)


def factor(rng, m, n, kind):
    """An m x n factor, normalized as certify's A_hat (||A||_F^2 = min(m, n))."""
    r = min(m, n)
    if kind == "random":
        a = rng.standard_normal((m, n))
    else:
        # Given singular values in random frames: ill-conditioned (down to 1e-12) or repeated.
        s = np.logspace(0, -12, r) if kind == "ill" else np.repeat([1.0, 0.5], (r + 1) // 2)[:r]
        a = (orthogonal(rng, m)[:, :r] * s) @ orthogonal(rng, n)[:, :r].T
    return a * np.sqrt(r) / np.linalg.norm(a)


def near_commuting(rng, m, n, p, turn):
    """A_l = U S V^T and A_{l+1} = W T (U R)^T with R a rotation by ``turn``: c is about ``turn``."""
    u = orthogonal(rng, m)
    a = (u[:, :min(m, n)] * rng.uniform(0.5, 2.0, min(m, n))) @ orthogonal(rng, n)[:, :min(m, n)].T
    g = rng.standard_normal((m, m))
    rot = np.linalg.qr(np.eye(m) + turn * (g - g.T))[0]
    k = min(m, p)
    b = (orthogonal(rng, p)[:, :k] * rng.uniform(0.5, 2.0, k)) @ (u @ rot)[:, :k].T
    return a * np.sqrt(min(m, n)) / np.linalg.norm(a), b * np.sqrt(k) / np.linalg.norm(b)


def frames(a, b):
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    _, sp, vt = np.linalg.svd(b, full_matrices=False)
    if not (s.shape[0] == a.shape[0] or sp.shape[0] == a.shape[0]):
        return None
    return commutator_from_frames(u, s, vt, sp, shape_left=a.shape, shape_right=b.shape)


def ceiling(a, b):
    d = max(a.shape + b.shape)
    return BOUND_CEILING * (d + 4) ** 2 * EPS


@FAST
@given(m=st.integers(1, 6), dn=st.integers(-2, 2), dp=st.integers(-2, 2),
       kind=st.sampled_from(["random", "ill", "repeated", "near"]), seed=st.integers(0, 2**32 - 1))
def test_both_routes_within_their_bounds_of_the_exact_value(m, dn, dp, kind, seed):
    n, p = max(1, m + dn), max(1, m + dp)
    rng = np.random.default_rng(seed)
    if kind == "near":
        a, b = near_commuting(rng, m, n, p, 1e-9)
    else:
        a, b = factor(rng, m, n, kind), factor(rng, p, m, kind)
    want = exact_commutator(a, b)
    got = commutator_bounded(a, b)
    assert got.route == "direct" and got.value == commutator(a, b)
    assert abs(got.value - want) <= got.bound <= ceiling(a, b)
    fr = frames(a, b)
    if fr is not None:
        assert fr.route == "frames"
        assert abs(fr.value - want) <= fr.bound <= ceiling(a, b)


@pytest.mark.parametrize("m,n,p", [(64, 64, 64), (64, 96, 40), (64, 40, 96), (200, 200, 200)])
@pytest.mark.parametrize("kind", ["random", "ill", "repeated", "near"])
def test_the_routes_agree_within_their_bounds(m, n, p, kind):
    rng = np.random.default_rng([m, n, p, len(kind)])
    if kind == "near":
        a, b = near_commuting(rng, m, n, p, 1e-10)
    else:
        a, b = factor(rng, m, n, kind), factor(rng, p, m, kind)
    ref, fr = commutator_bounded(a, b), frames(a, b)
    assert fr is not None
    assert abs(fr.value - ref.value) <= fr.bound + ref.bound
    assert max(fr.bound, ref.bound) <= ceiling(a, b)


def test_frames_need_a_square_frame():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((2, 5))  # r = 3 < 5 and r' = 2 < 5
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    _, sp, vt = np.linalg.svd(b, full_matrices=False)
    with pytest.raises(ValueError, match="square frame"):
        commutator_from_frames(u, s, vt, sp, shape_left=a.shape, shape_right=b.shape)


def test_frames_known_answer():
    # P = diag(2, 1) (A = diag(sqrt2, 1)) and Q = [[1, 1], [1, 1]] (B = [[1, 1]]): c = 1/sqrt10
    # (test_alignment's hand-worked case), here from the frames of the two SVDs.
    a, b = np.diag([np.sqrt(2.0), 1.0]), np.array([[1.0, 1.0]])
    got = frames(a, b)
    assert got.value == pytest.approx(1 / np.sqrt(10.0), abs=got.bound) and got.bound < 1e-13
