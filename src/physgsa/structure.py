"""The Physical Alignment Matrix and its structure (definitions section 4).

The PAM pair is ``A0 = M_w`` (truncated transport, the reference) and ``A1 = M`` (full).
Row groups, column units, thresholds ``theta_g`` and the graph level ``kappa`` are fitted on
``A0`` once (:func:`fit_reference`) and reused unchanged for any perturbed matrix
(:func:`structure_of`), so that two structures can be compared entry by entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import InvalidParameterError

__all__ = [
    "Partition",
    "Reference",
    "Structure",
    "row_groups",
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


def _kmeans(x: np.ndarray, m: int, rng: np.random.Generator, max_iter: int = 100) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; deterministic given ``rng``.

    An empty cluster is re-seeded with the point farthest from its centroid, so every one of
    the ``m`` clusters ends non-empty when there are at least ``m`` distinct rows.
    """
    n = x.shape[0]
    sq = np.einsum("ij,ij->i", x, x)
    centers = np.empty((m, x.shape[1]))
    centers[0] = x[rng.integers(n)]
    d2 = np.maximum(sq - 2 * x @ centers[0] + centers[0] @ centers[0], 0.0)
    for j in range(1, m):
        tot = d2.sum()
        idx = int(rng.choice(n, p=d2 / tot)) if tot > 0 else int(rng.integers(n))
        centers[j] = x[idx]
        d2 = np.minimum(d2, np.maximum(sq - 2 * x @ centers[j] + centers[j] @ centers[j], 0.0))
    labels = np.full(n, -1)
    for _ in range(max_iter):
        dist = sq[:, None] - 2 * x @ centers.T + np.einsum("ij,ij->i", centers, centers)[None, :]
        new = np.argmin(dist, axis=1)
        counts = np.bincount(new, minlength=m)
        for j in np.flatnonzero(counts == 0):
            movable = counts[new] > 1
            if not movable.any():
                break
            far = int(np.argmax(np.where(movable, dist[np.arange(n), new], -np.inf)))
            counts[new[far]] -= 1
            new[far] = j
            counts[j] = 1
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
    return a_hat_right @ (u_left[:, :k] * sigma_left[None, :k])


def row_groups(strategy, a0: np.ndarray, *, incidence: np.ndarray | None, heads: np.ndarray | None,
               n_groups: int, rng: np.random.Generator, where: str) -> tuple[np.ndarray, int, str]:
    """Row groups fitted on ``A0``: ``heads``, ``kmeans``, ``modes`` or a user-given labelling.

    - ``kmeans``: k-means on the normalized ``|rows|`` of ``A0`` with ``m = min(n_groups, rows)``;
    - ``modes``: row ``i`` joins ``argmax_j S_ij^2`` (source-mode incidence);
    - ``heads``: the head index of each row (needs a head layout on the factor);
    - an integer array of length ``rows``: given by the user.
    Labels are made canonical (0..m-1 in order of first appearance).
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
                f"groups='heads' needs a head layout on the rows of interface {where}, and it has none "
                "(plain matrices carry no heads). Use groups='kmeans' or 'modes', or give the layout."
            )
        labels, m = _compact(heads)
        return labels, m, "heads"
    if strategy == "modes":
        labels, m = _compact(np.argmax(incidence**2, axis=1))
        return labels, m, "modes"
    # kmeans on the normalized |rows|; zero rows stay zero vectors.
    x = np.abs(a0)
    norms = np.linalg.norm(x, axis=1)
    x = np.divide(x, norms[:, None], out=np.zeros_like(x), where=norms[:, None] > 0)
    m = min(n_groups, rows)
    labels, m = _compact(_kmeans(x, m, rng))
    return labels, m, "kmeans"


def column_units(strategy: str, cols: int, *, heads: np.ndarray | None, where: str) -> tuple[np.ndarray, int]:
    """Column units: single ``channels`` (default) or ``heads`` (needs a head layout)."""
    if strategy == "heads":
        if heads is None:
            raise InvalidParameterError(
                f"units='heads' needs a head layout on the columns of interface {where}, and it has none. "
                "Use units='channels' or give the layout."
            )
        return _compact(heads)
    return np.arange(cols, dtype=np.int64), cols


def unit_energies(a: np.ndarray, part: Partition, gi: np.ndarray | None = None, ui: np.ndarray | None = None) -> np.ndarray:
    """``e_g(u) = ||A[G_g, u]||_F`` for every group and unit: an ``(m, n_units)`` array."""
    gi = part.group_indicator() if gi is None else gi
    sq = gi @ (a * a)
    if part.unit_strategy != "channels":
        sq = sq @ (part.unit_indicator() if ui is None else ui)
    return np.sqrt(sq)


def fit_thresholds(e: np.ndarray, rule: str, eta: float) -> np.ndarray:
    """Per-group thresholds ``theta_g`` on the reference energies.

    ``gap``: the midpoint of the largest drop in the descending energies, with a final drop to
    zero (so a group whose units are all alike keeps them all active); the first largest drop
    on ties. ``relative``: ``theta_g = eta * max_u e_g(u)``.
    """
    if rule == "relative":
        return eta * e.max(axis=1)
    s = -np.sort(-e, axis=1)
    s = np.concatenate([s, np.zeros((s.shape[0], 1))], axis=1)
    drops = s[:, :-1] - s[:, 1:]
    i = np.argmax(drops, axis=1)
    rows = np.arange(s.shape[0])
    return 0.5 * (s[rows, i] + s[rows, i + 1])


@dataclass(frozen=True)
class Structure:
    """Supports, degrees, masks, pair weights, graph and hubs of one matrix.

    ``active[g, u]`` is ``u in S_g``; ``codes[g, u]`` is CORE, OVERLAP or NOISE; ``w[g, h]``
    the pair weight; ``edges[g, h]`` the incidence graph (symmetric, zero diagonal).
    """

    energies: np.ndarray
    active: np.ndarray
    degree: np.ndarray
    codes: np.ndarray
    w: np.ndarray
    edges: np.ndarray
    hubs: np.ndarray

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
    """What is fitted on ``A0`` and held fixed: partition, thresholds, kappa, hub degree."""

    partition: Partition
    theta: np.ndarray
    kappa: float
    hub_degree: int
    structure: Structure


def pair_weights(e: np.ndarray, active: np.ndarray) -> np.ndarray:
    """``w_gh = sum_{u in S_g ∩ S_h} e_g(u) e_h(u)`` (diagonal zeroed)."""
    ea = np.where(active, e, 0.0)
    w = ea @ ea.T
    np.fill_diagonal(w, 0.0)
    return w


def _structure(e: np.ndarray, theta: np.ndarray, kappa: float, hub_degree: int) -> Structure:
    active = e >= theta[:, None]
    return _assemble(e, active, pair_weights(e, active), kappa, hub_degree)


def _assemble(e: np.ndarray, active: np.ndarray, w: np.ndarray, kappa: float, hub_degree: int) -> Structure:
    """Degrees, masks, graph and hubs from the supports and pair weights."""
    degree = active.sum(axis=0)
    codes = np.where(active, np.where(degree[None, :] == 1, CORE, OVERLAP), NOISE).astype(np.int8)
    edges = (w >= kappa) & (w > 0)
    np.fill_diagonal(edges, False)
    hubs = degree >= hub_degree
    return Structure(energies=e, active=active, degree=degree, codes=codes, w=w, edges=edges, hubs=hubs)


def fit_reference(a0: np.ndarray, part: Partition, *, threshold: str, eta: float, kappa_fraction: float,
                  hub_degree: int) -> Reference:
    """Fit thresholds and ``kappa = kappa_fraction * max_{g != h} w_gh`` on ``A0``."""
    e = unit_energies(a0, part)
    theta = fit_thresholds(e, threshold, eta)
    active = e >= theta[:, None]
    w = pair_weights(e, active)
    kappa = kappa_fraction * float(w.max()) if part.n_groups > 1 else 0.0
    h = hub_degree if part.n_groups >= hub_degree else part.n_groups
    return Reference(partition=part, theta=theta, kappa=kappa, hub_degree=h,
                     structure=_assemble(e, active, w, kappa, h))


def structure_of(a: np.ndarray, ref: Reference, gi: np.ndarray | None = None, ui: np.ndarray | None = None) -> Structure:
    """The structure of any matrix under the reference's fixed partition and thresholds."""
    return structure_from_energies(unit_energies(a, ref.partition, gi, ui), ref)


def structure_from_energies(e: np.ndarray, ref: Reference) -> Structure:
    """The structure given unit energies ``e_g(u)`` (all it depends on), thresholds fixed."""
    return _structure(e, ref.theta, ref.kappa, ref.hub_degree)


def compare(s0: Structure, s1: Structure) -> list[str]:
    """Names of the structures that differ (empty: supports, degrees, masks, graph, SRS sets
    and hubs are all the same)."""
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
    return codes[part.groups][:, part.units]


def decomposition(a: np.ndarray, mask: np.ndarray) -> dict:
    """``A = A∘K + A∘O + A∘N``: the three energies, their closure and orthogonality.

    Returns the squared norms of the parts, ``closure`` = ``|sum - ||A||_F^2| / ||A||_F^2`` and
    ``orthogonality`` = the largest ``|<part_i, part_j>| / ||A||_F^2``.
    """
    parts = {name: np.where(mask == code, a, 0.0) for name, code in (("core", CORE), ("overlap", OVERLAP), ("noise", NOISE))}
    total = float(np.einsum("ij,ij->", a, a))
    energy = {k: float(np.einsum("ij,ij->", p, p)) for k, p in parts.items()}
    names = list(parts)
    inner = max(
        abs(float(np.einsum("ij,ij->", parts[names[i]], parts[names[j]]))) for i in range(3) for j in range(i + 1, 3)
    )
    if total == 0.0:
        # A zero matrix: every part is zero, closure and orthogonality hold exactly.
        return {"energy": energy, "total": 0.0, "closure": 0.0, "orthogonality": 0.0}
    return {
        "energy": energy,
        "total": total,
        "closure": abs(sum(energy.values()) - total) / total,
        "orthogonality": inner / total,
    }


def decomposition_from_blocks(a: np.ndarray, s: Structure) -> dict:
    """:func:`decomposition` from the unit energies already in ``s``, without the entry-level mask.

    Each (group, unit) block lies wholly in one part, so ``||A∘X||_F^2 = sum e_g(u)^2`` over the
    blocks coded ``X``; ``closure`` compares their sum with ``||A||_F^2`` summed over the entries
    (a check of the block energies themselves). The parts have disjoint supports, so their
    inner products are exactly zero: ``orthogonality`` is 0 by construction here (the
    entry-level :func:`decomposition` computes it, and the tests check both agree).
    """
    e2 = s.energies * s.energies
    energy = {name: float(np.sum(e2[s.codes == code])) for name, code in (("core", CORE), ("overlap", OVERLAP),
                                                                           ("noise", NOISE))}
    total = float(np.einsum("ij,ij->", a, a))
    if total == 0.0:
        return {"energy": energy, "total": 0.0, "closure": 0.0, "orthogonality": 0.0}
    return {"energy": energy, "total": total, "closure": abs(sum(energy.values()) - total) / total,
            "orthogonality": 0.0}


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
    sq = part.group_indicator() @ (a * a)
    bsum = np.zeros((m, m + 3))
    for b in range(m + 3):
        sel = col_block == b
        if sel.any():
            bsum[:, b] = sq[:, sel].sum(axis=1)
    total = float(sq.sum())
    return (bsum / total if total > 0 else bsum), labels, block
