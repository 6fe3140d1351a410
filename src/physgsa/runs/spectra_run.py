"""``physgsa spectra`` as a run, behaving like ``physgsa certify``: refusals first, progress, depth order.

:func:`run` wraps :func:`physgsa.runs.spectra.spectra_source` (the computation, unchanged) with what the
command line promises for every command:

* **Refusals come first and write nothing.** An ``--out`` that is a file, that holds files physgsa
  did not write, or that holds the spectra of another run (another input or other parameters,
  named) is refused before any weight is read; ``--overwrite`` replaces another run's spectra.
* **Progress** on stderr (the caller's ``progress(stage, done, total, name)``, as certify's): one
  per matrix where :func:`~physgsa.runs.spectra.spectra_source` reports them (its ``progress``
  keyword), and the count at the end.
* **Depth order.** The table (``spectra.parquet``, the page and its plots) lists the matrices with
  the numbers in their names read as numbers, so ``h.2`` comes before ``h.10``.
* **The same wording** as certify's errors, without advice about options this command lacks.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..core.validation import ChainFileError, OutputDirectoryError, ResourceLimitError, check_params
from ..models import resolve_source
from ..models.files import not_an_archive
from ..outputs.directory import OWN_FILES, refuse_foreign
from ..outputs.spectra import SPECTRA_FILES, SpectraResult
from ..outputs.spectra import depth_order as table_order
from .spectra import SPECTRA_PARAMS, checked_spectra_source

__all__ = ["run", "check_out", "depth_order", "SPECTRA_FILES"]


def depth_order(result: SpectraResult) -> SpectraResult:
    """``result`` with its table in depth order (names sorted with their numbers by value, ties kept)."""
    return dataclasses.replace(result, table=table_order(result.table))


def _identity(source: str, params: dict) -> dict:
    return {"source": str(source), **{k: v for k, v in params.items() if k != "max_memory"}}


def _plain(value):
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def check_out(out, source: str, params: dict, *, overwrite: bool = False, keep_others: bool = False) -> None:
    """Refuse an ``--out`` that physgsa spectra must not write into, before any work (nothing is written).

    ``params`` are the validated parameters of this run; ``source`` is what its ``spectra.json``
    will name as the source. Files physgsa did not write are refused unless ``keep_others``,
    whatever else the directory holds (as certify: an earlier ``--keep-others`` run is no licence).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputDirectoryError(f"Output path '{out}' exists and is not a directory. Choose another --out.")
    if not out.is_dir():
        return
    refuse_foreign(out, keep_others, own=tuple(dict.fromkeys(OWN_FILES + tuple(SPECTRA_FILES))), folders=())
    old_path = out / "spectra.json"
    if not old_path.is_file() or overwrite:
        return
    try:
        old = json.loads(old_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        old = None
    if not isinstance(old, dict):
        raise OutputDirectoryError(
            f"Output directory '{out}' holds a spectra.json that cannot be read. Choose another --out, or pass "
            "--overwrite to replace it.")
    mine = _plain(_identity(source, params))
    theirs = _plain(_identity(old.get("source", ""), old.get("parameters") or {}))
    keys = sorted(set(mine) | set(theirs))
    diff = [f"{k} {theirs.get(k)!r} -> {mine.get(k)!r}" for k in keys if mine.get(k) != theirs.get(k)]
    if diff:
        raise OutputDirectoryError(
            f"Output directory '{out}' holds the spectra of a run of different input or parameters "
            f"({', '.join(diff)}). Choose another --out, or pass --overwrite to replace them.")


def _source_name(source) -> str:
    """The name ``spectra.json`` will give the source, known before any weight is read."""
    if isinstance(source, str) and source == "example":
        return "example"
    if isinstance(source, (str, Path)) and Path(source).suffix == ".npz":
        return str(Path(source))
    return resolve_source(source).name


def run(source, out, *, overwrite: bool = False, keep_others: bool = False, progress=None, **params):
    """Check ``out``, compute the spectra of ``source`` and return them in depth order (not saved).

    Parameters
    ----------
    source : str or path
        As for :func:`physgsa.spectra`.
    out : path
        The output directory the caller will save into (checked here, nothing written).
    overwrite : bool
        Replace the spectra of another run in ``out`` instead of refusing.
    keep_others : bool
        Write beside files physgsa did not write in ``out`` instead of refusing.
    progress : callable, optional
        ``progress(stage, done, total, name)``; ``total`` may be None (not known in advance).
    **params
        ``q``, ``chart``, ``window_band``, ``gap_floor``, ``exclude``, ``max_memory``: validated
        here, once, and handed on as they are.
    """
    report = progress or (lambda *a: None)
    p = check_params("spectra", SPECTRA_PARAMS, params)
    if isinstance(source, (str, Path)) and Path(source).suffix == ".npz" and Path(source).is_file():
        why = not_an_archive(source)
        if why is not None:  # numpy would take it for a pickle and advise allow_pickle
            raise ChainFileError(f"Tensor file '{source}' is not a readable .npz archive: {why}. An .npz is a zip of "
                                 ".npy arrays, as numpy.savez writes.")
    check_out(out, _source_name(source), p, overwrite=overwrite, keep_others=keep_others)
    try:
        res = checked_spectra_source(source, p, progress=report)
    except ResourceLimitError as exc:
        # The shared message ends with advice for certify's --workers, which spectra has not got.
        text = str(exc).split("; with --workers")[0].rstrip(".") + "."
        raise ResourceLimitError(text) from None
    n = len(res.table)
    report("spectra", n, n, f"matrices analysed, {len(res.skipped)} tensors skipped")
    return depth_order(res)
