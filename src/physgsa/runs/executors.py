"""Where certify's tasks run: here (serially), on local worker processes, or on a Dask cluster.

Every task is deterministic on its own (seeded by its index, never by order), so the results
are the same whichever process computes them. What this module adds is that the machine's
failures are named for what they are and leave nothing behind:

- local worker processes die with their parent, however the parent dies (``PR_SET_PDEATHSIG``
  on Linux), so a killed run leaves no orphans;
- a worker killed mid-run (``BrokenProcessPool``), every Dask worker lost (noticed within
  :data:`DASK_LOST_AFTER` seconds, never a silent hang) or a task Dask gave up on
  (``KilledWorker``) raise :class:`~physgsa.EnvironmentFailure`: the run is resumable;
- a scheduler address that does not parse, or where nothing (or something that is not Dask)
  answers, is bad input (:class:`~physgsa.InvalidParameterError`), found before any work;
  every connection is bounded: a listener that accepts and never answers (an HTTP server, a
  silent socket) is refused after :data:`CONNECT_TIMEOUT` seconds (the environment variable
  ``PHYSGSA_CONNECT_TIMEOUT`` sets another number of seconds), and Ctrl-C stops the wait;
- Dask's routine warnings and logs ("Sending large graph", worker restarts) stay quiet.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import warnings

from ..core.validation import EnvironmentFailure, InvalidParameterError

__all__ = ["executor", "run_tasks", "DASK_LOST_AFTER", "CONNECT_TIMEOUT"]

#: Seconds without a single Dask worker after which the run stops (the nanny has given up).
DASK_LOST_AFTER = 20.0
#: Seconds a Dask scheduler has to complete its handshake (``PHYSGSA_CONNECT_TIMEOUT`` overrides).
CONNECT_TIMEOUT = 10.0


def connect_timeout() -> float:
    """The connection timeout in seconds: ``PHYSGSA_CONNECT_TIMEOUT`` if it is a positive number,
    else :data:`CONNECT_TIMEOUT`.
    """
    try:
        t = float(os.environ.get("PHYSGSA_CONNECT_TIMEOUT", ""))
    except ValueError:
        return CONNECT_TIMEOUT
    return t if 0 < t < float("inf") else CONNECT_TIMEOUT


def _handshake(address: str, timeout: float) -> None:
    """Connect to ``address`` and complete Dask's handshake within ``timeout`` seconds, or raise.

    ``distributed.Client`` bounds the TCP connection but not the handshake after it: a listener
    that accepts and never answers would hold it forever. Here the whole exchange is bounded,
    in an event loop of this thread, so Ctrl-C interrupts it.
    """
    import asyncio

    from distributed.comm import connect

    async def shake() -> None:
        comm = await asyncio.wait_for(connect(address, timeout=timeout), timeout)
        await comm.close()

    asyncio.run(shake())


class _Serial:
    """The executor protocol for ``workers=1``: tasks run here, in order."""

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _die_with_parent(parent: int) -> None:
    """Pool worker initializer: get SIGKILL when the parent process dies (Linux), and ignore Ctrl-C
    (the parent handles it and shuts the pool down).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler: a pool shutdown stops it quietly
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pool's own shutdown still applies
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class _Pool:
    """A ProcessPoolExecutor whose workers die with their parent.

    ``width`` tasks run at once; results (spectra included) come back to this process.
    """

    remote = False

    def __init__(self, workers: int):
        from concurrent.futures import ProcessPoolExecutor

        self.width = workers
        self.pool = ProcessPoolExecutor(max_workers=workers, initializer=_die_with_parent,
                                        initargs=(os.getpid(),))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        # On an interruption or a failure, do not wait for queued tasks.
        self.pool.shutdown(wait=exc_type is None, cancel_futures=exc_type is not None)
        return False

    def submit(self, fn, *args, **kw):
        return self.pool.submit(fn, *args, **kw)

    @staticmethod
    def as_completed(futures):
        from concurrent.futures import as_completed
        from concurrent.futures.process import BrokenProcessPool

        broken = EnvironmentFailure(
            "A worker process died mid-run (killed, or out of memory). Rerun the same command: it resumes "
            "from the records kept so far.")
        try:
            for fut in as_completed(futures):
                if isinstance(fut.exception(), BrokenProcessPool):
                    raise broken
                yield fut
        except BrokenProcessPool:
            raise broken from None


def _quiet_dask() -> None:
    # Routine messages of a healthy run (and of worker restarts) are not the user's business.
    warnings.filterwarnings("ignore", message=".*Sending large graph.*")
    for name in ("distributed", "distributed.worker", "distributed.nanny", "distributed.scheduler",
                 "distributed.core", "distributed.comm", "distributed.client", "distributed.shuffle"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


class _Dask:
    """A Dask distributed client as an executor: an existing scheduler, or a LocalCluster it starts.

    ``remote``: a future may be passed to another task, and its value stays on the workers (a
    spectrum is never shipped to this process). ``width``: the cluster's worker threads.
    """

    remote = True
    width = 1

    def __init__(self, scheduler: str | None, local: int):
        self.scheduler, self.local = scheduler, local
        self.client = self.cluster = None

    def __enter__(self):
        try:
            # Here, not at the top: dask.distributed is optional and slow to import (start-up); only
            # a run with --scheduler or --dask-local loads it.
            from distributed import Client, LocalCluster
        except ImportError:
            raise InvalidParameterError(
                "The Dask backend needs dask.distributed: pip install 'physgsa[dask]'."
            ) from None
        _quiet_dask()
        if self.scheduler:
            timeout = connect_timeout()
            try:
                _handshake(self.scheduler, timeout)
                self.client = Client(self.scheduler, timeout=f"{timeout}s")
            except TimeoutError:
                raise InvalidParameterError(
                    f"Cannot reach a Dask scheduler at --scheduler {self.scheduler!r}: no answer within {timeout:g} s "
                    "(something may listen there that is not a Dask scheduler). Check the address (tcp://HOST:PORT) "
                    "and that a dask scheduler runs there; PHYSGSA_CONNECT_TIMEOUT sets the wait in seconds "
                    f"(default {CONNECT_TIMEOUT:g})."
                ) from None
            except Exception as exc:  # noqa: BLE001 - every way of not reaching a Dask scheduler is bad input
                raise InvalidParameterError(
                    f"Cannot reach a Dask scheduler at --scheduler {self.scheduler!r} "
                    f"({type(exc).__name__}: {str(exc)[:120]}). Check the address (tcp://HOST:PORT) and that "
                    "a dask scheduler runs there."
                ) from None
        else:
            self.cluster = LocalCluster(n_workers=self.local, threads_per_worker=1, processes=True,
                                        dashboard_address=None, silence_logs=logging.CRITICAL)  # workers too
            self.client = Client(self.cluster)
        try:
            self.width = max(1, sum(self.client.nthreads().values()))
        except Exception:  # noqa: BLE001 - a scheduler with no worker yet: one task at a time
            self.width = 1
        return self

    def __exit__(self, *exc):
        # A cluster whose workers died may not close cleanly; that must not hide why the run stopped.
        for closing in (self.client, self.cluster):
            if closing is not None:
                try:
                    closing.close()
                except Exception:  # noqa: BLE001
                    pass
        return False

    def submit(self, fn, *args, **kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.client.submit(fn, *args, pure=False, **kw)

    def as_completed(self, futures):
        """Futures as they finish; stops with EnvironmentFailure once no worker has been alive for
        DASK_LOST_AFTER seconds, or when Dask gives up on a task (KilledWorker).
        """
        # start-up: dask.distributed loads only for a Dask run (see __enter__)
        from concurrent.futures import CancelledError

        from distributed import wait
        from distributed.client import FutureCancelledError

        try:
            from distributed import KilledWorker
        except ImportError:  # pragma: no cover - older distributed
            from distributed.scheduler import KilledWorker
        lost = EnvironmentFailure(
            "Dask lost the workers or the scheduler running this run's tasks (killed or out of memory). Rerun "
            "the same command: it resumes from the records kept so far.")
        pending = set(futures)
        lost_since = None
        while pending:
            try:
                done, pending = wait(pending, timeout=2.0, return_when="FIRST_COMPLETED")
            except TimeoutError:  # nothing finished in these 2 s: look at the workers, then wait again
                done = set()
            except CancelledError:  # FuturesCancelledError: the scheduler (or a client) cancelled them
                raise lost from None
            for fut in done:
                try:
                    fut.result()
                except (KilledWorker, FutureCancelledError, CancelledError):
                    raise lost from None
                yield fut
            if pending:
                try:
                    alive = len(self.client.scheduler_info().get("workers", {}))
                except Exception:  # noqa: BLE001 - a scheduler that stopped answering has no workers either
                    alive = 0
                if alive:
                    lost_since = None
                elif lost_since is None:
                    lost_since = time.monotonic()
                elif time.monotonic() - lost_since > DASK_LOST_AFTER:
                    raise EnvironmentFailure(
                        f"Every Dask worker has been gone for {DASK_LOST_AFTER:.0f} s; the run cannot go on. "
                        "Restart the workers, then rerun the same command: it resumes from the records kept so far."
                    )


def executor(p: dict):
    """The executor the parameters ask for (entered before any output is written: a Dask scheduler
    that does not answer is refused first).
    """
    if p["scheduler"] or p["dask_local"]:
        return _Dask(p["scheduler"], p["dask_local"])
    if p["workers"] == 1:
        return _Serial()
    return _Pool(p["workers"])


def run_tasks(pool, fn, job, todo, names, stage, report, *, done, after=None, start=0):
    """Run ``fn(*args, **kw)`` for ``(args, kw) = job(i)``, ``i`` in ``todo``, serially or on the pool.

    ``done(i, result)`` is called in this process as each task finishes (in any order on a
    pool), so its record can be kept at once. Serially, each job's arguments are made just
    before it runs and ``after(i)`` is called once it is done, so the caller can release what
    no later job needs. Progress counts from ``start`` (work finished by an earlier,
    interrupted run).
    """
    total = start + len(todo)
    if pool is None:
        for n_done, i in enumerate(todo, start=start + 1):
            args, kw = job(i)
            out = fn(*args, **kw)
            del args, kw
            done(i, out)
            del out
            report(stage, n_done, total, names[i])
            if after is not None:
                after(i)
        return
    futures = {}
    for i in todo:
        args, kw = job(i)
        futures[pool.submit(fn, *args, **kw)] = i
    for n_done, fut in enumerate(pool.as_completed(futures), start=start + 1):
        i = futures[fut]
        done(i, fut.result())
        report(stage, n_done, total, names[i])
