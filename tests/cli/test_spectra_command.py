"""`physgsa spectra`: WeightWatcher-style metrics and the nothing-skipped-silently listing."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given

import physgsa
from physgsa.core.powerlaw import powerlaw_fit, weight_metrics
from strategies import matrices


def test_metrics_known_answers():
    m = weight_metrics(np.ones(10), (10, 10))  # the identity's singular values
    assert m["log_norm"] == pytest.approx(1.0) and m["log_spectral_norm"] == 0.0
    assert m["stable_rank"] == pytest.approx(10.0) and m["matrix_rank"] == 10
    assert m["entropy"] == pytest.approx(1.0)
    one = weight_metrics(np.array([3.0, 0.0, 0.0]), (3, 5))
    # WeightWatcher's entropy adds 1e-10 to every p and divides by log(rank + 1e-10): about 45 at rank one.
    assert one["stable_rank"] == 1.0 and one["matrix_rank"] == 1 and 45 < one["entropy"] < 45.1
    assert one["alpha"] is None  # one positive eigenvalue: no tail to fit


def test_powerlaw_recovers_exponent_and_cutoff():
    rng = np.random.default_rng(0)
    alpha, xmin = 3.0, 2.0
    tail = xmin * (1 - rng.random(4000)) ** (-1 / (alpha - 1))
    body = rng.uniform(0.01, 1.0, 2000)
    fit = powerlaw_fit(np.concatenate([tail, body]))
    assert fit["alpha"] == pytest.approx(alpha, abs=0.1)
    assert fit["xmin"] == pytest.approx(xmin, rel=0.1)
    assert fit["n_tail"] == pytest.approx(4000, rel=0.1)


@given(a=matrices(min_side=2, max_side=12))
def test_metrics_are_finite_and_in_range(a):
    s = np.linalg.svd(a, compute_uv=False)
    if s[0] == 0 or not np.all(np.isfinite(s)) or s[0] ** 2 == np.inf:
        return
    m = weight_metrics(s / s[0], a.shape)
    assert 1.0 - 1e-12 <= m["stable_rank"] <= min(a.shape) + 1e-9
    assert m["entropy"] >= -1e-12
    if m["matrix_rank"] == min(a.shape):
        assert m["entropy"] <= 1.0 + 1e-8
    if m["alpha"] is not None:
        assert m["alpha"] > 1.0 and 0.0 <= m["alpha_D"] <= 1.0


def test_every_tensor_is_analysed_or_listed(tmp_path):
    import torch
    import transformers

    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=16, vocab_size=50, bos_token_id=0,
                                  eos_token_id=0)
    model = transformers.GPT2Model(cfg)
    model.save_pretrained(tmp_path / "g")
    res = physgsa.spectra(tmp_path / "g")
    keys = set(res.table["key"]) | {s["module"] for s in res.skipped}
    from safetensors import safe_open

    with safe_open(str(tmp_path / "g" / "model.safetensors"), "np") as f:
        assert keys == set(f.keys())
    names = res.table["name"].tolist()
    assert "h.0.attn.c_attn.weight:Q" in names and "h.0.attn.c_attn.weight:V" in names
    row = res.table.set_index("name").loc["h.0.attn.c_attn.weight:K"]
    w = model.h[0].attn.c_attn.weight.detach().double().numpy().T[32:64]
    s = np.linalg.svd(w, compute_uv=False)
    assert row["log_norm"] == pytest.approx(np.log10(np.sum(s**2)), rel=1e-9)
    assert row["stable_rank"] == pytest.approx(np.sum(s**2) / s[0] ** 2, rel=1e-9)
    assert "wte.weight" in names  # embeddings included
    # --exclude: matched tensors are never read, and are listed with the pattern that left them out.
    part = physgsa.spectra(tmp_path / "g", exclude=("h.*.attn.c_attn.weight", "wte.*"))
    assert not any("c_attn" in n or n.startswith("wte") for n in part.table["name"])
    left = {s["module"]: s["reason"] for s in part.skipped}
    assert "excluded by the pattern 'wte.*'" == left["wte.weight"]
    assert len(part.table) == len(res.table) - 2 * 4 - 1  # per layer: the fused c_attn row and Q, K, V
    with pytest.raises(physgsa.InvalidParameterError, match="'exclude' parameter of spectra"):
        physgsa.spectra(tmp_path / "g", exclude=[3])
    del torch


def test_cli_spectra_on_minilm(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "physgsa.cli", "spectra", "--out", str(tmp_path / "s"), "--json"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["n_matrices"] == 40  # 6 x (Q, K, V, O, in, out) + 3 embeddings + pooler
    import pandas as pd

    df = pd.read_parquet(tmp_path / "s" / "spectra.parquet")
    assert {"log_norm", "log_spectral_norm", "stable_rank", "matrix_rank", "entropy", "alpha", "rho", "s_top",
            "k_q"} <= set(df.columns)
