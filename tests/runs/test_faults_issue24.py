"""Issue 24, items 22-25 (found by a fault probe): an input changed mid-run, damaged records,
the environment's failures and connections that never answer."""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from test_resume import _interrupt_after, _Stop  # the same interrupt hook as the resume tests

import physgsa
from physgsa import ChainFileError, EnvironmentFailure, InvalidParameterError
from physgsa.outputs.directory import RUN_DIR, OutputLock

ENV = dict(os.environ, HF_HUB_OFFLINE="1")


def _chain_file(path, n_factors=5, n=48, seed=0):
    rng = np.random.default_rng(seed)
    np.savez(path, **{f"b{i:02d}": np.eye(n) + 0.5 * rng.standard_normal((n, n)) / np.sqrt(n)
                      for i in range(n_factors)})
    return path


def _npy(shape, data=b"", descr="<f8"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


# -- item 22: a chain file rewritten in place (same size, same mtime) during a run -------------------

def _rewrite_in_place(path, seed):
    """New content of the same size into the same inode, the old modification time put back."""
    st = os.stat(path)
    tmp = path.with_name("new.npz")
    _chain_file(tmp, seed=seed)
    data = tmp.read_bytes()
    assert len(data) == st.st_size
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_ino == st.st_ino and os.stat(path).st_mtime_ns == st.st_mtime_ns


def test_a_chain_file_changed_in_place_is_refused_never_mixed(tmp_path):
    path = _chain_file(tmp_path / "c.npz")
    chain = physgsa.read_chain(path)
    data = path.read_bytes()
    st = os.stat(path)
    with open(path, "r+b") as fh:  # flip bytes of the last array's data, keep size, inode and mtime
        fh.seek(len(data) // 2)
        chunk = fh.read(64)
        fh.seek(len(data) // 2)
        fh.write(bytes(b ^ 0x10 for b in chunk))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ChainFileError, match="changed during the run.*Rerun"):
        for f in chain.factors:
            assert f.matrix.shape == f.shape


def test_a_certify_run_never_mixes_two_versions_of_its_input(tmp_path):
    path = _chain_file(tmp_path / "c.npz")
    chain = physgsa.read_chain(path)
    done = []

    def progress(stage, n, total, name):
        if stage == "spectra" and not done:
            done.append(1)
            _rewrite_in_place(path, seed=7)

    with pytest.raises(ChainFileError, match="changed during the run"):
        physgsa.certify(chain, n_perturbations=2, progress=progress)
    assert done


# -- item 23: damaged records are recomputed, within the memory guard ---------------------------------

def _interrupted(tmp_path, n=3):
    chain = physgsa.read_chain(_chain_file(tmp_path / "c.npz"))
    ref = physgsa.certify(chain, n_perturbations=2)
    out = tmp_path / "out"
    with pytest.raises(_Stop):
        physgsa.certify(chain, n_perturbations=2, checkpoint=out, progress=_interrupt_after(n))
    return chain, ref, out


def _resume(chain, out, **kw):
    seen = []
    res = physgsa.certify(chain, n_perturbations=2, checkpoint=out,
                          progress=lambda stage, done, total, name: seen.append((stage, name)), **kw)
    return res, seen


def _flip_header(path, old, new):
    """One bit of the first member's .npy header flipped, the zip's CRC made to match."""
    with zipfile.ZipFile(path) as zf:
        members = [(info.filename, zf.read(info)) for info in zf.infolist()]
    name, data = members[0]
    i = data.index(b"'descr'") - 1 if old == b"{" else data.index(b"}", data.index(b"'shape'"))
    assert data[i:i + 1] == old
    members[0] = (name, data[:i] + new + data[i + 1:])
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)


@pytest.mark.parametrize("damage", ["syntax", "token", "nan_json", "huge_shape", "npz_dir", "json_dir", "deflated"])
def test_a_damaged_record_is_recomputed(tmp_path, damage):
    chain, ref, out = _interrupted(tmp_path)
    rec = out / RUN_DIR / "interface-000001.npz"
    if damage == "syntax":  # one bit: '{' -> 'z' (numpy raises SyntaxError)
        _flip_header(rec, b"{", b"z")
    elif damage == "token":  # one bit: '}' -> '|' (an unclosed brace: tokenize's TokenError)
        _flip_header(rec, b"}", b"|")
    elif damage == "nan_json":
        p = out / RUN_DIR / "factor-000002.json"
        doc = json.loads(p.read_text())
        key = next(k for k, v in doc["record"].items() if isinstance(v, float))
        doc["record"][key] = float("nan")
        p.write_text(json.dumps(doc))
        p = out / RUN_DIR / "interface-000001.json"
        doc = json.loads(p.read_text())
        key = next(k for k, v in doc["row"].items() if isinstance(v, float))
        doc["row"][key] = float("nan")
        p.write_text(json.dumps(doc))
    elif damage == "huge_shape":
        with zipfile.ZipFile(rec, "w") as zf:
            zf.writestr("spectrum.npy", _npy((2 * 10 ** 12,), b"\0" * 64))
    elif damage == "npz_dir":
        rec.unlink()
        rec.mkdir()
        (rec / "x").write_text("x")
    elif damage == "json_dir":
        j = out / RUN_DIR / "interface-000001.json"
        j.unlink()
        j.mkdir()
    elif damage == "deflated":  # a small file that expands to 64 MiB: never inflated
        with zipfile.ZipFile(rec, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("spectrum.npy", _npy((8 * 2 ** 20,), bytes(64 * 2 ** 20)))
        assert rec.stat().st_size < 2 ** 20
    tracemalloc.start()
    try:
        res, seen = _resume(chain, out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 48 * 2 ** 20
    if damage not in ("nan_json", "json_dir"):
        assert ("interfaces", "b01->b02") in seen and ("interfaces", "b00->b01") not in seen
    a, b = tmp_path / "a", tmp_path / "b"
    physgsa.save(res, a)
    physgsa.save(ref, b)
    assert (a / "certificate.json").read_bytes() == (b / "certificate.json").read_bytes()
    assert (a / "interfaces.parquet").read_bytes() == (b / "interfaces.parquet").read_bytes()


def test_damaged_records_never_exit_3_on_the_command_line(tmp_path):
    chain, ref, out = _interrupted(tmp_path)
    _flip_header(out / RUN_DIR / "interface-000001.npz", b"{", b"z")
    cmd = [sys.executable, "-m", "physgsa", "certify", str(tmp_path / "c.npz"), "--quiet",
           "--n-perturbations", "2", "--out", str(out)]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# -- item 24: the environment's failures --------------------------------------------------------------

def test_a_header_declaring_60_gib_in_a_303_byte_file_is_refused_from_the_header(tmp_path):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("w.npy", _npy((7864320, 1024), b"\0" * 64))
    assert path.stat().st_size < 400
    tracemalloc.start()
    try:
        with pytest.raises(ChainFileError, match=r"bomb\.npz.*'w' declares.*60\.0 GiB"):
            physgsa.read_chain(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 ** 20
    r = subprocess.run([sys.executable, "-m", "physgsa", "certify", str(path), "--out", str(tmp_path / "o")],
                       env=ENV, capture_output=True, text=True)
    assert r.returncode == 2 and "declares" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_a_chain_file_with_a_bit_flipped_npy_header_is_refused(tmp_path):
    path = _chain_file(tmp_path / "c.npz", n_factors=2)
    _flip_header(path, b"{", b"z")
    with pytest.raises(ChainFileError, match="c.npz"):
        physgsa.read_chain(path)


def test_wait_for_a_run_that_removed_its_folder_goes_on(tmp_path):
    out = tmp_path / "o"
    first = OutputLock(out)  # created the folder; a refusal removes it again on release
    got = []

    def waiter():
        try:
            with OutputLock(out, wait=True) as lock:
                got.append(lock.out.is_dir() and lock.covers(out))
        except Exception as exc:  # noqa: BLE001 - reported below
            got.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.5)
    first.release()
    t.join(10)
    assert got == [True]


def test_dask_futures_cancelled_under_the_run_are_the_environment(tmp_path):
    distributed = pytest.importorskip("distributed")
    from physgsa.runs.executors import _Dask

    pool = _Dask(None, 0)
    pool.cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                            dashboard_address=None)
    pool.client = distributed.Client(pool.cluster)
    try:
        futs = [pool.submit(time.sleep, 2)]
        time.sleep(0.2)
        pool.client.cancel(futs)
        with pytest.raises(EnvironmentFailure, match="Rerun the same command"):
            list(pool.as_completed(futs))
    finally:
        pool.__exit__(None, None, None)


# -- item 25: connections that never answer ------------------------------------------------------------

@pytest.fixture
def silent_listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield f"tcp://127.0.0.1:{s.getsockname()[1]}"
    s.close()


@pytest.fixture
def http_server():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"tcp://127.0.0.1:{port}"
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("server", ["silent_listener", "http_server"])
def test_a_scheduler_that_never_answers_is_refused_within_the_timeout(server, request, monkeypatch):
    pytest.importorskip("distributed")
    from physgsa.runs import executors

    address = request.getfixturevalue(server)
    monkeypatch.setenv("PHYSGSA_CONNECT_TIMEOUT", "1")
    t = time.monotonic()
    with pytest.raises(InvalidParameterError, match=r"--scheduler "):
        with executors._Dask(address, 0):
            pass
    assert time.monotonic() - t < 6


def test_the_command_line_refuses_a_silent_scheduler_and_obeys_ctrl_c(tmp_path, silent_listener):
    path = _chain_file(tmp_path / "c.npz", n_factors=2)
    cmd = [sys.executable, "-m", "physgsa", "certify", str(path), "--out", str(tmp_path / "o"), "--quiet",
           "--scheduler", silent_listener]
    t = time.monotonic()
    r = subprocess.run(cmd, env=dict(ENV, PHYSGSA_CONNECT_TIMEOUT="1"), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "--scheduler" in r.stderr and "Traceback" not in r.stderr
    assert time.monotonic() - t < 30
    assert not (tmp_path / "o").exists()
    proc = subprocess.Popen(cmd, env=dict(ENV, PHYSGSA_CONNECT_TIMEOUT="120"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(6)  # past the start-up, into the connection
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
