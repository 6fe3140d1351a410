"""The orbit's own Brent root finder against scipy.optimize.brentq, bit for bit.

physgsa carries Brent's method itself (``orbit._brent``) so that start-up does not import the
whole of ``scipy.optimize``; the charts' exponents must not move by a single bit for that.
"""

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq

from budget import cases
from physgsa.core import orbit

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True)
# 3,000 examples in CI (PHYSGSA_FULL_TESTS=1), 800 in the README's quick run (tests/budget.py).
MANY = settings(max_examples=cases(3000, 800), deadline=None, derandomize=True)


def _scipy(f, lo, hi):
    return brentq(f, lo, hi, xtol=1e-15, rtol=8.9e-16, maxiter=500)


@SETTINGS
@given(r=st.integers(2, 5000), frac=st.floats(1e-9, 1.0 - 1e-9))
def test_top_chart_inversion_is_scipy_bit_for_bit(r, frac):
    rho = frac * float(orbit.phi(r, orbit.S_MAX))
    f = lambda s: orbit.phi(r, s) - rho  # noqa: E731
    got, flag = orbit.invert_phi(r, rho)
    assert flag == "" and got == _scipy(f, 0.0, orbit.S_MAX)


@SETTINGS
@given(r=st.integers(2, 5000), frac=st.floats(1e-9, 1.0 - 1e-9))
def test_mle_chart_inversion_is_scipy_bit_for_bit(r, frac):
    lo, hi = float(orbit.phi_prime(r, orbit.S_MAX)), float(orbit.phi_prime(r, 0.0))
    target = lo + frac * (hi - lo) * (1 - 1e-12)
    f = lambda s: orbit.phi_prime(r, s) - target  # noqa: E731
    got, flag = orbit.invert_mean_log(r, target)
    if flag == "":
        assert got == _scipy(f, 0.0, orbit.S_MAX)


# Roots at subnormal magnitudes are left out: there f is subnormal, and scipy's compiled loop may
# treat such values as zero (denormals-are-zero) where Python keeps them. The charts' functions,
# phi - rho with phi and rho of order one, never take subnormal values.
@MANY
@given(c=st.floats(-50, 50).filter(lambda c: c == 0 or abs(c) > 1e-250), p=st.integers(1, 7),
       lo=st.floats(-60, -1e-3), hi=st.floats(1e-3, 60),
       kind=st.sampled_from(["poly", "tanh", "exp", "step", "log", "cubic"]))
def test_generic_functions_are_scipy_bit_for_bit(c, p, lo, hi, kind):
    # Steep, flat, odd-power and discontinuous functions exercise every branch: secant, inverse
    # quadratic, rejected steps, bisection and the minimal step of tol.
    root = c / 60.0 * min(-lo, hi) * 0.999
    f = {"poly": lambda x: (x - root) ** p if p % 2 else (x - root) * abs(x - root) ** (p - 1),
         "tanh": lambda x: np.tanh(5 * (x - root)) + 1e-3 * (x - root),
         "exp": lambda x: np.expm1(x - root),
         "step": lambda x: -1.0 if x < root else 1.0,
         "log": lambda x: np.log1p(abs(x - root)) * np.sign(x - root) * (1 + 0.1 * p),
         "cubic": lambda x: (x - root) ** 3 - p * (x - root) + c * 1e-3}[kind]
    assume(f(lo) * f(hi) < 0)  # a bracketed root (the cubic may have none in [lo, hi])
    assert orbit._brent(f, lo, hi) == _scipy(f, lo, hi)


def test_endpoint_roots_and_sign_errors():
    assert orbit._brent(lambda x: x, 0.0, 1.0) == _scipy(lambda x: x, 0.0, 1.0) == 0.0
    assert orbit._brent(lambda x: x - 1.0, 0.0, 1.0) == 1.0
    try:
        orbit._brent(lambda x: x + 1.0, 0.0, 1.0)
    except ValueError as exc:
        assert "opposite signs" in str(exc)
    else:
        raise AssertionError("a root that is not bracketed must be refused")
