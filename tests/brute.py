"""Independent recomputations for the tests, straight from docs/definitions.md.

Nothing here calls physgsa: every quantity is recomputed from its definition with plain loops
and numpy, so a test that compares physgsa's number with the one here compares two different
computations, never the code with itself. Norms are taken after dividing by the largest entry
(math.fsum of the squares), so entries down to 1e-300 neither underflow nor lose digits.

Structures are dicts with the supports ``active[g][u]``, degrees, codes ``"K"`` (core), ``"O"``
(overlap), ``"N"`` (noise), the pair weights in units of ``scale**2``, the edges, the hubs, the
SRS sets, and ``ambiguous`` (how many decisions sat within rounding of their level and were
taken from the code's own structure, where one was given: such a decision has no defined answer
at this precision, so it is not a test of anything).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

#: A decision whose two sides differ by less than this (relative) is left to the code.
AMBIGUOUS = 1e-12


def block_norm(block) -> float:
    """``||B||_F``: the largest |entry| divided out, the squares summed exactly rounded."""
    vals = [abs(float(x)) for x in np.asarray(block, dtype=np.float64).ravel()]
    top = max(vals, default=0.0)
    if top == 0.0:
        return 0.0
    return top * math.sqrt(math.fsum((v / top) ** 2 for v in vals))


def members(labels, value) -> list[int]:
    return [i for i, lab in enumerate(labels) if lab == value]


def unit_energies(a, groups, units, n_groups: int, n_units: int) -> np.ndarray:
    """``e_g(u) = ||A[G_g, cols(u)]||_F``, one block at a time."""
    e = np.zeros((n_groups, n_units))
    for g in range(n_groups):
        rows = members(groups, g)
        for u in range(n_units):
            cols = members(units, u)
            e[g, u] = block_norm(a[np.ix_(rows, cols)]) if rows and cols else 0.0
    return e


def gap_threshold(values):
    """The spec's "gap" rule: the midpoint of the largest drop between consecutive sorted
    energies (no drop to zero appended), the first largest drop on ties. None for one unit
    (the spec defines no drop there)."""
    s = sorted((float(v) for v in values), reverse=True)
    if len(s) < 2:
        return None
    best, at = -1.0, 0
    for i in range(len(s) - 1):
        if s[i] - s[i + 1] > best:
            best, at = s[i] - s[i + 1], i
    return 0.5 * (s[at] + s[at + 1])


def hub_degree(n_groups: int, h: int = 3) -> int:
    """``h = 3``, or ``m`` where ``m < 3``."""
    return h if n_groups >= h else n_groups


def structure(e, theta, *, hub: int, kappa_fraction: float = 0.05, kappa_scaled=None, scale=None,
              code_active=None, code_edges=None) -> dict:
    """Supports, degrees, codes, pair weights, graph, hubs and SRS sets of energies ``e`` under
    thresholds ``theta`` (section 4), by loops.

    Pair weights are in units of ``scale**2`` (default: the largest energy), so they neither
    underflow nor overflow. ``kappa_scaled`` (same units) is the fixed graph level; by default
    it is fitted here, ``kappa_fraction * max_{g != h} w_gh``. ``code_active`` / ``code_edges``
    (the code's own structure) settle only the decisions that sit within rounding of their level.
    """
    m, n = e.shape
    if scale is None:
        scale = float(np.max(e)) if np.max(e) > 0 else 1.0
    ambiguous = 0
    active = [[False] * n for _ in range(m)]
    for g in range(m):
        top = max(float(np.max(e[g])), abs(float(theta[g])))
        for u in range(n):
            active[g][u] = bool(e[g, u] >= theta[g])
            if code_active is not None and abs(e[g, u] - theta[g]) <= AMBIGUOUS * top:
                ambiguous += int(active[g][u] != bool(code_active[g][u]))
                active[g][u] = bool(code_active[g][u])
    degree = [sum(active[g][u] for g in range(m)) for u in range(n)]
    codes = [["N" if not active[g][u] else ("K" if degree[u] == 1 else "O") for u in range(n)] for g in range(m)]
    w = np.zeros((m, m))
    for g in range(m):
        for h in range(m):
            if g != h:
                # Python floats: a product beyond float64 is inf (no numpy overflow warning).
                w[g, h] = math.fsum((float(e[g, u]) / scale) * (float(e[h, u]) / scale) for u in range(n)
                                    if active[g][u] and active[h][u])
    if kappa_scaled is None:
        kappa_scaled = kappa_fraction * float(np.max(w)) if m > 1 else 0.0
    edges = [[False] * m for _ in range(m)]
    for g in range(m):
        for h in range(m):
            if g == h:
                continue
            edges[g][h] = bool(w[g, h] >= kappa_scaled and w[g, h] > 0)
            if code_edges is not None and abs(w[g, h] - kappa_scaled) <= AMBIGUOUS * max(float(np.max(w)), 1e-300):
                ambiguous += int(edges[g][h] != bool(code_edges[g][h]))
                edges[g][h] = bool(code_edges[g][h])
    return {
        "active": active, "degree": degree, "codes": codes, "w_scaled": w, "scale": scale,
        "kappa_scaled": kappa_scaled, "edges": edges, "hubs": [d >= hub for d in degree],
        "exclusive": [[u for u in range(n) if active[g][u] and degree[u] == 1] for g in range(m)],
        "shared": {(g, h): [u for u in range(n) if active[g][u] and active[h][u]]
                   for g in range(m) for h in range(g + 1, m)},
        "ambiguous": ambiguous,
    }


def same_structure(s0: dict, s1: dict) -> bool:
    """The direct check: supports, degrees, masks, graph, SRS sets and hubs all equal."""
    return all(s0[k] == s1[k] for k in ("active", "degree", "codes", "edges", "hubs", "exclusive", "shared"))


def entry_codes(st: dict, groups, units) -> list[list[str]]:
    """The entry-level mask: the code of (group of row i, unit of column j)."""
    return [[st["codes"][g][u] for u in units] for g in groups]


def part_energies(a, codes) -> dict:
    """``||A∘K||_F^2``, ``||A∘O||_F^2``, ``||A∘N||_F^2``, ``||A||_F^2`` and the largest
    ``|<part_i, part_j>|``, all in units of ``max|A|^2``, entry by entry."""
    top = float(np.max(np.abs(a))) if a.size else 0.0
    top = top if top > 0 else 1.0
    sums = {"K": [], "O": [], "N": []}
    parts = {c: np.zeros(a.shape) for c in "KON"}
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            x = float(a[i, j]) / top
            sums[codes[i][j]].append(x * x)
            parts[codes[i][j]][i, j] = x
    energy = {c: math.fsum(v) for c, v in sums.items()}
    total = math.fsum(float(x / top) ** 2 for x in np.asarray(a).ravel())
    inner = 0.0
    for p, q in (("K", "O"), ("K", "N"), ("O", "N")):
        s = math.fsum(float(parts[p][i, j]) * float(parts[q][i, j]) for i in range(a.shape[0])
                      for j in range(a.shape[1]))
        inner = max(inner, abs(s))
    return {"energy": energy, "total": total, "inner": inner, "scale2": top * top}


# Spectra and the PAM pair, from numpy's SVD.

def a_hat(a) -> np.ndarray:
    """``A_hat = sqrt(r) A / ||A||_F``."""
    a = np.asarray(a, dtype=np.float64)
    return np.sqrt(min(a.shape)) * a / block_norm(a)


def truncate(a, k: int) -> np.ndarray:
    """The rank-``k`` truncation ``U_k S_k V_k^T`` (numpy's SVD)."""
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    return (u[:, :k] * s[:k]) @ vt[:k]


def pam_pair(left, right, k: int, kp: int) -> tuple[np.ndarray, np.ndarray]:
    """``A0 = M_w = A_hat'^w A_hat^w`` and ``A1 = M = A_hat' A_hat`` of the interface left -> right."""
    lh, rh = a_hat(left), a_hat(right)
    return truncate(rh, kp) @ truncate(lh, k), rh @ lh


def dominant_window(sigma, q: float, band: float) -> int:
    """The spec's window: ``k_q``, moved to the largest relative gap among the ranks ``k < r``
    whose cumulative energy fraction lies in ``[q - band, q + band]`` (first on ties)."""
    lam = [float(s) ** 2 for s in sigma]
    r = len(lam)
    total = math.fsum(lam)
    cum = [math.fsum(lam[: k + 1]) / total for k in range(r)]
    k_q = next((k + 1 for k in range(r) if cum[k] >= q), r)
    best, at = -1.0, None
    for k in range(1, r):
        if q - band <= cum[k - 1] <= q + band:
            gap = (sigma[k - 1] - sigma[k]) / sigma[0]
            if gap > best:
                best, at = gap, k
    return at if at is not None else k_q


# The Gibbs–Cartan orbit and the top chart (section 2), with numpy.

def log_h(r: int, s: float) -> float:
    x = -s * np.log(np.arange(1, r + 1, dtype=np.float64))
    top = float(np.max(x))
    return top + float(np.log(np.sum(np.exp(x - top))))


def orbit_p(r: int, s: float) -> np.ndarray:
    return np.exp(-s * np.log(np.arange(1, r + 1, dtype=np.float64)) - log_h(r, s))


def phi(r: int, s: float) -> float:
    return float(np.log(r) - log_h(r, s))


def phi_prime(r: int, s: float) -> float:
    """``E_{p(s)}[log k]``."""
    return float(orbit_p(r, s) @ np.log(np.arange(1, r + 1, dtype=np.float64)))


def s_top(sigma, s_max: float = 50.0) -> float:
    """``phi^{-1}(rho)`` by plain bisection, clipped to ``[0, s_max]``."""
    sigma = np.asarray(sigma, dtype=np.float64)
    r = sigma.shape[0]
    if r == 1:
        return 0.0
    rho = float(np.log(r * sigma[0] ** 2 / np.sum(sigma**2)))
    if rho <= 0.0:
        return 0.0
    if rho >= phi(r, s_max):
        return s_max
    lo, hi = 0.0, s_max
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if phi(r, mid) < rho:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def hellinger(sigma, s: float) -> float:
    """``e = sum_k (sqrt p_k - sqrt p_k(s))^2`` with ``p = lambda / sum lambda``."""
    lam = np.asarray(sigma, dtype=np.float64) ** 2
    p = lam / np.sum(lam)
    return float(np.sum((np.sqrt(p) - np.sqrt(orbit_p(p.shape[0], s))) ** 2))


def exact_product_error(a, b) -> float:
    """``||fl(a @ b) - a b||_F`` with the exact product in rational arithmetic."""
    fa = [[Fraction(float(x)) for x in row] for row in np.asarray(a)]
    fb = [[Fraction(float(x)) for x in row] for row in np.asarray(b)]
    got = np.asarray(a) @ np.asarray(b)
    inner = len(fb)
    err = []
    for i in range(len(fa)):
        for j in range(len(fb[0])):
            exact = sum((fa[i][t] * fb[t][j] for t in range(inner)), Fraction(0))
            err.append(float(Fraction(float(got[i, j])) - exact))
    return block_norm(np.array(err)) if err else 0.0


def interface_check(res, arrays: dict, i: int) -> dict:
    """The direct check of interface ``i`` of a certify ``Result``, recomputed independently.

    ``arrays`` maps factor names to the raw matrices of the chain. ``A0 = M_w`` and ``A1 = M``
    come from numpy SVDs at the reported windows; the row groups (``rows.group``), thresholds,
    ``kappa`` and hub degree are read from the result (channel units); the unit energies and
    both structures are recomputed by loops. Returns both structures, whether they are the same,
    ``a0``/``a1``, the groups, and ``near1``: how many units of ``A1`` sit within rounding of
    their threshold, or pairs of groups whose weight sits within rounding of kappa (where the
    direct check has no defined answer at this precision). The numpy route gives ``A0`` to about
    ``eps ||A0||_F`` entrywise only, so groups whose energies are all below that level are
    rounding noise in either computation (such chains are not used with this helper).
    """
    d = res.certificate["interfaces"][i]
    row = res.interfaces.iloc[i]
    stc = d["structure"]
    assert stc["unit_strategy"] == "channels"
    a0, a1 = pam_pair(arrays[d["left"]], arrays[d["right"]], int(row["k_left"]), int(row["k_right"]))
    rows = res.rows[res.rows["interface"] == d["interface"]].sort_values("row")
    groups = rows["group"].astype(int).tolist()
    m = len(stc["supports"])
    units = list(range(a0.shape[1]))
    theta = np.asarray(stc["theta"], dtype=np.float64)
    code_active = [[u in set(stc["supports"][g]) for u in units] for g in range(m)]
    e0 = unit_energies(a0, groups, units, m, len(units))
    e1 = unit_energies(a1, groups, units, m, len(units))
    scale = float(np.max(e0)) if np.max(e0) > 0 else 1.0
    hub = int(stc["hub_degree"])
    kappa_scaled = float(stc["kappa"]) / scale / scale
    s0 = structure(e0, theta, hub=hub, kappa_scaled=kappa_scaled, scale=scale, code_active=code_active)
    s1 = structure(e1, theta, hub=hub, kappa_scaled=kappa_scaled, scale=scale)
    near1 = sum(abs(e1[g, u] - theta[g]) <= 1e-10 * max(float(np.max(e1[g])), theta[g])
                for g in range(m) for u in units)
    w1 = s1["w_scaled"]
    near1 += int(np.sum(np.abs(w1 - kappa_scaled) <= 1e-10 * max(float(np.max(w1)), kappa_scaled))) // 2
    return {"s0": s0, "s1": s1, "same": same_structure(s0, s1), "a0": a0, "a1": a1, "groups": groups,
            "units": units, "code_active": code_active, "near1": near1, "detail": d, "row": row}
