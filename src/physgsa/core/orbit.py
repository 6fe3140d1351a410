"""The Gibbs–Cartan orbit (definitions section 2).

``p_k(s) = k^(-s) / H_r(s)`` with ``H_r(s) = sum_{k<=r} k^(-s)``: a Gibbs family with energy
``log k``. Everything here is computed in log space (log-sum-exp), so ``r`` up to ``10^5``
and ``s`` up to ``S_MAX`` stay finite and accurate.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

__all__ = [
    "S_MAX",
    "log_ranks",
    "log_harmonic",
    "orbit_probs",
    "log_orbit_probs",
    "phi",
    "phi_prime",
    "fisher",
    "bw_distance_sq",
    "tail_gc",
    "invert_phi",
    "invert_mean_log",
]

#: Upper end of the exponent search. Beyond it the orbit is rank one to double precision
#: (p_2 / p_1 = 2^-50 < 1e-15); a fit that reaches it is clipped and flagged.
S_MAX = 50.0


def logsumexp(x: np.ndarray) -> float:
    """``log sum exp(x)`` of a finite vector, shifted by its maximum (no overflow, no underflow
    of the largest term). A plain numpy version: this sits inside every chart's root search.
    """
    m = float(np.max(x))
    return m + float(np.log(np.sum(np.exp(x - m))))


@lru_cache(maxsize=64)
def log_ranks(r: int) -> np.ndarray:
    """``log k`` for ``k = 1..r`` (read-only, cached)."""
    out = np.log(np.arange(1, r + 1, dtype=np.float64))
    out.setflags(write=False)
    return out


def log_harmonic(r: int, s: float) -> float:
    """``log H_r(s) = log sum_{k<=r} k^(-s)`` by log-sum-exp."""
    return float(logsumexp(-s * log_ranks(r)))


def log_orbit_probs(r: int, s: float) -> np.ndarray:
    """``log p_k(s) = -s log k - log H_r(s)`` (finite even where ``p_k(s)`` underflows)."""
    logp = -s * log_ranks(r)
    return logp - logsumexp(logp)


def orbit_probs(r: int, s: float) -> np.ndarray:
    """The orbit point ``p(s)``, a probability vector of length ``r``."""
    p: np.ndarray = np.exp(log_orbit_probs(r, s))
    return p


def phi(r: int, s: float) -> float:
    """``phi(s) = log(r / H_r(s))``: the top-radial coordinate ``rho`` on the orbit."""
    return float(np.log(r) - log_harmonic(r, s))


def phi_prime(r: int, s: float) -> float:
    """``phi'(s) = E_{p(s)}[log k]`` (positive for r >= 2, decreasing in s)."""
    return float(orbit_probs(r, s) @ log_ranks(r))


def fisher(r: int, s: float) -> float:
    """Fisher information ``I(s) = Var_{p(s)}[log k]`` of the orbit."""
    p = orbit_probs(r, s)
    lk = log_ranks(r)
    mean = p @ lk
    return float(p @ (lk - mean) ** 2)


def bw_distance_sq(r: int, s1: float, s2: float) -> float:
    """Squared Bures–Wasserstein distance between the orbit points' spectra.

    The orbit points are the diagonal matrices ``diag(r p(s))`` (commuting), so
    ``d_BW^2 = sum_k (sqrt(r p_k(s1)) - sqrt(r p_k(s2)))^2``; its line element is
    ``(r/4) I(s) ds^2``.
    """
    a = np.sqrt(orbit_probs(r, s1))
    b = np.sqrt(orbit_probs(r, s2))
    return float(r * np.sum((a - b) ** 2))


def tail_gc(r: int, k: int, s: float) -> float:
    """Gibbs–Cartan model tail ``tau_GC(k; s) = r (H_r(s) - H_k(s)) / H_r(s)``.

    Computed as ``r * sum_{j>k} p_j(s)`` (no cancellation).
    """
    if k >= r:
        return 0.0
    p = orbit_probs(r, s)
    return float(r * np.sum(p[k:]))


def _brent(f: Callable[[float], float], lo: float, hi: float, *, xtol: float = 1e-15, rtol: float = 8.9e-16,
           maxiter: int = 500) -> float:
    """A root of ``f`` bracketed by ``[lo, hi]``: Brent's method (inverse quadratic or secant
    steps, safeguarded by bisection), the same arithmetic step for step as
    ``scipy.optimize.brentq``, whose results it reproduces bit for bit (tests/test_orbit_brent.py).

    Here rather than imported because importing anything from ``scipy.optimize`` loads the
    whole package (about 0.3 s of every command's start-up) for this one function.
    """
    near, f_near = lo, f(lo)  # the previous iterate
    best, f_best = hi, f(hi)  # the current iterate
    if f_near * f_best > 0:
        raise ValueError("f(lo) and f(hi) must have opposite signs")
    if f_near == 0:
        return near
    if f_best == 0:
        return best
    far, f_far, step_old, step = 0.0, 0.0, 0.0, 0.0  # the other end of the bracket, and the last two steps
    for _ in range(maxiter):
        if f_near * f_best < 0:  # the root lies between near and best: best's partner becomes near
            far, f_far = near, f_near
            step_old = step = best - near
        if abs(f_far) < abs(f_best):  # keep the smaller residual as the current iterate
            near, best, far = best, far, best
            f_near, f_best, f_far = f_best, f_far, f_best
        tol = (xtol + rtol * abs(best)) / 2
        half = (far - best) / 2
        if f_best == 0 or abs(half) < tol:
            return best
        bisect = True
        if abs(step_old) > tol and abs(f_best) < abs(f_near):
            if near == far:  # secant step
                trial = -f_best * (best - near) / (f_best - f_near)
            else:  # inverse quadratic step
                d_near = (f_near - f_best) / (near - best)
                d_far = (f_far - f_best) / (far - best)
                trial = -f_best * (f_far * d_far - f_near * d_near) / (d_far * d_near * (f_far - f_near))
            if 2 * abs(trial) < min(abs(step_old), 3 * abs(half) - tol):
                step_old, step, bisect = step, trial, False
        if bisect:
            step_old = step = half
        near, f_near = best, f_best
        best += step if abs(step) > tol else (tol if half > 0 else -tol)  # at least tol towards the root
        f_best = f(best)
    raise RuntimeError(f"Brent's method did not converge in {maxiter} iterations")


def invert_phi(r: int, rho: float) -> tuple[float, str]:
    """The top chart: ``s_hat = phi^{-1}(rho)`` and a flag ("" when none).

    ``phi`` is strictly increasing from ``phi(0) = 0``; the root is bracketed in
    ``[0, S_MAX]`` and found by Brent's safeguarded bisection to machine precision.
    Flags: ``"flat"`` (rho <= 0, clipped to 0), ``"steep"`` (clipped to S_MAX),
    ``"rank_one_space"`` (r = 1: the orbit is a single point, s_hat = 0).
    """
    if r == 1:
        return 0.0, "rank_one_space"
    if rho <= 0.0:
        return 0.0, "flat"
    if rho >= phi(r, S_MAX):
        return S_MAX, "steep"
    return float(_brent(lambda s: phi(r, s) - rho, 0.0, S_MAX)), ""


def invert_mean_log(r: int, target: float) -> tuple[float, str]:
    """The maximum-likelihood chart: the unique ``s`` with ``E_{p(s)}[log k] = target``.

    ``E_{p(s)}[log k]`` decreases strictly from the uniform mean (s = 0) to 0; a target at or
    above the uniform mean clips to 0 ("flat"), one below ``E_{p(S_MAX)}`` to S_MAX ("steep").
    """
    if r == 1:
        return 0.0, "rank_one_space"
    top = phi_prime(r, 0.0)
    # An exactly uniform spectrum gives the uniform mean up to rounding: that is s = 0.
    if target >= top * (1 - 1e-13):
        return 0.0, "flat"
    if target <= phi_prime(r, S_MAX):
        return S_MAX, "steep"
    return float(_brent(lambda s: phi_prime(r, s) - target, 0.0, S_MAX)), ""
