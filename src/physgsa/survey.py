"""``spectra``: Part I quantities and WeightWatcher's metrics for many matrices, one SVD each.

For every matrix (a model's weights as stored, or a chain's factors): the section 2
quantities of :mod:`physgsa.spectra` on the normalized matrix, and the metrics of
:mod:`physgsa.powerlaw` on the raw one. Both come from the same singular values: the raw
ones are ``sigma(A_hat) ||A||_F / sqrt(r)``.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ._validation import InvalidParameterError, OutputDirectoryError, Param, check_params
from .chain import Factor, check_matrix
from .powerlaw import weight_metrics
from .resources import default_limit, parse_memory
from .result import _jsonable, _nullable, _umask, _versions
from .spectra import CHARTS, compute_spectrum

__all__ = ["SPECTRA_PARAMS", "SpectraResult", "spectra_of"]

SPECTRA_PARAMS = {
    "q": Param(0.9, "float", 0.0, 1.0, "neither", doc="energy quantile of the effective rank k_q"),
    "chart": Param("top", "choice", choices=CHARTS, doc="chart whose exponent is s_hat"),
    "window_band": Param(0.05, "float", 0.0, 0.5, doc="band around q for the window's gap search"),
    "gap_floor": Param(1e-3, "float", 0.0, 1.0, "left", doc="window gap floor"),
    "max_memory": Param(None, "any", allow_none=True, extra=parse_memory,
                        doc="memory limit in bytes or '8G' (None: 80% of the memory available at the start)"),
    "exclude": Param((), "any", extra=lambda v, where: _patterns(v, where),
                     doc="glob patterns (fnmatch) of tensor keys or matrix names to leave out"),
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


def excluded(key: str, name: str, patterns: tuple[str, ...]) -> str | None:
    """The first pattern that matches the tensor ``key`` or the matrix ``name``, or None."""
    for pat in patterns:
        if fnmatch.fnmatchcase(key, pat) or fnmatch.fnmatchcase(name, pat):
            return pat
    return None

_NULLABLE = ("s_window", "window_r2", "alpha", "xmin", "alpha_D")


@dataclass(frozen=True)
class SpectraResult:
    """One row per matrix (``table``), what was not analysed (``skipped``), and the run's record."""

    table: pd.DataFrame
    skipped: list
    record: dict

    def save(self, out) -> Path:
        """Write ``spectra.parquet``, ``spectra.json`` and ``spectra.html`` into ``out``, each atomically."""
        out = Path(out)
        if out.exists() and any(out.iterdir()) and not (out / "spectra.json").exists() \
                and not (out / "certificate.json").exists():
            raise OutputDirectoryError(f"Output directory '{out}' is not empty and holds no physgsa results; "
                                       "refusing to write into it. Choose an empty or new directory.")
        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".spectra.tmp-", dir=out))
        try:
            self.table.to_parquet(tmp / "spectra.parquet", index=False, engine="pyarrow", compression="zstd")
            doc = {**self.record, "skipped": self.skipped}
            (tmp / "spectra.json").write_text(json.dumps(_jsonable(doc), indent=2, sort_keys=True, allow_nan=False)
                                             + "\n", encoding="utf-8")
            from .report import render_spectra_page

            (tmp / "spectra.html").write_text(render_spectra_page(self), encoding="utf-8")
            for name in ("spectra.parquet", "spectra.json", "spectra.html"):
                os.chmod(tmp / name, 0o666 & ~_umask())
                os.replace(tmp / name, out / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out


def spectra_of(matrices, *, source: str = "matrices", skipped=None, **params) -> SpectraResult:
    """Spectra of ``(name, matrix, key, note)`` items (an iterable, consumed one at a time).

    If ``matrices`` is a generator that returns a skipped list (``raw_matrices``), that list is
    reported too.
    """
    p = check_params("spectra", SPECTRA_PARAMS, params)
    limit = p["max_memory"] if p["max_memory"] is not None else default_limit()
    rows, left_out = [], []
    it = iter(matrices)
    while True:
        try:
            name, mat, key, note = next(it)
        except StopIteration as stop:
            skipped = list(skipped or []) + list(stop.value or []) + left_out
            break
        pat = excluded(key, name, p["exclude"])
        if pat is not None:
            left_out.append({"module": name, "reason": f"excluded by the pattern {pat!r}"})
            continue
        a = check_matrix(mat, name, source, copy=False)
        s = compute_spectrum(Factor(name=name, matrix=a), q=p["q"], band=p["window_band"], gap_floor=p["gap_floor"],
                             chart=p["chart"], vectors=False, max_memory=limit)
        sigma_raw = s.sigma * (s.fro / np.sqrt(s.r))
        rows.append({
            "name": name, "key": key, "rows": s.rows, "cols": s.cols, "r": s.r, "rho": s.rho, "s_top": s.s_top,
            "s_mle": s.s_mle, "s_window": s.s_window, "window_r2": s.window_r2, "s_hat": s.s_hat,
            "hellinger": s.hellinger, "kl": s.kl, "k_q": s.k_q, "k": s.k, "window_gap": s.window_gap, "tau": s.tau,
            "tau_gc": s.tau_gc, "numerical_rank": s.numerical_rank, **weight_metrics(sigma_raw, a.shape),
            "note": note, "flags": ";".join(s.flags),
        })
        del a, s, mat
    df = pd.DataFrame(rows)
    for col in _NULLABLE:
        if col in df:
            df[col] = _nullable(df[col].tolist())
    record = {"format": "physgsa.spectra/1", "source": source,
              "parameters": {k: v for k, v in p.items() if k != "max_memory"}, "versions": _versions(),
              "n_matrices": len(rows)}
    return SpectraResult(table=df, skipped=skipped, record=record)
