"""Issue 24, items 24 (first part), 26 and 27 (the output directory's part): the user's files and
physgsa's leftovers, a read-only --out, and the messages about --out."""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import physgsa
from physgsa.core.validation import EnvironmentFailure, OutputDirectoryError
from physgsa.outputs.directory import OutputLock
from physgsa.outputs.result import OWN_FIGURE

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def cli(*args, cwd, **kw):
    return subprocess.run([sys.executable, "-m", "physgsa", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env=ENV, **{"timeout": 120, **kw})


def one_error_line(res, code=2) -> str:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("physgsa: error: "), res.stderr
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr
    return lines[-1]


@pytest.fixture(scope="module")
def result():
    return physgsa.certify(physgsa.chain_from("example"))


# -- item 26: a user's file in figures/ is never removed --------------------------------------------

def test_a_users_figure_named_like_a_panel_is_kept(result, tmp_path):
    out = tmp_path / "o"
    physgsa.save(result, out)
    written = sorted(p.name for p in (out / "figures").iterdir())
    assert written and all(OWN_FIGURE.match(n) for n in written)  # every panel physgsa writes is its own
    (out / "figures" / "interface-00-annotated.svg").write_text("mine")
    (out / "figures" / "profiles-notes.svg").write_text("mine too")
    (out / "figures" / "interface-09-masks.svg").write_text("<svg/>")  # a stale panel of a longer chain
    physgsa.save(result, out)
    assert (out / "figures" / "interface-00-annotated.svg").read_text() == "mine"
    assert (out / "figures" / "profiles-notes.svg").read_text() == "mine too"
    assert not (out / "figures" / "interface-09-masks.svg").exists()


# -- item 26: a figures file or link is refused before any work ---------------------------------------

@pytest.mark.parametrize("kind", ["file", "symlink"])
@pytest.mark.parametrize("command", [["certify", "example"], ["study", "example", "--random-control"]])
def test_a_figures_file_or_link_is_refused_before_the_computation(tmp_path, kind, command):
    out = tmp_path / "o"
    out.mkdir()
    if kind == "file":
        (out / "figures").write_text("not a folder")
    else:
        (tmp_path / "elsewhere").mkdir()
        (out / "figures").symlink_to(tmp_path / "elsewhere")
    res = cli(*command, "--out", out, "--keep-others", cwd=tmp_path)
    line = one_error_line(res)
    assert "figures" in line and "file or a link" in line
    assert "spectra 1/" not in res.stderr  # refused before the first matrix
    assert sorted(p.name for p in out.iterdir()) == ["figures"]


def test_spectra_and_compare_write_no_figures_and_keep_a_figures_file(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "figures").write_text("not a folder")
    assert cli("spectra", "example", "--out", out, "--keep-others", "--quiet", cwd=tmp_path).returncode == 0


# -- item 26: what a killed save left is removed by the next run -------------------------------------

def test_stale_save_folders_are_removed_under_the_lock(tmp_path):
    out = tmp_path / "o"
    (out / ".physgsa-save-dead1").mkdir(parents=True)
    (out / ".physgsa-save-dead1" / "factors.parquet").write_bytes(b"x" * 1000)
    (out / ".physgsa-tmp-dead2.json").write_text("{}")
    (out / "mine.txt").write_text("kept")
    with OutputLock(out):
        pass
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


KILL_DURING_RESAVE = textwrap.dedent('''
    import os, signal, sys
    import physgsa
    import physgsa.outputs.directory as d
    out, nth = sys.argv[1], int(sys.argv[2])
    result = physgsa.certify(physgsa.chain_from("example"), q=0.8)  # another run: every file is replaced
    real, calls = os.replace, [0]

    class _Os:
        def __getattr__(self, name):
            return getattr(os, name)

        def replace(self, *a, **k):
            calls[0] += 1
            if calls[0] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*a, **k)

    d.os = _Os()
    physgsa.save(result, out)
''')


@pytest.mark.parametrize("nth", [1, 9])
def test_a_kill_during_a_resave_never_leaves_a_valid_looking_certificate(result, tmp_path, nth):
    out = tmp_path / "o"
    physgsa.save(result, out)
    (tmp_path / "kill.py").write_text(KILL_DURING_RESAVE)
    res = subprocess.run([sys.executable, str(tmp_path / "kill.py"), str(out), str(nth)], capture_output=True,
                         text=True, env=ENV, timeout=120)
    assert res.returncode == -signal.SIGKILL, res.stderr
    # the old certificate went first: a half-replaced directory is never read as a result
    assert not (out / "certificate.json").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".physgsa-save-")]  # what the kill left ...
    physgsa.save(result, out)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".physgsa")]  # ... the next save removes
    assert json.loads((out / "certificate.json").read_text()) == result.certificate


# -- item 26: --out a/b/c refused leaves no empty parents ---------------------------------------------

def test_a_refused_run_removes_the_parents_it_created(tmp_path):
    one_error_line(cli("certify", "nofile.npz", "--out", "a/b/c", cwd=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    (tmp_path / "a").mkdir()
    one_error_line(cli("certify", "nofile.npz", "--out", "a/b/c", cwd=tmp_path))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a"]  # the folder that was there stays


# -- item 26: spectra refuses a busy directory before its work ----------------------------------------

def test_spectra_refuses_a_busy_directory_first(tmp_path):
    out = tmp_path / "o"
    with OutputLock(out, what="certify"):
        res = cli("spectra", "example", "--out", out, cwd=tmp_path)
    line = one_error_line(res)
    assert "in use by another physgsa run" in line and "spectra 1/" not in res.stderr


# -- item 24: an --out that cannot be written is the environment (exit 4), not a bug ------------------

def test_owner_file_that_cannot_be_written_is_the_environment(tmp_path):
    out = tmp_path / "o"
    out.mkdir()

    def no_writes():
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    line = one_error_line(cli("certify", "example", "--out", out, "--quiet", cwd=tmp_path, preexec_fn=no_writes),
                          code=4)
    assert str(out) in line
    assert list(out.iterdir()) == []


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory that cannot be written: a read-only tmpfs as root where mounting works, else chmod."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
        return
    if not shutil.which("mount") or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)],
                                                   capture_output=True).returncode != 0:
        pytest.skip("root ignores permissions and cannot mount a read-only file system here")
    try:
        yield ro
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)  # lazily: never left mounted


def test_read_only_out_is_the_environment(read_only_dir, tmp_path):
    with pytest.raises(EnvironmentFailure, match="read-only|permission denied") as err:
        OutputLock(read_only_dir)
    assert str(read_only_dir) in str(err.value)
    line = one_error_line(cli("certify", "example", "--out", read_only_dir, "--quiet", cwd=tmp_path), code=4)
    assert str(read_only_dir) in line


# -- item 27: a dangling-symlink --out is named for what it is ----------------------------------------

def test_dangling_symlink_out_says_so(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(OutputDirectoryError, match="symbolic link.*does not exist"):
        OutputLock(tmp_path / "link")
    line = one_error_line(cli("certify", "example", "--out", "link", cwd=tmp_path))
    assert "File exists" not in line and "symbolic link" in line and "gone" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link"]


# -- item 27: a FIFO chain file, a pickled checkpoint --------------------------------------------------

def test_a_fifo_chain_file_is_not_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / "chain.npz")
    line = one_error_line(cli("certify", "chain.npz", "--out", "o", cwd=tmp_path, timeout=60))
    assert "not a regular file" in line and "does not exist" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain.npz"]


def test_a_pickled_checkpoint_is_one_line_without_torchs_advice(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.zeros(3, 3), "obj": Path("x")}, tmp_path / "bad.pt")  # not a plain tensor
    res = cli("certify", "bad.pt", "--out", "o", cwd=tmp_path)
    line = one_error_line(res)
    assert "pickled" in line and "bad.pt" in line
    assert "two options" not in res.stderr and "weights_only=False" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_an_overflowing_npy_shape_never_mentions_unpickling(tmp_path):
    import io
    import zipfile

    import numpy as np

    good = io.BytesIO()
    np.lib.format.write_array(good, np.eye(3))
    bad = io.BytesIO()
    np.lib.format.write_array_header_1_0(bad, {"descr": "<f8", "fortran_order": False, "shape": (2**62, 2**62)})
    bad.write(np.zeros(4).tobytes())
    with zipfile.ZipFile(tmp_path / "over.npz", "w") as zf:
        zf.writestr("a.npy", bad.getvalue())
        zf.writestr("b.npy", good.getvalue())
    for command in ("certify", "spectra"):
        line = one_error_line(cli(command, "over.npz", "--out", "o", "--quiet", cwd=tmp_path))
        assert "unpickling" not in line and "over.npz" in line and "declares shape" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["over.npz"]
