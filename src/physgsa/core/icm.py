"""The Invariant Channel Mapping and its row labels (definitions section 6).

Per row ``i`` of group ``g`` of ``A0`` under the certified masks: the energy fractions
``f_K, f_O, f_N``, the profile correlation ``kappa_i`` with the group's centroid profile,
the label SC / SA / ST, its margins and whether the label is certified against the exact
full-minus-truncated difference ``E``:

- ``|sqrt f(x+e) - sqrt f(x)| <= 2 ||e|| / ||x||``;
- ``|corr(x+e, y) - corr(x, y)| <= 2 ||e|| / ||x_c||`` (``x_c`` centred).

A zero row has no fractions and no profile: it is labelled ``zero``, never certified, and left
out of its group's centroid (ours). A row is zero when all its computed entries are 0, or when
the caller knows it is zero in exact arithmetic (``zero_rows``: a zero row of the right factor,
whose row of ``A0`` is computed as rounding noise from the frames).
"""

from __future__ import annotations

import numpy as np

from .structure import CORE, NOISE, OVERLAP, Partition, row_profiles_scaled

__all__ = ["LABELS", "icm_rows"]

LABELS = ("SC", "SA", "ST", "zero")


def _row_norms(x: np.ndarray, inplace: bool = False) -> np.ndarray:
    """``||x_i||_2`` per row, as ``np.linalg.norm(x, axis=1)`` computes it for real ``x``
    (``sqrt(add.reduce(x * x, axis=1))``, the same bits) without its copy of ``conj(x)``;
    ``inplace`` squares into ``x`` itself (a temporary the caller no longer needs).
    """
    sq = np.multiply(x, x, out=x if inplace else None)
    norms: np.ndarray = np.sqrt(np.add.reduce(sq, axis=1))
    return norms


def icm_rows(a0: np.ndarray, e: np.ndarray, part: Partition, codes: np.ndarray, *, tau_e: float,
             tau_rho: float, interface_certified: bool, centroid: np.ndarray | None = None,
             profiles: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
             zero_rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-row ICM quantities as arrays (one entry per row of ``A0``).

    ``centroid`` (groups x cols) holds the group profiles fixed; by default they are the mean
    normalized ``|rows|`` of each group's nonzero rows of ``A0`` (0 for a group without any).
    ``profiles``: ``row_profiles_scaled(A0)`` when the caller has it (the row groups read the
    same), not recomputed. ``zero_rows``: rows known to be zero in exact arithmetic, labelled
    ``zero`` whatever their computed rounding noise.
    """
    # Every row is divided by its own largest entry before squaring (row_profiles), so a row
    # of entries near 1e-170 keeps its norm, its fractions and its profile: only an exactly
    # zero row is "zero". Fractions, correlations and the bound ratios are scale-free.
    prof, norms, rmax, scaled = row_profiles_scaled(a0) if profiles is None else profiles
    nonzero = rmax > 0
    if zero_rows is not None:
        nonzero = nonzero & ~np.asarray(zero_rows, dtype=bool)
    sq = scaled * scaled
    total = sq.sum(axis=1)
    safe = np.where(nonzero, total, 1.0)
    if centroid is None:
        # The mean profile of each group's nonzero rows: a zero row (or its rounding noise) has no
        # profile to add, and counting it would only rescale the centroid.
        gi = part.group_indicator() * nonzero[None, :]
        count = gi.sum(axis=1)
        centroid = np.divide(gi @ prof, count[:, None], out=np.zeros((gi.shape[0], prof.shape[1])),
                             where=count[:, None] > 0)
    # Row by row of each group: the energy in each mask part (a product with that group's code
    # indicators over the columns) and the correlation with the group's centroid. This never
    # forms the rows x cols mask or the rows x cols gathered centroids.
    onehot = np.stack([codes == c for c in (CORE, OVERLAP, NOISE)], axis=-1).astype(np.float64)
    xc = scaled - scaled.mean(axis=1, keepdims=True)
    xc_norm = _row_norms(xc)  # ||x_c|| / max|x|: the centred row in the row's own scale
    cc = centroid - centroid.mean(axis=1, keepdims=True)
    cc_norm = np.linalg.norm(cc, axis=1)
    parts = np.zeros((a0.shape[0], 3))
    num = np.zeros(a0.shape[0])
    for g in range(part.n_groups):
        idx = np.flatnonzero(part.groups == g)
        parts[idx] = sq[idx] @ onehot[g][part.units]
        num[idx] = xc[idx] @ cc[g]
    f = {name: np.where(nonzero, parts[:, j] / safe, 0.0) for j, name in enumerate(("core", "overlap", "noise"))}
    den = xc_norm * cc_norm[part.groups]
    # Where either row is constant the correlation is undefined: 0, and never certified on it.
    kappa = np.clip(np.divide(num, den, out=np.zeros_like(num), where=den > 0), -1.0, 1.0)
    label = np.where(f["core"] >= tau_e, "SC", np.where(kappa >= tau_rho, "SA", "ST")).astype(object)
    label[~nonzero] = "zero"
    delta_e = np.abs(np.sqrt(f["core"]) - np.sqrt(tau_e))
    delta_rho = np.abs(kappa - tau_rho)
    # ||E_i|| / max|A0_i|, so both ratios are formed without squaring tiny numbers (an E row far
    # larger than a tiny A0 row overflows to inf here: such a row is not certified, as it must not be).
    with np.errstate(over="ignore"):
        if nonzero.all():
            e_rel = _row_norms(e / rmax[:, None], inplace=True)
        else:
            e_rel = _row_norms(np.divide(e, rmax[:, None], out=np.zeros_like(e), where=nonzero[:, None]), inplace=True)
        bound_e = np.divide(2 * e_rel, norms / np.where(nonzero, rmax, 1.0), out=np.full_like(e_rel, np.inf),
                            where=nonzero)
        bound_rho = np.divide(2 * e_rel, xc_norm, out=np.full_like(e_rel, np.inf), where=xc_norm > 0)
    ok_e = bound_e < delta_e
    ok_rho = bound_rho < delta_rho
    certified = interface_certified & nonzero & ok_e & ((label == "SC") | ok_rho)
    return {
        "group": part.groups,
        "f_core": f["core"],
        "f_overlap": f["overlap"],
        "f_noise": f["noise"],
        "kappa": kappa,
        "label": label,
        "delta_e": delta_e,
        "delta_rho": delta_rho,
        "bound_e": bound_e,
        "bound_rho": bound_rho,
        "certified": certified,
        "centroid": centroid,
    }
