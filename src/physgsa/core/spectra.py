"""Per-factor spectra in Cartan coordinates (definitions sections 1 and 2).

One singular value decomposition per factor, of the Frobenius-normalized matrix
``A_hat = sqrt(r) A / ||A||_F`` (so ``sum_k sigma_k^2 = r``); every per-factor quantity and
both interfaces the factor belongs to read it from the :class:`Spectrum` computed here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import linalg, orbit, resources
from .chain import Factor
from .validation import Param

__all__ = [
    "Spectrum",
    "compute_spectrum",
    "normalize",
    "effective_rank",
    "gram_energies",
    "dominant_window",
    "tail_energy",
    "chart_top",
    "chart_mle",
    "chart_window",
    "chart_residual",
    "CHARTS",
    "SPECTRUM_PARAMS",
]

CHARTS = ("top", "mle", "window")

#: The parameters of :func:`compute_spectrum`, shared by every entry point's table (certify's,
#: spectra's): each default and help text written once.
SPECTRUM_PARAMS: dict[str, Param] = {
    "q": Param(0.9, "float", 0.0, 1.0, "neither", doc="energy quantile of the effective rank k_q",
               help="Energy quantile of the effective rank k_q, in (0, 1)."),
    "chart": Param("top", "choice", choices=CHARTS, doc="chart whose exponent is s_hat",
                   help="Chart for s_hat: top, mle or window."),
    "window_band": Param(None, "float", 0.0, 0.5, allow_none=True,
                         doc="half-width of the band around q for the window's gap search (None: (1 - q) / 2)",
                         help="Half-width of the energy band around q in which the window moves to the largest "
                              "gap; default (1 - q) / 2, so a window keeps between q - (1-q)/2 and q + (1-q)/2."),
    "gap_floor": Param(1e-3, "float", 0.0, 1.0, "left", doc="window gap floor"),
}


@dataclass(frozen=True)
class Spectrum:
    """Everything section 2 defines for one factor, with its SVD kept for transport.

    Attributes follow definitions.md: ``rho`` (top-radial coordinate), ``s_top``, ``s_mle``,
    ``s_window`` (the three charts' exponents; ``s_window`` is None when the window holds fewer
    than two positive eigenvalues), ``s_hat`` (the selected chart's), ``k_q`` (effective rank),
    ``k`` (dominant window), ``tau = tau(k)``, ``tau_gc = tau_GC(k; s_hat)``.
    """

    name: str
    rows: int
    cols: int
    r: int
    fro: float
    fro2_hat: float
    a_hat: np.ndarray
    u: np.ndarray
    sigma: np.ndarray
    vt: np.ndarray
    rho: float
    s_top: float
    s_mle: float
    s_window: float | None
    window_r2: float | None
    chart: str
    s_hat: float
    residuals: dict[str, tuple[float, float]]
    k_q: int
    k: int
    window_gap: float
    tau: float
    tau_gc: float
    numerical_rank: int
    fisher: float
    flags: tuple[str, ...]
    #: What computed the SVD: "gesdd" (LAPACK), "gram" (:func:`physgsa.core.linalg.gram_svd`),
    #: "device" (torch) or, without vectors, "gram_energies" (:func:`gram_energies`); and the SVD's
    #: error level ``omega`` (gesdd's model constant, or the Gram SVD's measured one).
    svd_route: str
    omega: float

    @property
    def lam(self) -> np.ndarray:
        """``lambda_k = sigma_k(A_hat)^2``."""
        return self.sigma**2

    @property
    def hellinger(self) -> float:
        return self.residuals[self.chart][0]

    @property
    def kl(self) -> float:
        return self.residuals[self.chart][1]

    @property
    def tail_error(self) -> float:
        """Signed fitted-tail error ``tau(k) - tau_GC(k; s_hat)``."""
        return self.tau - self.tau_gc

    def tau_at(self, k: int) -> float:
        """Tail energy ``tau(k)`` at any window (exact, from the Frobenius norm)."""
        return tail_energy(self.sigma, k, self.fro2_hat)

    def tau_upper(self, k: int) -> float:
        """``tau(k)`` plus its rounding allowance: a floating-point upper bound on the tail.

        ``||A_hat||_F^2 - sum_{j<=k} sigma_j^2`` cancels when the tail is tiny; the subtraction
        and the ``k + m + n`` term sums err by at most ``(k + m + n) eps ||A_hat||_F^2``
        (doubled here), so the a priori bound stays an upper bound however small the tail.

        A Gram SVD (``svd_route == "gram"``) is the exact SVD of ``A_hat + E`` within its measured
        ``omega`` (frames within ``omega`` of orthonormal, ``||E||_2 <= omega sigma~_1``): the
        computed window ``W~`` is then within ``3 sqrt(k) omega sigma~_1`` of the exact truncation
        of ``A_hat + E``, whose tail is ``||A_hat + E||_F^2 - sum_{j<=k} sigma~_j^2`` with
        ``||A_hat + E||_F <= ||A_hat||_F + sqrt(r) omega sigma~_1``. So the bound becomes
        ``(sqrt(t + 3 sqrt(r) omega sigma~_1 ||A_hat||_F) + 4 sqrt(r) omega sigma~_1)^2`` on the
        bound ``t`` above (docs/definitions.md, "Numerical routes"). gesdd's error is inside the
        rounding allowance as before.
        """
        eps: float = np.finfo(np.float64).eps
        t = self.tau_at(k) + 2.0 * (k + self.rows + self.cols) * eps * self.fro2_hat
        if self.svd_route != "gram":
            return t
        e = float(np.sqrt(self.r)) * self.omega * float(self.sigma[0])
        return float((np.sqrt(t + 3.0 * e * np.sqrt(self.fro2_hat)) + 4.0 * e) ** 2) * (1.0 + 8.0 * eps)


def normalize(matrix: np.ndarray) -> tuple[np.ndarray, float, float]:
    r"""``A_hat = sqrt(r) A / ||A||_F``, the raw norm ``||A||_F`` and ``||A_hat||_F^2``.

    Scaled by ``max |A|`` first, so entries from 1e-150 to 1e150 neither overflow nor
    underflow when squared: with ``B = A / max|A|``,

    .. math:: \hat A = B \cdot \frac{\sqrt r}{\|B\|_F},\qquad \|A\|_F = \max|A| \, \|B\|_F.

    One ``m x n`` buffer is allocated (``B``, then scaled in place into ``A_hat``): every fresh
    buffer of a large factor costs its page faults, and ``max |A|`` is read as
    ``max(max A, -min A)`` (the same number, without a copy of ``|A|``). The arithmetic, and so
    every bit of the result, is that of ``A / max|A|`` followed by one multiplication.
    """
    r = min(matrix.shape)
    if matrix.dtype != np.float64 or matrix.size == 0:
        return _normalize_generic(matrix)
    # max(max A, -min A) == max |A| exactly (negation is exact); no |A| temporary.
    amax = max(float(np.max(matrix)), -float(np.min(matrix)))
    a_hat = matrix / amax
    fro_scaled = float(np.linalg.norm(a_hat))
    # In place: the same rounding as ``scaled * c`` into a new array, one buffer fewer.
    np.multiply(a_hat, np.sqrt(r) / fro_scaled, out=a_hat)
    fro2_hat = float(np.einsum("ij,ij->", a_hat, a_hat))
    return a_hat, amax * fro_scaled, fro2_hat


def _normalize_generic(matrix: np.ndarray) -> tuple[np.ndarray, float, float]:
    """:func:`normalize` for any dtype, with numpy's own type promotion (factors are float64; this
    keeps the function's behaviour for other arrays a caller may pass).
    """
    r = min(matrix.shape)
    amax = float(np.max(np.abs(matrix)))
    scaled = matrix / amax
    fro_scaled = float(np.linalg.norm(scaled))
    a_hat = scaled * (np.sqrt(r) / fro_scaled)
    fro2_hat = float(np.einsum("ij,ij->", a_hat, a_hat))
    return a_hat, amax * fro_scaled, fro2_hat


def gram_energies(a: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Energies ``lambda_i = sigma_i^2`` of ``A / c`` from the Gram matrix of the smaller side, and ``c``.

    ``eigvalsh(A^T A)`` costs one matrix product and a symmetric eigensolve, several times less
    than an SVD. Its energies carry an absolute error of at most about
    ``delta = (m + n) eps ||A / c||_F^2`` (the rounding of the product, ``gamma_m |A|^T |A|``,
    plus the backward error of the eigensolver; Weyl's inequality moves each eigenvalue by no
    more than the perturbation's norm). Every energy functional (``rho``, ``p``, ``k_q``, tails,
    charts, norms, entropies) is therefore exact to a few ``(m + n) eps`` relative to the total.
    The result is returned only when every energy is resolved, ``lambda_min > 2 delta``: then
    every true energy exceeds ``delta``, far above the rank threshold ``(max(m, n) eps
    sigma_1)^2``, so the rank is exact and the smallest energy is known within a factor of 2.
    Otherwise ``None`` (the caller uses the values-only SVD, for rank-deficient or very
    ill-conditioned matrices). ``delta`` is a worst-case bound; the observed error on trained
    and random weights is about ``1e-5 delta``.

    ``c = max |A|`` when ``||A||_F^2`` is outside ``[1e-200, 1e200]`` (squares overflowed or
    underflowed), else 1, so no copy of ``A`` is made for ordinary weights.
    """
    m, n = a.shape
    c = 1.0
    g = linalg.gram(a)
    with np.errstate(over="ignore", invalid="ignore"):  # an inf or nan trace is detected just below
        trace = float(np.trace(g))
    if not 1e-200 < trace < 1e200:
        # Squares overflowed or underflowed (entries beyond about 1e100 or 1e-100): scale by
        # max |A| and form the Gram again. Ordinary weights never take this copy.
        c = max(float(a.max()), -float(a.min()))
        b = a / c
        g = linalg.gram(b)
        del b
        trace = float(np.trace(g))
    lam = linalg.eigvalsh_descending(g)
    del g
    delta = (m + n) * np.finfo(np.float64).eps * trace
    if lam[-1] <= 2.0 * delta:
        return None
    return np.ascontiguousarray(lam), c


def effective_rank(lam: np.ndarray, q: float) -> int:
    """``k_q = min{k : sum_{i<=k} lambda_i >= q * sum_i lambda_i}``."""
    cum = np.cumsum(lam)
    k = int(np.searchsorted(cum, q * cum[-1], side="left")) + 1
    n: int = lam.shape[0]
    return min(k, n)


def window_band(q: float, band: float | None) -> float:
    """The band's half-width: ``band`` if given, else ``(1 - q) / 2`` (definitions section 2, revised).

    The default scales with the tail, so a window keeps between ``q - (1 - q) / 2`` and
    ``q + (1 - q) / 2`` of the energy: ``[0.85, 0.95]`` at ``q = 0.9``, ``[0.9985, 0.9995]`` at 0.999.
    """
    return (1.0 - q) / 2.0 if band is None else band


#: A Gram SVD (:func:`physgsa.core.linalg.gram_svd`) is taken only when its measured error level is
#: at most this many times gesdd's model level ``8 max(m, n) eps`` (docs/definitions.md, "Numerical
#: routes"): the allowances that read it stay within three orders of gesdd's.
GRAM_MAX_OMEGA = 1024.0

#: The Gram route's spread gate: ``lambda_r >= 2^-20 lambda_1`` (so ``sigma_1 / sigma_r <= 1024``) and
#: the window's energies spread by at least ``2^-20`` in ``log`` (no chart flag can hinge on rounding).
GRAM_MIN_SPREAD = 2.0**-20


def truncation_allowance(sigma: np.ndarray, shape: tuple[int, int], k: int, *, omega: float | None = None) -> float:
    r"""A bound on ``||W~_k - T_k(A_hat)||_F``: the computed rank-``k`` truncation against the exact one.

    The computed SVD is that of ``A_hat + E`` with ``||E||_2 <= eta = omega sigma~_1``, ``omega``
    the factor's error level (default gesdd's ``8 max(m, n) eps``,
    :data:`physgsa.core.linalg.SVD_BACKWARD`), so ``||E||_F <= sqrt(r) eta``. With ``P`` and
    ``P'`` the projectors on the top-``k`` left singular subspaces of ``A_hat`` and ``A_hat + E``,
    ``T_k(A_hat + E) - T_k(A_hat) = P' E + (P' - P) A_hat``, and Wedin's theorem gives
    ``||P' - P||_F <= 2 ||E||_F / (delta - eta)`` for the exact gap
    ``delta = sigma_k - sigma_{k+1} >= delta~ - 2 eta`` (Weyl, on the computed values). With one
    more ``sqrt(r) eta`` for the rounding of the computed factors and their product:

    .. math:: w = \sqrt r\,\eta\,\Bigl(2 + \frac{2 (\sigma~_1 + \eta)}{\delta~ - 3\eta}\Bigr),

    ``inf`` when ``delta~ <= 3 eta`` (a window through a repeated singular value has no unique
    truncation), and ``2 sqrt(r) eta`` for ``k = r`` (no cut). docs/definitions.md, section 8
    (compare's drift bound).
    """
    m, n = shape
    r = min(m, n)
    if r == 0 or sigma[0] == 0:
        return 0.0
    s1 = float(sigma[0])
    eta = (linalg.svd_omega(shape) if omega is None else omega) * s1
    root_r = float(np.sqrt(r))
    if k >= r:
        return 2.0 * root_r * eta
    gap = float(sigma[k - 1] - sigma[k])
    if gap <= 3.0 * eta:
        return float("inf")
    return root_r * eta * (2.0 + 2.0 * (s1 + eta) / (gap - 3.0 * eta))


def dominant_window(sigma: np.ndarray, q: float, band: float | None) -> tuple[int, int, float]:
    """The dominant window ``(k_q, k, gap)`` (definitions section 2).

    ``k`` is the rank ``k < r`` with the largest relative gap ``(sigma_k - sigma_{k+1}) /
    sigma_1`` among those whose cumulative energy fraction lies in ``[q - b, q + b]`` with
    ``b = window_band(q, band)`` (the first on ties), or ``k_q`` if there is none; ``gap`` is
    that window's relative gap (``sigma_{r+1} = 0``).
    """
    band = window_band(q, band)
    lam = sigma**2
    r = sigma.shape[0]
    k_q = effective_rank(lam, q)
    cum = np.cumsum(lam)
    frac = cum / cum[-1]
    gaps = np.empty(r)
    gaps[:-1] = (sigma[:-1] - sigma[1:]) / sigma[0]
    gaps[-1] = sigma[-1] / sigma[0]
    cand = np.flatnonzero((frac[:-1] >= q - band) & (frac[:-1] <= q + band))
    if cand.size:
        k = int(cand[np.argmax(gaps[cand])]) + 1
    else:
        k = k_q
    return k_q, k, float(gaps[k - 1])


def tail_energy(sigma: np.ndarray, k: int, fro2_hat: float) -> float:
    """``tau(k) = ||A_hat||_F^2 - sum_{j<=k} sigma_j^2`` (needs only the top k values)."""
    return max(0.0, fro2_hat - float(np.sum(sigma[:k] ** 2)))


def chart_top(rho: float, r: int) -> tuple[float, str]:
    """Top chart: ``s_hat = phi^{-1}(rho)``.

    A ``rho`` within rounding of its ceiling ``log r`` (``log r - rho <= 4 (r + 4) eps``, the
    rounding of ``log(r lambda_1 / ||A_hat||_F^2)``) cannot be told from a rank-one spectrum,
    whose exponent is infinite: it clips to ``S_MAX`` and is flagged ``steep``, like every
    spectrum beyond the cap, instead of giving an exponent near 49 that rounding chose.
    """
    if r > 1 and np.log(r) - rho <= 4.0 * (r + 4) * np.finfo(np.float64).eps:
        return orbit.S_MAX, "steep"
    return orbit.invert_phi(r, rho)


def chart_mle(p: np.ndarray) -> tuple[float, str]:
    """Gibbs maximum-likelihood chart: ``E_{p(s)}[log k] = sum_k p_k log k``."""
    r = p.shape[0]
    return orbit.invert_mean_log(r, float(p @ orbit.log_ranks(r)))


def chart_window(lam: np.ndarray, k: int) -> tuple[float | None, float | None, str]:
    """Window chart: least-squares slope of ``log lambda_k`` on ``log k`` over ranks ``1..max(k, 2)``.

    Returns ``(s, R^2, flag)``; ``s = -slope`` clipped at 0. Only positive eigenvalues enter;
    with fewer than two, the chart is undefined: ``(None, None, "window_chart_undefined")``.
    Where the window's energies are all equal to rounding (``max log lambda - min log lambda <=
    64 r eps``), the exponent is 0 and ``R^2`` is undefined: ``(0, None, "window_equal_energies")``.
    A window whose points lie exactly on a line has ``R^2 = 1``.
    """
    kk = min(max(k, 2), lam.shape[0])
    y = lam[:kk]
    keep = y > 0
    if np.count_nonzero(keep) < 2:
        return None, None, "window_chart_undefined"
    x = orbit.log_ranks(lam.shape[0])[:kk][keep]
    y = np.log(y[keep])
    if float(y.max() - y.min()) <= 64.0 * lam.shape[0] * np.finfo(np.float64).eps:
        # The window's energies are equal to rounding: the slope is 0 and R^2 measures only
        # rounding noise (it would land anywhere in [0, 1]). Undefined, and said so.
        return 0.0, None, "window_equal_energies"
    xc = x - x.mean()
    yc = y - y.mean()
    slope = float(xc @ yc / (xc @ xc))
    resid = yc - slope * xc
    ss_tot = float(yc @ yc)
    ss_res = float(resid @ resid)
    r2 = 1.0 if ss_tot <= 1e-300 or ss_res <= 1e-24 * ss_tot else 1.0 - ss_res / ss_tot
    s = -slope
    flag = ""
    if s < 0:
        s, flag = 0.0, "flat"
    elif s > orbit.S_MAX:
        s, flag = orbit.S_MAX, "steep"
    return s, r2, flag


def chart_residual(p: np.ndarray, s: float) -> tuple[float, float]:
    """Chart residual ``(Hellinger^2, KL)`` between ``p`` and the orbit point ``p(s)``.

    ``Hellinger^2 = sum (sqrt p_k - sqrt p_k(s))^2``; ``KL = sum p_k log(p_k / p_k(s))``
    (terms with ``p_k = 0`` are zero; ``p_k(s) > 0`` always).
    """
    logps = orbit.log_orbit_probs(p.shape[0], s)
    h = float(np.sum((np.sqrt(p) - np.exp(0.5 * logps)) ** 2))
    nz = p > 0
    kl = float(np.sum(p[nz] * (np.log(p[nz]) - logps[nz])))
    return h, max(kl, 0.0)


def gram_resolved(sigma: np.ndarray, omega: float, shape: tuple[int, int], *, q: float, band: float | None,
                  gap_floor: float) -> bool:
    """Whether a Gram SVD's values decide this factor's windows and flags as the exact values do.

    ``sigma`` is within ``omega sigma_1`` of the exact singular values (Weyl), and gesdd's within
    its model level ``omega_0``; with ``e = (omega + 2 omega_0) sigma_1`` each energy moves by at most
    ``2 sigma_j e + e^2`` and each cumulative fraction by at most ``f = 2 D / (T - D)`` (``D`` the
    summed moves, ``T`` the total). Resolved when:

    * ``lambda_r >= 2^-20 lambda_1`` and the window's ``log`` energies spread by ``2^-20``
      (:data:`GRAM_MIN_SPREAD`): full numerical rank, and no chart flag (flat, steep, equal
      energies) can turn on rounding;
    * every cumulative fraction is more than ``f`` from ``q`` and from the band's edges ``q -+ b``
      (``k_q`` and the candidates are fixed);
    * the largest candidate gap beats every other by more than ``4 e`` (the window ``k`` is fixed),
      and is more than ``2 e + 8 r eps (sigma_1 + e)`` (not degenerate);
    * the relative gap is more than its own error from ``gap_floor``.

    Otherwise the caller takes gesdd (docs/definitions.md, "Numerical routes").
    """
    r = sigma.shape[0]
    s1 = float(sigma[0])
    if r < 2 or not s1 > 0:
        return False
    lam = sigma**2
    if not lam[-1] >= GRAM_MIN_SPREAD * lam[0]:
        return False
    e = (omega + 2.0 * linalg.svd_omega(shape)) * s1
    moves = 2.0 * sigma * e + e * e
    total, d = float(lam.sum()), float(moves.sum())
    if not d < 0.5 * total:
        return False
    f = 2.0 * d / (total - d) * (1.0 + 1e-6)
    b = window_band(q, band)
    frac = (np.cumsum(lam) / total)[:-1]
    if np.any(np.abs(frac - q) <= f) or np.any(np.abs(frac - (q - b)) <= f) or np.any(np.abs(frac - (q + b)) <= f):
        return False
    k_q, k, gap = dominant_window(sigma, q, band)
    gaps = np.append(sigma[:-1] - sigma[1:], sigma[-1])
    cand = np.flatnonzero((frac >= q - b) & (frac <= q + b))
    if cand.size > 1:
        rest = np.delete(gaps[cand], int(np.argmax(gaps[cand])))
        if not float(gaps[k - 1]) - float(rest.max()) > 4.0 * e:
            return False
    eps = float(np.finfo(np.float64).eps)
    if k < r and not float(gaps[k - 1]) - 2.0 * e > 8.0 * r * eps * (s1 + e):
        return False
    if not abs(gap - gap_floor) > (2.0 * e + gap * e) / (s1 - e) * (1.0 + 1e-6):
        return False
    kk = min(max(k, 2), r)
    return bool(np.log(lam[0]) - np.log(lam[kk - 1]) >= GRAM_MIN_SPREAD)


def compute_spectrum(factor: Factor, *, q: float, band: float | None, gap_floor: float, chart: str,
                     vectors: bool = True, device: linalg.Backend | None = None,
                     max_memory: int | None = None, svd: str = "gesdd") -> Spectrum:
    """All section 2 quantities of one factor, from one SVD of ``A_hat``.

    ``vectors=False`` computes the energies only, from :func:`gram_energies` when they are
    resolved there (else a values-only SVD); ``a_hat``, ``u`` and ``vt`` are then empty. That is
    enough for every per-factor quantity, and several times faster, but gives no transport.
    ``device`` runs the SVD through torch (see :mod:`physgsa.core.linalg`). ``max_memory`` (bytes)
    refuses a decomposition whose estimated working set is larger (:mod:`physgsa.core.resources`).
    ``svd="gram"`` (certify's fast route) tries :func:`physgsa.core.linalg.gram_svd` first and keeps
    it only where :func:`gram_resolved` says every decision this factor makes is the exact
    spectrum's; else gesdd, as ``svd="gesdd"``.
    """
    m, n = factor.shape
    r = min(m, n)
    need = resources.svd_bytes(m, n) if vectors else resources.gram_bytes(m, n)
    resources.check_memory(need, max_memory, f"Factor {factor.name!r} ({m} x {n}): its decomposition")
    matrix = factor.matrix  # read once (a deferred factor is read from its source on each access)
    got = None if vectors else gram_energies(matrix)
    if got is None:
        a_hat, fro, fro2_hat = normalize(matrix)
    del matrix  # A_hat (or the energies) is all that is kept: the input goes as soon as it can
    route, omega = ("gesdd" if device is None else "device"), linalg.svd_omega((m, n))
    if vectors:
        gsvd = None
        if svd == "gram" and device is None:
            gsvd = linalg.gram_svd(a_hat, max_omega=GRAM_MAX_OMEGA * omega, max_condition=1.0 / GRAM_MIN_SPREAD)
            if gsvd is not None and not gram_resolved(gsvd[1], gsvd[3], (m, n), q=q, band=band, gap_floor=gap_floor):
                gsvd = None
        if gsvd is None:
            u, sigma, vt = linalg.svd(a_hat, device)
        else:
            u, sigma, vt, omega = gsvd
            route = "gram"
    else:
        if got is None:
            sigma = linalg.svdvals(a_hat)
        else:
            # Energies only (the Gram path): A_hat is never formed; sum lambda = ||A / c||_F^2.
            lam_c, c = got
            total = float(np.sum(lam_c))
            fro, fro2_hat = c * np.sqrt(total), float(r)
            sigma = np.sqrt(lam_c * (r / total))
            route = "gram_energies"
        a_hat = np.empty((0, 0))
        u, vt = np.empty((m, 0)), np.empty((0, n))
    lam = sigma**2
    p = lam / lam.sum()
    flags: list[str] = []
    rho = float(np.log(r * lam[0] / fro2_hat)) if r > 1 else 0.0
    rho = min(max(rho, 0.0), float(np.log(r)))
    s_top, f = chart_top(rho, r)
    if f:
        flags.append(f"top:{f}")
    s_mle, f = chart_mle(p)
    if f:
        flags.append(f"mle:{f}")
    k_q, k, gap = dominant_window(sigma, q, band)
    s_win, r2, f = chart_window(lam, k)
    if f:
        flags.append(f"window:{f}")
    if gap < gap_floor:
        flags.append("window_gap_below_floor")
    if k < r and sigma[k - 1] - sigma[k] <= 8.0 * r * np.finfo(np.float64).eps * sigma[0]:
        # sigma_k = sigma_{k+1} to rounding: the window cuts through a repeated singular value, so
        # its subspace is not unique (LAPACK picks one basis of the cluster). Reported, not hidden.
        flags.append("window_degenerate")
    exps = {"top": s_top, "mle": s_mle, "window": s_win}
    residuals = {c: chart_residual(p, s) for c, s in exps.items() if s is not None}
    selected = exps[chart]
    if selected is None:
        # The selected chart is undefined here; fall back to the top chart, and say so.
        flags.append(f"chart_{chart}_undefined_used_top")
        chart = "top"
        selected = s_top
    s_hat = float(selected)
    tau = tail_energy(sigma, k, fro2_hat)
    numerical_rank = int(np.count_nonzero(sigma > max(m, n) * np.finfo(np.float64).eps * sigma[0]))
    for arr in (a_hat, u, sigma, vt):
        arr.setflags(write=False)
    return Spectrum(
        name=factor.name,
        rows=m,
        cols=n,
        r=r,
        fro=fro,
        fro2_hat=fro2_hat,
        a_hat=a_hat,
        u=u,
        sigma=sigma,
        vt=vt,
        rho=rho,
        s_top=s_top,
        s_mle=s_mle,
        s_window=s_win,
        window_r2=r2,
        chart=chart,
        s_hat=s_hat,
        residuals=residuals,
        k_q=k_q,
        k=k,
        window_gap=gap,
        tau=tau,
        tau_gc=orbit.tail_gc(r, k, s_hat),
        numerical_rank=numerical_rank,
        fisher=orbit.fisher(r, s_hat),
        flags=tuple(flags),
        svd_route=route,
        omega=omega,
    )
