"""The output directory in one place: its lock, whose files are whose, and the two ways to write.

**One run per directory.** :class:`OutputLock` takes an OS lock (``flock``) on the output
directory itself. The kernel drops it when its process dies, however it dies, so it never goes
stale. A second run on the same directory is refused at once, naming the running one (pid,
start time, input), or waits for it when asked (``wait=True``, ``--wait``). A run takes the lock
once and hands the held lock down to whatever writes under it (a ``lock=`` argument); a
function given none takes its own for as long as it writes (:func:`held`).

**Never delete what physgsa did not write.** physgsa's own files in an output directory are
:data:`OWN_FILES` and ``.physgsa-*`` entries. A directory that holds anything else is refused,
the foreign entries named (:func:`refuse_foreign`), unless ``keep_others=True``
(``--keep-others``): then physgsa writes beside them and leaves them untouched. Outputs are
replaced file by file, never by replacing the directory, so ``--out .`` works and a symlinked
``--out`` is written through to its target.

**Two ways to write, each in one function.** :func:`staged_write` writes a set of files into a
staging folder inside the directory and renames them into place (a named file last);
:func:`atomic_write` replaces one file by a temporary file renamed onto it. Both honour the
umask, and a failure leaves the old files as they were.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import atomic_write, umask
from ..core.validation import EnvironmentFailure, OutputDirectoryError

__all__ = ["RUN_DIR", "OWN_FILES", "FIGURES_DIR", "OutputLock", "held", "foreign_entries", "refuse_foreign",
           "staged_write", "atomic_write", "environment", "write_npz", "read_json"]

#: The resumable records of an interrupted certify run (:mod:`physgsa.runs.records`).
RUN_DIR = ".physgsa-run"
#: The folder of one standalone SVG per panel, beside the page that embeds them.
FIGURES_DIR = "figures"
#: Every file physgsa writes into an output directory (besides its ``.physgsa-*`` entries).
OWN_FILES = ("factors.parquet", "interfaces.parquet", "rows.parquet", "heads.parquet", "profile.parquet",
             "certificate.json",
             "heatmaps.npz", "report.html", "provenance.json", FIGURES_DIR,
             # physgsa compare's, study's and spectra's own outputs (one tool may write beside another)
             "compare.parquet", "compare_factors.parquet", "compare.json", "compare.html",
             "study.parquet", "study.html", "runs", "spectra.parquet", "spectra.json", "spectra.html")
_OWNER = ".physgsa-owner.json"


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


# -- the lock --------------------------------------------------------------------------------------

class OutputLock:
    """An exclusive OS lock on an output directory, for as long as one run writes into it.

    Creates the directory (and its parents) if missing; :meth:`release` removes it again if the
    run created it and wrote nothing there. ``wait=True`` blocks until the other run is done.
    The lock is not re-entrant: a run takes it once and passes it down (``lock=``).
    """

    def __init__(self, out: str | os.PathLike[str], *, wait: bool = False, what: str = "run") -> None:
        self.out = Path(out)
        self.created = False
        self.fd: int | None = None
        if self.out.exists() and not self.out.is_dir():
            raise OutputDirectoryError(f"Output path '{self.out}' exists and is not a directory. Choose another --out.")
        try:
            if not self.out.exists():
                self.out.mkdir(parents=True)
                self.created = True
            fd = os.open(self.out, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise OutputDirectoryError(f"Cannot create output directory '{self.out}': {exc.strerror}.") from None
        st = os.fstat(fd)
        #: The directory's (device, inode): what :meth:`covers` compares.
        self.key = (st.st_dev, st.st_ino)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OutputDirectoryError(f"Cannot lock output directory '{self.out}': {exc.strerror}.") from None
            raise OutputDirectoryError(
                f"Output directory '{self.out}' is in use by another physgsa run ({_describe_owner(self.out)}). "
                "Wait for it to finish, choose another --out, or pass --wait to wait for it."
            ) from None
        self.fd = fd
        atomic_write(self.out / _OWNER, json.dumps(
            {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "what": what}).encode())

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def covers(self, out: str | os.PathLike[str]) -> bool:
        """Whether this lock is held on the directory ``out`` (the same directory under any path)."""
        try:
            st = os.stat(out)
        except OSError:
            return False
        return self.fd is not None and (st.st_dev, st.st_ino) == self.key

    def release(self) -> None:
        """Drop the lock (and the directory, if this lock created it and it is still empty)."""
        if self.fd is None:
            return
        (self.out / _OWNER).unlink(missing_ok=True)
        if self.created:
            try:
                self.out.rmdir()  # only if the run left it empty (a refusal writes nothing)
            except OSError:
                pass
        os.close(self.fd)  # closing the descriptor drops the lock
        self.fd = None


@contextlib.contextmanager
def held(out: str | os.PathLike[str], lock: OutputLock | None = None, *, wait: bool = False,
         what: str = "run") -> Iterator[OutputLock]:
    """The lock on ``out`` for a block: ``lock`` itself when the caller holds it, else a new one.

    Parameters
    ----------
    out : path
        The output directory.
    lock : OutputLock, optional
        A lock the caller already holds on ``out``; it stays held after the block.
    wait, what
        As for :class:`OutputLock`, when a new lock is taken (released after the block).

    Raises
    ------
    ValueError
        ``lock`` is held on another directory (a bug in the caller).
    """
    if lock is not None:
        if not lock.covers(out):
            raise ValueError(f"The lock passed down is held on '{lock.out}', not on '{out}'.")
        yield lock
        return
    with OutputLock(out, wait=wait, what=what) as own:
        yield own


def _describe_owner(out: Path) -> str:
    doc = read_json(out / _OWNER) or {}
    pid, started = doc.get("pid"), doc.get("started")
    return f"pid {pid}, started {started}" if pid else "its owner is still starting"


# -- whose files -----------------------------------------------------------------------------------

def foreign_entries(directory: Path, own: tuple[str, ...] = OWN_FILES) -> list[str]:
    """The entries of ``directory`` that physgsa did not write (sorted names; ``/`` marks a folder)."""
    out = []
    for p in sorted(directory.iterdir(), key=lambda q: q.name):
        if p.name in own or p.name.startswith(".physgsa-"):
            continue
        out.append(p.name + ("/" if p.is_dir() and not p.is_symlink() else ""))
    return out


def refuse_foreign(directory: Path, keep_others: bool, *, own: tuple[str, ...] = OWN_FILES,
                   who: str = "physgsa") -> None:
    """Refuse an output directory holding files physgsa did not write, naming them (unless kept).

    ``own`` are the names the writing command counts as its own, ``who`` names it in the message.
    """
    if keep_others or not directory.is_dir():
        return
    foreign = foreign_entries(directory, own)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputDirectoryError(
            f"Output directory '{directory}' holds files {who} did not write ({shown}); refusing to write "
            "there. Choose an empty or new --out, or pass --keep-others to write beside them (they are left "
            "untouched)."
        )


# -- writing ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def environment(where: Path) -> Iterator[None]:
    """A full disk or a file-size limit while writing: the environment failed, not the input."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            cause = {errno.ENOSPC: "the disk is full", errno.EFBIG: "a file-size limit was reached",
                     errno.EDQUOT: "the disk quota is exhausted"}[exc.errno]
            raise EnvironmentFailure(
                f"Writing into '{where}' failed: {cause} ({exc.strerror}). Free space or raise the limit, then "
                "rerun the same command: it resumes from the records kept so far."
            ) from None
        raise


def _place_folder(new: Path, target: Path, own: re.Pattern[str]) -> None:
    """Put the staged folder ``new`` at ``target``: physgsa's stale files there go, anything else stays."""
    if not (target.exists() or target.is_symlink()):
        os.replace(new, target)
        return
    names = {p.name for p in new.iterdir()}
    for p in target.iterdir():
        if own.match(p.name) and p.is_file() and not p.is_symlink() and p.name not in names:
            p.unlink()
    for name in sorted(names):
        os.replace(new / name, target / name)


def staged_write(out: Path, fill: Callable[[Path], None], *, lock: OutputLock, last: str | None = None,
                 folders: Mapping[str, re.Pattern[str]] | None = None, drop: tuple[str, ...] = ()) -> Path:
    """Write a set of output files into ``out`` together: staged first, then renamed into place.

    The one way physgsa writes several files of one result. ``fill(stage)`` writes every file
    (and folder) into ``stage``, a fresh ``.physgsa-save-*`` folder inside ``out``; nothing in
    ``out`` changes while it runs, so a failure there (an exception, a full disk) leaves the old
    files exactly as they were. Then:

    1. the old ``last`` file is removed, so that a directory caught between the renames never
       holds a ``last`` that belongs to other files (``last`` marks the set complete:
       ``certificate.json``, ``study.html``);
    2. every staged entry but ``last`` is renamed into ``out``, in sorted order. A staged folder
       named in ``folders`` is merged into an existing folder of that name: the files there that
       match its pattern and are not in the new set (physgsa's stale panels) are removed,
       the new files renamed in one by one, and anything else left untouched; where none
       exists the staged folder is renamed whole;
    3. ``last`` is renamed into place, and the entries ``drop`` are removed (the records of the
       run the set completes).

    Parameters
    ----------
    out : Path
        The output directory; it exists (the lock created it).
    fill : callable
        ``fill(stage)`` writes the files into the folder ``stage`` (created, readable as the
        umask allows).
    lock : OutputLock
        The lock held on ``out`` for the whole write (see :func:`held`).
    last : str, optional
        The staged file renamed after all others (see step 1).
    folders : mapping of str to compiled regex, optional
        Staged folders merged into existing ones, and which of their files are physgsa's.
    drop : tuple of str
        Entries of ``out`` removed once everything is in place.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    OutputDirectoryError
        ``out`` cannot be written, or a folder of ``folders`` is in ``out`` as a file or a link
        (checked before anything is renamed).
    EnvironmentFailure
        A full disk, a file-size limit or an exhausted quota, while staging or renaming.

    Notes
    -----
    Files are written into the folder itself, never by replacing it, so ``--out .`` works and a
    symlinked ``out`` is written through. Written files and folders get the ordinary modes
    (``0o666`` and ``0o777`` less the umask).
    """
    if not lock.covers(out):
        raise ValueError(f"The lock passed down is held on '{lock.out}', not on '{out}'.")
    folders = folders or {}
    try:
        stage = Path(tempfile.mkdtemp(prefix=".physgsa-save-", dir=out))
        os.chmod(stage, 0o777 & ~umask())  # mkdtemp makes it private; the outputs are ordinary files
    except OSError as exc:
        raise OutputDirectoryError(f"Cannot write to output directory '{out}': {exc.strerror}.") from None
    try:
        with environment(out):
            fill(stage)
            names = sorted(p.name for p in stage.iterdir() if p.name != last)
            for name in names:
                target = out / name
                if name in folders and (target.is_symlink() or (target.exists() and not target.is_dir())):
                    raise OutputDirectoryError(
                        f"'{target}' is not a folder physgsa made (it is a file or a link); physgsa writes its "
                        f"{name} there. Move it away and run the same command again.")
            if last is not None:
                (out / last).unlink(missing_ok=True)
            for name in names:
                if name in folders:
                    _place_folder(stage / name, out / name, folders[name])
                else:
                    os.replace(stage / name, out / name)
            if last is not None:
                os.replace(stage / last, out / last)
            for name in drop:
                shutil.rmtree(out / name, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def write_npz(path: Path, arrays: Mapping[str, Any], *, compress: bool = True) -> None:
    """An .npz with fixed member timestamps and order, so the same arrays give the same bytes.

    ``compress=False`` stores the members as they are (``ZIP_STORED``; numpy reads both): for
    files that are written often and read at most once, such as a run's records, where deflating
    costs more than the bytes it saves.
    """
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            zf.writestr(info, buf.getvalue())
