"""The graded certificate under a change (physgsa compare; docs/definitions.md, "The graded
certificate under a change"): the per-element bound from the factor changes, the shares compare
reports, and the claim that no certified element ever changes.

Every check is against an independent computation: the exact block norms of the products formed
with numpy, and OTHER's structure recomputed by loops (``brute``) from numpy's SVDs.
"""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import brute
import physgsa
from physgsa.core import graded as G
from physgsa.core.perturb import changed_chain, parse_change
from physgsa.core.structure import Partition
from physgsa.outputs.compare import CompareResult
from physgsa.report.compare import graded_sentences, render_compare_page
from physgsa.runs import compare as C

# ---------------------------------------------------------------------------------------------
# The bound itself


def _partition(n_rows, n_cols, m, n_units, rng):
    """Random row groups and column units (every group and unit non-empty)."""
    groups = np.concatenate([np.arange(m), rng.integers(0, m, n_rows - m)])
    rng.shuffle(groups)
    units = np.concatenate([np.arange(n_units), rng.integers(0, n_units, n_cols - n_units)])
    if n_units < n_cols:  # single channels: unit j is column j
        rng.shuffle(units)
    return Partition(groups=groups, units=units, n_groups=m, n_units=n_units, group_strategy="kmeans",
                     unit_strategy="channels" if n_units == n_cols else "heads")


def _exact_blocks(w_left, w_right, d_left, d_right, part):
    """``||(A_o - A0_b)[G_g, C_u]||_F`` block by block, the two products formed and subtracted."""
    diff = (w_right + d_right) @ (w_left + d_left) - w_right @ w_left
    return brute.unit_energies(diff, part.groups, part.units, part.n_groups, part.n_units)


def _low_rank(rng, rows, cols, k):
    return brute.truncate(rng.standard_normal((rows, cols)), k)


def _change(kind, w, rng, t, part_rows=None, part_cols=None):
    """A change ``D`` of a truncated factor ``w``: random, quantized, rescaled blocks or aligned."""
    if kind == "zero":
        return np.zeros_like(w)
    if kind == "noise":
        g = rng.standard_normal(w.shape)
        return t * np.linalg.norm(w) * g / np.linalg.norm(g)
    if kind == "quantize":  # int4-like round-to-nearest per row, then the truncation is kept
        scale = np.abs(w).max(axis=1, keepdims=True) / 7
        return np.round(w / scale) * scale - w
    if kind == "rows":  # rescale the rows of one group (a block of the right factor)
        d = np.zeros_like(w)
        d[part_rows] = t * w[part_rows]
        return d
    if kind == "cols":  # rescale the columns of one unit (a block of the left factor)
        d = np.zeros_like(w)
        d[:, part_cols] = t * w[:, part_cols]
        return d
    assert kind == "scale"
    return t * w


@settings(max_examples=80)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 4), grouped=st.booleans(),
       left=st.sampled_from(["zero", "noise", "quantize", "cols", "scale"]),
       right=st.sampled_from(["zero", "noise", "quantize", "rows", "scale"]),
       t=st.sampled_from([1e-6, 1e-3, 0.1, 1.0, 3.0]))
def test_change_bounds_dominate_the_exact_block_norms(seed, m, grouped, left, right, t):
    rng = np.random.default_rng(seed)
    n_out, n_mid, n_in = 9, 7, 8
    part = _partition(n_out, n_in, m, 4 if grouped else n_in, rng)
    w_right, w_left = _low_rank(rng, n_out, n_mid, 4), _low_rank(rng, n_mid, n_in, 5)
    g0 = part.groups == rng.integers(0, m)
    u0 = part.units == rng.integers(0, part.n_units)
    d_right = _change(right, w_right, rng, t, part_rows=g0)
    d_left = _change(left, w_left, rng, -t / (1 + t) if left == "cols" else t, part_cols=u0)
    beta = G.change_bounds(w_left, w_right, d_left, d_right, part)
    exact = _exact_blocks(w_left, w_right, d_left, d_right, part)
    # The products' own rounding is far below 1e-13 of ||W'||_F ||W + D||_F here.
    slack = 1e-13 * np.linalg.norm(w_right + d_right) * np.linalg.norm(w_left + d_left)
    assert np.all(exact <= beta * (1 + 1e-12) + slack), float(np.max(exact - beta))
    if left == right == "zero":
        assert np.all(beta == 0.0)


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("c", [-0.5, 0.3, 1.0, 4.0])
def test_change_bounds_are_tight_on_aligned_rank_one_rescalings(grouped, c):
    """``W' = x y^T``, ``W = y z^T`` rescaled by ``1 + c``: every block's bound is attained, so
    dropping or loosening any of the three terms fails here."""
    rng = np.random.default_rng(7)
    x, y, z = rng.standard_normal(6), rng.standard_normal(5), rng.standard_normal(7)
    w_right, w_left = np.outer(x, y), np.outer(y, z)
    part = _partition(6, 7, 3, 3 if grouped else 7, rng)
    if c > 0:
        beta = G.change_bounds(w_left, w_right, c * w_left, c * w_right, part)
        exact = _exact_blocks(w_left, w_right, c * w_left, c * w_right, part)
        np.testing.assert_allclose(beta, exact, rtol=1e-12, atol=0)
    else:
        # A shrinking change cancels part of D' W + W' D with D' D: the bound then exceeds the block.
        beta = G.change_bounds(w_left, w_right, c * w_left, c * w_right, part)
        exact = _exact_blocks(w_left, w_right, c * w_left, c * w_right, part)
        assert np.all(exact <= beta * (1 + 1e-12))
    # One side only: the bound is attained by its own term.
    for d_l, d_r in ((c * w_left, 0 * w_right), (0 * w_left, c * w_right)):
        beta = G.change_bounds(w_left, w_right, d_l, d_r, part)
        np.testing.assert_allclose(beta, _exact_blocks(w_left, w_right, d_l, d_r, part), rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------------------------
# compare: the shares, and no certified element ever changes


def _chain(seed=0, n_factors=3, n=12, noise=0.4):
    rng = np.random.default_rng(seed)
    return physgsa.Chain.from_arrays([(f"f{i}", np.eye(n) + noise * rng.standard_normal((n, n)) / np.sqrt(n))
                                      for i in range(n_factors)])


class _Recorder:
    """Records every ``(interface, how, shares)`` compare hands to the direct check, then runs it."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = C.check_elements

        def record(s0, s1, shares, where, how):
            self.calls.append((where, how, shares))
            return real(s0, s1, shares, where, how)

        monkeypatch.setattr(C, "check_elements", record)
        self.graded = []
        real_graded = C._graded_change

        def record_graded(pam, s_o, beta, error, bound, delta_norm, where):
            self.graded.append((where, pam, beta, error))
            return real_graded(pam, s_o, beta, error, bound, delta_norm, where)

        monkeypatch.setattr(C, "_graded_change", record_graded)


def _brute_check(base, other, rec):
    """Recompute every interface by loops from numpy's SVDs and check what compare certified."""
    # The spec's windows at the default q = 0.9 (band q +- (1 - q) / 2), from numpy's SVD.
    ks = [brute.dominant_window(np.linalg.svd(brute.a_hat(f.matrix), compute_uv=False), 0.9, 0.05)
          for f in base.factors]
    per_where = {}
    for where, how, shares in rec.calls:
        per_where.setdefault(where, []).append((how, shares))
    assert len(rec.graded) == len(base.links)
    n_changed = 0
    for link, (where, pam, beta, error) in zip(base.links, rec.graded):
        fl, fr = base.factors[link.left], base.factors[link.right]
        ol, orr = other.factors[link.left], other.factors[link.right]
        kl, kr = ks[link.left], ks[link.right]
        a0 = brute.pam_pair(fl.matrix, fr.matrix, kl, kr)[0]
        ao = brute.pam_pair(ol.matrix, orr.matrix, kl, kr)[0]
        ref = pam.ref
        part = ref.partition
        args = (part.groups, part.units, part.n_groups, part.n_units)
        exact = brute.unit_energies(ao - a0, *args)
        scale = np.linalg.norm(a0) + np.linalg.norm(ao)
        # The a priori bound dominates the exact block change; the measured error is it.
        assert np.all(exact <= beta * (1 + 1e-9) + 1e-12 * scale), where
        np.testing.assert_allclose(error, exact, rtol=1e-7, atol=1e-11 * scale)
        e0 = brute.unit_energies(a0, *args)
        eo = brute.unit_energies(ao, *args)
        s0 = brute.structure(e0, ref.theta, hub=ref.hub_degree, kappa_scaled=ref.kappa_scaled, scale=ref.scale,
                             code_active=ref.structure.active, code_edges=ref.structure.edges)
        so = brute.structure(eo, ref.theta, hub=ref.hub_degree, kappa_scaled=ref.kappa_scaled, scale=ref.scale)
        act0, acto = np.array(s0["active"]), np.array(so["active"])
        n_changed += int(np.sum(act0 != acto))
        hows = per_where[where]
        assert len(hows) == 4  # a priori, measured, the profile at the bound and at ||Delta A||_F
        for how, sh in hows:
            assert not np.any(sh.memberships & (act0 != acto)), (where, how)
            cols = sh.columns
            assert np.array_equal(np.array(s0["degree"])[cols], np.array(so["degree"])[cols]), (where, how)
            assert np.array_equal(np.array(s0["codes"])[:, cols], np.array(so["codes"])[:, cols]), (where, how)
            hubs0, hubso = np.array(s0["hubs"]), np.array(so["hubs"])
            assert not np.any(sh.hubs & (hubs0 != hubso)), (where, how)
            e_0, e_o = np.array(s0["edges"]), np.array(so["edges"])
            assert not np.any(sh.pairs & (e_0 != e_o)), (where, how)
    return n_changed


def _other(base, kind, t, seed):
    """OTHER: a random change, a quantization, or a change aimed at BASE's weakest unit."""
    if kind == "noise":
        return changed_chain(base, parse_change(noise=t, seed=seed))
    if kind in ("int8", "int4"):
        return changed_chain(base, parse_change(quantize=kind))
    mats = [f.matrix.copy() for f in base.factors]
    rng = np.random.default_rng(seed)
    j = int(rng.integers(0, len(mats)))
    if kind == "rows":  # rescale a block of rows (the outputs of a few channels)
        rows = rng.random(mats[j].shape[0]) < 0.3
        mats[j][rows] *= 1 + t
    else:  # "column": rescale one input channel, crossing memberships of the interface that reads it
        mats[j][:, int(rng.integers(0, mats[j].shape[1]))] *= t
    return physgsa.Chain.from_arrays([(f.name, m) for f, m in zip(base.factors, mats)])


@settings(max_examples=30)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["noise", "int8", "int4", "rows", "column"]),
       t=st.sampled_from([1e-4, 1e-2, 0.1, 0.5, 3.0]), threshold=st.sampled_from(["gap", "relative"]))
def test_certified_elements_never_change_under_random_and_aimed_changes(seed, kind, t, threshold):
    base = _chain(seed % 50)
    other = _other(base, kind, t, seed)
    with pytest.MonkeyPatch.context() as mp:
        rec = _Recorder(mp)
        res = C.compare_chains(base, [("o", other)], groups="kmeans", n_groups=4, threshold=threshold)
    _brute_check(base, other, rec)
    ifs = res.interfaces
    # The measured certificate certifies at least what the a priori one does (beta >= the exact norms).
    assert (ifs["certified_share_measured"] >= ifs["certified_share_apriori"] - 1e-15).all()
    # The profile at the actual size certifies at least what it does at the (larger) drift bound.
    assert (ifs["profile_at_delta_norm"] >= ifs["profile_at_drift_bound"] - 1e-15).all()


def test_an_aimed_change_is_caught_and_its_memberships_are_not_certified():
    """Scale the input channel of BASE's tightest active membership well below its threshold: the
    direct check finds it changed, neither certificate certifies it, nothing certified changed."""
    base = _chain(3)
    ref_res = C.compare_chains(base, [("same", base)], groups="kmeans", n_groups=4)
    assert (ref_res.interfaces[["certified_share_apriori", "certified_share_measured"]] == 1.0).all().all()
    with pytest.MonkeyPatch.context() as mp:
        rec = _Recorder(mp)
        C.compare_chains(base, [("same", base)], groups="kmeans", n_groups=4)
    _, pam, _, _ = rec.graded[0]
    s, theta = pam.ref.structure, pam.ref.theta
    e = np.where(s.active, s.energies, np.inf)
    g, u = np.unravel_index(np.argmin(e / theta[:, None]), e.shape)
    mats = [f.matrix.copy() for f in base.factors]
    mats[0][:, u] *= 0.3 * theta[g] / s.energies[g, u]
    other = physgsa.Chain.from_arrays([(f.name, m) for f, m in zip(base.factors, mats)])
    with pytest.MonkeyPatch.context() as mp:
        rec = _Recorder(mp)
        res = C.compare_chains(base, [("aimed", other)], groups="kmeans", n_groups=4)
    assert _brute_check(base, other, rec) > 0
    row = res.interfaces.iloc[0]
    assert not row["direct_same"]
    assert row["certified_share_apriori"] < 1 and row["certified_share_measured"] < 1
    assert row["certified_columns_measured"] < row["n_units"]
    for where, how, shares in rec.calls:
        if where.startswith(base.links[0].name(base)):
            assert not shares.memberships[g, u], how


@pytest.mark.parametrize("chain", ["small", "example"])
def test_identical_models_certify_every_element(chain):
    base = _chain() if chain == "small" else physgsa.example_chain()
    same = _chain() if chain == "small" else physgsa.example_chain()
    ifs = C.compare_chains(base, [("same", same)]).interfaces
    assert (ifs["delta_norm"] == 0).all() and (ifs["drift_bound"] == 0).all()
    assert (ifs["rho_static"] > 1e-10).all()  # every radius above the rounding allowance
    for col in ("certified_share_apriori", "certified_share_measured", "profile_at_drift_bound",
                "profile_at_delta_norm", "profile_columns_at_drift_bound", "profile_columns_at_delta_norm"):
        # Exactly 1 up to the order of a sum (the profile sums its shares in radius order).
        np.testing.assert_allclose(ifs[col].to_numpy(dtype=float), 1.0, rtol=0, atol=1e-14, err_msg=col)
    assert (ifs["certified_columns_apriori"] == ifs["n_units"]).all()
    assert (ifs["certified_columns_measured"] == ifs["n_units"]).all()


def test_shares_are_saved_read_back_and_told_in_one_sentence_each(tmp_path):
    base = physgsa.example_chain()
    res = C.compare_chains(base, [("int4", changed_chain(base, parse_change(quantize="int4")))])
    ifs = res.interfaces
    # On int4 the per-element bounds certify much of the routing where the global radius certifies nothing.
    assert (ifs["profile_at_drift_bound"] == 0).all() and (ifs["certified_share_apriori"] > 0.5).all()
    assert not ifs["certified"].any()
    detail = res.document["interfaces"][0]["graded"]
    assert detail["apriori"]["membership_share"] == ifs["certified_share_apriori"].iloc[0]
    assert detail["profile_at_delta_norm"]["r"] >= ifs["delta_norm"].iloc[0]
    physgsa.save(res, tmp_path / "cmp")
    back = CompareResult.load(tmp_path / "cmp")
    for col in ("certified_share_apriori", "certified_share_measured", "certified_columns_apriori",
                "profile_at_drift_bound", "profile_at_delta_norm"):
        np.testing.assert_array_equal(back.interfaces[col].to_numpy(dtype=float), ifs[col].to_numpy(dtype=float))
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert page == render_compare_page(res)
    for row in ifs.itertuples(index=False):
        sentences = graded_sentences(row)
        assert len(sentences) == 4
        assert f"{100 * row.certified_share_apriori:.1f}%" in sentences[0]
        assert f"{row.certified_columns_apriori} of {row.n_units} columns" in sentences[0]
        assert f"{100 * row.certified_share_measured:.1f}%" in sentences[1]
        assert f"{100 * row.profile_at_drift_bound:.1f}%" in sentences[2]
        assert f"{100 * row.profile_at_delta_norm:.1f}%" in sentences[3]
        for sentence in sentences:  # (symbols such as ||ΔA0||_F sit in no-wrap spans)
            assert sentence.replace("'", "&#x27;") in re.sub(r"</?span[^>]*>", "", page)


def _aimed_pair():
    """BASE and a copy whose input channel 0 of the first factor is scaled by 0.05 (supports change)."""
    base = _chain(3)
    mats = [f.matrix.copy() for f in base.factors]
    mats[0][:, 0] *= 0.05
    return base, physgsa.Chain.from_arrays([(f.name, m) for f, m in zip(base.factors, mats)])


def test_a_broken_bound_or_a_false_certificate_fails_loudly(monkeypatch):
    base, other = _aimed_pair()
    res = C.compare_chains(base, [("aimed", other)], groups="kmeans", n_groups=4)
    assert not res.interfaces["direct_same"].iloc[0]
    # A bound below the exact block change: refused before anything is certified with it.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(C, "change_bounds", lambda *a, **kw: np.zeros_like(G.change_bounds(*a, **kw)))
        with pytest.raises(physgsa.CertificateBugError, match="exceeds its per-element bound"):
            C.compare_chains(base, [("aimed", other)], groups="kmeans", n_groups=4)
    # A certificate that certifies every element: the direct check names what changed.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(C, "certify_elements", lambda ref, margin, err, delta: G.certify_elements(ref, margin, 0 * err))
        with pytest.raises(physgsa.CertificateBugError, match="a certified membership .*changed in the direct check"):
            C.compare_chains(base, [("aimed", other)], groups="kmeans", n_groups=4)
