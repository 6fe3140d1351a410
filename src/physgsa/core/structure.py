"""The Physical Alignment Matrix and its structure (definitions section 4).

The PAM pair is ``A0 = M_w`` (truncated transport, the reference) and ``A1 = M`` (full).
Row groups, column units, thresholds ``theta_g`` and the graph level ``kappa`` are fitted on
``A0`` once (:func:`fit_reference`) and reused unchanged for any perturbed matrix
(:func:`structure_of`), so that two structures can be compared entry by entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .validation import InvalidParameterError, spell

__all__ = [
    "Partition",
    "Reference",
    "Structure",
    "row_groups",
    "fro_norm",
    "pow2_scale",
    "row_profiles",
    "row_profiles_scaled",
    "THRESHOLD_RULES",
    "SUPPORT_QUANTILE",
    "OUTLIER_FACTOR",
    "quantile_counts",
    "outlier_units",
    "column_units",
    "unit_energies",
    "fit_thresholds",
    "fit_reference",
    "structure_of",
    "structure_from_energies",
    "compare",
    "expand_codes",
    "decomposition",
    "decomposition_from_blocks",
    "block_energy",
    "source_incidence",
    "NOISE",
    "CORE",
    "OVERLAP",
]

NOISE, CORE, OVERLAP = 0, 1, 2


@dataclass(frozen=True)
class Partition:
    """Row groups ``G_1..G_m`` (a group index per row) and column units (a unit per column)."""

    groups: np.ndarray
    units: np.ndarray
    n_groups: int
    n_units: int
    group_strategy: str
    unit_strategy: str

    def group_indicator(self) -> np.ndarray:
        """``(n_groups, rows)`` 0/1 matrix, so that ``G @ X`` sums rows by group."""
        g = np.zeros((self.n_groups, self.groups.shape[0]))
        g[self.groups, np.arange(self.groups.shape[0])] = 1.0
        return g

    def unit_indicator(self) -> np.ndarray:
        """``(cols, n_units)`` 0/1 matrix, so that ``X @ U`` sums columns by unit."""
        u = np.zeros((self.units.shape[0], self.n_units))
        u[np.arange(self.units.shape[0]), self.units] = 1.0
        return u


def _compact(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Relabel to ``0..m-1`` in order of first appearance (a canonical, seed-free labelling)."""
    _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first, kind="stable"), kind="stable")
    return order[inv].astype(np.int64), int(first.shape[0])


def pow2_scale(x: float) -> float:
    """The power of two nearest above ``x > 0`` (1 for ``x = 0``).

    Dividing by it is exact in binary floating point, so a quantity computed on ``A / c`` and
    multiplied back by ``c`` is the same number wherever nothing under- or overflowed: scaling
    before squaring costs no accuracy and changes no result on ordinary matrices.
    """
    return float(np.ldexp(1.0, int(np.frexp(x)[1]))) if x > 0 else 1.0


def fro_norm(a: np.ndarray) -> float:
    """``||A||_F`` with ``A`` divided by a power of two near its largest entry before squaring."""
    if a.size == 0:
        return 0.0
    # max(max A, -min A) is max |A| exactly, without a copy of |A|; A / c is formed once
    # (einsum of one array with itself reads the same values as of two equal copies).
    c = pow2_scale(max(float(np.max(a)), -float(np.min(a))))
    x = a / c
    return c * float(np.sqrt(np.einsum("ij,ij->", x, x)))


def row_profiles(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalized ``|rows|`` of ``a``, the row norms ``||a_i||_2`` and the row maxima ``max_j |a_ij|``.

    Each row is divided by its own largest entry before squaring, so a row whose entries are
    around 1e-170 (whose squares underflow to zero) keeps its norm and its profile: a row is
    zero only if every entry is exactly 0. A zero row's profile is the zero vector.
    """
    prof, norms, rmax, _ = row_profiles_scaled(a)
    return prof, norms, rmax


def row_profiles_scaled(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`row_profiles` and the row-scaled magnitudes ``|a_ij| / max_j |a_ij|`` it divides.

    The ICM reads the same scaled rows (:func:`physgsa.core.icm.icm_rows`), so one call serves both
    the row groups and the ICM of an interface. Where every row is nonzero (the usual case) the
    divisions run in place into ``|A|``'s buffer: the same quotients as the masked divisions
    into zeroed arrays, with two ``rows x cols`` buffers fewer.
    """
    absx = np.abs(a)
    rmax = absx.max(axis=1) if a.shape[1] else np.zeros(a.shape[0])
    nonzero = rmax > 0
    if nonzero.all():
        scaled = np.divide(absx, rmax[:, None], out=absx)
    else:
        scaled = np.divide(absx, rmax[:, None], out=np.zeros_like(absx), where=nonzero[:, None])
    rn = np.sqrt(np.einsum("ij,ij->i", scaled, scaled))
    prof = np.divide(scaled, rn[:, None], out=np.zeros_like(absx), where=nonzero[:, None]) \
        if not nonzero.all() else scaled / rn[:, None]
    return prof, rmax * rn, rmax, scaled


def _kmeans(x: np.ndarray, m: int, rng: np.random.Generator, max_iter: int = 100) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; deterministic given ``rng``.

    An empty cluster is re-seeded with the point farthest from its centroid, so every one of
    the ``m`` clusters ends non-empty when there are at least ``m`` distinct rows.
    """
    n = x.shape[0]
    sq = np.einsum("ij,ij->i", x, x)
    # ``2 * x @ c`` parses as ``(2 * x) @ c``: the doubled points are formed once here, not at
    # every distance evaluation (the same products, bit for bit; 2 * x is exact).
    x2 = 2 * x
    centers = np.empty((m, x.shape[1]))
    centers[0] = x[rng.integers(n)]
    d2 = np.maximum(sq - x2 @ centers[0] + centers[0] @ centers[0], 0.0)
    for j in range(1, m):
        tot = d2.sum()
        idx = int(rng.choice(n, p=d2 / tot)) if tot > 0 else int(rng.integers(n))
        centers[j] = x[idx]
        d2 = np.minimum(d2, np.maximum(sq - x2 @ centers[j] + centers[j] @ centers[j], 0.0))
    labels = np.full(n, -1)
    for _ in range(max_iter):
        dist = sq[:, None] - x2 @ centers.T + np.einsum("ij,ij->i", centers, centers)[None, :]
        new = np.argmin(dist, axis=1)
        counts = np.bincount(new, minlength=m)
        for empty in np.flatnonzero(counts == 0):
            movable = counts[new] > 1
            if not movable.any():
                break
            far = int(np.argmax(np.where(movable, dist[np.arange(n), new], -np.inf)))
            counts[new[far]] -= 1
            new[far] = empty
            counts[empty] = 1
        if np.array_equal(new, labels):
            break
        labels = new
        # All centroids from one product with the assignment indicator (no per-cluster copies).
        onehot = np.zeros((m, n))
        onehot[labels, np.arange(n)] = 1.0
        nz = counts > 0
        centers[nz] = (onehot[nz] @ x) / counts[nz, None]
    return labels


def source_incidence(a_hat_right: np.ndarray, u_left: np.ndarray, sigma_left: np.ndarray, k: int) -> np.ndarray:
    """Source-mode incidence ``S = A_hat_{l+1} U_l[:, :k] S_l[:k]`` (rows x k)."""
    incidence: np.ndarray = a_hat_right @ (u_left[:, :k] * sigma_left[None, :k])
    return incidence


def row_groups(strategy: str | np.ndarray, a0: np.ndarray, *, incidence: np.ndarray | None, heads: np.ndarray | None,
               n_groups: int, rng: np.random.Generator, where: str,
               profiles: np.ndarray | None = None) -> tuple[np.ndarray, int, str]:
    """Row groups fitted on ``A0``: ``heads``, ``kmeans``, ``modes`` or a user-given labelling.

    - ``kmeans``: k-means on the normalized ``|rows|`` of ``A0`` with ``m = min(n_groups, rows)``;
    - ``modes``: row ``i`` joins ``argmax_j S_ij^2`` (source-mode incidence);
    - ``heads``: the head index of each row (needs a head layout on the factor);
    - an integer array of length ``rows``: given by the user.
    Labels are made canonical (0..m-1 in order of first appearance). ``profiles``: the
    normalized ``|rows|`` of ``A0`` when the caller has them (:func:`row_profiles`), for kmeans.
    """
    rows = a0.shape[0]
    if isinstance(strategy, np.ndarray):
        if strategy.shape != (rows,):
            raise InvalidParameterError(
                f"The user-given row groups for interface {where} must have length {rows} "
                f"(one group per output row). Got shape {strategy.shape} instead."
            )
        labels, m = _compact(strategy)
        return labels, m, "given"
    if strategy == "heads":
        if heads is None:
            raise InvalidParameterError(
                f"{spell('groups', 'heads')} needs a head layout on the rows of interface {where}, and it has none "
                f"(plain matrices carry no heads). Use {spell('groups', 'kmeans')} or {spell('groups', 'modes')}, "
                "or give the layout."
            )
        labels, m = _compact(heads)
        return labels, m, "heads"
    if strategy == "modes":
        assert incidence is not None  # the caller forms the source-mode incidence for 'modes'
        labels, m = _compact(np.argmax(incidence**2, axis=1))
        return labels, m, "modes"
    # kmeans on the normalized |rows| (underflow-safe); zero rows stay zero vectors.
    x = row_profiles(a0)[0] if profiles is None else profiles
    m = min(n_groups, rows)
    labels, m = _compact(_kmeans(x, m, rng))
    return labels, m, "kmeans"


def column_units(strategy: str, cols: int, *, heads: np.ndarray | None, where: str,
                 conv_groups: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Column units: single ``channels`` (default), ``heads`` (needs a head layout) or ``groups``
    (the conv groups of a grouped or depthwise convolution's input channels).
    """
    if strategy == "heads":
        if heads is None:
            raise InvalidParameterError(
                f"{spell('units', 'heads')} needs a head layout on the columns of interface {where}, and it has "
                f"none. Use {spell('units', 'channels')} or give the layout."
            )
        return _compact(heads)
    if strategy == "groups":
        if conv_groups is None:
            raise InvalidParameterError(
                f"{spell('units', 'groups')} needs conv groups on the columns of interface {where}, and its left "
                f"factor is not a grouped convolution. Use {spell('units', 'channels')} or give the groups "
                "(Factor.col_groups)."
            )
        return _compact(conv_groups)
    return np.arange(cols, dtype=np.int64), cols


#: Block energies squared below this are recomputed with each block scaled by its own largest
#: entry (their squares may have lost digits to gradual underflow, or vanished).
_TINY_SQ = 2.0 ** -900


def unit_energies(a: np.ndarray, part: Partition, gi: np.ndarray | None = None,
                  ui: np.ndarray | None = None) -> np.ndarray:
    """``e_g(u) = ||A[G_g, u]||_F`` for every group and unit: an ``(m, n_units)`` array.

    Ordinary matrices take one product of the squared entries. Where a block's sum of squares
    is tiny (below ``2^-900``, where subnormal squares lose digits or vanish) or overflows, every
    block is recomputed with its own largest entry divided out before squaring (definitions
    section 4; "scale before squaring"), so energies of 1e-162 are exact to rounding.
    """
    gi = part.group_indicator() if gi is None else gi
    channels = part.unit_strategy == "channels"
    with np.errstate(under="ignore", over="ignore", invalid="ignore"):
        sq = gi @ (a * a)
        if not channels:
            sq = sq @ (part.unit_indicator() if ui is None else ui)
    if np.all(np.isfinite(sq)) and not np.any(sq < _TINY_SQ):
        e: np.ndarray = np.sqrt(sq)
        return e
    return _unit_energies_scaled(a, part, gi, ui)


def _unit_energies_scaled(a: np.ndarray, part: Partition, gi: np.ndarray, ui: np.ndarray | None) -> np.ndarray:
    """:func:`unit_energies` with each (group, unit) block divided by its largest ``|entry|`` first."""
    absx = np.abs(a)
    order = np.argsort(part.groups, kind="stable")
    starts = np.searchsorted(part.groups[order], np.arange(part.n_groups))
    bmax = np.maximum.reduceat(absx[order], starts, axis=0)  # (groups, cols)
    if part.unit_strategy != "channels":
        corder = np.argsort(part.units, kind="stable")
        cstarts = np.searchsorted(part.units[corder], np.arange(part.n_units))
        bmax = np.maximum.reduceat(bmax[:, corder], cstarts, axis=1)  # (groups, units)
        gathered = bmax[part.groups][:, part.units]
    else:
        gathered = bmax[part.groups]
    scaled = np.divide(absx, gathered, out=np.zeros_like(absx), where=gathered > 0)
    sq = gi @ (scaled * scaled)
    if part.unit_strategy != "channels":
        sq = sq @ (part.unit_indicator() if ui is None else ui)
    e: np.ndarray = bmax * np.sqrt(sq)
    return e


#: The threshold rules: ``gap`` (definitions section 4, the default), ``gap_zero`` (ours), ``relative``,
#: ``quantile`` (ours: the fewest units holding ``q_s`` of the group's energy) and ``gap_robust`` (ours: the
#: largest drop once the group's outlier units are set aside).
THRESHOLD_RULES = ("gap", "gap_zero", "relative", "quantile", "gap_robust")

#: Defaults of the rule parameters: ``q_s`` of ``quantile`` and the outlier factor ``c`` of ``gap_robust``.
SUPPORT_QUANTILE = 0.8
OUTLIER_FACTOR = 10.0


def _midpoints(s: np.ndarray, i: np.ndarray) -> np.ndarray:
    """``(s[g, i_g] + s[g, i_g + 1]) / 2`` per row ``g`` of the descending energies ``s``."""
    rows = np.arange(s.shape[0])
    mid: np.ndarray = 0.5 * (s[rows, i] + s[rows, i + 1])
    return mid


def quantile_counts(s: np.ndarray, q_s: float) -> np.ndarray:
    """``k_g``: the fewest of the descending energies ``s[g, :]`` whose squares hold ``q_s`` of the row's.

    Each row is divided by its largest energy before squaring (exact for a power of two, and
    shares only are compared), so energies near 1e-162 keep their shares. A zero row gives 1.
    """
    top = s[:, :1]
    x = np.divide(s, top, out=np.zeros_like(s), where=top > 0)
    cum = np.cumsum(x * x, axis=1)
    # The first k with cum[k - 1] >= q_s * total (the last entry always qualifies).
    k: np.ndarray = np.argmax(cum >= q_s * cum[:, -1:], axis=1) + 1
    return k


def outlier_units(e: np.ndarray, c: float) -> np.ndarray:
    """Outlier units per group: ``e_g(u)^2 > (c / n) sum_v e_g(v)^2``, i.e. c times the mean unit energy.

    The same rule as the outlier columns of an interface (:func:`physgsa.core.outliers.outlier_columns`),
    applied to one group's energies. Returns an ``(m, n)`` boolean array.
    """
    n = e.shape[1]
    top = e.max(axis=1, keepdims=True) if n else np.zeros((e.shape[0], 1))
    x = np.divide(e, top, out=np.zeros_like(e), where=top > 0)
    x2 = x * x
    out: np.ndarray = x2 * n > c * x2.sum(axis=1, keepdims=True)
    return out


def fit_thresholds(e: np.ndarray, rule: str, eta: float, *, q_s: float = SUPPORT_QUANTILE,
                   outlier_factor: float = OUTLIER_FACTOR) -> np.ndarray:
    """Per-group thresholds ``theta_g`` on the reference energies (definitions section 4).

    ``gap`` (the spec's rule, the default): the midpoint of the largest drop between
    consecutive descending energies ``e_g(.)`` themselves, the first largest drop on ties. A
    group with a single unit has no drop: its threshold is half its energy (ours; the spec is
    silent), so the unit is active with margin ``e / 2``. ``gap_zero`` (ours, today's rule
    before this release): the same with a final drop to zero appended, so a group whose units
    are all alike keeps them all active. ``relative``: ``theta_g = eta * max_u e_g(u)``.

    ``quantile`` (ours, definitions section 4, "Support rules of our own"): with ``s`` the
    descending energies and ``k_g`` the fewest units with ``sum_{i<k} s_i^2 >= q_s sum_i s_i^2``,
    ``theta_g = (s_{k-1} + s_k) / 2`` (0-based), the midpoint between the last kept and the first
    dropped energy, so the margins keep their meaning; ``theta_g = s_{n-1} / 2`` when every unit
    is kept. Units tied with ``s_{k-1}`` are kept too (``S_g = {u : e_g(u) >= theta_g}``).

    ``gap_robust`` (ours, same section): the units with ``e_g(u)^2 > (c / n) sum_v e_g(v)^2``
    (``c = outlier_factor``; :func:`outlier_units`) are set aside, always active, and the
    threshold is the midpoint of the largest drop among the remaining descending energies (the
    drop from the last outlier to the first remaining unit is not a candidate). With no outlier
    it is ``gap``; a group with a single unit, or with fewer than two remaining units, takes
    ``gap``'s threshold.
    """
    theta: np.ndarray
    if rule == "relative":
        theta = eta * e.max(axis=1)
        return theta
    s = -np.sort(-e, axis=1)
    n = s.shape[1]
    if rule == "quantile":
        k = quantile_counts(s, q_s)
        padded = np.concatenate([s, np.zeros((s.shape[0], 1))], axis=1)
        # Every unit kept: theta = s_{n-1} / 2 (the single-unit convention of gap).
        theta = np.where(k < n, _midpoints(padded, k - 1), 0.5 * s[:, -1])
        return theta
    if rule == "gap_zero" or n == 1:
        s = np.concatenate([s, np.zeros((s.shape[0], 1))], axis=1)
    drops = s[:, :-1] - s[:, 1:]
    if rule == "gap_robust" and n > 1:
        j = outlier_units(e, outlier_factor).sum(axis=1)  # the outliers are the top j of s
        # Drops i >= j only (from the first remaining unit on), where at least one such drop exists.
        usable = j <= n - 2
        cand = np.where(np.arange(n - 1)[None, :] >= np.where(usable, j, 0)[:, None], drops, -np.inf)
        drops = cand
    i = np.argmax(drops, axis=1)
    theta = _midpoints(s, i)
    return theta


@dataclass(frozen=True)
class Structure:
    """Supports, degrees, masks, pair weights, graph and hubs of one matrix.

    ``active[g, u]`` is ``u in S_g``; ``codes[g, u]`` is CORE, OVERLAP or NOISE; ``w_scaled[g, h]``
    the pair weight ``w_gh / scale^2`` (``scale`` a power of two fixed on ``A0``, so that pair
    weights of energies near 1e-162 do not underflow); ``edges[g, h]`` the incidence graph
    (symmetric, zero diagonal).
    """

    energies: np.ndarray
    active: np.ndarray
    degree: np.ndarray
    codes: np.ndarray
    w_scaled: np.ndarray
    scale: float
    edges: np.ndarray
    hubs: np.ndarray

    @property
    def w(self) -> np.ndarray:
        """Pair weights ``w_gh`` in the matrix's own units (may underflow where ``scale`` is tiny)."""
        return self.w_scaled * (self.scale * self.scale)

    def shared(self, g: int, h: int) -> np.ndarray:
        """SRS shared support ``S_g ∩ S_h``."""
        return np.flatnonzero(self.active[g] & self.active[h])

    def exclusive(self, g: int) -> np.ndarray:
        """SRS exclusive support of ``g``: ``S_g`` minus every other group's support."""
        return np.flatnonzero(self.active[g] & (self.degree == 1))

    def edge_list(self) -> list[tuple[int, int]]:
        g, h = np.nonzero(np.triu(self.edges, 1))
        return list(zip(g.tolist(), h.tolist()))


@dataclass(frozen=True)
class Reference:
    """What is fitted on ``A0`` and held fixed: partition, thresholds, kappa, hub degree.

    ``kappa_scaled = kappa / scale^2`` with ``scale`` the power of two at or above the largest
    unit energy of ``A0`` (all pair-weight arithmetic is done in these units).
    """

    partition: Partition
    theta: np.ndarray
    kappa_scaled: float
    scale: float
    hub_degree: int
    structure: Structure

    @property
    def kappa(self) -> float:
        """The graph level ``kappa`` in the matrix's own units."""
        return self.kappa_scaled * self.scale * self.scale


def pair_weights(e: np.ndarray, active: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``w_gh / scale^2 = sum_{u in S_g ∩ S_h} (e_g(u) / scale) (e_h(u) / scale)`` (diagonal zeroed)."""
    ea = np.where(active, e, 0.0)
    c = pow2_scale(float(ea.max())) if ea.size else 1.0
    ea = ea / c
    w = ea @ ea.T
    if c != scale:
        # Back to units of scale^2. A perturbed matrix far above the reference (energies beyond
        # ~2^511 scale) overflows to inf here, which still decides its edges (inf >= kappa);
        # zero weights stay exactly zero.
        with np.errstate(over="ignore", under="ignore"):
            ratio = np.float64(c) / np.float64(scale)
            w = np.where(w > 0, w * (ratio * ratio), 0.0)
    np.fill_diagonal(w, 0.0)
    weights: np.ndarray = w
    return weights


def _structure(e: np.ndarray, theta: np.ndarray, kappa_scaled: float, scale: float, hub_degree: int) -> Structure:
    active = e >= theta[:, None]
    return _assemble(e, active, pair_weights(e, active, scale), scale, kappa_scaled, hub_degree)


def _assemble(e: np.ndarray, active: np.ndarray, w: np.ndarray, scale: float, kappa_scaled: float,
              hub_degree: int) -> Structure:
    """Degrees, masks, graph and hubs from the supports and (scaled) pair weights."""
    degree = active.sum(axis=0)
    codes = np.where(active, np.where(degree[None, :] == 1, CORE, OVERLAP), NOISE).astype(np.int8)
    edges = (w >= kappa_scaled) & (w > 0)
    np.fill_diagonal(edges, False)
    hubs = degree >= hub_degree
    return Structure(energies=e, active=active, degree=degree, codes=codes, w_scaled=w, scale=scale,
                     edges=edges, hubs=hubs)


def fit_reference(a0: np.ndarray, part: Partition, *, threshold: str, eta: float, kappa_fraction: float,
                  hub_degree: int, q_s: float = SUPPORT_QUANTILE, outlier_factor: float = OUTLIER_FACTOR) -> Reference:
    """Fit thresholds and ``kappa = kappa_fraction * max_{g != h} w_gh`` on ``A0``.

    ``q_s`` and ``outlier_factor`` are the parameters of the ``quantile`` and ``gap_robust``
    rules (:func:`fit_thresholds`); the other rules ignore them.
    """
    e = unit_energies(a0, part)
    theta = fit_thresholds(e, threshold, eta, q_s=q_s, outlier_factor=outlier_factor)
    active = e >= theta[:, None]
    scale = pow2_scale(float(e.max()))
    w = pair_weights(e, active, scale)
    kappa = kappa_fraction * float(w.max()) if part.n_groups > 1 else 0.0
    h = hub_degree if part.n_groups >= hub_degree else part.n_groups
    return Reference(partition=part, theta=theta, kappa_scaled=kappa, scale=scale, hub_degree=h,
                     structure=_assemble(e, active, w, scale, kappa, h))


def structure_of(a: np.ndarray, ref: Reference, gi: np.ndarray | None = None,
                 ui: np.ndarray | None = None) -> Structure:
    """The structure of any matrix under the reference's fixed partition and thresholds."""
    return structure_from_energies(unit_energies(a, ref.partition, gi, ui), ref)


def structure_from_energies(e: np.ndarray, ref: Reference) -> Structure:
    """The structure given unit energies ``e_g(u)`` (all it depends on), thresholds fixed."""
    return _structure(e, ref.theta, ref.kappa_scaled, ref.scale, ref.hub_degree)


def compare(s0: Structure, s1: Structure) -> list[str]:
    """Names of the structures that differ (empty: supports, degrees, masks, graph, SRS sets
    and hubs are all the same).
    """
    diff = []
    if not np.array_equal(s0.active, s1.active):
        diff.append("supports")
    if not np.array_equal(s0.degree, s1.degree):
        diff.append("degrees")
    if not np.array_equal(s0.codes, s1.codes):
        diff.append("masks")
    if not np.array_equal(s0.edges, s1.edges):
        diff.append("graph")
    if "supports" in diff:
        diff.append("srs_sets")
    if not np.array_equal(s0.hubs, s1.hubs):
        diff.append("hubs")
    return diff


def expand_codes(codes: np.ndarray, part: Partition) -> np.ndarray:
    """The entry-level mask (rows x cols) of CORE / OVERLAP / NOISE codes."""
    mask: np.ndarray = codes[part.groups][:, part.units]
    return mask


def decomposition(a: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """``A = A∘K + A∘O + A∘N``: the three energies, their closure and orthogonality.

    Returns the squared norms of the parts (``energy``, in ``A``'s units) and their shares of
    ``||A||_F^2`` (``fraction``), ``closure`` = ``|sum - ||A||_F^2| / ||A||_F^2`` and
    ``orthogonality`` = the largest ``|<part_i, part_j>| / ||A||_F^2``, each computed from the
    masked entries themselves. ``A`` is divided by a power of two near its largest entry before
    squaring, so the shares, closure and orthogonality survive entries near 1e-162.
    """
    c = pow2_scale(max(float(np.max(a)), -float(np.min(a)))) if a.size else 1.0  # max|A|, no |A| copy
    a_s = a / c
    total = float(np.einsum("ij,ij->", a_s, a_s))
    # Each part is A_s times its 0/1 mask (the same entries as np.where(mask == code, A_s, 0), up
    # to the sign of a zero, which no sum of products below can see); the noise part is made in
    # A_s's own buffer once the total is taken: two rows x cols buffers fewer.
    parts = {name: np.multiply(a_s, mask == code, out=a_s if name == "noise" else None)
             for name, code in (("core", CORE), ("overlap", OVERLAP), ("noise", NOISE))}
    energy = {k: float(np.einsum("ij,ij->", p, p)) for k, p in parts.items()}
    names = list(parts)
    inner = max(
        abs(float(np.einsum("ij,ij->", parts[names[i]], parts[names[j]]))) for i in range(3) for j in range(i + 1, 3)
    )
    out: dict[str, Any] = {"energy": {k: v * c * c for k, v in energy.items()}, "total": total * c * c, "scale": c,
           "total_scaled": total}
    if total == 0.0:
        # A zero matrix: every part is zero, closure and orthogonality hold exactly.
        return {**out, "fraction": {k: 0.0 for k in energy}, "closure": 0.0, "orthogonality": 0.0}
    return {**out, "fraction": {k: v / total for k, v in energy.items()},
            "closure": abs(sum(energy.values()) - total) / total, "orthogonality": inner / total}


def decomposition_from_blocks(a: np.ndarray, s: Structure, part: Partition) -> dict[str, Any]:
    """:func:`decomposition` on the entry-level masks of ``s``, cross-checked against its block energies.

    Each (group, unit) block lies wholly in one part, so the part energies must also equal
    ``sum e_g(u)^2`` over the blocks coded with that part; ``block_closure`` is the largest
    difference between the two, relative to ``||A||_F^2`` (computed in units of ``s.scale``).
    """
    d = decomposition(a, expand_codes(s.codes, part))
    e2 = (s.energies / d["scale"]) ** 2  # block energies in the units of the entry-level sums
    total = d["total_scaled"]
    diffs = [abs(float(np.sum(e2[s.codes == code])) - d["fraction"][name] * total)
             for name, code in (("core", CORE), ("overlap", OVERLAP), ("noise", NOISE))]
    d["block_closure"] = max(diffs) / total if total > 0 else 0.0
    return d


def block_energy(a: np.ndarray, part: Partition, s: Structure) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Block-energy matrix ``B[g, b] = ||A[G_g, C_b]||_F^2 / ||A||_F^2``.

    Column blocks, a partition of the units: each group's exclusive support (``excl:g``), the
    hubs (degree >= the hub degree and >= 2), the other shared units, the inactive units.
    Returns ``B``, the block labels and the block of each unit.
    """
    m = part.n_groups
    deg = s.degree
    owner = np.argmax(s.active, axis=0)
    block = np.where(deg == 1, owner, -1)
    hub_block, shared_block, inactive_block = m, m + 1, m + 2
    block = np.where(s.hubs & (deg >= 2), hub_block, block)
    block = np.where((deg >= 2) & (block == -1), shared_block, block)
    block = np.where(deg == 0, inactive_block, block)
    labels = [f"excl:{g}" for g in range(m)] + ["hubs", "shared", "inactive"]
    col_block = block[part.units]
    # Shares of ||A||_F^2 only: scaled by a power of two first, so tiny matrices keep them.
    a_s = a / (pow2_scale(float(np.max(np.abs(a)))) if a.size else 1.0)
    sq = part.group_indicator() @ (a_s * a_s)
    bsum = np.zeros((m, m + 3))
    for b in range(m + 3):
        sel = col_block == b
        if sel.any():
            bsum[:, b] = sq[:, sel].sum(axis=1)
    total = float(sq.sum())
    return (bsum / total if total > 0 else bsum), labels, block
