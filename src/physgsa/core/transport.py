"""Interface transport and Part I's rigidity quantities (definitions sections 2 and 3).

For the interface ``l -> l+1`` with ``A_hat_l = U S V^T`` and ``A_hat_{l+1} = U' S' V'^T``
(thin SVDs, reused from :mod:`physgsa.spectra`):

- angular interface matrix ``C = V'^T U`` (its top-left ``k' x k`` block's singular values are
  the principal-angle cosines between the dominant output subspace of ``l`` and the dominant
  input subspace of ``l+1``);
- full transport ``T = S' C S`` and the windowed ``T_w`` (the ``k' x k`` block); in physical
  coordinates ``M = A_hat_{l+1} A_hat_l`` and ``M_w`` (the product of rank-k truncations);
- exact truncation error ``E^2 = sum_{(i,j) outside k' x k} sigma'_i^2 C_ij^2 sigma_j^2``
  ``= ||M - M_w||_F^2`` and its bound ``sigma'_1^2 tau_l(k) + sigma_1^2 tau_{l+1}(k')``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import linalg, orbit
from .spectra import Spectrum

__all__ = ["Transport", "Rigidity", "CBlocks", "transport", "window_products", "windowed_product", "rigidity",
           "top_singular_value", "principal_cosines"]


@dataclass(frozen=True)
class Transport:
    """Section 3 quantities of one interface at windows ``(k_left, k_right)``."""

    k_left: int
    k_right: int
    cosines: np.ndarray
    m_full: np.ndarray
    m_window: np.ndarray
    m_excluded: np.ndarray
    trunc_error: float
    trunc_bound: float
    eps_trunc: float
    eps_trunc_gc: float
    tail_error_left: float
    tail_error_right: float

    @property
    def cos_min(self) -> float:
        return float(self.cosines.min())

    @property
    def cos_mean(self) -> float:
        return float(self.cosines.mean())


@dataclass(frozen=True)
class Rigidity:
    """Part I's per-interface quantities: slack, amplitude, drift and its bound."""

    slack: float | None
    amplitude: float
    drift: float
    drift_bound: float | None
    drift_rho_term: float
    drift_e_term: float
    drift_min_phi_prime: float
    drift_holds: bool
    sigma1_product: float


def windowed_product(left: Spectrum, right: Spectrum, c_window: np.ndarray, k: int, kp: int) -> np.ndarray:
    """``M_w = A_hat_{l+1}^w A_hat_l^w = U'_{k'} (S' C S)_{k' x k} V_k^T``, from ``C[:k', :k]``
    (a larger ``C`` is cut to it).
    """
    t_w = (right.sigma[:kp, None] * c_window[:kp, :k]) * left.sigma[None, :k]
    m_w: np.ndarray = (right.u[:, :kp] @ t_w) @ left.vt[:k]
    return m_w


class CBlocks:
    """``C = V'^T U``, whole when given, else by the blocks an interface needs, each formed once.

    With large windows (the usual case on residual factors) the transport needs only thin parts
    of ``C``: its last ``r' - k'`` rows and last ``r - k`` columns (the excluded blocks, the exact
    error, the CS complement of the cosines), which cost ``(r' - k') n r + r' n (r - k)``
    instead of the ``r' n r`` of the whole product. Small windows need the window block
    ``C[:k', :k]``.
    """

    def __init__(self, left: Spectrum | None, right: Spectrum | None, *, full: np.ndarray | None = None,
                 device: linalg.Backend | None = None) -> None:
        self.left, self.right, self.full, self.device = left, right, full, device
        self._cache: dict[tuple[Any, ...], np.ndarray] = {}

    def _get(self, key: tuple[Any, ...], rows: slice, cols: slice) -> np.ndarray:
        if self.full is not None:
            return self.full[rows, cols]
        # Without the whole C both spectra are given (only principal_cosines passes None, with ``full``).
        assert self.left is not None and self.right is not None
        if key not in self._cache:
            self._cache[key] = linalg.matmul(self.right.vt[rows], self.left.u[:, cols], self.device)
        return self._cache[key]

    def rows_from(self, kp: int) -> np.ndarray:
        """``C[k':, :]``."""
        return self._get(("rows", kp), slice(kp, None), slice(None))

    def cols_from(self, k: int) -> np.ndarray:
        """``C[:, k:]``."""
        return self._get(("cols", k), slice(None), slice(k, None))

    def window(self, kp: int, k: int) -> np.ndarray:
        """``C[:k', :k]``."""
        return self._get(("window", kp, k), slice(None, kp), slice(None, k))


def window_products(left: Spectrum, right: Spectrum, c: CBlocks, k: int, kp: int,
                    m_full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``M_w`` and the excluded part ``E = M - M_w``, by the cheaper of two exact routes.

    With ``T = S' C S``, ``M = U' T V^T`` and ``M_w`` keeps the block ``T[:k', :k]``, so
    ``E = U'_{>k'} T[k':, :] V^T + U'_{<=k'} T[:k', k:] V_{>k}^T`` has rank at most
    ``(r' - k') + (r - k)``. Large windows (the usual case: ``k_q`` near ``r`` on residual
    factors) form ``E`` from these two thin products and take ``M_w = M - E``; small windows
    form ``M_w`` directly (:func:`windowed_product`) and take ``E = M - M_w``. Either way the
    returned pair satisfies ``M_w + E = M`` to rounding.
    """
    n_out, n_in = right.u.shape[0], left.vt.shape[1]
    r, rp = left.sigma.shape[0], right.sigma.shape[0]
    direct = n_out * kp * k + n_out * k * n_in
    thin = (rp - kp) * r * n_in + n_out * (rp - kp) * n_in + n_out * kp * (r - k) + n_out * (r - k) * n_in
    if direct <= thin:
        m_window = windowed_product(left, right, c.window(kp, k), k, kp)
        return m_window, m_full - m_window
    t_low = (right.sigma[kp:, None] * c.rows_from(kp)) * left.sigma[None, :]
    t_right = (right.sigma[:kp, None] * c.cols_from(k)[:kp]) * left.sigma[None, k:]
    excluded = right.u[:, kp:] @ (t_low @ left.vt)
    excluded += (right.u[:, :kp] @ t_right) @ left.vt[k:]
    return m_full - excluded, excluded


def transport(left: Spectrum, right: Spectrum, k: int, kp: int, *, c: np.ndarray | None = None,
              m_full: np.ndarray | None = None, device: linalg.Backend | None = None) -> Transport:
    """Transport of the dominant window of ``left`` (k) into ``right`` (k').

    ``c`` is the whole ``C = V'^T U`` when the caller has it (the window search reuses it);
    otherwise only the blocks this window needs are formed (:class:`CBlocks`).
    """
    cb = CBlocks(left, right, full=c, device=device)
    if m_full is None:
        m_full = linalg.matmul(right.a_hat, left.a_hat, device)
    m_window, m_excluded = window_products(left, right, cb, k, kp, m_full)
    # Exact error from the blocks: sum the two disjoint excluded blocks directly (no
    # subtraction of nearly equal totals).
    s2 = left.sigma**2
    sp2 = right.sigma**2
    c_cols, c_low = cb.cols_from(k), cb.rows_from(kp)[:, :k]
    e2 = float(sp2 @ ((c_cols * c_cols) @ s2[k:])) + float(sp2[kp:] @ ((c_low * c_low) @ s2[:k]))
    m_l = left.u.shape[0]
    cosines = principal_cosines(cb, k, kp, orthogonal=left.r == right.r == m_l)
    # The bound with the tails read off the full spectrum ...
    bound2 = sp2[0] * float(np.sum(s2[k:])) + s2[0] * float(np.sum(sp2[kp:]))
    # ... and the a priori one, with the tails from the windows and the Frobenius norms only
    # (each with its rounding allowance, so it stays an upper bound in floating point).
    tau_l, tau_r = left.tau_at(k), right.tau_at(kp)
    eps2 = sp2[0] * left.tau_upper(k) + s2[0] * right.tau_upper(kp)
    tgc_l = orbit.tail_gc(left.r, k, left.s_hat)
    tgc_r = orbit.tail_gc(right.r, kp, right.s_hat)
    eps2_gc = sp2[0] * tgc_l + s2[0] * tgc_r
    for arr in (cosines, m_full, m_window, m_excluded):
        arr.setflags(write=False)
    return Transport(
        k_left=k,
        k_right=kp,
        cosines=cosines,
        m_full=m_full,
        m_window=m_window,
        m_excluded=m_excluded,
        trunc_error=float(np.sqrt(max(e2, 0.0))),
        trunc_bound=float(np.sqrt(bound2)),
        eps_trunc=float(np.sqrt(eps2)),
        eps_trunc_gc=float(np.sqrt(eps2_gc)),
        tail_error_left=tau_l - tgc_l,
        tail_error_right=tau_r - tgc_r,
    )


def principal_cosines(c: CBlocks | np.ndarray, k: int, kp: int, orthogonal: bool) -> np.ndarray:
    """Singular values of ``C[:k', :k]`` (descending): the principal-angle cosines.

    When ``C`` is orthogonal (``orthogonal``: both thin frames span the whole interface space,
    ``r = r' = m_l``) and the windows are large, the CS decomposition gives them from the small complement block:
    ``C11^T C11 + C21^T C21 = I`` with ``C21 = C[k':, :k]``, so the cosines are
    ``sqrt(1 - s^2)`` for the singular values ``s`` of ``C21``, and 1 for the rest (at most
    ``min(k, k')`` in all). That is an SVD of ``(r - k') x k`` instead of ``k' x k``. Cosines near
    zero lose accuracy that way (``sqrt(1 - s^2)`` with ``s`` near 1), so when the smallest one
    is below 1e-3 the direct SVD is used instead.
    """
    if isinstance(c, np.ndarray):
        c = CBlocks(None, None, full=c)
    if c.full is not None:
        r = c.full.shape[1]
    else:
        assert c.left is not None  # a CBlocks without the whole C has both spectra
        r = c.left.u.shape[1]
    n_cos = min(k, kp)
    if orthogonal and 4 * (r - kp) < kp:
        s = linalg.svdvals(c.rows_from(kp)[:, :k]) if r > kp else np.zeros(0)
        cos = np.sqrt(np.clip(1.0 - s**2, 0.0, 1.0))
        full = np.concatenate([np.ones(max(k - s.shape[0], 0)), np.sort(cos)[::-1]])
        full = np.sort(full)[::-1][:n_cos]
        if full.shape[0] == n_cos and full[-1] >= 1e-3:
            return full
    cosines: np.ndarray = linalg.svdvals(c.window(kp, k))
    return cosines


def _top_singular_value_scaled(m: np.ndarray, seed: int) -> tuple[float, int]:
    """``(s, e)`` with ``sigma_1(M) = s * 2**e``: ``sigma_1`` of ``M`` scaled by an exact power of two.

    ``M`` is divided by ``2**e`` with ``max|M| = f 2**e``, ``f`` in ``[0.5, 1)`` (exact: a power of
    two), so Lanczos never squares entries near 1e-160 into subnormals (ARPACK works on
    ``M^T M``). ``M = 0`` is answered before ARPACK, which refuses a zero starting vector. The
    starting vector is seeded, so repeated calls give the same bits.
    """
    amax = float(np.max(np.abs(m))) if m.size else 0.0
    if amax == 0.0:
        return 0.0, 0
    e = int(np.frexp(amax)[1])
    ms = np.ldexp(m, -e)
    if min(m.shape) <= 32:
        return float(linalg.svdvals(ms)[0]), e
    from scipy.sparse.linalg import svds  # start-up: ARPACK (and scipy.linalg) load only for large M

    rng = np.random.default_rng(seed)
    v0 = rng.standard_normal(min(m.shape))
    s = svds(ms, k=1, tol=0, v0=v0, return_singular_vectors=False, solver="arpack")
    return float(s[0]), e


def top_singular_value(m: np.ndarray, seed: int) -> float:
    """``sigma_1(M)`` to machine precision: Lanczos (ARPACK, tol=0) or dense when small.

    Computed on ``M`` scaled by a power of two (:func:`_top_singular_value_scaled`); 0 for ``M = 0``.
    """
    s, e = _top_singular_value_scaled(m, seed)
    return float(np.ldexp(s, e))


def rigidity(left: Spectrum, right: Spectrum, m_full: np.ndarray, *, seed: int) -> Rigidity:
    """Slack ``s_l``, amplitude ``a_l`` and the drift bound of the top chart.

    ``s_l = log sigma_1(A_hat_{l+1}) + log sigma_1(A_hat_l) - log sigma_1(A_hat_{l+1} A_hat_l)``
    (>= 0 by submultiplicativity); ``a_l = (rho_l + rho_{l+1}) / 2``; drift
    ``|s_{l+1} - s_l|`` against ``(|rho_{l+1} - rho_l| + |e_{l+1} - e_l|) / min phi'`` with the
    minimum over the interval between the two exponents (phi' decreases in s, so it sits at
    the larger one) and over both factors' ranks.
    """
    s1_scaled, s1_exp = _top_singular_value_scaled(m_full, seed)
    s1 = float(np.ldexp(s1_scaled, s1_exp))
    # An exactly zero product (orthogonal subspaces) transmits nothing: the slack is +inf,
    # reported as None (never an inf in a table). The log is taken of the scaled value.
    slack = float(np.log(right.sigma[0]) + np.log(left.sigma[0]) - (np.log(s1_scaled) + s1_exp * np.log(2.0))) \
        if s1_scaled > 0 else None
    amplitude = 0.5 * (left.rho + right.rho)
    drift = abs(right.s_top - left.s_top)
    rho_term = abs(right.rho - left.rho)
    e_term = abs(right.residuals["top"][0] - left.residuals["top"][0])
    s_hi = max(left.s_top, right.s_top)
    min_pp = min(orbit.phi_prime(left.r, s_hi), orbit.phi_prime(right.r, s_hi))
    if min_pp > 0:
        bound = (rho_term + e_term) / min_pp
        holds = drift <= bound * (1 + 1e-9) + 1e-12
    else:
        # r = 1 on a side: the orbit is one point, phi' = 0, there is no bound to state.
        bound = None
        holds = drift == 0.0
    return Rigidity(
        slack=slack,
        amplitude=amplitude,
        drift=drift,
        drift_bound=bound,
        drift_rho_term=rho_term,
        drift_e_term=e_term,
        drift_min_phi_prime=min_pp,
        drift_holds=bool(holds),
        sigma1_product=s1,
    )
