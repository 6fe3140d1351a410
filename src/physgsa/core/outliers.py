"""Outlier channels of an interface and the tolerance flags of a degenerate structure (ours).

Trained transformers carry a few residual channels of very large energy (the "outlier features"
or "massive activations" of the quantization literature). On the PAM they show up as a few
columns of ``A0`` holding most of its energy, and the spec's ``gap`` rule then puts one to a few
of them in every group's support. This module names those columns and the structures that carry
no information about the other channels (docs/definitions.md, "Outlier channels and tolerance
flags", ours).

- Column energy share: ``p_u = ||A0[:, u]||_2^2 / ||A0||_F^2`` (the shares sum to 1, mean ``1/n``).
- Outlier columns: ``p_u > c / n``, ``c = outlier_factor`` (default 10): a column holding more than
  ``c`` times the mean column energy. A fixed multiple of the mean is what a practitioner checks
  first (LLM.int8 and the "massive activations" papers speak of channels tens to thousands of times
  the typical one); it needs no scale estimate that the outliers themselves would distort, and it
  flags nothing on a matrix whose columns are alike.
- ``outlier_dominated``: more than ``outlier_energy`` (default 0.5) of ``||A0||_F^2`` lies in the top
  ``max(1, floor(outlier_columns * n))`` columns (``outlier_columns`` default 0.01).
- Degenerate supports: a group whose support holds at least ``full_support`` (default 0.95) of the
  units (the tolerance version of "every unit active"), and groups sharing one identical support:
  at least ``identical_supports`` (default 0.5) of the groups, and at least two, have the same
  support.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .structure import OUTLIER_FACTOR, pow2_scale

__all__ = ["column_shares", "outlier_columns", "top_column_share", "full_support_groups", "identical_support_groups",
           "interface_outliers",
           "OUTLIER_FACTOR", "OUTLIER_COLUMNS", "OUTLIER_ENERGY", "FULL_SUPPORT", "IDENTICAL_SUPPORTS"]

OUTLIER_COLUMNS = 0.01
OUTLIER_ENERGY = 0.5
FULL_SUPPORT = 0.95
IDENTICAL_SUPPORTS = 0.5


def column_shares(a0: np.ndarray) -> np.ndarray:
    """``p_u = ||A0[:, u]||_2^2 / ||A0||_F^2`` (all zero for a zero matrix).

    ``A0`` is divided by a power of two near its largest entry before squaring, so the shares of
    a matrix of entries near 1e-162 are exact to rounding.
    """
    if a0.size == 0:
        return np.zeros(a0.shape[1])
    x = a0 / pow2_scale(max(float(np.max(a0)), -float(np.min(a0))))
    col = np.einsum("ij,ij->j", x, x)
    total = float(col.sum())
    p: np.ndarray = col / total if total > 0 else np.zeros_like(col)
    return p


def outlier_columns(a0: np.ndarray, factor: float = OUTLIER_FACTOR) -> np.ndarray:
    """The columns with ``p_u > factor / n``, in descending order of their share (ties: lower index first)."""
    p = column_shares(a0)
    n = p.shape[0]
    idx = np.flatnonzero(p * n > factor) if n else np.zeros(0, dtype=np.int64)
    out: np.ndarray = idx[np.argsort(-p[idx], kind="stable")].astype(np.int64)
    return out


def top_column_share(a0: np.ndarray, columns: float = OUTLIER_COLUMNS) -> tuple[float, int]:
    """The share of ``||A0||_F^2`` in the top ``t = max(1, floor(columns * n))`` columns, and ``t``."""
    p = column_shares(a0)
    n = p.shape[0]
    if n == 0:
        return 0.0, 0
    t = max(1, int(np.floor(columns * n)))
    return float(np.sort(p)[::-1][:t].sum()), t


def full_support_groups(active: np.ndarray, share: float = FULL_SUPPORT) -> np.ndarray:
    """Groups whose support holds at least ``share`` of the units: ``|S_g| >= share * n``."""
    n = active.shape[1]
    out: np.ndarray = np.flatnonzero(active.sum(axis=1) >= share * n) if n else np.zeros(0, dtype=np.int64)
    return out


def identical_support_groups(active: np.ndarray, share: float = IDENTICAL_SUPPORTS) -> np.ndarray:
    """The largest set of groups with one identical support, when it has at least ``share`` of the
    groups and at least two of them (else empty). Ties between equally large sets: the one whose
    first group comes first.
    """
    m = active.shape[0]
    if m < 2:
        return np.zeros(0, dtype=np.int64)
    _, inv, counts = np.unique(active, axis=0, return_inverse=True, return_counts=True)
    inv = np.asarray(inv).reshape(-1)
    best = int(counts.max())
    if best < 2 or best < share * m:
        return np.zeros(0, dtype=np.int64)
    # The first group (in group order) of a largest class names the class.
    first = next(g for g in range(m) if counts[inv[g]] == best)
    out: np.ndarray = np.flatnonzero(inv == inv[first])
    return out


def interface_outliers(a0: np.ndarray, *, factor: float = OUTLIER_FACTOR, columns: float = OUTLIER_COLUMNS,
                       energy: float = OUTLIER_ENERGY) -> dict[str, Any]:
    """Outlier columns of one interface, their energy share, and whether it is ``outlier_dominated``."""
    p = column_shares(a0)
    cols = outlier_columns(a0, factor)
    top, t = top_column_share(a0, columns)
    return {"columns": cols, "shares": p[cols], "energy_share": float(p[cols].sum()),
            "top_share": top, "top_columns": t, "dominated": bool(top > energy)}
