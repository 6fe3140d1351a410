"""Numbers at the edges: repeated singular values, 1e-150..1e150 in one factor, subnormals,
float16/bfloat16 weights, and 1 x n / n x 1 factors. No NaN or inf may reach a table."""

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file

import physgsa
from physgsa.core.chain import Factor
from physgsa.core.spectra import compute_spectrum

KW = dict(q=0.9, band=0.05, gap_floor=1e-3, chart="top")
PER_FACTOR = ("rho", "s_top", "s_mle", "k_q", "k", "tau", "hellinger")


def _finite_tables(res):
    for df in (res.factors, res.interfaces, res.rows):
        for col in df.columns:
            if pd.api.types.is_float_dtype(df[col]):
                vals = df[col].dropna().to_numpy(dtype=float)
                assert np.all(np.isfinite(vals)), col
                if df[col].dtype == np.float64:
                    assert not df[col].isna().any(), col  # undefined values are nullable NA, never NaN


def _spec(a, name="a"):
    return compute_spectrum(Factor(name, np.asarray(a, dtype=np.float64)), **KW)


def test_repeated_singular_values_flag_a_degenerate_window():
    rng = np.random.default_rng(0)
    q1, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    q2, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    flat = (q1 * np.r_[np.full(19, 2.0), 1.0]) @ q2.T  # sigma_1 = ... = sigma_19: any window cuts the cluster
    assert "window_degenerate" in _spec(flat).flags
    assert "window_degenerate" in _spec(np.eye(12)).flags
    steps = (q1 * np.r_[np.full(3, 10.0), np.linspace(1, 0.1, 17)]) @ q2.T  # the window can end at the gap
    assert "window_degenerate" not in _spec(steps).flags
    res = physgsa.certify(physgsa.Chain.from_arrays([("a", flat), ("b", np.eye(20) * 3.0)]), n_perturbations=4)
    assert "left_window_degenerate" in res.interfaces["flags"][0]
    assert "right_window_degenerate" in res.interfaces["flags"][0]
    _finite_tables(res)


def test_dynamic_range_1e150_and_scale_invariance(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((16, 16)) + 4 * np.eye(16)
    spread = base * np.logspace(-150, 150, 16)[None, :]  # columns from 1e-150 to 1e150
    s = _spec(spread)
    assert np.isfinite(s.fro) and s.fro > 1e149
    for c in (1e-140, 1e140):  # the normalized quantities do not see the scale
        t = _spec(base * c)
        ref = _spec(base)
        for attr in PER_FACTOR:
            assert getattr(t, attr) == pytest.approx(getattr(ref, attr), rel=1e-10, abs=1e-12), (c, attr)
    res = physgsa.certify(physgsa.Chain.from_arrays([("wide", spread), ("b", base), ("c", base.T * 1e-140)]),
                          n_perturbations=4)
    _finite_tables(res)
    # The spectra pass (energies from the Gram, scaled first where squares would overflow).
    np.savez(tmp_path / "w.npz", wide=spread, scaled=base * 1e140, plain=base)
    table = physgsa.spectra(tmp_path / "w.npz").table.set_index("name")
    for col in ("rho", "s_top", "k_q", "stable_rank", "alpha"):
        assert table.loc["scaled", col] == pytest.approx(table.loc["plain", col], rel=1e-9), col
    assert np.isfinite(table.loc["wide", "log_norm"]) and table.loc["wide", "log_norm"] > 290


def test_subnormal_entries():
    rng = np.random.default_rng(2)
    ints = rng.integers(-7, 8, size=(10, 10)).astype(np.float64) + 8 * np.eye(10)
    tiny = ints * 2.0**-1070  # every nonzero entry is subnormal (below 2.2e-308)
    assert np.all((np.abs(tiny) < np.finfo(np.float64).tiny) | (tiny == 0))
    a, b = _spec(tiny), _spec(ints)
    for attr in PER_FACTOR:
        assert getattr(a, attr) == pytest.approx(getattr(b, attr), rel=1e-10, abs=1e-12), attr
    res = physgsa.certify(physgsa.Chain.from_arrays([("t0", tiny), ("t1", tiny.T), ("t2", ints)]), n_perturbations=4)
    _finite_tables(res)


def test_float16_and_bfloat16_weights_are_widened_computed_in_float64_and_recorded(tmp_path):
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((8, 8)) + 3 * np.eye(8)).astype(np.float16)
    b32 = (rng.standard_normal((8, 8)) + 3 * np.eye(8)).astype(np.float32)
    bf16 = (b32.view(np.uint32) >> 16).astype(np.uint16)
    save_file({"a": a}, str(tmp_path / "h.safetensors"))
    raw = open(tmp_path / "h.safetensors", "rb").read()
    n = int.from_bytes(raw[:8], "little")
    import json

    header = json.loads(raw[8:8 + n])
    header["b"] = {"dtype": "BF16", "shape": [8, 8], "data_offsets": [len(raw) - 8 - n, len(raw) - 8 - n + 128]}
    head = json.dumps(header).encode()
    (tmp_path / "mixed.safetensors").write_bytes(len(head).to_bytes(8, "little") + head + raw[8 + n:] + bf16.tobytes())
    chain = physgsa.read_chain(tmp_path / "mixed.safetensors")
    widened = (bf16.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(chain.factors[0].matrix, a.astype(np.float64))
    np.testing.assert_array_equal(chain.factors[1].matrix, widened.astype(np.float64))
    assert all(f.matrix.dtype == np.float64 for f in chain.factors)
    res = physgsa.certify(chain, n_perturbations=4)
    assert res.factors["source_dtype"].tolist() == ["float16", "bfloat16"]
    res.save(tmp_path / "out")
    assert pd.read_parquet(tmp_path / "out" / "factors.parquet")["source_dtype"].tolist() == ["float16", "bfloat16"]
    # numpy inputs record their own precision too
    assert physgsa.certify(physgsa.Chain.from_arrays([("x", a), ("y", a.T)]),
                           n_perturbations=4).factors["source_dtype"].tolist() == ["float16", "float16"]


@pytest.mark.parametrize("shapes", [((1, 7), (7, 1)), ((7, 1), (1, 7)), ((1, 1), (1, 1)), ((1, 5), (3, 1))])
def test_one_by_n_and_n_by_one_factors(shapes):
    rng = np.random.default_rng(4)
    mats = [(f"f{i}", rng.standard_normal(s) + 0.5) for i, s in enumerate(shapes)]
    res = physgsa.certify(physgsa.Chain.from_arrays(mats), n_perturbations=4)
    _finite_tables(res)
    assert len(res.factors) == 2
    breaks = res.certificate["chain_breaks"]
    assert len(res.interfaces) + len(breaks) == 1
    for name, m in mats:
        s = _spec(m, name)
        assert s.r == 1 and s.k == 1 and s.k_q == 1 and s.rho == 0.0
