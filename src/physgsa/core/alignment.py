"""Weight-space alignment diagnostics at an interface (definitions section 8).

These diagnostics go beyond the two papers; they follow "Flag Varieties" (arXiv 2605.09861),
and the exact formulas below are this project's (definitions.md section 8 fixes them).

Conventions (as in :mod:`physgsa.core.chain`): a factor is an ``m x n`` real matrix, rows = outputs,
columns = inputs. Interface ``l`` joins the output space of ``A_l`` (its ``m_l`` rows) to the
input space of ``A_{l+1}`` (its ``n_{l+1} = m_l`` columns); ``d = m_l`` below. With the thin
SVDs ``A_l = U S V^T`` and ``A_{l+1} = U' S' V'^T`` (singular values descending), the dominant
output subspace of layer ``l`` at rank ``k`` is ``span(U[:, :k])`` and the dominant input
subspace of layer ``l+1`` is ``span(V'[:, :k])``.

Everything here is float64 numpy/scipy; nothing imports torch.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .chain import check_matrix
from .linalg import SVD_BACKWARD, gamma, svd, svd_omega, svdvals
from .linalg import UNIT_ROUNDOFF as _U
from .validation import InvalidFactorError, InvalidParameterError

__all__ = [
    "DEFAULT_EPSS",
    "default_ks",
    "HeadOverlaps",
    "Commutator",
    "commutator",
    "commutator_bounded",
    "commutator_from_frames",
    "cuts_repeated",
    "head_overlaps",
    "intersection_dimensions",
    "principal_cosines",
]

#: Default tolerances of the intersection dimension: a cosine counts when ``cos >= 1 - eps``.
DEFAULT_EPSS: tuple[float, ...] = (1e-1, 1e-2, 1e-3)


def default_ks(r: int) -> list[int]:
    """Default rank grid of the intersection dimension: ``1, 2, 4, ...`` below ``r``, then ``r``.

    definitions.md section 8 (the grid of ``k``; ours).

    Parameters
    ----------
    r : int
        The largest usable rank (``min(r_l, r')`` at an interface), ``r >= 1``.

    Returns
    -------
    list of int
        The powers of two strictly below ``r``, followed by ``r`` itself (so ``[1]`` for
        ``r = 1`` and ``[1, 2, 4, 8]`` for ``r = 8``).
    """
    if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < 1:
        raise InvalidParameterError(f"default_ks needs an int r >= 1. Got {r!r} instead.")
    ks, k = [], 1
    while k < r:
        ks.append(k)
        k *= 2
    ks.append(int(r))
    return ks


# --------------------------------------------------------------------------- helpers


def _basis(value: ArrayLike, name: str) -> NDArray[np.float64]:
    """``value`` as a non-empty, finite, 2-D float64 array (an orthonormal basis: no zero check)."""
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "fiu":
        raise InvalidFactorError(f"{name!r} has dtype {arr.dtype}, which is not a real number type.")
    if arr.ndim != 2 or arr.size == 0:
        raise InvalidFactorError(f"{name!r} must be a non-empty 2-D array. Got shape {arr.shape} instead.")
    out = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(out).all():
        raise InvalidFactorError(f"{name!r} has NaN or Inf entries.")
    return out


def _pow2_scaled(a: NDArray[np.float64]) -> NDArray[np.float64]:
    """``a * 2**-e`` with ``2**(e-1) <= max|a_ij| < 2**e``: exact (a power of two), max entry in [1/2, 1).

    Squares and products of the result neither overflow nor underflow for any finite nonzero
    input, and every ratio of norms computed from it is unchanged.
    """
    amax = float(np.max(np.abs(a)))
    _, e = np.frexp(amax)
    scaled: NDArray[np.float64] = np.ldexp(a, -int(e))
    return scaled


def _svd(a: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    return svd(a, None)


def _svdvals(a: NDArray[np.float64]) -> NDArray[np.float64]:
    return cast("NDArray[np.float64]", svdvals(a))


# --------------------------------------------------------------------------- principal angles


def _same_space(d_left: int, _unit: str, d_right: int, right: str, right_unit: str) -> None:
    """Both bases must live in the interface space ``R^d`` (``n_{l+1} = m_l``)."""
    if d_left != d_right:
        raise InvalidFactorError(
            f"u_left has {d_left} rows and {right} {d_right} {right_unit}: both must live in the same "
            "interface space R^d (n_{l+1} = m_l)."
        )


def principal_cosines(u_left: ArrayLike, v_right: ArrayLike) -> NDArray[np.float64]:
    r"""Cosines of the principal angles between two subspaces of :math:`\mathbb{R}^d`.

    definitions.md section 8. For orthonormal bases ``u_left`` (``d x k1``, the dominant output
    subspace of layer ``l``: the first ``k1`` columns of ``U_l``) and ``v_right`` (``d x k2``, the
    dominant input subspace of layer ``l+1``: the first ``k2`` columns of ``V'``), the cosines of
    the principal angles are the singular values of the ``k2 x k1`` matrix

    .. math:: \cos\theta_i = \sigma_i(V_{right}^T U_{left}),\qquad i = 1, \dots, \min(k_1, k_2).

    Parameters
    ----------
    u_left : array_like, shape (d, k1)
        Orthonormal columns (not checked: the caller's SVD provides them).
    v_right : array_like, shape (d, k2)
        Orthonormal columns.

    Returns
    -------
    numpy.ndarray of float64, shape (min(k1, k2),)
        The cosines, descending, clipped to ``[0, 1]`` (rounding can put a singular value of a
        product of orthonormal bases a few ulps above 1).
    """
    u = _basis(u_left, "u_left")
    v = _basis(v_right, "v_right")
    _same_space(u.shape[0], "rows", v.shape[0], "v_right has", "rows")
    cos: NDArray[np.float64] = np.clip(_svdvals(v.T @ u), 0.0, 1.0)
    return cos


def cuts_repeated(sigma_left: ArrayLike, sigma_right: ArrayLike, ks: Sequence[int]) -> list[bool]:
    """Whether each rank ``k`` cuts a repeated singular value on either side (definitions section 8).

    ``span(U_l[:, :k])`` is unique only when ``sigma_k > sigma_{k+1}`` (likewise ``span(V'[:, :k])``
    with ``sigma'``); where the two coincide to rounding (``<= 8 r eps sigma_1`` apart, the tolerance
    of ``modes_basis_dependent``), LAPACK picks a basis inside the cluster and the intersection
    dimension at that ``k`` depends on it. A ``k`` at or beyond a side's length cuts nothing there.
    """
    out = []
    sides = [np.asarray(s, dtype=np.float64) for s in (sigma_left, sigma_right)]
    for k in ks:
        cut = False
        for s in sides:
            if 1 <= k < s.shape[0]:
                tol = 8.0 * s.shape[0] * np.finfo(np.float64).eps * float(s[0])
                cut = cut or bool(s[k - 1] - s[k] <= tol)
        out.append(cut)
    return out


def intersection_dimensions(u_left: ArrayLike, vt_right: ArrayLike, *, ks: Sequence[int] | None = None,
                            epss: Sequence[float] | None = None) -> tuple[NDArray[np.int64], list[int]]:
    r"""Subspace intersection dimensions over a grid of ranks and tolerances.

    definitions.md section 8. For each rank ``k`` (used on both sides) and tolerance ``eps``,

    .. math:: \dim_\varepsilon(k) = \#\{\, i : \cos\theta_i(k) \ge 1 - \varepsilon \,\},

    where :math:`\cos\theta_i(k)` are the principal-angle cosines between
    :math:`\mathrm{span}(U_l[:, :k])` (dominant output subspace of ``l``) and
    :math:`\mathrm{span}(V'[:, :k])` (dominant input subspace of ``l+1``), i.e. the singular
    values of the top-left ``k x k`` block of :math:`C = V'^T U_l`. The block
    :math:`C[:K, :K]` for the largest used ``K`` is formed once (``K x d`` times ``d x K``), and
    each ``k`` costs one SVD of its ``k x k`` leading block.

    Parameters
    ----------
    u_left : array_like, shape (d, r_l)
        ``U_l`` of ``A_l = U_l S_l V_l^T``, columns orthonormal and sorted by descending singular value.
    vt_right : array_like, shape (r', d)
        ``V'^T`` of ``A_{l+1} = U' S' V'^T``, rows orthonormal and sorted likewise.
    ks : sequence of int, optional
        Ranks to evaluate; each ``k > min(r_l, r')`` is skipped. Default
        ``default_ks(min(r_l, r'))``.
    epss : sequence of float, optional
        Tolerances ``eps >= 0``. Default :data:`DEFAULT_EPSS`.

    Returns
    -------
    counts : numpy.ndarray of int64, shape (len(ks_used), len(epss))
        ``counts[i, j]`` is the intersection dimension at ``ks_used[i]`` and ``epss[j]``.
    ks_used : list of int
        The ranks actually evaluated, in the order given.
    """
    u = _basis(u_left, "u_left")
    vt = _basis(vt_right, "vt_right")
    _same_space(u.shape[0], "rows", vt.shape[1], "vt_right has", "columns")
    rmax = min(u.shape[1], vt.shape[0])
    if ks is None:
        ks = default_ks(rmax)
    if epss is None:
        epss = DEFAULT_EPSS
    ks = list(ks)
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise InvalidParameterError(
                f"The 'ks' parameter of intersection_dimensions must hold ints >= 1. Got {k!r} in {ks!r}."
            )
    try:
        eps = np.asarray([float(e) for e in epss], dtype=np.float64)
    except (TypeError, ValueError):
        eps = np.array([np.nan])
    if not (np.isfinite(eps).all() and (eps >= 0).all()):
        raise InvalidParameterError(
            f"The 'epss' parameter of intersection_dimensions must hold finite floats >= 0. Got {epss!r}."
        )
    used = [int(k) for k in ks if k <= rmax]
    counts = np.zeros((len(used), eps.size), dtype=np.int64)
    if not used:
        return counts, used
    kmax = max(used)
    c = vt[:kmax] @ u[:, :kmax]
    thresholds = 1.0 - eps
    for i, k in enumerate(used):
        cos = np.clip(_svdvals(c[:k, :k]), 0.0, 1.0)
        counts[i] = (cos[:, None] >= thresholds[None, :]).sum(axis=0)
    return counts, used


# --------------------------------------------------------------------------- commutator


def commutator(a_left: ArrayLike, a_right: ArrayLike) -> float:
    r"""Normalized commutator of the interface Gram matrices.

    definitions.md section 8. With :math:`P = A_l A_l^T` and :math:`Q = A_{l+1}^T A_{l+1}`
    (both ``m_l x m_l``, symmetric positive semidefinite),

    .. math:: c = \frac{\|PQ - QP\|_F}{\|P\|_F\,\|Q\|_F}.

    :math:`c = 0` exactly when ``P`` and ``Q`` commute, i.e. when the output frame of ``A_l`` and
    the input frame of ``A_{l+1}`` can be chosen equal. Because ``P`` and ``Q`` are symmetric,
    :math:`QP = (PQ)^T`, so one product ``X = PQ`` gives :math:`[P, Q] = X - X^T`.

    The value is scale-free: each factor is first multiplied by an exact power of two that
    brings its largest entry into ``[1/2, 1)``, so factors with entries anywhere from about
    ``1e-150`` to ``1e150`` neither overflow nor underflow, and ``c`` is unchanged by
    ``A_l -> a A_l``, ``A_{l+1} -> b A_{l+1}`` for any ``a, b != 0``.

    When ``n_l + m_{l+1} < m_l`` (both Gram matrices of small rank) the same quantity is
    computed in the span ``S = range(A_l) + range(A_{l+1}^T)``: with ``W`` an orthonormal basis
    of a subspace containing ``S`` (thin QR of ``[A_l, A_{l+1}^T]``), ``P = W P' W^T`` and
    ``Q = W Q' W^T`` with ``P' = (W^T A_l)(W^T A_l)^T`` and ``Q' = (A_{l+1} W)^T (A_{l+1} W)``, so
    ``[P, Q] = W [P', Q'] W^T`` and every Frobenius norm above is the same for the primed
    matrices (``W`` has orthonormal columns). This is the identical quantity, not an estimate.

    Parameters
    ----------
    a_left : array_like, shape (m_l, n_l)
        ``A_l``; neither zero nor non-finite.
    a_right : array_like, shape (m_{l+1}, m_l)
        ``A_{l+1}``; its columns are ``A_l``'s rows.

    Returns
    -------
    float
        ``c`` in ``[0, 1/sqrt(2)]``. The bound is sharp: ``P = diag(1, 0)``,
        ``Q = [[1, 1], [1, 1]]`` give exactly ``1/sqrt(2)``. (The Boettcher-Wenzel bound
        ``sqrt(2)`` holds for all real matrices; positive semidefiniteness halves its square.)

    Raises
    ------
    InvalidFactorError
        A zero, non-finite, non-2-D factor, or ``a_right.shape[1] != a_left.shape[0]``.
    """
    # Proof of 0 <= c <= 1/sqrt(2) for PSD P, Q. Work in an orthonormal eigenbasis of P,
    # P = diag(p_1 >= ... >= p_d >= 0); Q stays symmetric PSD there, entries q_ij. Then
    # [P, Q]_ij = (p_i - p_j) q_ij, so ||[P, Q]||_F^2 = 2 sum_{i<j} (p_i - p_j)^2 q_ij^2.
    # For i < j, 0 <= p_i - p_j <= p_i, hence ||[P, Q]||_F^2 <= 2 sum_i p_i^2 b_i with
    # b_i = sum_{j>i} q_ij^2. Fix i and let Q_i be the principal submatrix of Q on indices
    # i..d, written [[a, b^T], [b, C]] (a = q_ii, b = (q_ij)_{j>i}, |b|^2 = b_i); Q_i is PSD.
    # If a = 0 then b = 0 (PSD). Otherwise the Schur complement gives C >= b b^T / a >= 0 in
    # the Loewner order, so ||C||_F >= ||b b^T||_F / a = |b|^2 / a (Weyl monotonicity of the
    # eigenvalues), and ||Q||_F^2 >= ||Q_i||_F^2 = a^2 + 2|b|^2 + ||C||_F^2
    # >= a^2 + 2|b|^2 + |b|^4 / a^2 >= 4|b|^2 (AM-GM: a^2 + |b|^4/a^2 >= 2|b|^2).
    # So b_i <= ||Q||_F^2 / 4 for every i, and ||[P, Q]||_F^2 <= 2 ||P||_F^2 ||Q||_F^2 / 4,
    # i.e. c <= 1/sqrt(2). Equality for P = diag(1, 0), Q = [[1, 1], [1, 1]]:
    # PQ - QP = [[0, 1], [-1, 0]], ||.||_F = sqrt(2), ||P||_F ||Q||_F = 1 * 2.
    # (Without PSD-ness the same norms obey only ||XY - YX||_F <= 2 ||X||_F ||Y||_F by the
    # triangle inequality and submultiplicativity; Boettcher-Wenzel sharpens that to sqrt(2).)
    # den > 0 in commutator_bounded: each scaled factor has an entry of modulus >= 1/2, so
    # ||P||_F >= ||P||_2 >= 1/4.
    return commutator_bounded(a_left, a_right).value


class Commutator(NamedTuple):
    """The section 8 commutator with its accuracy bound (issue 25's routes).

    Attributes
    ----------
    value : float
        ``c`` as computed, in ``[0, 1/sqrt(2)]``.
    bound : float
        A bound on ``|value - c_exact|``, ``c_exact`` the commutator of the exact factors.
    route : str
        ``"direct"`` (the Gram products of the factors, :func:`commutator_bounded`) or
        ``"frames"`` (from the two SVDs, :func:`commutator_from_frames`).
    """

    value: float
    bound: float
    route: str


_MAX_C = 1.0 / float(np.sqrt(2.0))


def _ratio_bound(value: float, num_err: float, den: float, den_err: float) -> float:
    """A bound on ``|N~ / D~ - N / D|`` given ``|N~ - N| <= num_err`` and ``|D~ - D| <= den_err``.

    ``N / D - N~ / D~ = (N - N~) / D + (N~ / D~) (D~ - D) / D``, so the error is at most
    ``(num_err + value den_err) / (D~ - den_err)`` (plus the division's rounding ``u value``); when
    ``den_err >= D~`` nothing is known beyond ``c`` in ``[0, 1/sqrt(2)]``.
    """
    if not den_err < den:
        return _MAX_C
    return min(_MAX_C, (num_err + value * den_err) / (den - den_err) + 2.0 * _U * value)


def commutator_bounded(a_left: ArrayLike, a_right: ArrayLike) -> Commutator:
    r"""The commutator of :func:`commutator` (route ``"direct"``) with a bound on its rounding error.

    The reference route: ``P~ = fl(a a^T)``, ``Q~ = fl(b^T b)`` and ``X~ = fl(P~ Q~)`` for the
    power-of-two scaled factors ``a`` (``m x n``) and ``b`` (``p x m``), which are exact. With
    Higham's ``gamma_k``, ``||P~ - P||_F <= gamma_n ||a||_F^2 =: e_P``, ``||Q~ - Q||_F <=
    gamma_p ||b||_F^2 =: e_Q`` and ``||X~ - P~ Q~||_F <= gamma_m ||P~||_F ||Q~||_F =: e_X``. Since
    ``||[X, Y]||_F <= sqrt(2) ||X||_F ||Y||_F`` (Boettcher-Wenzel),

    .. math:: |N~ - N| \le \sqrt2\,(e_P \|Q~\|_F + (\|P~\|_F + e_P) e_Q) + 2 e_X
              + (u + \gamma_{m^2}) N~,

    ``|D~ - D| <= e_P ||Q~||_F + (||P~||_F + e_P) e_Q + (2 gamma_{m^2} + u) D~`` for
    ``N = ||[P, Q]||_F`` and ``D = ||P||_F ||Q||_F``, and :func:`_ratio_bound` turns these into a
    bound on ``c``. On the small-rank path (``n + p < m``) the computed basis ``W~`` of the thin
    QR is within ``omega = 8 m eps`` of orthonormal per column, which adds ``delta_a =
    sqrt(n + p) (omega + gamma_m (1 + omega)) ||a||_F`` to the projected ``a`` (and the same for
    ``b``) before the products. docs/definitions.md, section 8.
    """
    a = _pow2_scaled(check_matrix(a_left, "a_left", "commutator", copy=False))
    b = _pow2_scaled(check_matrix(a_right, "a_right", "commutator", copy=False))
    m, n = a.shape
    p = b.shape[0]
    if b.shape[1] != m:
        raise InvalidFactorError(
            f"commutator: a_left has {m} rows (outputs) but a_right has {b.shape[1]} columns (inputs); "
            "an interface needs n_{l+1} = m_l."
        )
    fa, fb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    da = db = 0.0
    d = m
    if n + p < m:
        w, _ = np.linalg.qr(np.concatenate([a, b.T], axis=1))
        omega = SVD_BACKWARD * m * 2.0 * _U  # the thin QR's basis: Householder, gesdd's model level
        grow = float(np.sqrt(n + p)) * (omega + gamma(m) * (1.0 + omega))
        da, db = grow * fa, grow * fb
        a, b, d = w.T @ a, b @ w, n + p
    pm = a @ a.T
    qm = b.T @ b
    x = pm @ qm
    y = x - x.T
    num = float(np.linalg.norm(y))
    fp, fq = float(np.linalg.norm(pm)), float(np.linalg.norm(qm))
    den = fp * fq
    value = min(num / den, _MAX_C)
    # The projected factors' errors enter P and Q as 2 ||a|| delta_a + delta_a^2 (and likewise for b).
    e_p = gamma(a.shape[1]) * float(np.linalg.norm(a)) ** 2 + da * (2.0 * fa + da)
    e_q = gamma(b.shape[0]) * float(np.linalg.norm(b)) ** 2 + db * (2.0 * fb + db)
    e_x = gamma(d) * fp * fq
    g2 = gamma(d * d)
    cross = e_p * fq + (fp + e_p) * e_q
    num_err = float(np.sqrt(2.0)) * cross + 2.0 * e_x + (_U + g2) * num
    den_err = cross + (2.0 * g2 + _U) * den
    return Commutator(value, _ratio_bound(num / den, num_err, den, den_err), "direct")


def commutator_from_frames(u_left: ArrayLike, sigma_left: ArrayLike, vt_right: ArrayLike, sigma_right: ArrayLike,
                           *, shape_left: tuple[int, int], shape_right: tuple[int, int],
                           c: ArrayLike | None = None, omega_left: float | None = None,
                           omega_right: float | None = None) -> Commutator:
    r"""The section 8 commutator from the SVDs already at hand (route ``"frames"``), with its bound.

    With ``A_l = U S V^T`` (``U``: ``m x r``) and ``A_{l+1} = U' S' V'^T`` (``V'``: ``m x r'``),
    ``P = U D U^T`` and ``Q = V' D' V'^T`` (``D = S^2``, ``D' = S'^2``). When ``U`` is square
    (``r = m``), ``U^T [P, Q] U = D K - K D`` with ``K = U^T Q U = F^T F``, ``F = S' C`` and
    ``C = V'^T U``, so

    .. math:: \|[P, Q]\|_F = \|((d_i - d_j) K_{ij})_{ij}\|_F,\qquad
              \|P\|_F \|Q\|_F = \|d\|_2\,\|d'\|_2:

    one product for ``C`` (which the transport reuses) and one Gram product, against the three
    products of the direct route; no subtraction of nearly equal matrices. When ``V'`` is square
    (``r' = m``) the same holds in ``V'``'s frame with ``J = G G^T``, ``G = C S``, and the roles of
    ``d`` and ``d'`` exchanged. Otherwise :class:`ValueError` (use :func:`commutator_bounded`).

    The bound (docs/definitions.md, section 8, route "frames") has two parts:

    1. The computed SVD of ``A`` is the exact SVD ``U^ S~ V^^T`` of ``A + E`` with ``||E||_2 <=
       eta = omega sigma~_1``, ``omega`` each factor's error level (gesdd's model ``8 max(m, n) eps``
       unless given: a Gram SVD's measured one), and the computed frames are
       within ``omega`` of ``U^``, ``V^`` per column. Then ``||P^ - P||_F <= pi = sqrt(r) eta
       (2 sigma~_1 + 3 eta)`` (likewise ``pi'``), which moves ``N`` by at most ``sqrt(2) Delta``
       and ``D`` by at most ``Delta = pi ||d'|| + (||d|| + pi) pi'``.
    2. The frames route evaluated on the computed frames: ``||C~ - V'^^T U^||_F <= chi_C =
       sqrt(r') omega' + (1 + omega') sqrt(r) omega + gamma_m (1 + omega)(1 + omega') sqrt(r r')``;
       ``||F~ - F^||_F <= chi_F = sigma~'_1 chi_C + u ||F~||_F``; ``||K~ - K^||_F <= chi_K = chi_F
       (sigma~'_1 + ||F~||_F) + gamma_{r'} ||F~||_F^2``; the weights ``d_i - d_j`` and the
       products and sum add ``3 u d_1 ||K~||_F + (u + gamma_{m^2}) N~``, and ``D~`` is within
       ``gamma_{r + r' + 6} D~`` of ``||d|| ||d'||``.

    Parameters
    ----------
    u_left : array_like, shape (m, r)
        ``U`` of the left factor (columns by descending singular value).
    sigma_left : array_like, shape (r,)
        Its singular values, descending.
    vt_right : array_like, shape (r', m)
        ``V'^T`` of the right factor.
    sigma_right : array_like, shape (r',)
        Its singular values, descending.
    shape_left, shape_right : tuple of int
        The factors' shapes ``(m, n)`` and ``(p, m)`` (for the SVDs' backward errors).
    c : array_like, shape (r', r), optional
        ``C = V'^T U`` when the caller has formed it.
    omega_left, omega_right : float, optional
        The two SVDs' error levels (:attr:`physgsa.core.spectra.Spectrum.omega`); default gesdd's model.

    Returns
    -------
    Commutator
        Value, bound against the exact factors' commutator, and ``route="frames"``.
    """
    u = np.asarray(u_left, dtype=np.float64)
    vt = np.asarray(vt_right, dtype=np.float64)
    s = np.asarray(sigma_left, dtype=np.float64)
    sp = np.asarray(sigma_right, dtype=np.float64)
    m, r, rp = u.shape[0], s.shape[0], sp.shape[0]
    if not (r == m or rp == m):
        raise ValueError("commutator_from_frames needs a square frame (r = m or r' = m); use commutator_bounded.")
    cm = vt @ u if c is None else np.asarray(c, dtype=np.float64)
    d, dp = s * s, sp * sp
    if r == m:
        f = sp[:, None] * cm
        k = f.T @ f  # K = U^T Q U
        w, first = d, sp  # weights d_i - d_j; sigma' scales C's rows into F
    else:
        f = (cm * s[None, :]).T  # G^T, so that J = G G^T = f^T f
        k = f.T @ f  # J = V'^T P V'
        w, first = dp, s  # weights d'_i - d'_j; sigma scales C's columns into G
    y = (w[:, None] - w[None, :]) * k
    num = float(np.linalg.norm(y))
    nd, ndp = float(np.linalg.norm(d)), float(np.linalg.norm(dp))
    den = nd * ndp
    value = min(num / den, _MAX_C)
    # Part 1: the SVDs' backward errors (exact frames of nearby factors).
    om = svd_omega(shape_left) if omega_left is None else omega_left
    omp = svd_omega(shape_right) if omega_right is None else omega_right
    eta, etap = om * float(s[0]), omp * float(sp[0])
    pi = float(np.sqrt(r)) * eta * (2.0 * float(s[0]) + 3.0 * eta)
    pip = float(np.sqrt(rp)) * etap * (2.0 * float(sp[0]) + 3.0 * etap)
    delta = pi * ndp + (nd + pi) * pip
    b1 = _ratio_bound(num / den, float(np.sqrt(2.0)) * delta, den, delta)
    # Part 2: the route on the computed frames.
    chi_c = float(np.sqrt(rp)) * omp + (1.0 + omp) * float(np.sqrt(r)) * om + \
        gamma(m) * (1.0 + om) * (1.0 + omp) * float(np.sqrt(r * rp))
    nf = float(np.linalg.norm(f))
    s1 = float(first[0])
    chi_f = s1 * chi_c + _U * nf
    chi_k = chi_f * (s1 + nf) + gamma(f.shape[0]) * nf * nf
    num_err = float(w[0]) * chi_k + 3.0 * _U * float(w[0]) * float(np.linalg.norm(k)) + (_U + gamma(m * m)) * num
    den_err = gamma(r + rp + 6) * den
    b2 = _ratio_bound(num / den, num_err, den, den_err)
    return Commutator(value, min(_MAX_C, b1 + b2), "frames")


class HeadOverlaps(NamedTuple):
    """Result of :func:`head_overlaps`.

    Attributes
    ----------
    table : numpy.ndarray of float64, shape (n_heads_right, n_heads_left)
        ``table[h', h]``: overlap of reading head ``h'`` of ``A_{l+1}`` (rows) with writing head
        ``h`` of ``A_l`` (columns), in ``[0, 1]``.
    ranks_left : numpy.ndarray of int64, shape (n_heads_left,)
        Numerical rank ``k_h`` of each writing head's block of ``A_l``.
    ranks_right : numpy.ndarray of int64, shape (n_heads_right,)
        Numerical rank ``k_h'`` of each reading head's block of ``A_{l+1}``.
    heads_left : list
        Writing-head labels, in order of first appearance in ``col_heads_left``.
    heads_right : list
        Reading-head labels, in order of first appearance in ``row_heads_right``.
    """

    table: NDArray[np.float64]
    ranks_left: NDArray[np.int64]
    ranks_right: NDArray[np.int64]
    heads_left: list[Any]
    heads_right: list[Any]


def _layout(value: ArrayLike, size: int, name: str, axis: str) -> tuple[list[Any], list[NDArray[np.intp]]]:
    arr = np.asarray(value)
    if arr.ndim != 1 or arr.shape[0] != size:
        raise InvalidParameterError(
            f"The '{name}' parameter of head_overlaps must be a 1-D sequence with one head label per "
            f"{axis} ({size}). Got shape {arr.shape} instead."
        )
    labels = arr.tolist()
    heads = list(dict.fromkeys(labels))
    where: dict[Any, list[int]] = {h: [] for h in heads}
    for i, h in enumerate(labels):
        where[h].append(i)
    return heads, [np.asarray(where[h], dtype=np.intp) for h in heads]


def _range_basis(block: NDArray[np.float64], rtol: float | None) -> NDArray[np.float64]:
    """Orthonormal basis (d x k) of the column space of ``block`` (d x c), k its numerical rank."""
    if not block.any():
        return np.zeros((block.shape[0], 0))
    u, s, _ = _svd(_pow2_scaled(block))
    tol = (max(block.shape) * np.finfo(np.float64).eps if rtol is None else rtol) * s[0]
    return u[:, : int(np.count_nonzero(s > tol))]


def head_overlaps(a_left: ArrayLike, col_heads_left: ArrayLike, a_right: ArrayLike, row_heads_right: ArrayLike, *,
                  rtol: float | None = None) -> HeadOverlaps:
    r"""Head subspace overlap table at an interface.

    definitions.md section 8. Writing heads of layer ``l``: for each head ``h`` (the columns of
    ``A_l`` whose label in ``col_heads_left`` is ``h``), :math:`P_h` is an orthonormal basis
    (``d x k_h``) of :math:`\mathrm{range}(A_l[:, \mathrm{cols}_h])`, the subspace of the
    interface that head writes to. Reading heads of layer ``l+1``: for each head ``h'`` (rows of
    ``A_{l+1}`` labelled ``h'`` in ``row_heads_right``), :math:`Q_{h'}` is an orthonormal basis
    (``d x k_{h'}``) of :math:`\mathrm{range}(A_{l+1}[\mathrm{rows}_{h'}, :]^T)`, the subspace
    it reads. The overlap is

    .. math:: O_{h' h} = \frac{\|Q_{h'}^T P_h\|_F^2}{\min(k_{h'}, k_h)} \in [0, 1],

    the sum of the squared principal-angle cosines between the two subspaces over the largest
    possible number of them: 0 for orthogonal subspaces, 1 when the smaller is contained in the
    larger. The ranks come from each block's SVD with the threshold
    ``sigma > rtol * sigma_1``, ``rtol = max(block.shape) * eps`` by default. A head whose block
    is zero has rank 0 and all its overlaps are 0 (its subspace is {0}).

    Parameters
    ----------
    a_left : array_like, shape (d, n_l)
        ``A_l`` (rows = the interface space).
    col_heads_left : array_like, shape (n_l,)
        Head label of each column of ``A_l``; heads are the distinct labels in order of first
        appearance.
    a_right : array_like, shape (m_{l+1}, d)
        ``A_{l+1}`` (columns = the interface space).
    row_heads_right : array_like, shape (m_{l+1},)
        Head label of each row of ``A_{l+1}``.
    rtol : float, optional
        Relative rank threshold (``>= 0``); default ``max(block.shape) * eps`` per block.

    Returns
    -------
    HeadOverlaps
        ``(table, ranks_left, ranks_right, heads_left, heads_right)``; ``table`` is
        ``n_heads_right x n_heads_left`` float64 (rows = reading heads of ``A_{l+1}``, columns =
        writing heads of ``A_l``).

    Notes
    -----
    Swapping the roles (``head_overlaps(a_right.T, row_heads_right, a_left.T, col_heads_left)``)
    gives the transposed table: the overlap is symmetric in the two subspaces.
    """
    a = check_matrix(a_left, "a_left", "head_overlaps", copy=False)
    b = check_matrix(a_right, "a_right", "head_overlaps", copy=False)
    d = a.shape[0]
    if b.shape[1] != d:
        raise InvalidFactorError(
            f"head_overlaps: a_left has {d} rows (outputs) but a_right has {b.shape[1]} columns (inputs); "
            "an interface needs n_{l+1} = m_l."
        )
    if rtol is not None:
        if isinstance(rtol, bool) or not isinstance(rtol, numbers.Real) or not (0.0 <= float(rtol) < np.inf):
            raise InvalidParameterError(
                f"The 'rtol' parameter of head_overlaps must be None or a finite float >= 0. Got {rtol!r} instead."
            )
        rtol = float(rtol)
    heads_l, cols = _layout(col_heads_left, a.shape[1], "col_heads_left", "column of a_left")
    heads_r, rows = _layout(row_heads_right, b.shape[0], "row_heads_right", "row of a_right")
    pb = [_range_basis(a[:, c], rtol) for c in cols]
    qb = [_range_basis(b[r, :].T, rtol) for r in rows]
    kl = np.array([x.shape[1] for x in pb], dtype=np.int64)
    kr = np.array([x.shape[1] for x in qb], dtype=np.int64)
    # One product for every pair: G = Q_all^T P_all, then sum G^2 over each (h', h) block.
    g2 = np.square(np.concatenate(qb, axis=1).T @ np.concatenate(pb, axis=1))
    ind_r = np.repeat(np.eye(len(qb)), kr, axis=1)  # n_heads_right x sum k_h'
    ind_l = np.repeat(np.eye(len(pb)), kl, axis=1)  # n_heads_left x sum k_h
    sums = ind_r @ g2 @ ind_l.T
    den = np.minimum(kr[:, None], kl[None, :])
    table = np.zeros(den.shape)
    np.divide(sums, den, out=table, where=den > 0)
    return HeadOverlaps(np.clip(table, 0.0, 1.0), kl, kr, heads_l, heads_r)
