"""Decompositions and products: LAPACK through numpy, or a backend the caller passes.

``backend=None`` (the default) is numpy/LAPACK. A backend is any object with ``svd(a)`` and
``matmul(a, b)`` returning numpy arrays; :class:`physgsa.models.device.TorchBackend` runs them
through torch on a device (the ``device`` option of certify). The core never imports torch.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

# scipy.linalg is imported only where gesdd fails (rare): the spectra command never loads it.
__all__ = ["Backend", "UNIT_ROUNDOFF", "SVD_BACKWARD", "gamma", "svd", "svd_omega", "gram", "gram_svd",
           "condition_at_least", "svdvals", "eigvalsh_descending", "matmul"]

#: Higham's unit roundoff ``u = eps / 2`` of float64.
UNIT_ROUNDOFF = float(np.finfo(np.float64).eps) / 2.0


#: ``c`` in LAPACK gesdd's error model (docs/definitions.md, "Numerical routes"): the computed SVD
#: is the exact SVD of ``A + E`` with ``||E||_2 <= omega sigma~_1`` and frames within ``omega`` of
#: orthonormal ones per column, ``omega = c max(m, n) eps``.
SVD_BACKWARD = 8.0


def svd_omega(shape: tuple[int, int]) -> float:
    """The error level of LAPACK gesdd's model, ``omega = 8 max(m, n) eps`` (:data:`SVD_BACKWARD`)."""
    return SVD_BACKWARD * max(shape) * 2.0 * UNIT_ROUNDOFF


def gamma(n: float) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)``: the relative rounding of an ``n``-term sum of products."""
    nu = n * UNIT_ROUNDOFF
    return nu / (1.0 - nu) if nu < 0.5 else float("inf")


class Backend(Protocol):
    """Where decompositions and products run when not in LAPACK."""

    def svd(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray: ...


def svd(a: np.ndarray, backend: Backend | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD ``(U, sigma, V^T)`` of a float64 matrix."""
    if backend is None:
        try:
            return np.linalg.svd(a, full_matrices=False)
        except np.linalg.LinAlgError:
            # gesdd occasionally fails to converge; gesvd is slower but more robust.
            import scipy.linalg

            return scipy.linalg.svd(a, full_matrices=False, lapack_driver="gesvd")
    return backend.svd(a)


def svdvals(a: np.ndarray) -> np.ndarray:
    """Singular values, descending (LAPACK gesdd; gesvd where gesdd does not converge)."""
    try:
        values: np.ndarray = np.linalg.svd(a, compute_uv=False)
        return values
    except np.linalg.LinAlgError:
        import scipy.linalg

        out: np.ndarray = scipy.linalg.svd(a, compute_uv=False, lapack_driver="gesvd")
        return out


def eigvalsh_descending(g: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric matrix (its lower triangle), descending (LAPACK syevd)."""
    lam: np.ndarray = np.linalg.eigvalsh(g)[::-1]
    return lam


def matmul(a: np.ndarray, b: np.ndarray, backend: Backend | None) -> np.ndarray:
    """``a @ b`` in float64."""
    if backend is None:
        product: np.ndarray = a @ b
        return product
    return backend.matmul(a, b)


def gram(a: np.ndarray) -> np.ndarray:
    """The Gram matrix of the smaller side: ``A^T A`` when ``m >= n``, else ``A A^T``.

    Squares beyond float64's range are not warned about: the callers test the result (its trace,
    or its finiteness) and scale or refuse.
    """
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        g: np.ndarray = a.T @ a if a.shape[0] >= a.shape[1] else a @ a.T
    return g


def _fro_up(x: np.ndarray) -> float:
    """An upper bound on ``||x||_F`` in floating point (the computed norm raised by its rounding)."""
    return float(np.linalg.norm(x)) * (1.0 + gamma(x.size + 2))


def _orthogonality(q: np.ndarray) -> tuple[float, float]:
    """An upper bound on ``||Q^T Q - I||_2`` for ``Q`` with ``s`` rows, and one on ``||Q||_F``.

    The first is the computed Frobenius norm of ``fl(Q^T Q) - I`` plus the product's rounding
    ``gamma_s ||Q||_F^2`` (entrywise ``gamma_s |Q|^T |Q|``, whose Frobenius norm is at most
    ``gamma_s || |Q| ||_F^2``), both raised by their own rounding.
    """
    g = q.T @ q
    g[np.diag_indices_from(g)] -= 1.0
    fro = _fro_up(q)
    return (_fro_up(g) + gamma(q.shape[0]) * fro**2) * (1.0 + 4.0 * UNIT_ROUNDOFF), fro


#: Below this many columns of the Gram, :func:`gram_svd` skips the condition screen: the eigensolve it
#: would spare is cheap, and a small chain's certify never loads scipy.linalg.
SCREEN_FROM = 256


def condition_at_least(g: np.ndarray, steps: int = 4) -> float:
    """A lower bound on ``lambda_1 / lambda_min`` of a symmetric positive definite ``G``, cheaply.

    Rayleigh quotients bound the extreme eigenvalues from inside: power iteration's quotient is
    at most ``lambda_1``, inverse iteration's (two triangular solves with the Cholesky factor per
    step) at least ``lambda_min``; their ratio is at most the condition number. A Cholesky
    factorization that fails (``G`` not positive definite to working precision) gives ``inf``.
    About a tenth of ``eigh`` at 768; the start vector is fixed, so the answer is too.
    """
    from scipy.linalg import solve_triangular  # start-up: only for Grams of SCREEN_FROM columns or more

    try:
        low = np.linalg.cholesky(g)
    except np.linalg.LinAlgError:
        return float("inf")
    n = g.shape[0]
    start = np.cos(np.arange(n) * 0.7548776662466927) + 1.0 / n  # fixed and generic: no seed needed
    top, bottom = start.copy(), start.copy()
    for _ in range(steps):
        top = g @ top
        top /= np.linalg.norm(top)
        bottom = solve_triangular(low.T, solve_triangular(low, bottom, lower=True), lower=False)
        bottom /= np.linalg.norm(bottom)
    lam_1 = float(top @ (g @ top))
    lam_min = float(bottom @ (g @ bottom))
    return lam_1 / lam_min if lam_min > 0 else float("inf")


def gram_svd(a: np.ndarray, *, max_omega: float,
             max_condition: float = float("inf")) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
    r"""Thin SVD ``(U, sigma, V^T, omega)`` from the Gram matrix of the smaller side, with its error level.

    For ``m >= n``: ``A^T A = V Lambda V^T`` (LAPACK syevd), ``sigma = sqrt(lambda)`` descending,
    ``U = fl(A V) / sigma``; for ``m < n`` the same on ``A^T``. A product and a symmetric
    eigensolve cost about half of gesdd with vectors at 768 x 768.

    ``omega`` is measured a posteriori, not assumed: with ``eta_V >= ||V~^T V~ - I||_2`` and
    ``eta_U >= ||U~^T U~ - I||_2`` (:func:`_orthogonality`), the polar factors ``V^``, ``U^`` of
    the computed frames are orthonormal and within ``eta_V``, ``eta_U`` of them, so
    ``U^ diag(sigma~) V^^T`` is an exact SVD of ``A + E``. Since ``U~ diag(sigma~) = A V~ + Delta``
    with ``|Delta| <= u |fl(A V~)| + gamma_n |A| |V~|``, and ``||A||_2 <= sigma~_1 + ||E||_2`` (Weyl),

    .. math:: \|E\|_2 \le \frac{\sigma~_1 (\eta_U + (2 + \eta_U)\eta_V) + (1 + \eta_V)
              (u \|fl(AV~)\|_F + \gamma_n \|A\|_F \|V~\|_F)}{1 - \eta_V},

    and ``omega = max(||E||_2 / sigma~_1, eta_U, eta_V)``: the same statement as gesdd's model
    (:func:`svd_omega`), with a measured constant. ``None`` where ``omega > max_omega``, a
    computed eigenvalue is not positive, the Gram is not finite (squares beyond float64's range),
    or ``u lambda_1 / lambda_min`` (the least the Gram costs the frames' orthogonality) already
    exceeds ``max_omega``: the caller then takes gesdd. ``max_condition`` refuses a factor whose
    ``lambda_1 / lambda_min`` exceeds it (the caller's own gate would refuse it after the eigensolve);
    from :data:`SCREEN_FROM` columns on, :func:`condition_at_least` screens it out before the
    eigensolve, which an ill-conditioned trained factor would otherwise pay for nothing.
    """
    m, n = a.shape
    if m < n:
        got = gram_svd(a.T, max_omega=max_omega, max_condition=max_condition)
        if got is None:
            return None
        u_t, s_t, vt_t, om = got
        return np.ascontiguousarray(vt_t.T), s_t, np.ascontiguousarray(u_t.T), om
    if n == 0:
        return None
    g = gram(a)  # A^T A: a is tall here
    if not np.all(np.isfinite(g)):  # squares beyond float64's range: refused
        return None
    if n >= SCREEN_FROM and condition_at_least(g) > min(max_condition, max_omega / UNIT_ROUNDOFF):
        return None
    lam, w = np.linalg.eigh(g)
    del g
    lam = lam[::-1]
    fro = _fro_up(a)
    # The Gram loses u lambda_1 / lambda_min of U's orthogonality at the very least: hopeless frames
    # are refused before the product that forms them (the measured bound below decides the rest).
    if not lam[-1] > 0.0 or UNIT_ROUNDOFF * float(lam[0]) > max_omega * float(lam[-1]) or \
            float(lam[0]) > max_condition * float(lam[-1]):
        return None
    sigma = np.sqrt(lam)
    v = np.ascontiguousarray(w[:, ::-1])
    del w
    b = a @ v
    u = b / sigma
    eta_v, fro_v = _orthogonality(v)
    eta_u, _ = _orthogonality(u)
    if max(eta_u, eta_v) >= 0.5:
        return None
    s1 = float(sigma[0])
    delta = UNIT_ROUNDOFF * _fro_up(b) + gamma(n) * fro * fro_v
    e = (s1 * (eta_u + (2.0 + eta_u) * eta_v) + (1.0 + eta_v) * delta) / (1.0 - eta_v)
    omega = max(e / s1, eta_u, eta_v) * (1.0 + 16.0 * UNIT_ROUNDOFF)
    if not omega <= max_omega:
        return None
    return u, sigma, np.ascontiguousarray(v.T), omega
