"""Output directories that lose nothing: one run at a time, verified records, a user's files left alone.

**One run per directory.** :class:`OutputLock` takes an OS lock (``flock``) on the output
directory itself. The kernel drops it when its process dies, however it dies, so it never goes
stale. A second run on the same directory is refused at once, naming the running one (pid,
start time, input), or waits for it when asked (``wait=True``, ``--wait``).

**Verified records.** A long certificate run writes each finished factor and interface into
``OUT/.physgsa-run/`` as soon as it is done, each file by atomic replacement. Every record
carries the run's identity (``input_sha256``: the input's content and the parameters), its
index, its name, its schema and a SHA-256 of its own content (the JSON and every array's
dtype, shape and bytes). On a rerun a record is used only if every one of these checks passes;
any other record is recomputed, never trusted. The final outputs are assembled from records
either way, so they are byte-identical to an uninterrupted run's.

**Never delete what physgsa did not write.** physgsa's own files in an output directory are
:data:`OWN_FILES` and ``.physgsa-*`` entries. A directory that holds anything else is refused,
the foreign entries named, unless ``keep_others=True`` (``--keep-others``): then physgsa writes
beside them and leaves them untouched. Outputs are replaced file by file, never by replacing
the directory, so ``--out .`` works and a symlinked ``--out`` is written through to its target.

**Identity is content.** ``input_sha256`` hashes the factors' names, shapes, float64 bytes,
layouts, links and breaks and every parameter that changes a number; never a path. The same
bytes under another name or through a symlink resume the same run and give the same
certificate bytes; the path is provenance only (``provenance.json``).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..core.validation import OutputDirectoryError
from ..models.files import _ZIP_ERRORS

__all__ = ["RUN_DIR", "RUN_OPTIONS", "OWN_FILES", "OutputLock", "RunStore", "input_sha256", "foreign_entries",
           "record_checksum"]

RUN_DIR = ".physgsa-run"
#: Parameters that choose how a run executes, never what it computes: a run may resume with
#: other values, and they are not part of the fingerprint.
RUN_OPTIONS = ("workers", "scheduler", "dask_local", "max_memory")
#: Every file physgsa writes into an output directory (besides its ``.physgsa-*`` entries).
OWN_FILES = ("factors.parquet", "interfaces.parquet", "rows.parquet", "heads.parquet", "certificate.json",
             "heatmaps.npz", "report.html", "provenance.json", "figures",
             # physgsa compare's, study's and spectra's own outputs (one tool may write beside another)
             "compare.parquet", "compare_factors.parquet", "compare.json", "compare.html",
             "study.parquet", "study.html", "runs", "spectra.parquet", "spectra.json", "spectra.html")
RECORD_FORMAT = "physgsa.record/2"


def _numbers(params: dict) -> dict:
    return {k: v for k, v in params.items() if k not in RUN_OPTIONS}


def input_sha256(chain, params: dict) -> str:
    """SHA-256 of everything a run's numbers depend on: the chain's content and the parameters.

    Never a path: the same bytes under two names are the same run.
    """
    h = hashlib.sha256()
    h.update(json.dumps({"parameters": _numbers(params)}, sort_keys=True, default=_json_default).encode())
    for f in chain.factors:
        h.update(json.dumps([f.name, list(f.shape)]).encode())
        h.update(memoryview(np.ascontiguousarray(f.matrix, dtype=np.float64)).cast("B"))
        for heads in (f.row_heads, f.col_heads):
            h.update(b"-" if heads is None else np.ascontiguousarray(heads, dtype=np.int64).tobytes())
        if f.col_groups is not None:  # only then, so chains without conv groups keep their hashes
            h.update(b"g" + np.ascontiguousarray(f.col_groups, dtype=np.int64).tobytes())
    h.update(json.dumps([[k.left, k.right] for k in chain.links]).encode())
    h.update(json.dumps([[b.left, b.right, b.reason] for b in chain.breaks]).encode())
    return h.hexdigest()


def _json_default(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return str(x)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".physgsa-tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _differences(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    diff = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return ", ".join(diff) if diff else "the input weights"


def foreign_entries(directory: Path) -> list[str]:
    """The entries of ``directory`` that physgsa did not write (sorted names; ``/`` marks a folder)."""
    out = []
    for p in sorted(directory.iterdir(), key=lambda q: q.name):
        if p.name in OWN_FILES or p.name.startswith(".physgsa-"):
            continue
        out.append(p.name + ("/" if p.is_dir() and not p.is_symlink() else ""))
    return out


def refuse_foreign(directory: Path, keep_others: bool) -> None:
    """Refuse an output directory holding files physgsa did not write, naming them (unless kept)."""
    if keep_others or not directory.is_dir():
        return
    foreign = foreign_entries(directory)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputDirectoryError(
            f"Output directory '{directory}' holds files physgsa did not write ({shown}); refusing to write "
            "there. Choose an empty or new --out, or pass --keep-others to write beside them (they are left "
            "untouched)."
        )


# -- the lock --------------------------------------------------------------------------------------

#: Locks this process holds, by the directory's (device, inode): a second OutputLock on the same
#: directory in the same process (certify's records, then Result.save) shares the first one.
#: flock is per open file, so without this the process would refuse itself.
_HELD: dict[tuple[int, int], "OutputLock"] = {}


class OutputLock:
    """An exclusive OS lock on an output directory, for as long as one run writes into it.

    Creates the directory (and its parents) if missing; :meth:`release` removes it again if the
    run created it and wrote nothing there. ``wait=True`` blocks until the other run is done.
    """

    def __init__(self, out, *, wait: bool = False, what: str = "run"):
        self.out = Path(out)
        self.created = False
        self.fd = None
        self.depth = 0
        self.owner = None
        if self.out.exists() and not self.out.is_dir():
            raise OutputDirectoryError(f"Output path '{self.out}' exists and is not a directory. Choose another --out.")
        try:
            if not self.out.exists():
                self.out.mkdir(parents=True)
                self.created = True
            self.fd = os.open(self.out, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise OutputDirectoryError(f"Cannot create output directory '{self.out}': {exc.strerror}.") from None
        st = os.fstat(self.fd)
        self.key = (st.st_dev, st.st_ino)
        held = _HELD.get(self.key)
        if held is not None:
            os.close(self.fd)
            self.fd = None
            self.owner = held
            held.depth += 1
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(self.fd)
            self.fd = None
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OutputDirectoryError(f"Cannot lock output directory '{self.out}': {exc.strerror}.") from None
            raise OutputDirectoryError(
                f"Output directory '{self.out}' is in use by another physgsa run ({_describe_owner(self.out)}). "
                "Wait for it to finish, choose another --out, or pass --wait to wait for it."
            ) from None
        self.depth = 1
        _HELD[self.key] = self
        _atomic_write(self.out / ".physgsa-owner.json", json.dumps(
            {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "what": what}).encode())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def release(self) -> None:
        if self.owner is not None:
            self.owner.depth -= 1
            self.owner = None
            return
        if self.fd is None:
            return
        self.depth -= 1
        if self.depth > 0:
            return
        (self.out / ".physgsa-owner.json").unlink(missing_ok=True)
        if self.created:
            try:
                self.out.rmdir()  # only if the run left it empty (a refusal writes nothing)
            except OSError:
                pass
        _HELD.pop(self.key, None)
        os.close(self.fd)  # closing the descriptor drops the lock
        self.fd = None


def _describe_owner(out: Path) -> str:
    doc = _read_json(out / ".physgsa-owner.json") or {}
    pid, started = doc.get("pid"), doc.get("started")
    return f"pid {pid}, started {started}" if pid else "its owner is still starting"


# -- records ---------------------------------------------------------------------------------------

def _array_digest(a: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([a.dtype.str, list(a.shape)]).encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def record_checksum(doc: dict, arrays: dict | None = None) -> str:
    """SHA-256 of a record's JSON (canonical, without its checksum) and of its arrays."""
    body = {k: v for k, v in doc.items() if k != "checksum"}
    h = hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=False).encode())
    for key in sorted(arrays or {}):
        h.update(key.encode() + b"\0" + _array_digest(np.asarray(arrays[key])).encode())
    return h.hexdigest()


def _is_number(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) or isinstance(v, bool)


class RunStore:
    """The records of one run in ``out/.physgsa-run``.

    Parameters
    ----------
    out : path
        The run's output directory (created if missing, and locked for the run).
    sha256 : str
        :func:`input_sha256` of the run.
    params : dict
        The validated parameters (recorded, and compared in messages).
    factor_names, interface_names : list of str
        What each record index must hold (a record naming anything else is recomputed).
    overwrite : bool
        Discard records or results of a different run instead of refusing.
    keep_others : bool
        Write beside files physgsa did not write instead of refusing.
    wait : bool
        Wait for another run holding the directory instead of refusing.
    """

    def __init__(self, out, sha256: str, params: dict, *, factor_names=(), interface_names=(),
                 overwrite: bool = False, keep_others: bool = False, wait: bool = False):
        self.out = Path(out)
        self.dir = self.out / RUN_DIR
        self.sha256 = sha256
        self.factor_names = list(factor_names)
        self.interface_names = list(interface_names)
        self.discarded = 0
        numbers = json.loads(json.dumps(_numbers(params), sort_keys=True, default=_json_default))
        self.lock = OutputLock(self.out, wait=wait, what=f"certify {sha256[:12]}")
        try:
            refuse_foreign(self.out, keep_others)
            self._check_existing(numbers, overwrite)
            self.dir.mkdir(exist_ok=True)
            _atomic_write(self.dir / "run.json", json.dumps(
                {"format": "physgsa.run/2", "input_sha256": sha256, "parameters": numbers},
                sort_keys=True, indent=1).encode())
        except OSError as exc:
            self.lock.release()
            raise OutputDirectoryError(f"Cannot write to output directory '{self.out}': {exc.strerror}.") from None
        except BaseException:
            self.lock.release()
            raise

    def release(self) -> None:
        self.lock.release()

    def _check_existing(self, numbers: dict, overwrite: bool) -> None:
        run = self.dir / "run.json"
        cert = self.out / "certificate.json"
        if run.is_file() or self.dir.is_dir():
            old = _read_json(run) or {}
            if old.get("input_sha256") == self.sha256:
                return
            if old and not overwrite:
                raise OutputDirectoryError(
                    f"Output directory '{self.out}' holds an interrupted run of different input or parameters "
                    f"({_differences(old.get('parameters') or {}, numbers)}). Rerun with the same input and "
                    "parameters to resume it, or pass --overwrite to discard it."
                )
            # Another run's records (or unreadable ones): ours to discard.
            shutil.rmtree(self.dir)
        if cert.is_file():
            old = _read_json(cert) or {}
            if old.get("input_sha256") != self.sha256 and not overwrite:
                raise OutputDirectoryError(
                    f"Output directory '{self.out}' holds the results of a run of different input or parameters "
                    f"({_differences(_numbers(old.get('parameters') or {}), numbers)}). Choose another --out, "
                    "or pass --overwrite to replace them."
                )

    # -- factors -------------------------------------------------------------------------
    def factor(self, i: int, expected_keys=None) -> dict | None:
        """The verified record of factor ``i``, or None (missing or failing any check)."""
        doc = _read_json(self.dir / f"factor-{i:06d}.json")
        if doc is None:
            return None
        rec = doc.get("record")
        name = self.factor_names[i] if i < len(self.factor_names) else None
        ok = (doc.get("format") == RECORD_FORMAT and doc.get("run") == self.sha256 and doc.get("kind") == "factor"
              and doc.get("index") == i and isinstance(rec, dict) and doc.get("name") == name
              and rec.get("name") == name and doc.get("checksum") == record_checksum(doc)
              and (expected_keys is None or list(rec) == list(expected_keys))
              and all(_is_number(v) or isinstance(v, str) for v in rec.values()))
        return rec if ok else self._discard()

    def save_factor(self, i: int, record: dict) -> None:
        # Key order is kept (not sorted): the tables take their column order from the records.
        doc = {"format": RECORD_FORMAT, "run": self.sha256, "kind": "factor", "index": i, "name": record["name"],
               "record": record}
        doc["checksum"] = record_checksum(doc)
        _atomic_write(self.dir / f"factor-{i:06d}.json", json.dumps(doc).encode())

    # -- interfaces ----------------------------------------------------------------------
    def interface(self, i: int, expected_row_keys=None) -> dict | None:
        """The verified record of interface ``i`` (its JSON and its arrays), or None."""
        doc = _read_json(self.dir / f"interface-{i:06d}.json")
        if doc is None:
            return None
        name = self.interface_names[i] if i < len(self.interface_names) else None
        head_ok = (doc.get("format") == RECORD_FORMAT and doc.get("run") == self.sha256
                   and doc.get("kind") == "interface" and doc.get("index") == i and doc.get("name") == name
                   and isinstance(doc.get("array_order"), list))
        if not head_ok:
            return self._discard()
        try:
            with np.load(self.dir / f"interface-{i:06d}.npz", allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except _ZIP_ERRORS + (ValueError,):
            return self._discard()
        if sorted(arrays) != sorted(doc["array_order"]) or doc.get("checksum") != record_checksum(doc, arrays):
            return self._discard()
        row, detail, items = doc.get("row"), doc.get("detail"), doc.get("items")
        schema = (isinstance(row, dict) and isinstance(detail, dict) and isinstance(doc.get("margin"), dict)
                  and isinstance(items, list) and all(isinstance(x, dict) for x in items)
                  and row.get("interface") == name and detail.get("interface") == name
                  and (expected_row_keys is None or list(row) == list(expected_row_keys))
                  and all(_is_number(v) or isinstance(v, str) for v in row.values()))
        if not schema:
            return self._discard()
        rec = {k: v for k, v in doc.items() if k not in ("format", "run", "kind", "array_order", "checksum")}
        rec["arrays"] = {k: arrays[k] for k in doc["array_order"]}
        return rec

    def save_interface(self, i: int, record: dict) -> None:
        # The arrays first, then the JSON: the JSON's presence (and its checksum over both) marks
        # the record complete.
        from ..outputs.result import _write_npz

        fd, tmp = tempfile.mkstemp(prefix=".physgsa-tmp-", suffix=".npz", dir=self.dir)
        os.close(fd)
        try:
            _write_npz(Path(tmp), record["arrays"], compress=False)  # written once, read at most once
            os.replace(tmp, self.dir / f"interface-{i:06d}.npz")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        doc = {"format": RECORD_FORMAT, "run": self.sha256, "kind": "interface",
               **{k: v for k, v in record.items() if k != "arrays"}, "array_order": list(record["arrays"])}
        doc["checksum"] = record_checksum(doc, record["arrays"])
        _atomic_write(self.dir / f"interface-{i:06d}.json", json.dumps(doc).encode())

    def _discard(self):
        self.discarded += 1
        return None


def _read_json(path: Path):
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None
