"""What the report draws for an interface, reduced to a fixed small size and saved with the Result.

Rows of the PAM are ordered by group and columns by support block (each group's exclusive
support, hubs, other shared units, inactive units; within a block, in column order). Rows are
binned to at most ``MAX_BINS``. Columns are binned so that the structure is readable
(:func:`column_bins`): the support columns (units in at least one support) one bin each, up to
``MAX_BINS - 1`` of them (beyond that, evenly split into ``MAX_BINS - 1`` bins), and every inactive
column (in no support: noise for every group) aggregated into one last bin, the band. Magnitudes
are averaged over a bin, mask codes take the bin's majority. The report is drawn from these
arrays alone, so ``physgsa report DIR`` re-renders without recomputing.

Keys of one interface's maps (heatmaps.npz stores them as ``"{index}/{key}"``), float32 unless said:

- ``a0``, ``a1``, ``diff``: mean ``|A0|``, ``|A1|``, ``|A1 - A0|`` per (row bin, column bin);
- ``mask`` (int8): the cell's majority mask code (0 noise, 1 core, 2 overlap);
- ``labels`` (int8), ``certified``: per row bin, the majority ICM label (0 SC, 1 SA, 2 ST,
  3 zero) and the certified fraction of its rows;
- ``row_groups``, ``col_blocks`` (float64, ``(n, 2)``): where each group / support block starts,
  in bins, and its index (blocks as in :func:`physgsa.core.structure.block_energy`);
- ``col_counts`` (int64): the number of matrix columns in each column bin;
- ``col_band`` (int64, one entry): the index of the aggregated inactive band, -1 when there is none;
- ``graded_apriori``, ``graded_measured`` (present where the graded memberships were given):
  per cell, the share of its entries ``(i, j)`` whose membership ``(group(i), unit(j))`` is
  certified by the graded certificate (definitions section 5b), a priori and measured.

The compare page's side-by-side maps (:func:`binned_abs`, :func:`changed_bins`) bin into
numpy's ``array_split`` pieces (the first ``n mod bins`` bins one entry longer) and average
each block directly: the page's bins since 0.2.0, kept so that its bytes stay.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: the spectra command draws no interface and loads no structure
    from .structure import Partition, Structure

__all__ = ["MAX_BINS", "interface_heatmaps", "column_bins", "binned_abs", "changed_bins"]

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


def column_bins(col_block: np.ndarray, inactive: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Column order and bin edges: support columns at full width, inactive columns in one band.

    Columns are sorted by support block (stable: column order within a block), the inactive
    ones last. With ``s`` support columns and ``n - s`` inactive ones, the support columns take
    one bin each when ``s <= MAX_BINS - 1`` (else ``MAX_BINS - 1`` bins split as evenly as
    whole columns allow) and the inactive columns one band, the last bin. Where every column is
    a support column there is no band; where none is, every column is binned evenly (there is
    no structure to draw at full width).

    Returns
    -------
    order : ndarray
        The columns in drawing order.
    edges : ndarray
        Bin ``b`` holds positions ``edges[b]:edges[b + 1]`` of ``order``.
    band : int
        The band's bin, -1 when there is none.
    """
    # Inactive columns go last whatever their block number, so the band is one contiguous bin.
    key = np.where(inactive, np.iinfo(np.int64).max, col_block.astype(np.int64))
    order = np.argsort(key, kind="stable")
    n, s = int(col_block.shape[0]), int(np.count_nonzero(~inactive))
    if s == 0 or s == n:
        return order, _edges(n), -1
    k = min(s, MAX_BINS - 1)
    edges = np.r_[np.linspace(0, s, k + 1).round().astype(int), n]
    return order, edges, k


def interface_heatmaps(a0: np.ndarray, a1: np.ndarray, e: np.ndarray, part: Partition, st: Structure,
                       unit_block: np.ndarray, labels: np.ndarray, certified: np.ndarray, *,
                       graded: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Binned |A0|, |A1|, |E| = |A1 - A0|, the mask map, the ICM label strip and the graded shading of one interface.

    ``graded`` maps ``"apriori"`` / ``"measured"`` to the ``(groups, units)`` booleans of the
    memberships the graded certificate certifies (definitions section 5b); each becomes the map
    ``graded_<how>``, the certified share of each cell's entries. The keys are listed in the
    module's docstring.
    """
    row_order = np.argsort(part.groups, kind="stable")
    col_block = unit_block[part.units]
    col_order, ce, band = column_bins(col_block, st.degree[part.units] == 0)
    re = _edges(a0.shape[0])
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
    out = {
        "a0": rb32 @ np.abs(a0, dtype=np.float32) @ cb32.T,
        "a1": rb32 @ np.abs(a1, dtype=np.float32) @ cb32.T,
        "diff": rb32 @ np.abs(e, dtype=np.float32) @ cb32.T,
        "mask": np.argmax(shares, axis=0).astype(np.int8),
        "labels": lab_bins,
        "certified": cert_bins.astype(np.float32),
        "row_groups": np.array(_boundaries(part.groups[row_order], re), dtype=np.float64).reshape(-1, 2),
        "col_blocks": np.array(_boundaries(col_block[col_order], ce), dtype=np.float64).reshape(-1, 2),
        "col_counts": np.diff(ce).astype(np.int64),
        "col_band": np.array([band], dtype=np.int64),
    }
    for how, members in (graded or {}).items():
        # The same group x unit route as the mask: shares of each cell's entries, never the full mask.
        out[f"graded_{how}"] = np.clip(rg @ np.asarray(members, dtype=float) @ cu.T, 0.0, 1.0).astype(np.float32)
    return out


def binned_abs(a: np.ndarray, order: np.ndarray, size: int = MAX_BINS) -> np.ndarray:
    """Mean ``|entry|`` of ``a`` (rows taken in ``order``) over at most ``size x size`` blocks.

    Bin ``b`` of an axis of length ``n`` is the ``b``-th piece of ``np.array_split`` into
    ``min(size, n)`` pieces; each cell is the mean of ``|a|`` over its block: the block's row sums
    added over its rows (``np.add.reduceat``), divided by its entry count. Where every block is one
    entry (both axes at most ``size``) the cells are ``|a|`` itself, exactly. Otherwise a cell is
    within ``gamma_(h + w) mean`` of the exact mean of its ``h x w`` block (every term is
    nonnegative, so the sum's rounding is relative), as any summation order gives; the panels
    are only drawn (docs/definitions.md, "Numerical routes").
    """
    x: np.ndarray = np.abs(np.asarray(a, dtype=np.float64)[order])
    m, n = x.shape
    if m <= size and n <= size:
        return x
    rows = _bin_starts(m, size)
    cols = _bin_starts(n, size)
    sums = np.add.reduceat(np.add.reduceat(x, cols, axis=1), rows, axis=0)
    counts = np.outer(np.diff(np.append(rows, m)), np.diff(np.append(cols, n)))
    out: np.ndarray = sums / counts
    return out


def _bin_starts(n: int, size: int) -> np.ndarray:
    """First index of each bin of an axis of length ``n``: the pieces of ``np.array_split`` into
    ``min(size, n)`` (the one place the panels' bins are cut).
    """
    lengths = [len(piece) for piece in np.array_split(np.arange(n), min(size, n))]
    return np.concatenate([[0], np.cumsum(lengths[:-1])]).astype(np.int64)


def changed_bins(cols: list[int], n: int, size: int = MAX_BINS) -> np.ndarray:
    """Which column bins of :func:`binned_abs` (``n`` columns) hold any of the columns ``cols`` (booleans)."""
    starts = _bin_starts(n, size)
    hit = np.zeros(starts.shape[0], dtype=bool)
    hit[np.searchsorted(starts, np.asarray(cols, dtype=np.int64), side="right") - 1] = True
    return hit
