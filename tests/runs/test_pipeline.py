"""certify end to end on plain matrices: known answers, bounds on every producer, outputs."""

import json

import numpy as np
import pandas as pd
import pytest

import brute
import physgsa
from physgsa import Chain, certify
from properties import check_spectrum, check_transport

FACTOR_COLS = ["name", "rows", "cols", "r", "rho", "s_top", "s_mle", "s_window", "window_r2", "hellinger", "kl",
               "k_q", "k", "window_gap", "tau", "tau_gc", "numerical_rank"]
INTERFACE_COLS = ["left", "right", "k_left", "k_right", "slack", "amplitude", "drift", "drift_bound",
                  "trunc_error", "trunc_bound", "eps_trunc", "eps_trunc_gc", "cos_min", "cos_mean", "gamma",
                  "rho_static", "certified_a_priori", "certified_measured", "direct_same", "energy_core",
                  "energy_overlap", "energy_noise", "n_groups", "n_edges", "n_hubs"]
ROW_COLS = ["interface", "row", "group", "f_core", "f_overlap", "f_noise", "kappa", "label", "delta_e",
            "delta_rho", "certified"]


def random_chain(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return Chain.from_arrays([(f"f{i}", rng.standard_normal(s)) for i, s in enumerate(shapes)])


def no_nan(df):
    # Undefined values are nulls (NA) in nullable columns, never NaN or inf.
    for col in df.columns:
        if df[col].dtype.kind == "f":
            if isinstance(df[col].dtype, pd.Float64Dtype):
                assert np.isfinite(df[col].dropna().to_numpy(dtype=float)).all(), col
            else:
                assert np.isfinite(df[col].to_numpy()).all(), col


def test_tables_have_the_promised_columns_and_no_nan():
    res = certify(random_chain([(10, 8), (12, 10), (12, 12)]), n_perturbations=2)
    assert set(FACTOR_COLS) <= set(res.factors.columns)
    assert set(INTERFACE_COLS) <= set(res.interfaces.columns)
    assert set(ROW_COLS) <= set(res.rows.columns)
    for df in (res.factors, res.interfaces, res.rows):
        no_nan(df)
    assert len(res.interfaces) == 2 and len(res.rows) == 12 + 12
    json.dumps(res.certificate, allow_nan=False)
    items = res.certificate["interfaces"][0]["protocol"]
    assert [it["item"] for it in items] == list(range(1, 13))


def test_chain_break_is_reported_not_an_error():
    res = certify(random_chain([(4, 5), (6, 3), (2, 6)]))
    breaks = res.certificate["chain_breaks"]
    assert len(breaks) == 1 and breaks[0]["left"] == "f0" and breaks[0]["right"] == "f1"
    assert res.interfaces["interface"].tolist() == ["f1->f2"]
    assert res.verdict["n_chain_breaks"] == 1


def test_single_factor_has_no_interfaces():
    res = certify(random_chain([(5, 5)]))
    assert len(res.factors) == 1 and len(res.interfaces) == 0 and len(res.rows) == 0
    assert res.verdict["summary"] == "no interfaces" and res.verdict["member_fraction"] is None


def test_shared_frames_chain_has_zero_slack_and_known_error_but_is_not_certified():
    # A chain with shared frames (A_2's input frame is A_1's output frame, so C = I) and a
    # geometric spectrum 2^-k. Known answers: zero slack, every principal cosine 1, and the exact
    # truncation error sqrt(sum_{i > min(k, k')} sigma'_i^2 sigma_i^2). With the band given as
    # window_band=0.05 (the rule before the 2026-12-06 revision: largest gap in [q - 0.05, q + 0.05])
    # the window is k = 3 at q = 0.999, so it does NOT hold almost everything: ||E||_F ~ 0.29 is
    # several radii, and the interface is not certified.
    # (test_attacks.py::test_shared_frames_with_a_spectral_cliff_certify has the certified case.)
    rng = np.random.default_rng(0)
    n = 24
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = 2.0 ** -np.arange(n)
    a1 = (np.eye(n) * s) @ u.T
    a2 = u @ (np.eye(n) * s)
    res = certify(Chain.from_arrays([("a", a1), ("b", a2)]), q=0.999, window_band=0.05)
    row = res.interfaces.iloc[0]
    assert abs(row["slack"]) <= 1e-12
    assert row["cos_min"] == pytest.approx(1.0, abs=1e-12)
    sig = np.sqrt(n) * s / np.linalg.norm(s)  # the singular values of both A_hat
    k = brute.dominant_window(sig, 0.999, 0.05)
    assert k == 3 and row["k_left"] == k and row["k_right"] == k
    assert row["trunc_error"] == pytest.approx(np.sqrt(np.sum(sig[k:] ** 4)), rel=1e-10)
    assert row["trunc_error"] <= row["trunc_bound"]
    assert row["trunc_error"] > row["rho_static"]
    assert not row["certified_a_priori"] and not row["certified_measured"]


def test_identity_chain_known_answers():
    n = 10
    res = certify(Chain.from_arrays([("a", np.eye(n)), ("b", np.eye(n)), ("c", np.eye(n))]))
    f = res.factors
    assert np.allclose(f["rho"], 0.0) and np.allclose(f["s_top"], 0.0)
    assert all("top:flat" in fl for fl in f["flags"])
    it = res.interfaces
    assert np.allclose(it["slack"], 0.0, atol=1e-12)
    k = int(f["k"].iloc[0])
    assert np.allclose(it["trunc_error"], np.sqrt(n - k), rtol=1e-12)


def test_rank_one_chain():
    rng = np.random.default_rng(1)
    a = np.outer(rng.standard_normal(6), rng.standard_normal(6))
    b = np.outer(rng.standard_normal(6), rng.standard_normal(6))
    res = certify(Chain.from_arrays([("a", a), ("b", b)]))
    assert res.factors["numerical_rank"].tolist() == [1, 1]
    it = res.interfaces.iloc[0]
    assert it["trunc_error"] <= 1e-12 and bool(it["certified_measured"])


def test_bounds_hold_on_every_interface_producer():
    # The same property checks as the unit tests, on the pipeline's own spectra and transports.
    from physgsa.core.spectra import compute_spectrum
    from physgsa.core.transport import transport

    ch = physgsa.example_chain(n_factors=3, width=16)
    sp = [compute_spectrum(f, q=0.9, band=0.05, gap_floor=1e-3, chart="top") for f in ch.factors]
    for f, s in zip(ch.factors, sp):
        check_spectrum(s, f.matrix, 0.9)
    for link in ch.links:
        check_transport(transport(sp[link.left], sp[link.right], sp[link.left].k, sp[link.right].k),
                        sp[link.left], sp[link.right])
    res = certify(ch, window_search=True)
    for d in res.certificate["interfaces"]:
        assert d["truncation"]["exact"] <= d["truncation"]["bound"] * (1 + 1e-10)
        steps = d["window_search"]["steps"]
        assert [s["q"] for s in steps] == sorted(s["q"] for s in steps)
        for s in steps:
            assert not (s["certified_measured"] and not s["direct_same"])


def test_certified_interfaces_agree_with_the_direct_check():
    # Across many seeds: a certified verdict never contradicts the direct check. The check is
    # redone here without physgsa (tests/brute.py): A0 = M_w and A1 = M from numpy SVDs of the
    # factors at the reported windows, unit energies by loops with the groups, thresholds and
    # kappa stored in the result, and the two structures compared. (The pipeline's own direct
    # check cannot contradict its verdicts: it raises CertificateBugError first.)
    n_cert = n_uncert = n_differs = 0
    for seed in range(15):
        ch = physgsa.example_chain(n_factors=4, width=16, seed=seed, growth=10.0)
        arrays = {f.name: np.asarray(f.matrix) for f in ch.factors}
        res = certify(ch, n_perturbations=0)
        for i in range(len(res.interfaces)):
            chk = brute.interface_check(res, arrays, i)
            row = chk["row"]
            # The stored supports are those of A0 (recomputed here).
            assert chk["s0"]["active"] == chk["code_active"]
            cert = bool(row["certified_a_priori"] or row["certified_measured"])
            if cert:
                assert chk["near1"] == 0 and chk["same"], (seed, i)
            if chk["near1"] == 0:
                assert bool(row["direct_same"]) == chk["same"], (seed, i)
            n_cert += cert
            n_uncert += not cert
            n_differs += not chk["same"]
    assert n_cert >= 5 and n_uncert >= 5 and n_differs >= 3  # both verdicts occur: the check is not vacuous


def test_same_input_gives_same_bytes(tmp_path):
    ch = physgsa.example_chain(n_factors=3, width=16)
    physgsa.save(certify(ch, seed=3), tmp_path / "a")
    physgsa.save(certify(ch, seed=3), tmp_path / "b")
    for name in physgsa.outputs.result.OUTPUT_FILES + ("report.html",):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_save_and_load_round_trip(tmp_path):
    res = certify(physgsa.example_chain(n_factors=2, width=16))
    res.save(tmp_path / "out")
    back = physgsa.load_result(tmp_path / "out")
    pd.testing.assert_frame_equal(back.factors, res.factors)
    pd.testing.assert_frame_equal(back.interfaces, res.interfaces)
    assert back.certificate == json.loads(json.dumps(res.certificate))


def test_save_refuses_foreign_directory_and_keeps_it(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    with pytest.raises(physgsa.OutputDirectoryError, match=r"holds files physgsa did not write \(notes.txt\)"):
        certify(physgsa.example_chain(n_factors=2, width=8)).save(d)
    assert (d / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


@pytest.mark.parametrize("kw, match", [
    ({"q": 1.5}, "The 'q' parameter of certify must be a float in \\(0, 1\\). Got 1.5 instead."),
    ({"groups": "nope"}, "'groups' parameter of certify must be one of \\{'auto', 'kmeans'"),
    ({"chart": 3}, "'chart' parameter"),
    ({"n_groups": 0}, "'n_groups' parameter"),
    ({"bogus": 1}, "unknown parameter 'bogus'"),
    ({"groups": "heads"}, "needs a head layout"),
    ({"units": "heads"}, "needs a head layout"),
    ({"groups": {"x": np.zeros(3, int)}}, "name no entry for interface"),
])
def test_bad_parameters_raise_named_errors(kw, match):
    with pytest.raises(physgsa.InvalidParameterError, match=match):
        certify(random_chain([(4, 4), (4, 4)]), **kw)


def test_user_given_groups_and_heads_layout():
    rng = np.random.default_rng(0)
    heads = np.repeat(np.arange(3), 4)
    ch = Chain.from_layout([("a", rng.standard_normal((12, 12)), heads, heads),
                            ("b", rng.standard_normal((12, 12)), heads, heads)])
    res = certify(ch, groups="heads", units="heads")
    assert res.interfaces["n_groups"].iloc[0] == 3 and res.interfaces["n_units"].iloc[0] == 3
    res = certify(ch, groups={"a->b": np.arange(12) % 2})
    assert res.interfaces["n_groups"].iloc[0] == 2


from hypothesis import given, settings  # noqa: E402

from strategies import matrix_pairs  # noqa: E402


@settings(max_examples=40)
@given(pair=matrix_pairs(min_side=1, max_side=10))
def test_certify_on_random_and_adversarial_pairs(pair):
    # The whole pipeline on every matrix kind (1e-150..1e150 ranges, rank one, repeated values,
    # vectors): no warning (they are errors in this suite), no NaN, every bound holds.
    a1, a2 = pair
    res = certify(Chain.from_arrays([("a", a1), ("b", a2)]), n_perturbations=3)
    for df in (res.factors, res.interfaces, res.rows):
        no_nan(df)
    it = res.interfaces.iloc[0]
    assert it["trunc_error"] <= it["trunc_bound"] * (1 + 1e-10) + 1e-300
    if pd.isna(it["slack"]):
        assert "product_zero" in it["flags"]  # nothing is transmitted: slack is +inf
    else:
        assert it["slack"] >= -1e-9
    if it["certified_measured"] or it["certified_a_priori"]:
        assert it["direct_same"]
    json.dumps(res.certificate, allow_nan=False)


def test_protocol_items_reflect_their_quantities():
    # Identity chain: flat spectra have zero window gaps (item 3 fails) and a zero radius.
    res = certify(Chain.from_arrays([("a", np.eye(10)), ("b", np.eye(10))]))
    items = {it["item"]: it for it in res.certificate["interfaces"][0]["protocol"]}
    assert not items[3]["passed"] and items[3]["value"]["gaps"] == [0.0, 0.0]
    for i in (1, 2, 4, 6, 7):
        assert items[i]["passed"], items[i]
    assert res.verdict["n_members"] == 0
    assert {"interface": "a->b", "item": 3, "name": items[3]["name"]} in res.verdict["failed"]
    # The example's first interface is a member: every item passes.
    ex = certify(physgsa.example_chain())
    first = ex.certificate["interfaces"][0]
    assert first["member"] and all(it["passed"] for it in first["protocol"])
    assert ex.verdict["smallest_margins"][0]["rho_static"] == min(ex.interfaces["rho_static"])


def test_workers_give_results_identical_to_a_serial_run(tmp_path):
    ch = physgsa.example_chain(n_factors=5, width=32)
    serial = certify(ch, window_search=True)
    parallel = certify(ch, window_search=True, workers=2)
    for name in ("factors", "interfaces", "rows"):
        pd.testing.assert_frame_equal(getattr(serial, name), getattr(parallel, name), check_exact=True)
    assert "workers" not in serial.certificate["parameters"]  # how it ran is not recorded
    assert serial.certificate == parallel.certificate
    physgsa.save(serial, tmp_path / "s")
    physgsa.save(parallel, tmp_path / "p")
    for name in ("factors.parquet", "interfaces.parquet", "rows.parquet", "heatmaps.npz", "certificate.json",
                 "report.html"):
        assert (tmp_path / "s" / name).read_bytes() == (tmp_path / "p" / name).read_bytes(), name


def test_dask_local_cluster_gives_results_identical_to_a_serial_run():
    ch = physgsa.example_chain(n_factors=4, width=32)
    serial = certify(ch)
    dask = certify(ch, dask_local=2)
    for name in ("factors", "interfaces", "rows"):
        pd.testing.assert_frame_equal(getattr(serial, name), getattr(dask, name), check_exact=True)
    # How a run executed is not recorded, so even the certificate documents are equal.
    assert serial.certificate == dask.certificate
    for k in serial.heatmaps:
        np.testing.assert_array_equal(serial.heatmaps[k], dask.heatmaps[k])


def test_unreachable_dask_scheduler_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PHYSGSA_CONNECT_TIMEOUT", "2")  # Dask retries a refused port until then
    with pytest.raises(physgsa.InvalidParameterError, match="Cannot reach a Dask scheduler at --scheduler"):
        certify(physgsa.example_chain(n_factors=2, width=8), scheduler="tcp://127.0.0.1:9")


def test_torch_device_path_agrees_with_lapack():
    # The GPU path runs the same code through torch; on the CPU device it must agree with LAPACK.
    ch = physgsa.example_chain(n_factors=4, width=32)
    a = certify(ch)
    b = certify(ch, device="cpu")
    for col in ("rho_static", "trunc_error", "slack", "gamma"):
        np.testing.assert_allclose(b.interfaces[col], a.interfaces[col], rtol=1e-9, atol=1e-12)
    # eps_trunc reads each tail as ||A_hat||_F^2 - sum_{j<=k} sigma_j^2 plus its rounding allowance
    # 2 (k + m + n) eps ||A_hat||_F^2 (definitions section 4): two SVDs that differ in rounding
    # may move eps_trunc^2 by up to that allowance, weighted as in the bound, and no more.
    f = a.factors.set_index("name")
    eps = np.finfo(float).eps
    for _, row in a.interfaces.iterrows():
        left, right = f.loc[row["left"]], f.loc[row["right"]]
        allow_l = 2 * (row["k_left"] + left["rows"] + left["cols"]) * eps * left["r"]
        allow_r = 2 * (row["k_right"] + right["rows"] + right["cols"]) * eps * right["r"]
        # sigma_1(A_hat)^2 = exp(rho), since ||A_hat||_F^2 = r (definitions section 1).
        allow = np.exp(right["rho"]) * allow_l + np.exp(left["rho"]) * allow_r
        other = b.interfaces.loc[row.name, "eps_trunc"]
        assert abs(other**2 - row["eps_trunc"] ** 2) <= allow, (row["interface"], other, row["eps_trunc"])
    for col in ("certified_a_priori", "certified_measured", "direct_same", "member"):
        assert (a.interfaces[col] == b.interfaces[col]).all()
    np.testing.assert_allclose(b.factors["rho"], a.factors["rho"], rtol=1e-12)
    with pytest.raises(physgsa.InvalidParameterError, match="device"):
        certify(ch, device="tpu:7")


def test_graded_outputs_are_consistent_with_the_radius_and_the_verdict():
    # definitions section 5b on a whole run: the shares are shares, the a priori certificate
    # (bounds beta >= the exact block errors) certifies no more than the measured one, the
    # profile is complete below rho_static, steps from r = 0, and the model's share is the
    # ||A0||_F^2-weighted mean of the interfaces' (recomputed here from the rows' energies).
    # noise=0.01: shares strictly between 0 and 1, a priori below measured.
    ch = physgsa.example_chain(n_factors=4, width=32, noise=0.01)
    res = certify(ch, n_perturbations=2)
    itf = res.interfaces
    assert itf["certified_share_apriori"].nunique() == 3 and (itf["certified_share_measured"] < 1).any()
    for col in ("certified_share_apriori", "certified_share_measured"):
        x = itf[col].to_numpy(dtype=float)
        assert np.all((x >= 0) & (x <= 1)), col
    assert np.all(itf["certified_share_apriori"].to_numpy(float) <= itf["certified_share_measured"].to_numpy(float)
                  + 1e-12)
    prof = res.profile
    assert list(prof.columns) == ["interface", "r", "column_share", "membership_share", "pair_share", "edge_share",
                                  "hub_share"]
    for _, row in itf.iterrows():
        p = prof[prof["interface"] == row["interface"]]
        assert p["r"].iloc[0] == 0.0 and np.all(np.diff(p["r"].to_numpy()) > 0)
        below = p[p["r"] < row["rho_static"]]
        assert (below["column_share"] == 1.0).all() and (below["membership_share"] == 1.0).all()
        assert below["pair_share"].isna().all() or (below["pair_share"].dropna() == 1.0).all()
        # The a priori share cannot exceed the profile's membership share at the largest
        # per-element bound's reach ... and it is the measured share when the error is 0.
        detail = next(d for d in res.certificate["interfaces"] if d["interface"] == row["interface"])
        assert detail["graded"]["apriori"]["membership_share"] == pytest.approx(row["certified_share_apriori"])
        assert detail["graded"]["apriori"]["columns"] == row["certified_columns_apriori"]
    # The model's share: weights ||A0||_F^2 = sum of every row's energy (rows table), recomputed.
    v = res.verdict["graded"]
    weights = []
    for name in itf["interface"]:
        a0 = brute_a0(ch, name, itf.set_index("interface").loc[name])
        weights.append(float(np.sum(a0**2)))
    w = np.array(weights)
    want = float(np.sum(w * itf["certified_share_apriori"].to_numpy(float)) / np.sum(w))
    assert v["apriori"] == pytest.approx(want, rel=1e-9)
    assert [d["interface"] for d in v["interfaces"]] == itf["interface"].tolist()


def brute_a0(ch, name, row):
    """A0 = A_hat'_{k'} A_hat_k of one interface, from the factors (tests/brute.py)."""
    mats = {f.name: np.asarray(f.matrix) for f in ch.factors}
    a0, _ = brute.pam_pair(mats[row["left"]], mats[row["right"]], int(row["k_left"]), int(row["k_right"]))
    return a0


def test_the_summary_line_gives_the_routing_certified_a_priori(tmp_path):
    from typer.testing import CliRunner

    from physgsa.cli import app

    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["certify", "example", "--out", str(out), "--n-perturbations", "0"])
    assert r.exit_code == 0, r.output
    share = json.loads((out / "certificate.json").read_text())["verdict"]["graded"]["apriori"]
    pct = 100 * share
    shown = "<1%" if 0 < pct < 1 else ">99%" if 99 < pct < 100 else f"{pct:.0f}%"
    assert f"; {shown} of the routing certified a priori; wrote" in r.output
    assert (out / "profile.parquet").is_file()
