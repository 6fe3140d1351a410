"""The graded certificate: which parts of the structure are certified (definitions section 5b).

``rho_static`` is one number for a whole interface: the smallest margin of any (group, unit)
pair or pair of groups. The graded certificate keeps every margin: each membership ``u in S_g``
has its own margin ``m_g(u) = |e_g(u) - theta_g|``, each column its radius
``r(u) = min_g m_g(u)``, each pair of groups a radius ``r_gh`` under which its edge status
cannot change even where memberships do. From these:

- the **robustness profile**: the certified column, membership, pair, edge and hub shares at every
  perturbation size ``r``, an exact step function (:func:`robustness_profile`);
- the **certificate at the truncation error**: per-element error bounds ``beta_g(u)``, a priori
  from the two windows alone (:func:`element_bounds`), or the exact ``||E[G_g, u]||_F``, decide
  element by element what is certified (:func:`certify_elements`);
- **graded ICM labels** (:func:`graded_labels`): a row's label is certified when its margins
  exceed what the uncertain columns and the row's own error can change.

All thresholds (``theta_g``, ``kappa``) stay fixed on ``A0``. Pair arithmetic is done in units of
``ref.scale`` (a power of two at the largest unit energy, as in :mod:`.certificate`), so that
energies near 1e-162 neither underflow nor lose digits when multiplied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .linalg import UNIT_ROUNDOFF as _U
from .linalg import gamma
from .spectra import Spectrum
from .structure import CORE, Partition, Reference, Structure, pow2_scale, row_profiles_scaled
from .validation import CertificateBugError

__all__ = ["Graded", "Profile", "Shares", "certify_elements", "change_bounds", "check_elements", "element_bounds",
           "gram_spectral_norm",
           "grade", "graded_labels", "pair_radii", "robustness_profile", "row_error_bounds"]


# ---------------------------------------------------------------------------------------------
# Radii


def pair_radii(ref: Reference, margin: np.ndarray) -> np.ndarray:
    r"""``r_gh = sup{r : D_gh(r) < |w_gh - kappa|}``: each pair's radius with memberships that may change.

    Definitions section 5b. With ``U(r) = {u : m_g(u) <= r or m_h(u) <= r}`` and ``I = S_g ∩ S_h``,

    .. math:: D_{gh}(r) = \sum_{u \in U(r)} e_g(u) e_h(u)
              + r (\|e_g|_{I \cup U(r)}\|_2 + \|e_h|_{I \cup U(r)}\|_2) + r^2,

    and ``D_gh(r) = 0`` while ``I ∪ U(r)`` is empty. ``U(r)`` is constant between consecutive
    breakpoints ``t_u = min(m_g(u), m_h(u))``, where ``D`` is the quadratic ``r^2 + a r + S``;
    ``D`` is non-decreasing, so the radius is the first breakpoint at which ``D`` already reaches
    ``mu_gh``, or the positive root of the quadratic inside the first interval where it crosses.
    Exact, not sampled. Returns an ``(m, m)`` array (diagonal ``inf``) in the matrix's own units.
    """
    s = ref.structure
    c = ref.scale
    e = s.energies / c
    mg = margin / c
    m = e.shape[0]
    out = np.full((m, m), np.inf)
    for g in range(m):
        for h in range(g + 1, m):
            mu = abs(float(s.w_scaled[g, h]) - ref.kappa_scaled)
            out[g, h] = out[h, g] = c * _pair_radius(e[g], e[h], s.active[g] & s.active[h],
                                                     np.minimum(mg[g], mg[h]), mu)
    return out


def _pair_radius(eg: np.ndarray, eh: np.ndarray, shared: np.ndarray, t: np.ndarray, mu: float) -> float:
    """One pair's radius (scaled units); ``t[u]`` is the size at which unit ``u`` becomes uncertain.

    While ``I ∪ U(r)`` is empty no unit can be shared, ``w_gh`` stays 0 and the status (no edge)
    is certified even where ``mu_gh = 0`` (``kappa = 0``).
    """
    order = np.argsort(t, kind="stable")
    t_sorted = t[order]
    eg2, eh2 = eg * eg, eh * eh
    # Interval j (j = 0..n): [lo_j, hi_j) with the first j units of `order` uncertain.
    new_g = np.where(shared, 0.0, eg2)[order]  # units of I are counted from the start
    new_h = np.where(shared, 0.0, eh2)[order]
    sg = float(np.sum(eg2[shared])) + np.concatenate([[0.0], np.cumsum(new_g)])
    sh = float(np.sum(eh2[shared])) + np.concatenate([[0.0], np.cumsum(new_h)])
    big_s = np.concatenate([[0.0], np.cumsum((eg * eh)[order])])
    a = np.sqrt(sg) + np.sqrt(sh)
    lo = np.concatenate([[0.0], t_sorted])
    hi = np.concatenate([t_sorted, [np.inf]])
    nonempty = np.ones(lo.shape[0], dtype=bool)
    nonempty[0] = bool(shared.any())
    d_lo = big_s + a * lo + lo * lo
    rest = mu - big_s
    with np.errstate(invalid="ignore", divide="ignore"):
        root = np.where(rest > 0, 2.0 * rest / (a + np.sqrt(a * a + 4.0 * np.maximum(rest, 0.0))), 0.0)
    reached = nonempty & ((d_lo >= mu) | (root < hi))
    j = int(np.argmax(reached))  # the last interval (hi = inf) always reaches: D grows like r^2
    return float(lo[j] if d_lo[j] >= mu else root[j])


# ---------------------------------------------------------------------------------------------
# The robustness profile


@dataclass(frozen=True)
class Profile:
    """The robustness profile as a step function: row ``i`` holds the shares for ``r`` in ``[r_i, r_{i+1})``.

    ``r[0] = 0``. ``column_share`` and ``membership_share`` are energy shares of ``||A0||_F^2``;
    ``pair_share`` is certified pairs / pairs, ``edge_share`` certified edges / edges and
    ``hub_share`` certified hubs / hubs (``nan`` where there is nothing to count: no pair, edge or
    hub; the tables write it as null).
    """

    r: np.ndarray
    column_share: np.ndarray
    membership_share: np.ndarray
    pair_share: np.ndarray
    edge_share: np.ndarray
    hub_share: np.ndarray

    def at(self, r: float) -> dict[str, float]:
        """The shares at perturbation size ``r`` (the step containing ``r``)."""
        i = int(np.searchsorted(self.r, r, side="right")) - 1
        return {name: float(getattr(self, name)[i]) for name in
                ("column_share", "membership_share", "pair_share", "edge_share", "hub_share")}


def _survival(radii: np.ndarray, weights: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``sum_{i : radii_i > r} weights_i`` at each ``r`` of ``grid`` (sorted)."""
    if radii.size == 0:
        return np.zeros(grid.shape[0])
    order = np.argsort(radii, kind="stable")
    suffix = np.concatenate([np.cumsum(weights[order][::-1])[::-1], [0.0]])
    # radii_i > r  <=>  i past the last radius <= r.
    return suffix[np.searchsorted(radii[order], grid, side="right")]


def robustness_profile(ref: Reference, margin: np.ndarray, pair_radius: np.ndarray) -> Profile:
    """The exact robustness profile of an interface (definitions section 5b).

    For every ``r >= 0``: the certified column share ``sum_{u : r(u) > r} ||A0[:, u]||^2 /
    ||A0||_F^2``; the certified membership share ``sum_{(g, u) : m_g(u) > r} e_g(u)^2 /
    ||A0||_F^2``; the certified pairs ``#{g < h : r_gh > r} / #{g < h}`` and edges among them;
    the certified hubs ``#{hubs u : r(u) > r}`` over the hubs. Each is a step function whose
    steps are the radii, so evaluating at ``r = 0`` and at every distinct radius gives it whole.
    """
    s = ref.structure
    e = s.energies / ref.scale
    e2 = e * e
    total = float(e2.sum())
    unit_r = margin.min(axis=0) if margin.shape[0] else np.zeros(margin.shape[1])
    iu = np.triu_indices(e.shape[0], 1)
    pr = pair_radius[iu]
    edge = s.edges[iu]
    hub_r = unit_r[s.hubs]
    grid = np.unique(np.concatenate([[0.0], margin.ravel(), pr[np.isfinite(pr)]]))
    grid = grid[grid >= 0.0]

    def share(radii: np.ndarray, weights: np.ndarray, whole: float) -> np.ndarray:
        if not whole > 0:
            return np.full(grid.shape[0], np.nan)
        out = np.minimum(_survival(radii, weights, grid) / whole, 1.0)
        # Nothing lost yet is exactly 1 (a sum in another order may read 1 - 1 ulp).
        out[np.searchsorted(np.sort(radii), grid, side="right") == 0] = 1.0
        return out

    return Profile(
        r=grid,
        column_share=share(unit_r, e2.sum(axis=0), total),
        membership_share=share(margin.ravel(), e2.ravel(), total),
        pair_share=share(pr, np.ones(pr.shape[0]), float(pr.shape[0])),
        edge_share=share(pr[edge], np.ones(int(edge.sum())), float(edge.sum())),
        hub_share=share(hub_r, np.ones(hub_r.shape[0]), float(hub_r.shape[0])),
    )


# ---------------------------------------------------------------------------------------------
# Per-element error bounds


def _column_block_norms(sigma: np.ndarray, vt: np.ndarray, part: Partition) -> np.ndarray:
    """``||diag(sigma) V^T[:, C_u]||_F`` per column unit ``u`` (the norm of ``A e_u``, or of a block)."""
    sq = (sigma * sigma) @ (vt * vt)
    if part.unit_strategy != "channels":
        sq = sq @ part.unit_indicator()
    out: np.ndarray = np.sqrt(sq)
    return out


def gram_spectral_norm(block: np.ndarray) -> float:
    r"""An upper bound on ``||B||_2`` from the Gram matrix of ``B``'s smaller side (the fast route).

    With ``B`` scaled by a power of two ``c`` (exact; ``b = B / c``) and ``G~ = fl(b b^T)`` (or
    ``b^T b``, whichever is smaller), ``||G~ - b b^T||_2 <= gamma_n ||b||_F^2`` (``n`` the inner
    size), and the symmetric eigensolver returns ``lambda~`` within ``4 s eps ||G~||_2`` of
    ``lambda_max(G~)`` (backward stability, ``s`` the Gram's size). So, by Weyl,

    .. math:: \|B\|_2^2 \le c^2 \bigl(\lambda~ (1 + 4 s \epsilon) + \gamma_n \|b\|_F^2\bigr),

    and the square root is raised by ``4 u`` for its own rounding and that of ``||b||_F^2``. The
    bound exceeds ``||B||_2`` by at most about ``n u`` times ``B``'s stable rank, relatively
    (docs/definitions.md, "Numerical routes").
    """
    c = pow2_scale(float(np.max(np.abs(block))))
    b = block / c
    small = b @ b.T if b.shape[0] <= b.shape[1] else b.T @ b
    n = max(b.shape)
    lam = max(float(np.linalg.eigvalsh(small)[-1]), 0.0)
    fro2 = float(np.einsum("ij,ij->", b, b))
    s = small.shape[0]
    upper = lam * (1.0 + 8.0 * s * _U) + gamma(n) * fro2
    return c * float(np.sqrt(upper)) * (1.0 + 4.0 * _U)


def _group_spectral_norms(x: np.ndarray, part: Partition, *, gram: bool = False) -> np.ndarray:
    """``||x[G_g, :]||_2`` (largest singular value of each group's row block).

    ``gram=True`` (the fast route): :func:`gram_spectral_norm`, an upper bound within about
    ``n u`` relative; else the SVD's largest value (the reference route).
    """
    out = np.zeros(part.n_groups)
    for g in range(part.n_groups):
        block = x[part.groups == g]
        if block.size and gram:
            out[g] = gram_spectral_norm(block) if np.any(block) else 0.0
        elif block.size:
            out[g] = float(np.linalg.svd(block, compute_uv=False)[0])
    return out


def element_bounds(left: Spectrum, right: Spectrum, k: int, kp: int, part: Partition, *,
                   gram: bool = False) -> np.ndarray:
    r"""A priori bounds ``beta_g(u) >= ||E[G_g, u]||_F`` from the two windows (definitions section 5b).

    With ``A = A_hat_l``, ``A' = A_hat_{l+1}`` and their rank-``k`` / ``k'`` truncations,
    ``E = A' (A - A_w) + (A' - A'_w) A_w``, so for the rows of ``G_g`` and the columns of unit ``u``

    .. math:: \|E[G_g, u]\|_F \le \beta_g(u) = \|A'[G_g, :]\|_2 \|(A - A_w)[:, u]\|_F
              + \|(A' - A'_w)[G_g, :]\|_2 \|A_w[:, u]\|_F

    (``||XY||_F <= ||X||_2 ||Y||_F``). The column norms come from the SVD without subtraction
    (``||(A - A_w) e_u||^2 = sum_{j > k} sigma_j^2 V_{uj}^2``), and ``(A' - A'_w)[G_g, :] =
    U'[G_g, k':] S'_{>k'} V'^T_{>k'}`` has the spectral norm of ``U'[G_g, k':] S'_{>k'}``.
    ``gram=True`` (the fast route) takes the spectral norms from the row blocks' Gram matrices,
    as upper bounds (:func:`gram_spectral_norm`).
    """
    tail_cols = _column_block_norms(left.sigma[k:], left.vt[k:], part)
    win_cols = _column_block_norms(left.sigma[:k], left.vt[:k], part)
    right_norm = _group_spectral_norms(right.a_hat, part, gram=gram)
    right_tail = _group_spectral_norms(right.u[:, kp:] * right.sigma[kp:], part, gram=gram)
    beta: np.ndarray = right_norm[:, None] * tail_cols[None, :] + right_tail[:, None] * win_cols[None, :]
    return beta


def row_error_bounds(left: Spectrum, right: Spectrum, k: int, kp: int) -> np.ndarray:
    """A priori bounds on ``||E[i, :]||_2`` per row: ``||A'[i, :]|| sigma_{k+1} + ||(A' - A'_w)[i, :]|| sigma_1``.

    From ``E = A' (A - A_w) + (A' - A'_w) A_w`` with ``||A - A_w||_2 = sigma_{k+1}(A)`` and
    ``||A_w||_2 = sigma_1(A)`` (definitions section 5b, graded labels).
    """
    s_next = float(left.sigma[k]) if k < left.sigma.shape[0] else 0.0
    s_top = float(left.sigma[0]) if left.sigma.shape[0] else 0.0
    rows_full = np.linalg.norm(right.a_hat, axis=1)
    rows_tail = np.linalg.norm(right.u[:, kp:] * right.sigma[kp:], axis=1)
    out: np.ndarray = rows_full * s_next + rows_tail * s_top
    return out


def _column_unit_norms(x: np.ndarray, part: Partition) -> np.ndarray:
    """``||x[:, C_u]||_F`` per column unit ``u``, with ``x`` divided by a power of two before squaring."""
    c = pow2_scale(float(np.max(np.abs(x)))) if x.size else 1.0
    y = x / c
    sq = np.einsum("ij,ij->j", y, y)
    if part.unit_strategy != "channels":
        sq = sq @ part.unit_indicator()
    out: np.ndarray = c * np.sqrt(sq)
    return out


def change_bounds(w_left: np.ndarray, w_right: np.ndarray, d_left: np.ndarray, d_right: np.ndarray,
                  part: Partition, *, base_allowance: tuple[float, float] = (0.0, 0.0),
                  change_allowance: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    r"""Per-element bounds on a change of the windowed product, from the factor changes (docs/definitions.md).

    With ``W = w_left``, ``W' = w_right`` BASE's truncated normalized factors and ``D = d_left``,
    ``D' = d_right`` their changes (OTHER's truncations at BASE's windows minus BASE's),
    ``A_o - A0_b = (W' + D')(W + D) - W' W = D' W + W' D + D' D``, so for the rows of ``G_g``
    and the columns ``C_u`` of unit ``u`` (``||X Y||_F <= ||X||_2 ||Y||_F``)

    .. math:: \|(A_o - A0_b)[G_g, C_u]\|_F \le \|D'[G_g, :]\|_2 \|W[:, C_u]\|_F
              + \|W'[G_g, :]\|_2 \|D[:, C_u]\|_F + \|D'[G_g, :]\|_2 \|D[:, C_u]\|_F.

    The matrices are the computed ones. ``base_allowance = (w_l, w_r)`` bounds
    ``||W~ - W||_F`` for BASE's two truncations and ``change_allowance`` the same for
    ``D~ - D`` (:func:`physgsa.core.spectra.truncation_allowance`); each norm above is
    raised by its allowance (a submatrix's norm is at most the whole's), so the bounds hold
    for the exact truncations too. Returns an ``(m, n_units)`` array; with zero allowances it
    is exactly 0 where both changes are 0.
    """
    dr = _group_spectral_norms(d_right, part) + change_allowance[1]
    wr = _group_spectral_norms(w_right, part) + base_allowance[1]
    wl = _column_unit_norms(w_left, part) + base_allowance[0]
    dl = _column_unit_norms(d_left, part) + change_allowance[0]
    out: np.ndarray = dr[:, None] * wl[None, :] + wr[:, None] * dl[None, :] + dr[:, None] * dl[None, :]
    return out


# ---------------------------------------------------------------------------------------------
# The certificate at given per-element errors


@dataclass(frozen=True)
class Shares:
    """What is certified against per-element error bounds ``err[g, u] >= ||E[G_g, u]||_F``.

    ``memberships[g, u]``: ``err + delta < m_g(u)``; ``columns[u]``: every membership of ``u``;
    ``hubs[u]``: a hub whose column is certified; ``pairs[g, h]``: ``D_gh < |w_gh - kappa|`` with
    the per-element pair bound. Shares are energy shares of ``||A0||_F^2`` (``None`` for a zero A0).
    """

    memberships: np.ndarray
    columns: np.ndarray
    hubs: np.ndarray
    pairs: np.ndarray
    membership_share: float | None
    column_share: float | None
    n_columns: int
    n_hubs: int
    n_pairs: int
    n_edges: int

    def summary(self) -> dict[str, float | int | None]:
        """The counts and shares as plain numbers (for tables and JSON)."""
        return {"membership_share": self.membership_share, "column_share": self.column_share,
                "columns": self.n_columns, "hubs": self.n_hubs, "pairs": self.n_pairs, "edges": self.n_edges}


def _pairs_certified(s: Structure, e: np.ndarray, b: np.ndarray, members: np.ndarray, pairs: np.ndarray,
                     kappa_scaled: float) -> None:
    """Fill ``pairs[g, h]`` with the pair test of :func:`certify_elements` (scaled units)."""
    m = e.shape[0]
    for g in range(m):
        for h in range(g + 1, m):
            certain = members[g] & members[h]
            inner = certain & s.active[g] & s.active[h]
            if not inner.any() and certain.all() and not (s.active[g] & s.active[h]).any():
                # No unit is or can become shared: w_gh stays 0 (definitions section 5b).
                pairs[g, h] = pairs[h, g] = True
                continue
            d = float(np.sum((b[g] * e[h] + e[g] * b[h] + b[g] * b[h])[inner]))
            d += float(np.sum(((e[g] + b[g]) * (e[h] + b[h]))[~certain]))
            pairs[g, h] = pairs[h, g] = d < abs(float(s.w_scaled[g, h]) - kappa_scaled)


def certify_elements(ref: Reference, margin: np.ndarray, err: np.ndarray, delta: float = 0.0) -> Shares:
    r"""Element-by-element certificate at per-block error bounds ``err`` (definitions section 5b).

    A membership is certified iff ``err_g(u) + delta < m_g(u)`` (``delta`` covers the rounding
    of the computed products); a column iff all its memberships are; a hub iff its column is. A
    pair ``(g, h)`` iff

    .. math:: D_{gh} = \sum_{u \in I,\ certain} (\beta_g e_h + e_g \beta_h + \beta_g \beta_h)
              + \sum_{u\ uncertain} (e_g + \beta_g)(e_h + \beta_h) < |w_{gh} - \kappa|,

    ``beta = err + delta``, ``I = S_g ∩ S_h``, a unit uncertain for the pair where either of its
    two memberships is. Proof: a certain unit of ``I`` stays in ``I`` and moves ``e_g e_h`` by at
    most ``beta_g e_h + e_g beta_h + beta_g beta_h``; an uncertain unit contributes between 0 and
    ``(e_g + beta_g)(e_h + beta_h)`` after the change, and at most that before it; a certain unit
    outside ``I`` stays outside.
    """
    s = ref.structure
    c = ref.scale
    beta = err + delta
    members = beta < margin
    columns: np.ndarray = np.asarray(members.all(axis=0))
    hubs = s.hubs & columns
    e = s.energies / c
    b = beta / c
    e2 = e * e
    total = float(e2.sum())
    m = e.shape[0]
    pairs = np.zeros((m, m), dtype=bool)
    # Bounds far above the energies (a product far above its window) overflow to inf here, which
    # certifies nothing, as it must not.
    with np.errstate(over="ignore", invalid="ignore"):
        _pairs_certified(s, e, b, members, pairs, ref.kappa_scaled)
    iu = np.triu_indices(m, 1)
    return Shares(
        memberships=members, columns=columns, hubs=hubs, pairs=pairs,
        membership_share=float(e2[members].sum() / total) if total > 0 else None,
        column_share=float(e2[:, columns].sum() / total) if total > 0 else None,
        n_columns=int(columns.sum()), n_hubs=int(hubs.sum()), n_pairs=int(pairs[iu].sum()),
        n_edges=int((pairs & s.edges)[iu].sum()),
    )


def check_elements(s0: Structure, s1: Structure, shares: Shares, where: str, how: str) -> None:
    """Raise :class:`CertificateBugError` where a certified element differs on ``A1`` (the direct check).

    A certified membership keeps ``u in S_g``; a certified column keeps its degree and the mask
    code of every group on it; a certified hub stays a hub; a certified pair keeps its edge status.
    """
    bad = []
    if np.any(shares.memberships & (s0.active != s1.active)):
        bad.append("a certified membership")
    cols = shares.columns
    if np.any(cols & (s0.degree != s1.degree)) or np.any(cols[None, :] & (s0.codes != s1.codes)):
        bad.append("a certified column")
    if np.any(shares.hubs & (s0.hubs != s1.hubs)):
        bad.append("a certified hub")
    if np.any(shares.pairs & (s0.edges != s1.edges)):
        bad.append("a certified pair")
    if bad:
        raise CertificateBugError(
            f"Interface {where}: {' and '.join(bad)} ({how}) changed in the direct check. This is a bug in physgsa."
        )


# ---------------------------------------------------------------------------------------------
# Graded ICM labels


def graded_labels(a0: np.ndarray, part: Partition, codes: np.ndarray, label: np.ndarray, delta_rho: np.ndarray,
                  uncertain_units: np.ndarray, row_err: np.ndarray, *, tau_e: float,
                  profiles: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    r"""Which rows' ICM labels are certified, graded (definitions section 5b, proof in docs/definitions.md).

    For row ``x = A0[i, :]`` of group ``g`` with core set ``K`` and the set ``V`` of its columns in
    uncertain units, any perturbation with ``||E[i, :]|| <= eps_i`` leaves a core set ``K'`` with
    ``K \ V ⊆ K' ⊆ K ∪ V``, so with ``phi_S(x) = ||x_S|| / ||x||`` (1-Lipschitz in ``x / ||x||``,
    which moves by at most ``2 ||e|| / ||x||``):

    ``phi_{K \ V}(x) - 2 eps_i / ||x|| <= sqrt f_K(x + e) <= phi_{K ∪ V}(x) + 2 eps_i / ||x||``.

    SC is certified iff the left side exceeds ``sqrt(tau_E)``; a non-SC label iff the right side is
    below it and (its SA / ST split resting on ``kappa_i``, whose centroid is fixed and which
    does not depend on the masks) ``2 eps_i / ||x_c|| < delta_rho``. Zero rows are never certified.

    ``uncertain_units`` (units) and ``row_err`` (rows) may each carry a leading axis of cases
    (the a priori and the measured certificate): the answer then has that axis too, and what
    the cases share (the scaled rows, their core energies and centred norms) is computed once.
    ``profiles``: ``row_profiles_scaled(A0)`` when the caller has it.
    """
    unc_all, err_all = np.asarray(uncertain_units, dtype=bool), np.asarray(row_err, dtype=np.float64)
    stacked = err_all.ndim == 2
    if unc_all.ndim != err_all.ndim or (stacked and unc_all.shape[0] != err_all.shape[0]):
        raise ValueError("graded_labels: uncertain_units and row_err need the same leading axis of cases "
                         f"(got shapes {unc_all.shape} and {err_all.shape}).")
    unc_all, err_all = np.atleast_2d(unc_all), np.atleast_2d(err_all)
    # Rows divided by their largest |entry| before squaring, as the ICM reads them (scale-free).
    _, _, rmax, scaled = row_profiles_scaled(a0) if profiles is None else profiles
    nonzero = rmax > 0
    sq = scaled * scaled
    total = np.where(nonzero, sq.sum(axis=1), 1.0)
    core_cols = (codes == CORE)[part.groups][:, part.units]
    core = (sq * core_cols).sum(axis=1)
    norms = np.sqrt(total)
    xc = scaled - scaled.mean(axis=1, keepdims=True)
    xc_norm = np.linalg.norm(xc, axis=1)
    del xc
    sc = label == "SC"
    root = np.sqrt(tau_e)
    out = []
    for uncertain, row_e in zip(unc_all, err_all):
        unc_cols = uncertain[part.units][None, :]
        core_lost = (sq * (core_cols & unc_cols)).sum(axis=1)
        core_gained = (sq * (~core_cols & unc_cols)).sum(axis=1)
        err = np.divide(row_e, rmax, out=np.full_like(row_e, np.inf), where=nonzero)
        shift = 2.0 * err / norms
        low = np.sqrt(np.maximum(core - core_lost, 0.0) / total) - shift
        high = np.sqrt(np.minimum(core + core_gained, total) / total) + shift
        with np.errstate(divide="ignore", invalid="ignore"):
            bound_rho = np.where(xc_norm > 0, 2.0 * err / np.where(xc_norm > 0, xc_norm, 1.0), np.inf)
        ok = np.where(sc, low > root, (high < root) & (bound_rho < delta_rho))
        out.append(ok & nonzero & (label != "zero"))
    result: np.ndarray = np.stack(out) if stacked else out[0]
    return result


# ---------------------------------------------------------------------------------------------
# Everything together


@dataclass(frozen=True)
class Graded:
    """The graded certificate of one interface (definitions section 5b).

    ``margin[g, u] = m_g(u)``; ``unit_radius[u] = r(u)``; ``pair_radius[g, h] = r_gh``;
    ``profile`` the robustness profile; ``beta`` the a priori per-element bounds and ``error`` the
    exact ``||E[G_g, u]||_F``; ``apriori`` / ``measured`` what each certifies; ``rows_apriori`` /
    ``rows_measured`` the graded ICM labels.
    """

    margin: np.ndarray
    unit_radius: np.ndarray
    pair_radius: np.ndarray
    profile: Profile
    beta: np.ndarray
    error: np.ndarray
    apriori: Shares
    measured: Shares
    rows_apriori: np.ndarray
    rows_measured: np.ndarray


def grade(ref: Reference, beta: np.ndarray, error: np.ndarray, *, delta: float = 0.0) -> tuple[
        np.ndarray, np.ndarray, Profile, Shares, Shares]:
    """Margins, radii, profile and the a priori / measured element certificates of one reference."""
    margin = np.abs(ref.structure.energies - ref.theta[:, None])
    pr = pair_radii(ref, margin)
    prof = robustness_profile(ref, margin, pr)
    return margin, pr, prof, certify_elements(ref, margin, beta, delta), certify_elements(ref, margin, error, delta)
