"""Entry points that take a model or a file: ``spectra`` (the fast pass) and ``chain_from``."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from .models import chain_from

if TYPE_CHECKING:  # the survey (pandas, the power-law fits) loads only when spectra runs
    from .runs.spectra import SpectraResult

__all__ = ["spectra", "chain_from", "study", "save"]


def spectra(source="minilm", **params) -> "SpectraResult":
    """Part I quantities and WeightWatcher's metrics of every weight of ``source``.

    ``source`` is a model (bundled name, folder, file with config.json, hub id in the local
    cache, nn.Module), a state dict or tensor file without config (``.safetensors``, ``.pt``,
    ``.pth``, ``.bin``, ``.npz``: every tensor read by its shape), or ``example``. Parameters:
    ``q``, ``chart``, ``window_band``, ``gap_floor``, ``exclude``, ``max_memory`` (validated as
    in :data:`physgsa.runs.spectra.SPECTRA_PARAMS`). See :func:`physgsa.runs.spectra.spectra_source`.
    """
    from .runs.spectra import spectra_source

    return spectra_source(source, **params)


def study(items, out, *, random_control: bool = False, seed: int = 0, keep_others: bool = False,
          progress=None, say=None):
    """Certify (or read back) every item and write the study into ``out``: compute, save, render.

    The parameters are :func:`physgsa.runs.study.study`'s; ``out`` stays locked from the first
    certificate to the page. Returns the :class:`~physgsa.outputs.study.StudyResult`.
    """
    # Here, not at the top: the lock loads numpy, and the study pandas and the models.
    from .outputs.directory import OutputLock
    from .runs.study import study as run_study

    with OutputLock(out, what="study") as lock:
        result = run_study(items, out, random_control=random_control, seed=seed, keep_others=keep_others,
                           progress=progress, say=say, lock=lock)
        save(result, out, keep_others=keep_others, lock=lock)
    return result


def save(result, out, *, keep_others: bool = False, lock=None) -> Path:
    """Save ``result`` into ``out`` and draw its pages: compute, then save, then render.

    Every entry point (the command line, the notebook) ends here, so a result type never needs
    to know about the report. The report's page writer (:func:`physgsa.report.draw`) is handed
    to ``result.save`` so that the pages and figures are staged together with the data and
    renamed into place with it, the result's completion marker (``certificate.json``) last: a
    save that fails midway (a full disk, a file-size limit) leaves neither a certificate without
    its report nor the records' loss. :func:`physgsa.report.write` redraws the pages alone.

    Parameters
    ----------
    result : Result, SpectraResult, CompareResult
        What a run returned.
    out : path
        The output directory (created if missing).
    keep_others : bool
        Write beside files physgsa did not write instead of refusing.
    lock : physgsa.outputs.directory.OutputLock, optional
        The lock the caller holds on ``out`` (the command line holds it for the whole run);
        without it ``out`` is locked for the save.

    Returns
    -------
    Path
        ``out``.
    """
    from . import report  # here, not at the top: the report loads pandas and jinja2, which `physgsa --help` never needs

    return result.save(out, keep_others=keep_others, lock=lock, pages=partial(report.draw, result))
