"""The Invariant Channel Mapping and its row labels (definitions section 6).

Per row ``i`` of group ``g`` of ``A0`` under the certified masks: the energy fractions
``f_K, f_O, f_N``, the profile correlation ``kappa_i`` with the group's centroid profile,
the label SC / SA / ST, its margins and whether the label is certified against the exact
full-minus-truncated difference ``E``:

- ``|sqrt f(x+e) - sqrt f(x)| <= 2 ||e|| / ||x||``;
- ``|corr(x+e, y) - corr(x, y)| <= 2 ||e|| / ||x_c||`` (``x_c`` centred).

A zero row has no fractions and no profile: it is labelled ``zero`` and never certified
(our decision; definitions.md does not cover it).
"""

from __future__ import annotations

import numpy as np

from .structure import CORE, NOISE, OVERLAP, Partition

__all__ = ["LABELS", "icm_rows", "pearson_rows"]

LABELS = ("SC", "SA", "ST", "zero")


def pearson_rows(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise Pearson correlation of ``x`` and ``y`` and ``||x_c||`` per row.

    Where either row is constant the correlation is undefined; it is returned as 0 (and the
    caller must not certify a label resting on it).
    """
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    nx = np.linalg.norm(xc, axis=1)
    ny = np.linalg.norm(yc, axis=1)
    num = np.einsum("ij,ij->i", xc, yc)
    den = nx * ny
    corr = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return np.clip(corr, -1.0, 1.0), nx


def icm_rows(a0: np.ndarray, e: np.ndarray, part: Partition, codes: np.ndarray, *, tau_e: float,
             tau_rho: float, interface_certified: bool, centroid: np.ndarray | None = None) -> dict:
    """Per-row ICM quantities as arrays (one entry per row of ``A0``).

    ``centroid`` (groups x cols) holds the group profiles fixed; by default they are the mean
    normalized ``|rows|`` of each group of ``A0``.
    """
    mask = codes[part.groups][:, part.units]
    sq = a0 * a0
    total = sq.sum(axis=1)
    nonzero = total > 0
    safe = np.where(nonzero, total, 1.0)
    f = {name: np.where(nonzero, np.where(mask == code, sq, 0.0).sum(axis=1) / safe, 0.0)
         for name, code in (("core", CORE), ("overlap", OVERLAP), ("noise", NOISE))}
    absx = np.abs(a0)
    norms = np.sqrt(total)
    prof = np.divide(absx, norms[:, None], out=np.zeros_like(absx), where=nonzero[:, None])
    if centroid is None:
        gi = part.group_indicator()
        centroid = (gi @ prof) / gi.sum(axis=1)[:, None]
    kappa, xc_norm = pearson_rows(absx, centroid[part.groups])
    label = np.where(f["core"] >= tau_e, "SC", np.where(kappa >= tau_rho, "SA", "ST")).astype(object)
    label[~nonzero] = "zero"
    delta_e = np.abs(np.sqrt(f["core"]) - np.sqrt(tau_e))
    delta_rho = np.abs(kappa - tau_rho)
    e_norm = np.linalg.norm(e, axis=1)
    bound_e = np.divide(2 * e_norm, norms, out=np.full_like(e_norm, np.inf), where=nonzero)
    bound_rho = np.divide(2 * e_norm, xc_norm, out=np.full_like(e_norm, np.inf), where=xc_norm > 0)
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
