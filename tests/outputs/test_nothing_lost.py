"""Nothing lost, nothing mixed: one run per output directory, verified records, a user's files left
alone, and every failure named for what it is. Real processes, real signals, real limits."""

import hashlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import physgsa
from budget import cases
from physgsa.outputs.directory import OWN_FILES, RUN_DIR
from physgsa.outputs.result import OUTPUT_FILES

#: What certify writes into its --out (a subset of physgsa's own files).
CERTIFY_FILES = OUTPUT_FILES + ("profile.parquet", "report.html", "provenance.json", "figures")
assert set(CERTIFY_FILES) <= set(OWN_FILES)

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1"}
FILES = OUTPUT_FILES + ("report.html",)


def _chain_file(path, n_factors=6, n=24, seed=0):
    rng = np.random.default_rng(seed)
    np.savez(path, **{f"b{i:02d}": np.eye(n) + 0.5 * rng.standard_normal((n, n)) / np.sqrt(n)
                      for i in range(n_factors)})
    return path


def _cli(*args, cwd=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "physgsa", *map(str, args)], env=ENV, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _run(*args, cwd=None, timeout=300, **kw):
    p = _cli(*args, cwd=cwd, **kw)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def _bytes(d: Path) -> dict:
    return {f: (d / f).read_bytes() for f in FILES}


def _wait_for(pred, timeout=60.0):
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def slow_chain(tmp_path_factory):
    """A chain that takes a few seconds at one thread, so a second run surely overlaps the first."""
    d = tmp_path_factory.mktemp("slow")
    return _chain_file(d / "slow.npz", n_factors=40, n=256, seed=1), _chain_file(d / "other.npz", n_factors=40,
                                                                                  n=256, seed=2)


# ----- one run per directory ------------------------------------------------------------------------


def _input_of(out: Path, chains) -> Path:
    """Which of ``chains`` the results in ``out`` are of: ``factors.parquet``'s Frobenius norms
    against numpy's norms of each input's matrices (an independent reading of the inputs)."""
    import pandas as pd

    got = pd.read_parquet(out / "factors.parquet")["fro_norm"].to_numpy()
    match = []
    for f in chains:
        with np.load(f) as z:
            want = np.array([np.linalg.norm(z[k]) for k in z.files])
        if want.shape == got.shape and np.allclose(got, want, rtol=1e-12, atol=0):
            match.append(f)
    assert len(match) == 1, match
    return match[0]


def test_second_run_on_a_busy_directory_is_refused_and_names_the_first(tmp_path, slow_chain):
    a, b = slow_chain
    out = tmp_path / "out"
    first = _cli("certify", a, "--out", out, "--quiet", "--n-perturbations", "4")
    _wait_for(lambda: (out / ".physgsa-owner.json").exists())
    # Another input, and the same input started again, while the first runs: both refused (exit 2,
    # one line naming the first), never an internal error. Started together, so that both surely
    # arrive while the first still runs.
    others = [_cli("certify", f, "--out", out, "--quiet", "--n-perturbations", "4") for f in (b, a)]
    for p in others:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 2 and "in use by another physgsa run" in err and f"pid {first.pid}" in err, err
        assert len(err.strip().splitlines()) == 1
    assert first.wait(timeout=300) == 0
    assert _input_of(out, (a, b)) == a


def test_wait_waits_for_the_running_one(tmp_path, slow_chain):
    a, _ = slow_chain
    small = _chain_file(tmp_path / "small.npz")
    out = tmp_path / "out"
    first = _cli("certify", a, "--out", out, "--quiet", "--n-perturbations", "4")
    _wait_for(lambda: (out / ".physgsa-owner.json").exists())
    # A small chain (so this test pays for one slow run, not two). Without --wait it would be refused
    # (exit 2); it waits, then replaces the first one's finished results (--overwrite).
    code, _, err = _run("certify", small, "--out", out, "--quiet", "--n-perturbations", "4", "--wait", "--overwrite")
    assert first.wait(timeout=300) == 0
    assert code == 0, err
    assert _input_of(out, (a, small)) == small


def test_two_runs_started_together_never_mix(tmp_path, slow_chain):
    a, b = slow_chain
    out = tmp_path / "out"
    procs = [_cli("certify", f, "--out", out, "--quiet", "--n-perturbations", "4") for f in (a, b)]
    codes = sorted(p.wait(timeout=300) for p in procs)
    assert codes == [0, 2]
    winner = _input_of(out, (a, b))
    # The winner alone, at the same thread count, gives the same bytes: nothing of the other mixed in.
    assert _run("certify", winner, "--out", tmp_path / "alone", "--quiet", "--n-perturbations", "4")[0] == 0
    assert _bytes(out) == _bytes(tmp_path / "alone")


# ----- records verified before use ------------------------------------------------------------------


def _interrupted(chain, out, **kw):
    """Every record of a run, none of its outputs: certify with a checkpoint and no save."""
    physgsa.certify(chain, checkpoint=out, **kw)
    assert (out / RUN_DIR).is_dir()


def _digest(res) -> str:
    h = hashlib.sha256(json.dumps(res.certificate, sort_keys=True).encode())
    for df in (res.factors, res.interfaces, res.rows, res.heads):
        buf = io.BytesIO()
        df.to_parquet(buf, index=False, engine="pyarrow")
        h.update(buf.getvalue())
    for k in sorted(res.heatmaps):
        h.update(k.encode() + np.ascontiguousarray(res.heatmaps[k]).tobytes())
    return h.hexdigest()


def _edit_json(path: Path, fn):
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


DAMAGES = {
    "empty factor record": lambda d: (d / "factor-000001.json").write_text("{}"),
    "changed value": lambda d: _edit_json(d / "factor-000002.json", lambda doc: doc["record"].update(rho=0.5)),
    "missing key": lambda d: _edit_json(d / "factor-000000.json", lambda doc: doc["record"].pop("tau")),
    "rho as a string": lambda d: _edit_json(d / "factor-000003.json", lambda doc: doc["record"].update(rho="1.0")),
    "swapped factors": lambda d: _swap(d / "factor-000001.json", d / "factor-000002.json"),
    "swapped interfaces": lambda d: (_swap(d / "interface-000001.json", d / "interface-000002.json"),
                                     _swap(d / "interface-000001.npz", d / "interface-000002.npz")),
    "zeroed interface arrays": lambda d: (d / "interface-000000.npz").write_bytes(
        b"\0" * (d / "interface-000000.npz").stat().st_size),
    "member flag flipped": lambda d: _edit_json(d / "interface-000001.json",
                                                lambda doc: doc["row"].update(member=not doc["row"]["member"])),
    "interface without row": lambda d: _edit_json(d / "interface-000002.json", lambda doc: doc.pop("row")),
}


def _swap(p: Path, q: Path):
    a, b = p.read_bytes(), q.read_bytes()
    p.write_bytes(b)
    q.write_bytes(a)


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_records_are_recomputed_never_trusted(tmp_path, damage):
    chain = physgsa.read_chain(_chain_file(tmp_path / "c.npz"))
    ref = _digest(physgsa.certify(chain, n_perturbations=4))
    out = tmp_path / "out"
    _interrupted(chain, out, n_perturbations=4)
    DAMAGES[damage](out / RUN_DIR)
    assert _digest(physgsa.certify(chain, n_perturbations=4, checkpoint=out)) == ref


def test_records_of_another_run_are_never_read_into_this_one(tmp_path):
    a = physgsa.read_chain(_chain_file(tmp_path / "a.npz", seed=0))
    b = physgsa.read_chain(_chain_file(tmp_path / "b.npz", seed=5))
    ref = _digest(physgsa.certify(b, n_perturbations=4))
    out_a, out_b = tmp_path / "oa", tmp_path / "ob"
    _interrupted(a, out_a, n_perturbations=4)
    _interrupted(b, out_b, n_perturbations=4)
    # Plant a's records over half of b's, keeping b's run.json.
    for name in ("factor-000004.json", "interface-000000.json", "interface-000000.npz"):
        shutil.copy(out_a / RUN_DIR / name, out_b / RUN_DIR / name)
    assert _digest(physgsa.certify(b, n_perturbations=4, checkpoint=out_b)) == ref


def test_fuzz_damaged_record_sets(tmp_path):
    """Random damage to the records of an interrupted run: every rerun gives the undisturbed bytes
    or refuses with a clear line; none returns other numbers. 1,000 damaged sets in CI, the first
    80 of them in the README's quick run (tests/budget.py)."""
    rng = np.random.default_rng(2024)
    chain = physgsa.read_chain(_chain_file(tmp_path / "c.npz", n_factors=4, n=6))
    kw = dict(n_perturbations=2)
    ref = _digest(physgsa.certify(chain, **kw))
    pristine = tmp_path / "pristine"
    _interrupted(chain, pristine, **kw)
    files = sorted(p.name for p in (pristine / RUN_DIR).iterdir())
    outcomes = {"same": 0, "refused": 0}
    for case in range(cases(1000, 80)):
        out = tmp_path / f"c{case % 3}"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(pristine, out)
        run = out / RUN_DIR
        for _ in range(int(rng.integers(1, 4))):
            name = files[int(rng.integers(len(files)))]
            path = run / name
            data = bytearray(path.read_bytes()) if path.exists() else bytearray()
            how = int(rng.integers(6))
            if how == 0 and data:  # flip a byte
                i = int(rng.integers(len(data)))
                data[i] ^= 1 << int(rng.integers(8))
                path.write_bytes(bytes(data))
            elif how == 1:  # truncate
                path.write_bytes(bytes(data[: int(rng.integers(len(data) + 1))]))
            elif how == 2:  # delete
                path.unlink(missing_ok=True)
            elif how == 3:  # swap with another record of the same kind
                other = run / files[int(rng.integers(len(files)))]
                if other.exists() and path.exists() and other.suffix == path.suffix:
                    _swap(path, other)
            elif how == 4 and path.suffix == ".json" and data:  # change one number in the JSON
                text = data.decode("utf-8", "replace")
                digits = [i for i, ch in enumerate(text) if ch.isdigit()]
                if digits:
                    i = digits[int(rng.integers(len(digits)))]
                    text = text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1:]
                    path.write_text(text)
            else:  # an empty file
                path.write_bytes(b"")
        try:
            got = _digest(physgsa.certify(chain, checkpoint=out, **kw))
        except physgsa.PhysgsaError as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
            continue
        assert got == ref, f"case {case}: a damaged record changed the result"
        outcomes["same"] += 1
    assert outcomes["same"] + outcomes["refused"] == cases(1000, 80)


# ----- a user's files -------------------------------------------------------------------------------


def test_rerun_into_results_with_the_users_files_refuses_and_keeps_them(tmp_path):
    f = _chain_file(tmp_path / "c.npz")
    out = tmp_path / "res"
    assert _run("certify", f, "--out", out, "--quiet", "--n-perturbations", "2")[0] == 0
    (out / "notes.txt").write_text("mine")
    (out / "plots").mkdir()
    (out / "plots" / "fig.png").write_bytes(b"png")
    code, _, err = _run("certify", f, "--out", out, "--quiet", "--n-perturbations", "2")
    assert code == 2 and "notes.txt" in err and "plots/" in err and "--keep-others" in err
    code, _, err = _run("certify", f, "--out", out, "--quiet", "--n-perturbations", "2", "--keep-others")
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "mine" and (out / "plots" / "fig.png").read_bytes() == b"png"
    assert sorted(p.name for p in out.iterdir()) == sorted(CERTIFY_FILES + ("notes.txt", "plots"))


def test_another_runs_results_in_a_subfolder_are_never_deleted(tmp_path):
    f = _chain_file(tmp_path / "c.npz")
    g = _chain_file(tmp_path / "g.npz", seed=3)
    res2 = tmp_path / "res2"
    assert _run("certify", g, "--out", res2 / "ablation", "--quiet", "--n-perturbations", "2")[0] == 0
    before = _bytes(res2 / "ablation")
    code, _, err = _run("certify", f, "--out", res2, "--quiet", "--n-perturbations", "2", "--overwrite")
    assert code == 2 and "ablation/" in err
    assert _bytes(res2 / "ablation") == before


def test_out_dot_works(tmp_path):
    f = _chain_file(tmp_path / "c.npz")
    work = tmp_path / "w"
    work.mkdir()
    code, _, err = _run("certify", f, "--out", ".", "--quiet", "--n-perturbations", "2", cwd=work)
    assert code == 0, err
    assert sorted(p.name for p in work.iterdir()) == sorted(CERTIFY_FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz", "w"]  # nothing left beside it


def test_symlinked_out_is_written_through(tmp_path):
    f = _chain_file(tmp_path / "c.npz")
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    code, _, err = _run("certify", f, "--out", link, "--quiet", "--n-perturbations", "2")
    assert code == 0, err
    assert link.is_symlink() and sorted(p.name for p in target.iterdir()) == sorted(CERTIFY_FILES)


# ----- identity is content ---------------------------------------------------------------------------


def test_same_bytes_under_another_name_resume_and_certify_identically(tmp_path):
    f = _chain_file(tmp_path / "c.npz")
    g = tmp_path / "copy.npz"
    shutil.copy(f, g)
    link = tmp_path / "alias.npz"
    link.symlink_to(f)
    out_f, out_g = tmp_path / "of", tmp_path / "og"
    assert _run("certify", f, "--out", out_f, "--quiet", "--n-perturbations", "2")[0] == 0
    assert _run("certify", g, "--out", out_g, "--quiet", "--n-perturbations", "2")[0] == 0
    assert _bytes(out_f)["certificate.json"] == _bytes(out_g)["certificate.json"]
    # An interrupted run resumes under another path to the same bytes.
    out = tmp_path / "o"
    chain = physgsa.read_chain(f)
    _interrupted(chain, out, n_perturbations=2)
    code, _, err = _run("certify", os.path.relpath(link, tmp_path), "--out", "o", "--n-perturbations", "2",
                        cwd=tmp_path)
    assert code == 0 and "resume" in err, err


# ----- exit codes that say what happened ------------------------------------------------------------


def test_refusals_before_work_write_nothing(tmp_path):
    f = _chain_file(tmp_path / "c.npz")
    # A memory refusal: nothing written, not even the directory.
    code, _, err = _run("certify", f, "--out", tmp_path / "m", "--max-memory", "1K")
    assert code == 2 and not (tmp_path / "m").exists()
    # The last factor alone exceeds the limit: refused before the first decomposition.
    rng = np.random.default_rng(0)
    big = tmp_path / "big.npz"
    np.savez(big, a=rng.standard_normal((8, 8)), b=rng.standard_normal((8, 8)), c=rng.standard_normal((900, 8)))
    t0 = time.monotonic()
    code, _, err = _run("certify", big, "--out", tmp_path / "b", "--max-memory", "200K")
    assert code == 2 and ("'c'" in err or "'b->c'" in err) and not (tmp_path / "b").exists()
    assert "decomposition" in err or "products" in err
    # An unreachable or unparsable scheduler: exit 2, nothing written. (Dask retries a refused
    # port until the connection timeout; 2 s of it is enough to see the refusal.)
    for address in ("not-an-address", "tcp://127.0.0.1:9"):
        p = subprocess.Popen([sys.executable, "-m", "physgsa", "certify", str(f), "--out", str(tmp_path / "s"),
                              "--scheduler", address], env=dict(ENV, PHYSGSA_CONNECT_TIMEOUT="2"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, err = p.communicate(timeout=300)
        code = p.returncode
        assert code == 2 and "--scheduler" in err and not (tmp_path / "s").exists(), err
    assert time.monotonic() - t0 < 120


def test_read_only_parent_is_refused_before_the_computation(tmp_path):
    if os.geteuid() == 0:
        # root ignores directory permissions: use a read-only bind... or a file where a folder must be.
        parent = tmp_path / "file"
        parent.write_text("not a folder")
        code, _, err = _run("certify", _chain_file(tmp_path / "c.npz"), "--out", parent / "out", "--quiet")
        assert code == 2 and "out" in err
        return
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    code, _, err = _run("certify", _chain_file(tmp_path / "c.npz"), "--out", parent / "out", "--quiet")
    assert code == 2 and "Cannot create output directory" in err


def test_file_size_limit_is_named_and_the_run_resumes(tmp_path):
    f = _chain_file(tmp_path / "c.npz")
    out = tmp_path / "out"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    code, _, err = _run("certify", f, "--out", out, "--quiet", "--n-perturbations", "2", preexec_fn=limit)
    assert code == 4 and "file-size limit" in err and "rerun the same command" in err.lower(), err
    assert len(err.strip().splitlines()) == 1
    assert not (out / "certificate.json").exists()
    code, _, err = _run("certify", f, "--out", out, "--n-perturbations", "2")
    assert code == 0, err
    ref = tmp_path / "ref"
    assert _run("certify", f, "--out", ref, "--quiet", "--n-perturbations", "2")[0] == 0
    assert _bytes(out) == _bytes(ref)


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(p.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_killed_worker_is_named_and_the_run_resumes(tmp_path):
    a = _chain_file(tmp_path / "big.npz", n_factors=12, n=400, seed=4)
    out = tmp_path / "out"
    p = _cli("certify", a, "--out", out, "--workers", "2", "--n-perturbations", "4")
    _wait_for(lambda: len(_children(p.pid)) >= 2)
    os.kill(_children(p.pid)[0], signal.SIGKILL)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 4 and "worker process died" in err and "rerun the same command" in err.lower(), err
    assert len(err.strip().splitlines()) == 1, err
    code, _, err = _run("certify", a, "--out", out, "--n-perturbations", "4")
    assert code == 0, err


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_pool_workers_die_with_their_parent(tmp_path, slow_chain, sig):
    a, _ = slow_chain
    p = _cli("certify", a, "--out", tmp_path / "out", "--workers", "2", "--n-perturbations", "4")
    _wait_for(lambda: len(_children(p.pid)) >= 2)
    kids = _children(p.pid)
    os.kill(p.pid, sig)
    p.communicate(timeout=60)
    _wait_for(lambda: not any(_alive(k) for k in kids), timeout=20)


def test_ctrl_c_says_how_to_resume(tmp_path, slow_chain):
    a, _ = slow_chain
    out = tmp_path / "out"
    p = _cli("certify", a, "--out", out, "--n-perturbations", "4")
    _wait_for(lambda: (out / RUN_DIR / "run.json").exists())
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130
    last = err.strip().splitlines()[-1]
    assert "interrupted" in last and "resume" in last and "Traceback" not in err


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        out += kids
        todo += kids
    return out


def test_dask_run_is_quiet_and_every_worker_lost_is_named(tmp_path):
    pytest.importorskip("distributed")
    a = _chain_file(tmp_path / "d.npz", n_factors=6, n=200, seed=6)
    slow = _chain_file(tmp_path / "s.npz", n_factors=14, n=700, seed=7)
    # A healthy Dask run: nothing on stderr but physgsa's own lines (no "Sending large graph").
    code, _, err = _run("certify", a, "--out", tmp_path / "ok", "--dask-local", "2", "--n-perturbations", "4")
    assert code == 0, err
    assert all(line.startswith("physgsa:") for line in err.strip().splitlines()), err
    # Every worker (and its nanny) killed mid-run: a named failure within a bounded time, no hang.
    out = tmp_path / "lost"
    p = _cli("certify", slow, "--out", out, "--dask-local", "2", "--n-perturbations", "4")
    _wait_for(lambda: (out / RUN_DIR / "run.json").exists(), timeout=120)
    # The nanny restarts a killed worker, so keep killing them: Dask gives up on the tasks
    # (KilledWorker) or is left with no worker at all; either way the run must stop, named.
    t0 = time.monotonic()
    while p.poll() is None and time.monotonic() - t0 < 100:
        for pid in _descendants(p.pid):
            try:
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, FileNotFoundError, PermissionError):
                pass
        time.sleep(0.2)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 4, err
    assert "Dask" in err.strip().splitlines()[-1] and "rerun the same command" in err.lower()
    assert time.monotonic() - t0 < 100
