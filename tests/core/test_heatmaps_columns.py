"""The heatmaps' column layout and graded shading (core/heatmaps.py), against hand-made references.

Support columns are drawn one bin each, ordered by support block; every inactive column (in no
support) is aggregated into one band whose value is the mean of those columns; the graded shading
is the share of each cell's memberships that the graded certificate certifies. Each expectation
here is written out by hand or recomputed entry by entry, never through the binning code.
"""

from types import SimpleNamespace

import numpy as np

from physgsa.core.heatmaps import MAX_BINS, interface_heatmaps
from physgsa.core.structure import CORE, NOISE, OVERLAP, Partition, block_energy


def _case(active: np.ndarray, groups: np.ndarray, seed: int = 0, hubs=None, units=None):
    """A hand-made structure: supports ``active`` (groups x units), rows in ``groups``; a random A0."""
    m, n_units = active.shape
    units = np.arange(n_units) if units is None else np.asarray(units)
    deg = active.sum(axis=0)
    codes = np.where(active, np.where(deg == 1, CORE, OVERLAP), NOISE)
    hubs = np.zeros(n_units, dtype=bool) if hubs is None else hubs
    st = SimpleNamespace(active=active, degree=deg, codes=codes, hubs=hubs)
    part = Partition(groups=groups, units=units, n_groups=m, n_units=n_units, group_strategy="given",
                     unit_strategy="channels")
    rng = np.random.default_rng(seed)
    a0 = rng.standard_normal((groups.shape[0], units.shape[0]))
    _, _, unit_block = block_energy(a0, part, st)
    return a0, part, st, unit_block


def _heat(a0, part, st, unit_block, graded=None):
    rows = a0.shape[0]
    labels = np.array(["SC"] * rows, dtype=object)
    return interface_heatmaps(a0, a0 + 0.5, np.full_like(a0, 0.5), part, st, unit_block, labels,
                              np.ones(rows, dtype=bool), graded=graded)


def test_support_columns_full_width_in_block_order_and_the_inactive_band_is_their_mean():
    # 3 groups on 12 channels: S_0 = {1, 4}, S_1 = {4, 7}, S_2 = {9}; channel 4 is shared (degree 2,
    # below the hub degree), the eight others are inactive.
    active = np.zeros((3, 12), dtype=bool)
    active[0, [1, 4]] = active[1, [4, 7]] = active[2, 9] = True
    groups = np.array([2, 0, 1, 0, 2, 1])
    a0, part, st, unit_block = _case(active, groups)
    heat = _heat(a0, part, st, unit_block)
    # By hand: excl:0 = {1}, excl:1 = {7}, excl:2 = {9}, hubs = {}, shared = {4}; then the band.
    full_width = [1, 7, 9, 4]
    inactive = [0, 2, 3, 5, 6, 8, 10, 11]
    row_order = [1, 3, 2, 5, 0, 4]  # by group, stable
    x = np.abs(a0)[row_order]
    assert heat["a0"].dtype == np.float32 and heat["a0"].shape == (6, 5)
    np.testing.assert_allclose(heat["a0"][:, :4], x[:, full_width], rtol=1e-6)
    np.testing.assert_allclose(heat["a0"][:, 4], x[:, inactive].mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(heat["a1"][:, 4], (np.abs(a0 + 0.5)[row_order])[:, inactive].mean(axis=1), rtol=1e-6)
    assert heat["col_counts"].tolist() == [1, 1, 1, 1, 8] and heat["col_band"].tolist() == [4]
    # Blocks: excl:0, excl:1, excl:2, shared (m + 1 = 4) and inactive (m + 2 = 5), each where it starts.
    assert heat["col_blocks"].tolist() == [[0, 0], [1, 1], [2, 2], [3, 4], [4, 5]]
    # Masks: the majority code of each cell, by hand for the band (all noise) and channel 4 (overlap
    # for groups 0 and 1, noise for group 2).
    g_sorted = groups[row_order]
    assert (heat["mask"][:, 4] == NOISE).all()
    assert heat["mask"][:, 3].tolist() == [OVERLAP if g in (0, 1) else NOISE for g in g_sorted]


def test_graded_shading_is_the_certified_share_of_each_cells_memberships():
    active = np.zeros((3, 12), dtype=bool)
    active[0, [1, 4]] = active[1, [4, 7]] = active[2, 9] = True
    groups = np.array([2, 0, 1, 0, 2, 1])
    a0, part, st, unit_block = _case(active, groups)
    rng = np.random.default_rng(3)
    apriori = rng.random((3, 12)) < 0.5
    measured = apriori | (rng.random((3, 12)) < 0.5)
    heat = _heat(a0, part, st, unit_block, graded={"apriori": apriori, "measured": measured})
    row_order = [1, 3, 2, 5, 0, 4]
    bins = [[1], [7], [9], [4], [0, 2, 3, 5, 6, 8, 10, 11]]
    for how, memb in (("apriori", apriori), ("measured", measured)):
        got = heat[f"graded_{how}"]
        assert got.dtype == np.float32 and got.shape == (6, 5)
        for i, row in enumerate(row_order):
            for j, cols in enumerate(bins):
                want = np.mean([memb[groups[row], c] for c in cols])  # entry by entry
                assert abs(float(got[i, j]) - want) < 1e-6, (how, i, j)
    assert "graded_apriori" not in _heat(a0, part, st, unit_block)  # not given, not saved


def test_shading_averages_rows_of_a_bin_and_columns_of_a_unit():
    # 200 rows (binned 2 or 3 per bin), heads of 2 columns each as units.
    n_units, m = 6, 4
    active = np.zeros((m, n_units), dtype=bool)
    active[0, 0] = active[1, 2] = active[2, [2, 3]] = active[3, 5] = True
    groups = np.arange(200) % m
    units = np.repeat(np.arange(n_units), 2)
    a0, part, st, unit_block = _case(active, groups, units=units)
    memb = np.random.default_rng(1).random((m, n_units)) < 0.5
    heat = _heat(a0, part, st, unit_block, graded={"apriori": memb})
    rows = np.argsort(groups, kind="stable")
    # Columns by hand: excl:0 = unit 0 (cols 0, 1), excl:1 = {}, excl:3 = unit 5 (10, 11),
    # shared = unit 2 (4, 5) and unit 3 is excl:2 (6, 7); inactive: units 1, 4 (2, 3, 8, 9).
    col_bins = [[0], [1], [6], [7], [10], [11], [4], [5], [2, 3, 8, 9]]
    assert heat["col_counts"].tolist() == [1] * 8 + [4]
    edges = np.linspace(0, 200, MAX_BINS + 1).round().astype(int)
    full = memb[groups][:, units].astype(float)[rows]
    want = np.array([[full[a:b][:, c].mean() for c in col_bins] for a, b in zip(edges[:-1], edges[1:])])
    np.testing.assert_allclose(heat["graded_apriori"], want, atol=1e-6)


def test_many_support_columns_share_the_bins_and_no_inactive_means_no_band():
    n = 260
    active = np.zeros((2, n), dtype=bool)
    active[0, :120] = active[1, 120:250] = True  # 250 support columns, 10 inactive
    groups = np.array([0, 1, 0, 1])
    a0, part, st, unit_block = _case(active, groups, seed=2)
    heat = _heat(a0, part, st, unit_block)
    counts = heat["col_counts"]
    assert counts.shape[0] == MAX_BINS and counts[-1] == 10 and heat["col_band"].tolist() == [MAX_BINS - 1]
    assert counts[:-1].sum() == 250 and set(counts[:-1].tolist()) <= {2, 3}
    order = np.r_[np.arange(250), np.arange(250, 260)]
    x = np.abs(a0)[[0, 2, 1, 3]][:, order]
    starts = np.r_[0, np.cumsum(counts)]
    want = np.stack([x[:, a:b].mean(axis=1) for a, b in zip(starts[:-1], starts[1:])], axis=1)
    np.testing.assert_allclose(heat["a0"], want, rtol=1e-5)
    # Every unit in a support: no band, one bin per column.
    active = np.zeros((2, 8), dtype=bool)
    active[0, :5] = active[1, 3:] = True
    a0, part, st, unit_block = _case(active, groups)
    heat = _heat(a0, part, st, unit_block)
    assert heat["col_band"].tolist() == [-1] and heat["col_counts"].tolist() == [1] * 8
    # No unit in any support: nothing to draw at full width, every column binned as before.
    a0, part, st, unit_block = _case(np.zeros((2, 8), dtype=bool), groups)
    heat = _heat(a0, part, st, unit_block)
    assert heat["col_band"].tolist() == [-1] and heat["a0"].shape == (4, 8)
