"""What the report draws for an interface, reduced to a fixed small size and saved with the Result.

Rows of the PAM are ordered by group and columns by support block (each group's exclusive
support, hubs, other shared units, inactive units), then binned to at most ``MAX_BINS`` per
axis: magnitudes are averaged over a bin, mask codes take the bin's majority. The report is
drawn from these arrays alone, so ``physgsa report DIR`` re-renders without recomputing.

The compare page's side-by-side maps (:func:`binned_abs`, :func:`changed_bins`) bin into
numpy's ``array_split`` pieces (the first ``n mod bins`` bins one entry longer) and average
each block directly: the page's bins since 0.2.0, kept so that its bytes stay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: the spectra command draws no interface and loads no structure
    from .structure import Partition, Structure

__all__ = ["MAX_BINS", "interface_heatmaps", "binned_abs", "changed_bins"]

MAX_BINS = 96


def _edges(n: int) -> np.ndarray:
    k = min(n, MAX_BINS)
    edges: np.ndarray = np.linspace(0, n, k + 1).round().astype(int)
    return edges


def _bin_indicator(order: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``(bins, n)`` matrix whose row ``b`` averages the entries placed in bin ``b`` after ``order``.

    Binning through a product (``R |A| C^T``) reads each matrix once, instead of reordering
    copies of it and then reducing.
    """
    n = order.shape[0]
    pos_bin = np.repeat(np.arange(edges.shape[0] - 1), np.diff(edges))  # bin of each sorted position
    r = np.zeros((edges.shape[0] - 1, n))
    r[pos_bin, order] = 1.0
    return r / np.diff(edges)[:, None]


def _boundaries(sorted_labels: np.ndarray, edges: np.ndarray) -> list[tuple[float, int]]:
    """(position in bins, label) where each run of equal labels starts."""
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    pos = np.interp(starts, edges, np.arange(edges.shape[0]))
    return [(float(p), int(sorted_labels[s])) for p, s in zip(pos, starts)]


def interface_heatmaps(a0: np.ndarray, a1: np.ndarray, e: np.ndarray, part: Partition, st: Structure,
                       unit_block: np.ndarray, labels: np.ndarray, certified: np.ndarray) -> dict[str, Any]:
    """Binned |A0|, |A1|, |E| = |A1 - A0|, the mask map and the ICM label strip of one interface."""
    row_order = np.argsort(part.groups, kind="stable")
    col_block = unit_block[part.units]
    col_order = np.argsort(col_block, kind="stable")
    re, ce = _edges(a0.shape[0]), _edges(a0.shape[1])
    rb, cb = _bin_indicator(row_order, re), _bin_indicator(col_order, ce)
    # The mask is codes[groups][:, units]: its bin shares come from the small group x unit
    # codes through the indicators, without expanding the rows x cols mask.
    rg = rb @ part.group_indicator().T
    cu = np.zeros((part.n_units, cb.shape[0]))
    np.add.at(cu, part.units, cb.T)  # columns summed by unit (no cols x units indicator)
    cu = cu.T
    shares = np.stack([rg @ (st.codes == c).astype(float) @ cu.T for c in range(3)])
    code = {"SC": 0, "SA": 1, "ST": 2, "zero": 3}
    lab = np.array([code[x] for x in labels[row_order]], dtype=np.int8)
    lab_bins = np.array([np.bincount(lab[a:b], minlength=4).argmax() for a, b in zip(re[:-1], re[1:])], np.int8)
    cert_bins = np.array([certified[row_order][a:b].mean() for a, b in zip(re[:-1], re[1:])])
    # The maps are drawn, and saved as float32: bin them in float32 (half the memory traffic).
    rb32, cb32 = rb.astype(np.float32), cb.astype(np.float32)
    return {
        "a0": rb32 @ np.abs(a0, dtype=np.float32) @ cb32.T,
        "a1": rb32 @ np.abs(a1, dtype=np.float32) @ cb32.T,
        "diff": rb32 @ np.abs(e, dtype=np.float32) @ cb32.T,
        "mask": np.argmax(shares, axis=0).astype(np.int8),
        "labels": lab_bins,
        "certified": cert_bins.astype(np.float32),
        "row_groups": np.array(_boundaries(part.groups[row_order], re), dtype=np.float64).reshape(-1, 2),
        "col_blocks": np.array(_boundaries(col_block[col_order], ce), dtype=np.float64).reshape(-1, 2),
    }


def binned_abs(a: np.ndarray, order: np.ndarray, size: int = MAX_BINS) -> np.ndarray:
    """Mean ``|entry|`` of ``a`` (rows taken in ``order``) over at most ``size x size`` blocks.

    Bin ``b`` of an axis of length ``n`` is the ``b``-th piece of ``np.array_split`` into
    ``min(size, n)`` pieces; each cell is the mean of ``|a|`` over its block.
    """
    x = np.abs(a[order])
    rows = np.array_split(np.arange(x.shape[0]), min(size, x.shape[0]))
    cols = np.array_split(np.arange(x.shape[1]), min(size, x.shape[1]))
    return np.array([[x[np.ix_(r, c)].mean() for c in cols] for r in rows])


def changed_bins(cols: list[int], n: int, size: int = MAX_BINS) -> np.ndarray:
    """Which column bins of :func:`binned_abs` (``n`` columns) hold any of the columns ``cols`` (booleans)."""
    bins = np.array_split(np.arange(n), min(size, n))
    hit = set(cols)
    return np.array([any(c in hit for c in b) for b in bins])
