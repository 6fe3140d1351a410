"""Interrupted runs resume: records kept as they finish, skipped on rerun, identical outputs."""

import filecmp
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import physgsa
from budget import cases
from physgsa import OutputDirectoryError
from physgsa.outputs.directory import RUN_DIR
from physgsa.outputs.result import OUTPUT_FILES

FILES = OUTPUT_FILES + ("report.html",)


def _chain_file(path, n_factors=12, n=96, seed=0):
    rng = np.random.default_rng(seed)
    np.savez(path, **{f"b{i:02d}": np.eye(n) + 0.5 * rng.standard_normal((n, n)) / np.sqrt(n)
                      for i in range(n_factors)})
    return path


def _same_outputs(a, b):
    return [f for f in FILES if not filecmp.cmp(a / f, b / f, shallow=False)]


class _Stop(Exception):
    pass


def _interrupt_after(n):
    def progress(stage, done, total, name):
        if stage == "interfaces" and done >= n:
            raise _Stop
    return progress


def test_rerun_skips_finished_interfaces_and_gives_identical_outputs(tmp_path):
    chain = physgsa.read_chain(_chain_file(tmp_path / "c.npz"))
    ref = physgsa.certify(chain, n_perturbations=4)
    physgsa.save(ref, tmp_path / "ref")
    out = tmp_path / "out"
    with pytest.raises(_Stop):
        physgsa.certify(chain, n_perturbations=4, checkpoint=out, progress=_interrupt_after(4))
    records = sorted(p.name for p in (out / RUN_DIR).glob("interface-*.json"))
    assert len(records) == 4 and not any((out / f).exists() for f in FILES)
    seen = []
    res = physgsa.certify(chain, n_perturbations=4, checkpoint=out,
                          progress=lambda stage, done, total, name: seen.append((stage, done, total)))
    assert ("resume", 4, 11) in seen
    assert [d for s, d, t in seen if s == "interfaces"] == list(range(5, 12))  # only the 7 missing ones
    physgsa.save(res, out)
    assert _same_outputs(out, tmp_path / "ref") == []
    assert not (out / RUN_DIR).exists()  # the records go when the run completes


def test_unreadable_record_is_recomputed(tmp_path):
    chain = physgsa.read_chain(_chain_file(tmp_path / "c.npz", n_factors=5))
    physgsa.save(physgsa.certify(chain, n_perturbations=4), tmp_path / "ref")
    out = tmp_path / "out"
    with pytest.raises(_Stop):
        physgsa.certify(chain, n_perturbations=4, checkpoint=out, progress=_interrupt_after(3))
    (out / RUN_DIR / "interface-000001.npz").write_bytes(b"PK\x03\x04 truncated")
    (out / RUN_DIR / "factor-000002.json").write_text("{not json")
    seen = []
    physgsa.save(physgsa.certify(chain, n_perturbations=4, checkpoint=out,
                                 progress=lambda stage, done, total, name: seen.append((stage, name))), out)
    assert ("interfaces", "b01->b02") in seen and ("interfaces", "b00->b01") not in seen
    assert _same_outputs(out, tmp_path / "ref") == []


def test_different_parameters_or_input_are_refused_unless_overwrite(tmp_path):
    path = _chain_file(tmp_path / "c.npz", n_factors=4)
    chain = physgsa.read_chain(path)
    out = tmp_path / "out"
    with pytest.raises(_Stop):
        physgsa.certify(chain, n_perturbations=4, checkpoint=out, progress=_interrupt_after(1))
    with pytest.raises(OutputDirectoryError, match=r"interrupted run .*q 0\.9 -> 0\.95.*--overwrite"):
        physgsa.certify(chain, n_perturbations=4, q=0.95, checkpoint=out)
    other = physgsa.read_chain(_chain_file(tmp_path / "d.npz", n_factors=4, seed=1))
    with pytest.raises(OutputDirectoryError, match="the input weights"):
        physgsa.certify(other, n_perturbations=4, checkpoint=out)
    # Execution options are not part of the run: resuming with other workers is fine.
    physgsa.certify(chain, n_perturbations=4, checkpoint=out, workers=1).save(out)
    # A completed directory of another run is refused too, and replaced with overwrite.
    with pytest.raises(OutputDirectoryError, match="results of a run of different input or parameters"):
        physgsa.certify(chain, n_perturbations=4, q=0.95, checkpoint=out)
    physgsa.certify(chain, n_perturbations=4, q=0.95, checkpoint=out, overwrite=True).save(out)
    assert '"q": 0.95' in (out / "certificate.json").read_text()
    # The command line says the same in one line, exit 2, and leaves the results as they were.
    before = (out / "certificate.json").read_bytes()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "physgsa", "certify", str(path), "--out", str(out), "--quiet",
                        "--n-perturbations", "4"], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "q 0.95 -> 0.9" in r.stderr and "--overwrite" in r.stderr
    assert (out / "certificate.json").read_bytes() == before


def test_sigkill_at_random_points_then_resume_gives_identical_outputs(tmp_path):
    path = _chain_file(tmp_path / "c.npz", n_factors=16, n=160)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "physgsa", "certify", str(path), "--quiet"]
    t = time.perf_counter()
    subprocess.run(cmd + ["--out", str(tmp_path / "ref")], env=env, check=True)
    full = time.perf_counter() - t
    out = tmp_path / "out"
    rng = np.random.default_rng(2026)
    kills = 0
    # Instants from a fifth to three quarters of a full run's time: under parallel test workers a
    # later run can be faster than the timed one, and a run that finished before its kill is no
    # kill at all.
    # Five instants under PHYSGSA_FULL_TESTS=1 (CI); the three earliest of the same seeded draw in the quick run.
    for delay in np.sort(rng.uniform(0.2, 0.75, size=5))[:cases(5, 3)] * full:
        proc = subprocess.Popen(cmd + ["--out", str(out)], env=env)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        # Whatever the instant: either the complete outputs or only the records, never part of them.
        present = [f for f in FILES if (out / f).exists()]
        assert present in ([], list(FILES))
    assert kills >= 2
    r = subprocess.run(cmd + ["--out", str(out)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert _same_outputs(out, tmp_path / "ref") == []
    # A save killed mid-rename may leave a temporary sibling; the next run removes it.
    assert not (out / RUN_DIR).exists() and not list(tmp_path.glob(".out.*"))
