"""``spectra``: Part I quantities and WeightWatcher's metrics for many matrices.

For every weight (a model's tensors as stored, a state dict's, or a chain's factors) one row:
the section 2 quantities of :mod:`physgsa.spectra` on physgsa's matrix of that weight (column
``operator``: the weight itself, GPT-2's transposed Conv1D, or a conv kernel's channel operator
at zero frequency, block-diagonal for grouped and depthwise convs), and WeightWatcher 0.7.7's
metrics (:mod:`physgsa.core.powerlaw`) on the matrices its ``analyze()`` takes for that weight
(column ``ww_matrix``: the same matrix for a 2-D weight, the pooled kernel slices times
``sqrt(1/2)`` for a conv). Where both are the same matrix (every 2-D weight, dense 1x1
convs) the eigenvalues are computed once: the raw ones are ``sigma(A_hat)^2 ||A||_F^2 / r``.
``ww_analyzed`` says whether WeightWatcher's defaults analyse the layer at all, ``ww_reason``
why not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..core import powerlaw
from ..core.chain import Factor, check_matrix
from ..core.examples import example_chain
from ..core.resources import check_memory, default_limit, gram_bytes, parse_memory
from ..core.spectra import SPECTRUM_PARAMS, compute_spectrum
from ..core.validation import InvalidFactorError, InvalidParameterError, Param, check_params
from ..models import ModelSourceError, detect, resolve_source
from ..models.weights import NpzSource, excluded, module_layers, raw_matrices
from ..outputs.jsonio import nullable, versions
from ..outputs.spectra import SpectraResult

__all__ = ["SPECTRA_PARAMS", "SpectraResult", "spectra_of", "spectra_source"]

SPECTRA_PARAMS = {
    **SPECTRUM_PARAMS,
    "max_memory": Param(None, "any", allow_none=True, extra=parse_memory,
                        doc="memory limit in bytes or '8G' (None: 80% of the memory available at the start)",
                        help="Refuse any matrix whose estimated memory exceeds this (bytes, or 512M, 8G; default: 80% "
                             "of the available)."),
    "exclude": Param((), "any", extra=lambda v, where: _patterns(v, where), cli_type=list[str],
                     doc="glob patterns (fnmatch) of tensor keys or matrix names to leave out",
                     help="Leave out tensors whose key or name matches this glob pattern (repeatable), e.g. "
                          "'h.*.attn.c_attn.weight'."),
}


def _patterns(value, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise InvalidParameterError(
            f"{where} must be a glob pattern or a list of them (for example 'h.*.attn.c_attn.weight'). "
            f"Got {value!r} instead."
        )
    return tuple(value)


_NULLABLE = ("s_window", "window_r2", "log_norm", "log_spectral_norm", "stable_rank", "entropy", "alpha",
             "xmin", "alpha_D", "alpha_weighted", "log_alpha_norm")
_WW_COLS = ("log_norm", "log_spectral_norm", "stable_rank", "matrix_rank", "entropy", "alpha", "xmin", "alpha_D",
            "alpha_n_tail", "alpha_weighted", "log_alpha_norm", "alpha_status", "ww_num_evals")


def _ww_energies(s, ww: powerlaw.WWLayer, name: str, limit) -> powerlaw.Energies:
    """The eigenvalues WeightWatcher's analyze() computes for this weight, pooled and scaled."""
    if ww.slices is None:
        en = powerlaw.energies_from_sigma(s.sigma, s.fro / np.sqrt(s.r))
        return powerlaw.pool([en], ww.scale) if ww.scale != 1.0 else en
    parts = []
    for sl in ww.slices:
        check_memory(gram_bytes(*sl.shape), limit, f"Weight {name!r}: a kernel slice ({sl.shape[0]} x {sl.shape[1]})")
        parts.append(powerlaw.energies(np.asarray(sl, dtype=np.float64)))
    return powerlaw.pool(parts, ww.scale)


def spectra_of(matrices, *, source: str = "matrices", skipped=None, progress=None, **params) -> SpectraResult:
    """Spectra of ``(name, matrix, key, note[, operator, ww])`` items (an iterable, consumed one at a time).

    ``operator`` says which matrix ``matrix`` is (default ``"W"``); ``ww``
    (:class:`physgsa.core.powerlaw.WWLayer`) how WeightWatcher sees the weight (default: the same
    matrix, as a dense layer). If ``matrices`` is a generator that returns a skipped list
    (``raw_matrices``), that list is reported too. An all-zero matrix is listed as skipped.
    ``progress(stage, done, total, name)``, if given, is called after each matrix with stage
    ``"spectra"`` and ``total=None`` (the count is not known before the source is read).
    ``params`` are validated against :data:`SPECTRA_PARAMS`.
    """
    p = check_params("spectra", SPECTRA_PARAMS, params)
    return checked_spectra_of(matrices, p, source=source, skipped=skipped, progress=progress)


def checked_spectra_of(matrices, p: Mapping[str, Any], *, source: str = "matrices", skipped=None,
                       progress=None) -> SpectraResult:
    """:func:`spectra_of` with ``p`` already validated (every entry of :data:`SPECTRA_PARAMS`)."""
    limit = p["max_memory"] if p["max_memory"] is not None else default_limit()
    rows, left_out = [], []
    it = iter(matrices)
    while True:
        try:
            item = next(it)
        except StopIteration as stop:
            skipped = list(skipped or []) + list(stop.value or []) + left_out
            break
        name, mat, key, note = item[:4]
        operator = item[4] if len(item) > 4 else "W"
        ww = item[5] if len(item) > 5 else None
        pat = excluded(key, name, p["exclude"])
        if pat is not None:
            left_out.append({"module": name, "reason": f"excluded by the pattern {pat!r}"})
            continue
        try:
            a = check_matrix(mat, name, source, copy=False)
        except InvalidFactorError:
            arr = np.asarray(mat)
            if arr.ndim == 2 and arr.size and arr.dtype.kind in "fiu" and not np.any(arr):
                left_out.append({"module": name, "reason": "all entries are zero: no spectrum"})
                continue
            raise
        if ww is None:
            ww = powerlaw.dense_layer(a.shape)
        s = compute_spectrum(Factor(name=name, matrix=a), q=p["q"], band=p["window_band"], gap_floor=p["gap_floor"],
                             chart=p["chart"], vectors=False, max_memory=limit)
        metrics = powerlaw.ww_metrics(_ww_energies(s, ww, name, limit), ww.N)
        rows.append({
            "name": name, "key": key, "operator": operator, "rows": s.rows, "cols": s.cols, "r": s.r, "rho": s.rho,
            "s_top": s.s_top, "s_mle": s.s_mle, "s_window": s.s_window, "window_r2": s.window_r2, "s_hat": s.s_hat,
            "hellinger": s.hellinger, "kl": s.kl, "k_q": s.k_q, "k": s.k, "window_gap": s.window_gap, "tau": s.tau,
            "tau_gc": s.tau_gc, "numerical_rank": s.numerical_rank,
            "ww_matrix": ww.matrix, "ww_analyzed": bool(ww.analysed), "ww_reason": ww.reason,
            "ww_N": int(ww.N), "ww_M": int(ww.M), "ww_rf": int(ww.rf),
            **{c: metrics[c] for c in _WW_COLS},
            "note": note, "flags": ";".join(s.flags),
        })
        del a, s, mat, item, ww
        if progress is not None:
            progress("spectra", len(rows), None, name)
    df = pd.DataFrame(rows)
    for col in _NULLABLE:
        if col in df:
            df[col] = nullable(df[col].tolist())
    if "alpha_n_tail" in df:
        df["alpha_n_tail"] = pd.array([None if v is None or pd.isna(v) else int(v) for v in df["alpha_n_tail"]],
                                      dtype="Int64")
    record = {"format": "physgsa.spectra/2", "source": source,
              "parameters": {k: v for k, v in p.items() if k != "max_memory"}, "versions": versions(),
              "weightwatcher_reproduced": powerlaw.WW_VERSION, "n_matrices": len(rows)}
    return SpectraResult(table=df, skipped=skipped, record=record)


def spectra_source(source="minilm", *, progress=None, **params) -> SpectraResult:
    """``physgsa.spectra``: every weight of a model, state dict, tensor file or chain.

    ``example`` is the bundled chain (its factors). An ``.npz`` is read array by array; a
    ``.safetensors``, ``.pt``, ``.pth`` or ``.bin`` file, a folder, a bundled name or a hub id
    through :func:`physgsa.models.resolve_source`. Every tensor is read by its shape
    (:func:`physgsa.models.weights.raw_matrices`); with a config.json the architecture adds
    what it knows (GPT-2's Conv1D), and an ``nn.Module`` gives its conv groups and its layer
    types. ``progress`` as for :func:`spectra_of`; ``params`` are validated against
    :data:`SPECTRA_PARAMS`.
    """
    p = check_params("spectra", SPECTRA_PARAMS, params)
    return checked_spectra_source(source, p, progress=progress)


def checked_spectra_source(source, p: Mapping[str, Any], *, progress=None) -> SpectraResult:
    """:func:`spectra_source` with ``p`` already validated (every entry of :data:`SPECTRA_PARAMS`)."""
    if isinstance(source, str) and source == "example":
        chain = example_chain()
        items = ((f.name, f.matrix, f.name, "") for f in chain.factors)
        return checked_spectra_of(items, p, source=chain.source, progress=progress)
    modules = None
    if isinstance(source, (str, Path)) and Path(source).suffix == ".npz":
        path = Path(source)
        if not path.is_file():
            raise ModelSourceError(f"Tensor file '{path}' does not exist. Check the path.")
        src = NpzSource(path, str(path))
    else:
        src = resolve_source(source)
        if not isinstance(source, (str, Path)):
            modules = module_layers(source)
    try:
        arch = detect(src)
    except ModelSourceError:
        arch = "unknown"  # every tensor by its shape: no architecture knowledge needed
    # reuse: spectra_of takes the items one at a time and keeps none of their matrices.
    return checked_spectra_of(raw_matrices(src, arch, exclude=p["exclude"], modules=modules, reuse=True),
                              p, source=src.name, progress=progress)
