"""Ctrl-C and SIGTERM on the command line: one line and exit 130, or the outputs written and exit 0.

Never both. Three states, one handler (:meth:`Interrupts.handler`) for SIGINT and SIGTERM:

* **inside a command's run** (:func:`running`, from ``cli._running``): the signal raises
  :class:`KeyboardInterrupt`, which the command turns into its one line and exit 130
  (:func:`interrupted_line` says what was kept);
* **once the command's outputs are in place** (the commit of :func:`commit` into the command's
  own ``--out``): later signals are ignored, so the command prints its ``wrote`` line and exits 0;
* **outside a run** (start-up imports, a command that wrote nothing): the line, and exit 130 at once.

:func:`commit` is the small critical section of every multi-file write
(:func:`physgsa.outputs.directory.staged_write`): while the files are renamed into place a
signal is held back, then delivered once the set is complete. No numpy here: the command line
installs the handler at start-up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["RUN_DIR", "NOTHING_WRITTEN", "Interrupts", "installed", "install", "running", "commit", "interrupted_line"]

#: The resumable records of an interrupted certify run (:mod:`physgsa.runs.records`).
RUN_DIR = ".physgsa-run"
NOTHING_WRITTEN = "physgsa: interrupted; no output was written"
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """The command line's handling of SIGINT and SIGTERM (see the module's docstring).

    Its state lives in the instance, and the instance in the installed handler (the process's
    signal disposition, which is process-wide by nature): nothing at module level.
    """

    def __init__(self) -> None:
        #: Inside a run; the run's outputs are in place; the run's output directory.
        self.active = False
        self.done = False
        self.out: Path | None = None
        #: A signal arrived inside the run. Its KeyboardInterrupt can be lost: raised while a
        #: finalizer runs (Dask's ``Future.__del__``), Python prints it as "ignored" and goes on.
        #: :func:`commit` honours it before anything is renamed into place.
        self.requested = False

    def handler(self, signum: int, frame: object) -> None:
        """What SIGINT and SIGTERM do (see the module's docstring)."""
        if self.done:
            return
        if self.active:
            self.requested = True
            raise KeyboardInterrupt
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        with contextlib.suppress(OSError):
            os.write(2, (NOTHING_WRITTEN + "\n").encode())
        os._exit(130)

    def install(self) -> None:
        """Take SIGINT (unless ignored, as in a background job) and SIGTERM for the whole process."""
        for sig in _SIGNALS:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                signal.signal(sig, self.handler)

    @contextlib.contextmanager
    def run(self, out: str | os.PathLike[str] | None) -> Iterator[None]:
        """A command's run writing into ``out``: signals raise :class:`KeyboardInterrupt` inside it."""
        previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}
        self.active, self.done, self.requested = True, False, False
        self.out = None if out is None else Path(out)
        for sig, old in previous.items():
            if old is not signal.SIG_IGN:
                signal.signal(sig, self.handler)
        hook = sys.unraisablehook
        sys.unraisablehook = lambda unraisable: self._unraisable(unraisable, hook)
        try:
            yield
        finally:
            self.active = False
            sys.unraisablehook = hook
            for sig, old in previous.items():
                signal.signal(sig, old if old is not None else signal.SIG_DFL)

    def _unraisable(self, unraisable: Any, hook: Any) -> None:
        """Our own KeyboardInterrupt, lost in a finalizer, is honoured later: no traceback for it."""
        if not (self.requested and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            hook(unraisable)

    def is_run_out(self, out: Path) -> bool:
        """Whether ``out`` is the running command's own output directory."""
        if not self.active or self.out is None:
            return False
        try:
            return os.path.samefile(out, self.out)
        except OSError:
            return False


def installed() -> Interrupts | None:
    """The :class:`Interrupts` whose handler is installed for SIGTERM, if any."""
    owner = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return owner if isinstance(owner, Interrupts) else None


def install() -> Interrupts:
    """Install a fresh :class:`Interrupts` for the whole process (the command line's start-up)."""
    guard = Interrupts()
    guard.install()
    return guard


def running(out: str | os.PathLike[str] | None) -> contextlib.AbstractContextManager[None]:
    """A command's run: under the installed handler, or one installed for the run's duration."""
    return (installed() or Interrupts()).run(out)


@contextlib.contextmanager
def commit(out: Path) -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while a set of files is renamed into ``out``.

    A signal that arrives meanwhile is delivered when the block ends; once the outputs of the
    command's own ``--out`` are in place, the command finishes (the handler ignores it).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    guard = installed()
    if guard is not None and guard.requested and guard.is_run_out(out):
        raise KeyboardInterrupt  # an interrupt a finalizer swallowed: nothing is renamed into place
    pending: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    for sig, old in previous.items():
        if old is not signal.SIG_IGN:
            signal.signal(sig, lambda signum, frame: pending.append(signum))
    try:
        yield
        if guard is not None and guard.is_run_out(out):
            guard.done = True
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
    for signum in dict.fromkeys(pending):
        signal.raise_signal(signum)


def interrupted_line(out: str | os.PathLike[str], resumes: bool) -> str:
    """What an interrupted run says: where its finished work is kept, if anywhere."""
    if resumes and (Path(out) / RUN_DIR).is_dir():
        return f"physgsa: interrupted; finished work is kept in {out}/{RUN_DIR}: rerun the same command to resume"
    return NOTHING_WRITTEN
