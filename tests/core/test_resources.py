"""The memory guard refuses, naming the factor or interface and the estimate, before allocating."""

import os
import subprocess
import sys

import numpy as np
import pytest

import physgsa
from physgsa import InvalidParameterError, ResourceLimitError
from physgsa.core.resources import available_memory, default_limit, parse_memory, svd_bytes


def _chain(n=300, k=3):
    rng = np.random.default_rng(0)
    return physgsa.Chain.from_arrays([(f"b{i}", np.eye(n) + rng.standard_normal((n, n)) / n) for i in range(k)])


def test_parse_memory_sizes_and_errors():
    assert parse_memory("512M", "x") == 512 << 20
    assert parse_memory("1.5GiB", "x") == int(1.5 * (1 << 30))
    assert parse_memory(4096, "x") == 4096
    for bad in ("-1G", "lots", 0, True, "1X"):
        with pytest.raises(InvalidParameterError, match="positive number of bytes"):
            parse_memory(bad, "The 'max_memory' parameter of certify")
    assert 0 < default_limit() < available_memory()


def test_certify_refuses_a_factor_above_the_limit_naming_it():
    chain = _chain()
    need = svd_bytes(300, 300)
    with pytest.raises(ResourceLimitError, match=r"Factor 'b0' \(300 x 300\): its decomposition needs an "
                                                 r"estimated [0-9.]+ MiB, above the memory limit of 1\.0 MiB"):
        physgsa.certify(chain, max_memory="1M", n_perturbations=2)
    # Enough for every decomposition but not for an interface's products (a 300 x 20 x 300
    # bottleneck: small factors, a large product): the interface is named.
    rng = np.random.default_rng(2)
    narrow = physgsa.Chain.from_arrays([("down", rng.standard_normal((20, 300))),
                                        ("up", rng.standard_normal((300, 20)))])
    with pytest.raises(ResourceLimitError, match=r"Interface 'down->up' \(300 x 300 products\)"):
        physgsa.certify(narrow, max_memory=need // 8, n_perturbations=2)
    res = physgsa.certify(chain, max_memory="1G", n_perturbations=2)
    assert "max_memory" not in res.certificate["parameters"]  # how a run executed is not recorded


def test_spectra_and_cli_refuse_with_one_line_and_exit_2(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "m.npz"
    np.savez(path, big=rng.standard_normal((400, 300)))
    with pytest.raises(ResourceLimitError, match="Factor 'big' \\(400 x 300\\)"):
        physgsa.spectra(path, max_memory=10_000)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "physgsa", "certify", str(path), "--out", str(tmp_path / "o"),
                        "--max-memory", "100K"], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "physgsa: error: Factor 'big'" in r.stderr and "--max-memory" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "certificate.json").exists()
