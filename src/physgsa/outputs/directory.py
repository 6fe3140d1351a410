"""The output directory in one place: its lock, whose files are whose, and the two ways to write.

**One run per directory.** :class:`OutputLock` takes an OS lock (``flock``) on the output
directory itself. The kernel drops it when its process dies, however it dies, so it never goes
stale. A second run on the same directory is refused at once, naming the running one (pid,
start time, input), or waits for it when asked (``wait=True``, ``--wait``). A run takes the lock
once and hands the held lock down to whatever writes under it (a ``lock=`` argument); a
function given none takes its own for as long as it writes (:func:`held`). Whoever takes the lock
removes what a killed save left there (``.physgsa-save-*`` folders); a lock that created ``--out``
(and its parents) removes them again if the run wrote nothing. A ``--out`` that cannot be written
(read-only, no permission) is the environment (:class:`EnvironmentFailure`, exit 4).

**Never delete what physgsa did not write.** physgsa's own files in an output directory are
:data:`OWN_FILES` and ``.physgsa-*`` entries. A directory that holds anything else is refused,
the foreign entries named (:func:`refuse_foreign`), unless ``keep_others=True``
(``--keep-others``): then physgsa writes beside them and leaves them untouched. Outputs are
replaced file by file, never by replacing the directory, so ``--out .`` works and a symlinked
``--out`` is written through to its target.

**Two ways to write, each in one function.** :func:`staged_write` writes a set of files into a
staging folder inside the directory and renames them into place (a named file last);
:func:`atomic_write` replaces one file by a temporary file renamed onto it. Both honour the
umask, and a failure leaves the old files as they were. Ctrl-C and SIGTERM wait while a set is
renamed into place (:func:`physgsa.outputs.interrupts.commit`).
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
from .interrupts import RUN_DIR, commit

__all__ = ["RUN_DIR", "OWN_FILES", "FIGURES_DIR", "OutputLock", "held", "foreign_entries", "refuse_foreign",
           "staged_write", "atomic_write", "environment", "write_npz", "read_json"]

#: The folder of one standalone SVG per panel, beside the page that embeds them.
FIGURES_DIR = "figures"
#: Every file physgsa writes into an output directory (besides its ``.physgsa-*`` entries).
OWN_FILES = ("factors.parquet", "interfaces.parquet", "rows.parquet", "heads.parquet", "profile.parquet",
             "certificate.json",
             "heatmaps.npz", "report.html", "provenance.json", FIGURES_DIR,
             # physgsa compare's, study's and spectra's own outputs (one tool may write beside another)
             "compare.parquet", "compare_factors.parquet", "compare.json", "compare.html",
             "study.parquet", "study.html", "runs", "spectra.parquet", "spectra.json", "spectra.html",
             "plan.json", "plan.html", "checkpoint")
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
        #: The folders this lock created (``out`` and its missing parents), deepest first.
        self.made: list[Path] = []
        self.fd: int | None = None
        if self.out.is_symlink() and not self.out.exists():
            raise OutputDirectoryError(
                f"Output path '{self.out}' is a symbolic link to '{os.readlink(self.out)}', which does not exist. "
                "Create its target or choose another --out.")
        if self.out.exists() and not self.out.is_dir():
            raise OutputDirectoryError(f"Output path '{self.out}' exists and is not a directory. Choose another --out.")
        try:
            if not self.out.exists():
                self.made = [q for q in (self.out, *self.out.parents) if not (q.exists() or q.is_symlink())]
                self.out.mkdir(parents=True)
                self.created = True
            fd = os.open(self.out, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            self._remove_made()
            raise OutputDirectoryError(f"Cannot create output directory '{self.out}': {exc.strerror}.") from None
        st = os.fstat(fd)
        #: The directory's (device, inode): what :meth:`covers` compares.
        self.key = (st.st_dev, st.st_ino)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(fd)
            self._remove_made()
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OutputDirectoryError(f"Cannot lock output directory '{self.out}': {exc.strerror}.") from None
            raise OutputDirectoryError(
                f"Output directory '{self.out}' is in use by another physgsa run ({_describe_owner(self.out)}). "
                "Wait for it to finish, choose another --out, or pass --wait to wait for it."
            ) from None
        if wait and not _same_dir(self.out, self.key):
            # The run waited for removed the folder (a refused run leaves nothing): start afresh.
            os.close(fd)
            OutputLock.__init__(self, out, wait=wait, what=what)
            return
        self.fd = fd
        try:
            with environment(self.out):
                atomic_write(self.out / _OWNER, json.dumps(
                    {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "what": what}).encode())
        except BaseException:
            self.release()
            raise
        _remove_stale_stages(self.out)

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
        with contextlib.suppress(OSError):
            (self.out / _OWNER).unlink(missing_ok=True)
        self._remove_made()
        os.close(self.fd)  # closing the descriptor drops the lock
        self.fd = None

    def _remove_made(self) -> None:
        """Remove the folders this lock created, deepest first, each only if still empty."""
        for folder in self.made:
            try:
                folder.rmdir()  # only if the run left it empty (a refusal writes nothing)
            except OSError:
                break


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


def _same_dir(out: Path, key: tuple[int, int]) -> bool:
    """Whether ``out`` is still the directory whose (device, inode) is ``key``."""
    try:
        st = os.stat(out)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == key


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
                   who: str = "physgsa", folders: tuple[str, ...] = (FIGURES_DIR,)) -> None:
    """Refuse an output directory holding files physgsa did not write, naming them (unless kept).

    ``own`` are the names the writing command counts as its own, ``who`` names it in the message.
    An entry of ``folders`` (the folders the command writes into: ``figures``) that is a file or
    a link is refused whatever ``keep_others`` says, before any work.
    """
    if not directory.is_dir():
        return
    for name in folders:
        target = directory / name
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise OutputDirectoryError(_not_a_folder(target))
    if keep_others:
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
        failure = environment_failure(exc, where)
        if failure is not None:
            raise failure from None
        raise


def environment_failure(exc: OSError, where: Path) -> EnvironmentFailure | None:
    """The environment failure ``exc`` is (a full disk, a limit, a read-only or forbidden folder), or None."""
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        cause = {errno.ENOSPC: "the disk is full", errno.EFBIG: "a file-size limit was reached",
                 errno.EDQUOT: "the disk quota is exhausted"}[exc.errno]
        return EnvironmentFailure(
            f"Writing into '{where}' failed: {cause} ({exc.strerror}). Free space or raise the limit, then "
            "rerun the same command: it resumes from the records kept so far.")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        cause = "the file system is read-only" if exc.errno == errno.EROFS else "permission denied"
        return EnvironmentFailure(
            f"Cannot write into output directory '{where}': {cause} ({exc.strerror}). Make it writable or choose "
            "another --out, then rerun the same command.")
    return None


def _remove_stale_stages(out: Path) -> None:
    """Remove what a killed save left in ``out`` (its lock is held, so no live run owns them)."""
    for p in out.glob(".physgsa-save-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in out.glob(".physgsa-tmp-*"):
        with contextlib.suppress(OSError):
            p.unlink()


def _not_a_folder(target: Path) -> str:
    return (f"'{target}' is not a folder physgsa made (it is a file or a link); physgsa writes its {target.name} "
            "there. Move it away and run the same command again.")


def _place_folder(new: Path, target: Path, own: re.Pattern[str]) -> None:
    """Put the staged folder ``new`` at ``target``: physgsa's stale files there go, anything else stays.

    ``own`` matches exactly the names physgsa gives its files there, so a user's file is kept
    even where its name starts like one of them (``interface-00-annotated.svg``).
    """
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
        raise (environment_failure(exc, out)
               or OutputDirectoryError(f"Cannot write to output directory '{out}': {exc.strerror}.")) from None
    try:
        with environment(out):
            fill(stage)
            names = sorted(p.name for p in stage.iterdir() if p.name != last)
            for name in names:
                target = out / name
                if name in folders and (target.is_symlink() or (target.exists() and not target.is_dir())):
                    raise OutputDirectoryError(_not_a_folder(target))
            with commit(out):  # Ctrl-C and SIGTERM wait until the set is in place
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
