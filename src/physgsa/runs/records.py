"""The resumable run store: verified records of a long certify run, and its input identity.

**Verified records.** A long certificate run writes each finished factor and interface into
``OUT/.physgsa-run/`` as soon as it is done, each file by atomic replacement. Every record
carries the run's identity (``input_sha256``: the input's content and the parameters), its
index, its name, its schema and a SHA-256 of its own content (the JSON and every array's
dtype, shape and bytes). On a rerun a record is used only if every one of these checks passes;
any other record is recomputed, never trusted: a damaged one (a corrupt array header, a NaN
in its JSON, a folder in its place) is removed and written again. A record is read only within
the memory guard: its arrays' headers must declare exactly the bytes they hold, stored
uncompressed (as physgsa writes them), so a small file never expands in memory. The final
outputs are assembled from records either way, so they are byte-identical to an uninterrupted
run's.

**Identity is content.** ``input_sha256`` hashes the factors' names, shapes, float64 bytes,
layouts, links and breaks and every parameter that changes a number; never a path. The same
bytes under another name or through a symlink resume the same run and give the same
certificate bytes; the path is provenance only (``provenance.json``).

The output directory itself (its lock, whose files are whose, how files are written) is
:mod:`physgsa.outputs.directory`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from ..core.resources import default_limit
from ..core.validation import OutputDirectoryError
from ..models.files import _HEADER_ERRORS, check_npy_members
from ..outputs.directory import RUN_DIR, OutputLock, atomic_write, held, read_json, refuse_foreign, write_npz
from ..outputs.jsonio import json_default
from ..outputs.result import RUN_OPTIONS

__all__ = ["RunStore", "input_sha256", "record_checksum"]

RECORD_FORMAT = "physgsa.record/2"


def _numbers(params: dict) -> dict:
    return {k: v for k, v in params.items() if k not in RUN_OPTIONS}


def input_sha256(chain, params: dict) -> str:
    """SHA-256 of everything a run's numbers depend on: the chain's content and the parameters.

    Never a path: the same bytes under two names are the same run.
    """
    h = hashlib.sha256()
    h.update(json.dumps({"parameters": _numbers(params)}, sort_keys=True, default=json_default).encode())
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


def _differences(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    diff = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return ", ".join(diff) if diff else "the input weights"


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
    lock : OutputLock, optional
        The lock the caller holds on ``out`` (kept after :meth:`release`); without it the store
        takes its own, released by :meth:`release`.
    """

    def __init__(self, out, sha256: str, params: dict, *, factor_names=(), interface_names=(),
                 overwrite: bool = False, keep_others: bool = False, wait: bool = False,
                 lock: OutputLock | None = None):
        self.out = Path(out)
        self.dir = self.out / RUN_DIR
        self.sha256 = sha256
        self.factor_names = list(factor_names)
        self.interface_names = list(interface_names)
        self.discarded = 0
        numbers = json.loads(json.dumps(_numbers(params), sort_keys=True, default=json_default))
        # The caller's lock when it holds one (the command line holds it from before the input is
        # read until the outputs are in place); else one of our own, for the run.
        self._lock = contextlib.ExitStack()
        self.lock = self._lock.enter_context(held(self.out, lock, wait=wait, what=f"certify {sha256[:12]}"))
        try:
            refuse_foreign(self.out, keep_others)
            self._check_existing(numbers, overwrite)
            self.dir.mkdir(exist_ok=True)
            atomic_write(self.dir / "run.json", json.dumps(
                {"format": "physgsa.run/2", "input_sha256": sha256, "parameters": numbers},
                sort_keys=True, indent=1).encode())
        except OSError as exc:
            self.release()
            raise OutputDirectoryError(f"Cannot write to output directory '{self.out}': {exc.strerror}.") from None
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Drop the lock, if this store took it (a lock passed down stays with its holder)."""
        self._lock.close()

    def _check_existing(self, numbers: dict, overwrite: bool) -> None:
        run = self.dir / "run.json"
        cert = self.out / "certificate.json"
        if run.is_file() or self.dir.is_dir():
            old = read_json(run) or {}
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
            old = read_json(cert) or {}
            if old.get("input_sha256") != self.sha256 and not overwrite:
                raise OutputDirectoryError(
                    f"Output directory '{self.out}' holds the results of a run of different input or parameters "
                    f"({_differences(_numbers(old.get('parameters') or {}), numbers)}). Choose another --out, "
                    "or pass --overwrite to replace them."
                )

    # -- factors -------------------------------------------------------------------------
    def factor(self, i: int, expected_keys=None) -> dict | None:
        """The verified record of factor ``i``, or None (missing or failing any check)."""
        path = self.dir / f"factor-{i:06d}.json"
        doc = _read_record_json(path)
        if doc is None:
            return None if not (path.exists() or path.is_symlink()) else self._discard(path)
        rec = doc.get("record")
        name = self.factor_names[i] if i < len(self.factor_names) else None
        ok = (doc.get("format") == RECORD_FORMAT and doc.get("run") == self.sha256 and doc.get("kind") == "factor"
              and doc.get("index") == i and isinstance(rec, dict) and doc.get("name") == name
              and rec.get("name") == name and _checksum_ok(doc)
              and (expected_keys is None or list(rec) == list(expected_keys))
              and all(_is_number(v) or isinstance(v, str) for v in rec.values()))
        return rec if ok else self._discard(path)

    def save_factor(self, i: int, record: dict) -> None:
        # Key order is kept (not sorted): the tables take their column order from the records.
        doc = {"format": RECORD_FORMAT, "run": self.sha256, "kind": "factor", "index": i, "name": record["name"],
               "record": record}
        doc["checksum"] = record_checksum(doc)
        atomic_write(self.dir / f"factor-{i:06d}.json", json.dumps(doc).encode())

    # -- interfaces ----------------------------------------------------------------------
    def interface(self, i: int, expected_row_keys=None) -> dict | None:
        """The verified record of interface ``i`` (its JSON and its arrays), or None."""
        path, npz_path = self.dir / f"interface-{i:06d}.json", self.dir / f"interface-{i:06d}.npz"
        doc = _read_record_json(path)
        if doc is None:
            return None if not (path.exists() or path.is_symlink()) else self._discard(path, npz_path)
        name = self.interface_names[i] if i < len(self.interface_names) else None
        head_ok = (doc.get("format") == RECORD_FORMAT and doc.get("run") == self.sha256
                   and doc.get("kind") == "interface" and doc.get("index") == i and doc.get("name") == name
                   and isinstance(doc.get("array_order"), list))
        if not head_ok:
            return self._discard(path, npz_path)
        # Within the memory guard: every header is checked against the bytes on disk before numpy
        # allocates what it declares.
        if not npz_path.is_file() or check_npy_members(npz_path, stored_only=True) is not None:
            return self._discard(path, npz_path)
        try:
            with np.load(npz_path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except _HEADER_ERRORS:
            return self._discard(path, npz_path)
        if sorted(arrays) != sorted(doc["array_order"]) or not _checksum_ok(doc, arrays):
            return self._discard(path, npz_path)
        row, detail, items = doc.get("row"), doc.get("detail"), doc.get("items")
        schema = (isinstance(row, dict) and isinstance(detail, dict) and isinstance(doc.get("margin"), dict)
                  and isinstance(items, list) and all(isinstance(x, dict) for x in items)
                  and row.get("interface") == name and detail.get("interface") == name
                  and (expected_row_keys is None or list(row) == list(expected_row_keys))
                  and all(_is_number(v) or isinstance(v, str) for v in row.values()))
        if not schema:
            return self._discard(path, npz_path)
        rec = {k: v for k, v in doc.items() if k not in ("format", "run", "kind", "array_order", "checksum")}
        rec["arrays"] = {k: arrays[k] for k in doc["array_order"]}
        return rec

    def save_interface(self, i: int, record: dict) -> None:
        # The arrays first, then the JSON: the JSON's presence (and its checksum over both) marks
        # the record complete.
        # Stored, not deflated: written once, read at most once.
        atomic_write(self.dir / f"interface-{i:06d}.npz", lambda tmp: write_npz(tmp, record["arrays"], compress=False))
        doc = {"format": RECORD_FORMAT, "run": self.sha256, "kind": "interface",
               **{k: v for k, v in record.items() if k != "arrays"}, "array_order": list(record["arrays"])}
        doc["checksum"] = record_checksum(doc, record["arrays"])
        atomic_write(self.dir / f"interface-{i:06d}.json", json.dumps(doc).encode())

    def _discard(self, *paths: Path):
        """Count a record that failed a check, and remove its files (a folder in a record's place
        included), so that its recomputed record can be written there.
        """
        self.discarded += 1
        for p in paths:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink(missing_ok=True)
        return None


def _read_record_json(path: Path) -> dict | None:
    """A record's JSON object, or None (missing, unreadable, or larger than the memory guard allows)."""
    try:
        if path.stat().st_size > default_limit() // 16:  # parsing takes several times the file's size
            return None
    except OSError:
        return None
    return read_json(path)


def _checksum_ok(doc: dict, arrays: dict | None = None) -> bool:
    """Whether a record's checksum matches; a record its checksum cannot even be computed for
    (a NaN or an Inf in its JSON, keys that do not sort) fails.
    """
    try:
        return doc.get("checksum") == record_checksum(doc, arrays)
    except (ValueError, TypeError, RecursionError):
        return False

