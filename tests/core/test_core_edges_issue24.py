"""Issue 24, section C: numerics at the edges (items 15, 16, 17, 18 and 20).

Each case is built here at a small size and checked against an independent computation (a dense
SVD of the product scaled by a power of two, np.corrcoef, the definition of a non-unique span).
Every case ends with a flag, never CertificateBugError, and two calls give the same bytes.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

import physgsa
from physgsa.core import structure as S
from physgsa.core.certificate import margins
from physgsa.core.icm import icm_rows
from physgsa.core.transport import top_singular_value


def _chain(*pairs):
    return physgsa.Chain.from_arrays(list(pairs))


def _bytes(res) -> str:
    return json.dumps(res.certificate, sort_keys=True)


def _flags(res, i: int = 0) -> list[str]:
    return str(res.interfaces["flags"][i]).split(";")


def _dense_sigma1(m: np.ndarray) -> float:
    # Independent reference: the dense SVD of M scaled by an exact power of two.
    e = np.frexp(np.max(np.abs(m)))[1]
    return float(np.ldexp(scipy.linalg.svdvals(np.ldexp(m, -e))[0], e))


# ----- item 15: sigma_1(M) scaled before ARPACK; M = 0 handled ---------------------------------------


def test_sigma1_of_exact_zero_product_wider_than_32_is_zero():
    assert top_singular_value(np.zeros((40, 33)), seed=0) == 0.0


def test_exact_zero_product_of_width_33_is_flagged_product_zero():
    rng = np.random.default_rng(3)
    l_ = np.zeros((33, 33))
    l_[:16] = rng.standard_normal((16, 33))
    r_ = np.zeros((33, 33))
    r_[:, 16:] = rng.standard_normal((33, 17))
    assert not np.any(r_ @ l_)
    res = physgsa.certify(_chain(("l", l_), ("r", r_)))
    assert "product_zero" in _flags(res)
    assert res.interfaces["slack"].isna()[0]
    assert _bytes(res) == _bytes(physgsa.certify(_chain(("l", l_), ("r", r_))))


def _tiny_product(n: int = 40, seed: int = 5):
    # l = [X; 1e-162 Y], r = [0 | Z]: M = Z (1e-162 Y), exact (no cancellation), near 1e-161.
    rng = np.random.default_rng(seed)
    h = n // 2
    l_ = np.vstack([rng.standard_normal((h, n)), 1e-162 * rng.standard_normal((n - h, n))])
    r_ = np.hstack([np.zeros((n, h)), rng.standard_normal((n, n - h))])
    return l_, r_


def test_sigma1_near_1e_161_is_exact_and_repeatable():
    l_, r_ = _tiny_product()
    m = r_ @ l_
    ref = _dense_sigma1(m)
    got = [top_singular_value(m, seed=7) for _ in range(3)]
    assert got[0] == got[1] == got[2]
    assert abs(got[0] - ref) <= 1e-13 * ref


def test_slack_near_1e_161_matches_the_dense_reference_and_repeats():
    l_, r_ = _tiny_product()
    res = physgsa.certify(_chain(("l", l_), ("r", r_)))
    # The slack is scale-free: log s1(r) + log s1(l) - log s1(r l), on the raw factors.
    expected = (np.log(scipy.linalg.svdvals(r_)[0]) + np.log(scipy.linalg.svdvals(l_)[0])
                - np.log(_dense_sigma1(r_ @ l_)))
    assert res.interfaces["slack"][0] == pytest.approx(expected, abs=1e-9)
    assert _bytes(res) == _bytes(physgsa.certify(_chain(("l", l_), ("r", r_))))


# ----- item 16: an A0 at rounding level is flagged ---------------------------------------------------


def test_a0_of_rounding_noise_is_flagged_negligible():
    # Case 16's construction: M ~ 1e-160 exactly (no cancellation), but A0 is formed from the
    # frames of two factors with singular values 1 and 1e-160: its 1e-16 is rounding noise.
    rng = np.random.default_rng(16)
    l_ = np.vstack([rng.standard_normal((6, 12)), 1e-160 * rng.standard_normal((6, 12))])
    r_ = np.hstack([1e-160 * rng.standard_normal((12, 6)), rng.standard_normal((12, 6))])
    res = physgsa.certify(_chain(("l", l_), ("r", r_)), q=0.9)
    it = res.interfaces.iloc[0]
    assert "product_negligible" in it["flags"].split(";")
    assert not it["certified_a_priori"] and not it["certified_measured"]
    assert set(res.rows["label"]) == {"zero"}
    assert _bytes(res) == _bytes(physgsa.certify(_chain(("l", l_), ("r", r_)), q=0.9))


# ----- item 17: a radius within the rounding allowance is zero, flagged --------------------------------


def _hadamard_tie(seed: int):
    # l = diag(d), r = H diag(1 / d): M = H in exact arithmetic, every energy tied.
    h = scipy.linalg.hadamard(8).astype(float)
    d = np.sort(np.random.default_rng(seed).uniform(0.6, 1.8, 8))[::-1]
    return np.diag(d), h / d[None, :]


def test_tied_energies_give_a_zero_radius_with_a_flag_never_a_bug_error():
    flagged = 0
    for seed in range(12):
        l_, r_ = _hadamard_tie(seed)
        kw = dict(groups={"r": np.zeros(8, dtype=int)}, q=0.9999999, window_band=0.0, threshold="gap",
                  perturbation="explicit", seed=seed)
        res = physgsa.certify(_chain(("l", l_), ("r", r_)), **kw)
        it = res.interfaces.iloc[0]
        if "radius_at_rounding" in it["flags"].split(";"):
            flagged += 1
            assert it["rho_static"] == 0.0
            assert not it["certified_a_priori"] and not it["certified_measured"]
        assert _bytes(res) == _bytes(physgsa.certify(_chain(("l", l_), ("r", r_)), **kw))
    assert flagged > 0


def test_margins_zero_a_radius_of_one_ulp():
    # A unit energy one ulp above its threshold 0.5 * max (threshold="relative"): gamma = 2^-53.
    a0 = np.array([[1.0, 0.5 + 2.0**-53, 0.25]])
    part = S.Partition(groups=np.zeros(1, dtype=int), units=np.arange(3), n_groups=1, n_units=3,
                       group_strategy="given", unit_strategy="channels")
    ref = S.fit_reference(a0, part, threshold="relative", eta=0.5, kappa_fraction=0.05, hub_degree=2)
    assert margins(ref).gamma == 2.0**-53
    mg = margins(ref)
    assert mg.radius_at_rounding and mg.rho_static == 0.0
    # A radius well above rounding is untouched, and so is the same gap at 2^-600 (scale-free).
    ref2 = S.fit_reference(np.array([[1.0, 0.6, 0.25]]), part, threshold="relative", eta=0.5,
                           kappa_fraction=0.05, hub_degree=2)
    assert not margins(ref2).radius_at_rounding and margins(ref2).rho_static > 0.09
    ref3 = S.fit_reference(np.ldexp(a0, -600), part, threshold="relative", eta=0.5, kappa_fraction=0.05,
                           hub_degree=2)
    assert margins(ref3).radius_at_rounding


# ----- item 18: zero rows of A0 are `zero` and out of the centroid -------------------------------------


def test_zero_row_is_labelled_zero_and_left_out_of_the_centroid():
    rng = np.random.default_rng(18)
    a0 = np.abs(rng.standard_normal((6, 5)))
    a0[3] = 1e-16 * rng.standard_normal(5)  # rounding noise of an exactly zero row
    part = S.Partition(groups=np.array([0, 0, 0, 0, 1, 1]), units=np.arange(5), n_groups=2, n_units=5,
                       group_strategy="given", unit_strategy="channels")
    codes = np.zeros((2, 5), dtype=np.int8)
    zero_rows = np.zeros(6, dtype=bool)
    zero_rows[3] = True
    out = icm_rows(a0, np.zeros_like(a0), part, codes, tau_e=0.5, tau_rho=0.5, interface_certified=True,
                   zero_rows=zero_rows)
    assert out["label"][3] == "zero" and not out["certified"][3]
    prof = np.abs(a0) / np.linalg.norm(a0, axis=1, keepdims=True)
    centroid = prof[[0, 1, 2]].mean(axis=0)
    for i in (0, 1, 2):
        assert out["kappa"][i] == pytest.approx(np.corrcoef(prof[i], centroid)[0, 1], abs=1e-12)


def test_certify_labels_a_zero_row_of_the_right_factor_zero():
    rng = np.random.default_rng(1818)
    l_ = rng.standard_normal((24, 24))
    r_ = rng.standard_normal((24, 24))
    r_[3] = 0.0
    groups = np.repeat(np.arange(4), 6)
    res = physgsa.certify(_chain(("l", l_), ("r", r_)), groups={"r": groups}, q=0.9)
    rows = res.rows.sort_values("row")
    assert rows["label"].tolist()[3] == "zero"
    assert (rows["label"] != "zero").sum() == 23
    assert _bytes(res) == _bytes(physgsa.certify(_chain(("l", l_), ("r", r_)), groups={"r": groups}, q=0.9))


# ----- item 20: intersection dimensions where k cuts a repeated singular value -----------------------


def test_cuts_repeated_marks_ranks_inside_a_cluster():
    from physgsa.core.alignment import cuts_repeated

    s_left = np.array([3.0, 2.0, 2.0, 1.0, 0.5])
    s_right = np.array([4.0, 3.0, 1.0, 1.0, 1.0])
    assert cuts_repeated(s_left, s_right, [1, 2, 3, 4, 5]) == [False, True, True, True, False]


def test_certify_flags_intersection_grid_ranks_that_cut_a_cluster():
    rng = np.random.default_rng(20)
    q1, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    q2, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    l_ = q1 @ np.diag([3.0, 2.0, 2.0, 1.5, 1.0, 0.8, 0.6, 0.5]) @ q2.T  # sigma_2 = sigma_3: k = 2 cuts it
    r_ = rng.standard_normal((8, 8))
    res = physgsa.certify(_chain(("l", l_), ("r", r_)))
    inter = res.certificate["interfaces"][0]["alignment"]["intersection"]
    assert inter["basis_dependent"][inter["ks"].index(2)] is True
    assert inter["basis_dependent"][inter["ks"].index(1)] is False
    assert "intersection_basis_dependent" in _flags(res)


# ----- the shared cases of the issue (where this checkout has them) ----------------------------------

# A copy of ../shared/cases/edges (issue 24), kept in the repository so the cases run everywhere.
CASES = Path(__file__).resolve().parents[1] / "data" / "edges"
CASE_PARAMS = {
    "15_product_zero_width33.npz": ({}, "product_zero"),
    "15_slack_near_1e-160.npz": (dict(groups="kmeans", n_groups=8, threshold="gap", q=0.635, hub_degree=3,
                                      seed=2031458325), None),
    "16_a0_rounding_noise.npz": (dict(q=0.9), "product_negligible"),
    "17_hadamard_tie.npz": (dict(q=0.9999999, window_band=0.0, threshold="gap", perturbation="explicit", seed=6),
                            "radius_at_rounding"),
    "18_zero_row.npz": (dict(q=0.9), None),
}


@pytest.mark.parametrize("name", sorted(CASE_PARAMS))
def test_shared_edge_cases_end_flagged_and_repeat(name):
    path = CASES / name
    z = np.load(path)
    arrays = [(k, z[k]) for k in z.files if z[k].ndim == 2]
    params, flag = CASE_PARAMS[name]
    if "groups" in z.files:
        params = dict(params, groups={"r": z["groups"]})
    res = physgsa.certify(_chain(*arrays), **params)
    assert _bytes(res) == _bytes(physgsa.certify(_chain(*arrays), **params))
    if flag is not None:
        assert flag in _flags(res)
    if name == "15_slack_near_1e-160.npz":
        assert res.interfaces["slack"][0] == pytest.approx(372.98, abs=0.01)
    if name == "18_zero_row.npz":
        assert res.rows.sort_values("row")["label"].tolist()[3] == "zero"


# ----- item 21: bf16 / fp16 say that the format overflows or underflows ------------------------------


@pytest.mark.parametrize("fmt, scale, word", [("bf16", 1e150, "overflow"), ("fp16", 1e150, "overflow"),
                                              ("fp16", 1e-150, "underflow"), ("bf16", 1e-150, "underflow")])
def test_float_formats_name_overflow_and_underflow(fmt, scale, word):
    from physgsa.core.perturb import apply_change, parse_change
    from physgsa.core.validation import InvalidParameterError

    w = scale * np.random.default_rng(21).standard_normal((4, 5))
    with pytest.raises(InvalidParameterError, match=word) as info:
        apply_change(w, parse_change(quantize=fmt), "blocks.0.w")
    msg = str(info.value)
    assert "blocks.0.w" in msg and fmt in msg
    assert "NaN" not in msg and "zero matrix" not in msg.split(";")[0]


def test_float_formats_keep_a_tensor_in_range():
    from physgsa.core.perturb import apply_change, parse_change

    w = np.random.default_rng(22).standard_normal((4, 5))
    for fmt in ("bf16", "fp16"):
        out = apply_change(w, parse_change(quantize=fmt), "w")
        assert np.all(np.isfinite(out)) and np.max(np.abs(out - w)) < 1e-2
