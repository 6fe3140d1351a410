"""Resumable runs: every finished factor and interface record, kept in ``OUT/.physgsa-run/``.

A long certificate run writes each factor's and each interface's record there as soon as it
is done, each file by atomic replacement (a temporary file renamed into place), so a run
killed at any instant leaves only whole records. Rerunning with the same ``--out``, the same
input and the same parameters reads them back and computes only what is missing; the final
outputs are assembled from records either way, so they are byte-identical to an uninterrupted
run's. When the run completes, ``Result.save`` replaces the directory and the records go with it.

The run is identified by ``input_sha256``: a SHA-256 of the chain (names, shapes, the float64
bytes of every factor, head layouts, links and breaks) and of every parameter that changes a
number. Different input or parameters in an existing directory are refused (an
:class:`OutputDirectoryError` naming the differences) unless ``overwrite`` is given.
Records are plain JSON and ``.npz`` files read with ``allow_pickle=False``: a planted file can
at worst be rejected, never executed. A record that cannot be read is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ._validation import OutputDirectoryError

__all__ = ["RUN_DIR", "RUN_OPTIONS", "RunStore", "input_sha256"]

RUN_DIR = ".physgsa-run"
#: Parameters that choose how a run executes, never what it computes: a run may resume with
#: other values, and they are not part of the fingerprint.
RUN_OPTIONS = ("workers", "scheduler", "dask_local", "max_memory")


def _numbers(params: dict) -> dict:
    return {k: v for k, v in params.items() if k not in RUN_OPTIONS}


def input_sha256(chain, params: dict) -> str:
    """SHA-256 of everything a run's numbers depend on: the chain and the parameters."""
    h = hashlib.sha256()
    h.update(json.dumps({"source": chain.source, "parameters": _numbers(params)}, sort_keys=True,
                        default=_json_default).encode())
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
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
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


class RunStore:
    """The records of one run in ``out/.physgsa-run``.

    Parameters
    ----------
    out : path
        The run's output directory (created if missing).
    sha256 : str
        :func:`input_sha256` of the run.
    params : dict
        The validated parameters (recorded, and compared in messages).
    overwrite : bool
        Discard records or results of a different run instead of refusing.
    """

    def __init__(self, out, sha256: str, params: dict, *, overwrite: bool = False):
        self.out = Path(out)
        self.dir = self.out / RUN_DIR
        self.sha256 = sha256
        numbers = json.loads(json.dumps(_numbers(params), sort_keys=True, default=_json_default))
        if self.out.exists() and not self.out.is_dir():
            raise OutputDirectoryError(f"Output path '{self.out}' exists and is not a directory. Choose another --out.")
        if self.out.is_dir():
            self._check_existing(numbers, overwrite)
        # A save killed between writing its temporary sibling and renaming it leaves that
        # sibling behind; it holds nothing the records do not, so it is removed.
        for stale in self.out.parent.glob(f".{self.out.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in self.out.parent.glob(f".{self.out.name}.old-*"):
            shutil.rmtree(stale, ignore_errors=True)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.dir / "run.json", json.dumps(
                {"format": "physgsa.run/1", "input_sha256": sha256, "parameters": numbers},
                sort_keys=True, indent=1).encode())
        except OSError as exc:
            raise OutputDirectoryError(f"Cannot write to output directory '{self.out}': {exc.strerror}.") from None

    def _check_existing(self, numbers: dict, overwrite: bool) -> None:
        run = self.dir / "run.json"
        cert = self.out / "certificate.json"
        if run.is_file():
            old = _read_json(run) or {}
            if old.get("input_sha256") == self.sha256:
                return
            if not overwrite:
                raise OutputDirectoryError(
                    f"Output directory '{self.out}' holds an interrupted run of different input or parameters "
                    f"({_differences(old.get('parameters') or {}, numbers)}). Rerun with the same input and "
                    "parameters to resume it, or pass --overwrite to discard it."
                )
            shutil.rmtree(self.dir)
        elif cert.is_file():
            old = _read_json(cert) or {}
            if old.get("input_sha256") != self.sha256 and not overwrite:
                raise OutputDirectoryError(
                    f"Output directory '{self.out}' holds the results of a run of different input or parameters "
                    f"({_differences(_numbers(old.get('parameters') or {}), numbers)}). Choose another --out, "
                    "or pass --overwrite to replace them."
                )
        elif any(self.out.iterdir()):
            raise OutputDirectoryError(
                f"Output directory '{self.out}' is not empty and holds no physgsa results; refusing to write "
                "into it. Choose an empty or new directory."
            )

    # -- factors -------------------------------------------------------------------------
    def factor(self, i: int) -> dict | None:
        """The stored record of factor ``i``, or None."""
        return _read_json(self.dir / f"factor-{i:06d}.json")

    def save_factor(self, i: int, record: dict) -> None:
        # Key order is kept (not sorted): the tables take their column order from the records.
        _atomic_write(self.dir / f"factor-{i:06d}.json", json.dumps(record).encode())

    # -- interfaces ----------------------------------------------------------------------
    def interface(self, i: int) -> dict | None:
        """The stored record of interface ``i`` (its JSON and its arrays), or None."""
        doc = _read_json(self.dir / f"interface-{i:06d}.json")
        if doc is None:
            return None
        try:
            with np.load(self.dir / f"interface-{i:06d}.npz", allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            return None
        if sorted(arrays) != doc.get("array_keys"):
            return None
        doc.pop("array_keys")
        doc["arrays"] = {k: arrays[k] for k in doc.pop("array_order")}
        return doc

    def save_interface(self, i: int, record: dict) -> None:
        # The arrays first, then the JSON: the JSON's presence marks the record complete.
        from .result import _write_npz

        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=self.dir)
        os.close(fd)
        try:
            _write_npz(Path(tmp), record["arrays"])
            os.replace(tmp, self.dir / f"interface-{i:06d}.npz")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        doc = {k: v for k, v in record.items() if k != "arrays"}
        doc["array_keys"] = sorted(record["arrays"])
        doc["array_order"] = list(record["arrays"])
        _atomic_write(self.dir / f"interface-{i:06d}.json", json.dumps(doc).encode())


def _read_json(path: Path):
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
