"""``report.html``: one self-contained page drawn from a saved Result.

Styles, the sorting script and every figure (PNG heatmaps and SVG plots, base64 ``data:``
URIs) are inline, and the page makes no network request, so it reads offline and can travel
as a mail attachment. Every name that comes from a model or a file is escaped (jinja2
autoescaping; the SVG plots escape their own texts). ``physgsa report DIR``
re-renders it from the saved files without recomputing.
"""

from __future__ import annotations

import json
import os
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jinja2
import numpy as np

from .figures import interface_figure, profiles_figure, spectra_figure, svg_uri

__all__ = ["render_report", "write_report", "rerender", "render_spectra_page"]

_FACTOR_COLS = ("name", "rows", "cols", "r", "rho", "s_top", "s_mle", "s_window", "window_r2", "hellinger", "k_q",
                "k", "window_gap", "tau", "tau_gc", "numerical_rank", "flags")
_INTERFACE_COLS = ("interface", "k_left", "k_right", "slack", "trunc_error", "eps_trunc", "rho_static", "binding",
                   "certified_a_priori", "certified_measured", "direct_same", "energy_core", "energy_overlap",
                   "energy_noise", "n_groups", "n_edges", "n_hubs", "commutator", "intersection_dim", "member",
                   "failed_items", "flags")


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    try:
        import pandas as pd

        if v is pd.NA:
            return "—"
    except ImportError:  # pragma: no cover
        pass
    return str(v)


def _table(df, cols) -> dict:
    cols = [c for c in cols if c in df.columns]
    return {"cols": cols, "rows": [[_fmt(v) for v in row] for row in df[cols].itertuples(index=False)]}


def _head_grid(df) -> dict | None:
    """The head overlap table of one interface as a grid (rows: reading heads, columns: writing heads)."""
    if not len(df):
        return None
    outs = sorted(set(df["head_out"].tolist()))
    ins = sorted(set(df["head_in"].tolist()))
    val = {(o, i): v for o, i, v in zip(df["head_out"], df["head_in"], df["overlap"])}
    return {"ins": ins, "rows": [(o, [(val[(o, i)], f"{val[(o, i)]:.2f}") for i in ins]) for o in outs]}


def _compact(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)[:400]


@lru_cache(maxsize=None)
def _template(name: str) -> jinja2.Template:
    """A template, compiled once per process (compiling costs more than rendering a small page)."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["fmt"] = _fmt
    env.filters["compact"] = _compact
    return env.from_string(resources.files("physgsa").joinpath("templates", name).read_text("utf-8"))


def render_report(result) -> str:
    """The report page of a Result, as a string."""
    cert = result.certificate
    template = _template("report.html.j2")
    heats: dict[str, dict] = {}
    for key, value in result.heatmaps.items():
        i, name = key.split("/", 1)
        heats.setdefault(i, {})[name] = value
    interfaces = []
    heads = result.heads
    for i, det in enumerate(cert["interfaces"]):
        heat = heats.get(str(i))
        interfaces.append({"detail": det, "figure": interface_figure(heat, det) if heat else None,
                           "heads": _head_grid(heads[heads["interface"] == det["interface"]])})
    profiles = svg_uri(profiles_figure(result.factors)) if len(result.factors) else None
    return template.render(
        cert=cert, provenance=getattr(result, "provenance", None) or {}, verdict=cert["verdict"], factors=_table(result.factors, _FACTOR_COLS),
        interfaces_table=_table(result.interfaces, _INTERFACE_COLS), interfaces=interfaces, profiles=profiles,
        params=sorted(cert["parameters"].items()), versions=sorted(cert["versions"].items()),
    )


_SPECTRA_COLS = ("name", "rows", "cols", "log_norm", "log_spectral_norm", "stable_rank", "matrix_rank", "entropy",
                 "alpha", "xmin", "rho", "s_top", "s_mle", "s_window", "k_q", "k", "note")


def render_spectra_page(res) -> str:
    """The page of ``physgsa spectra``: its sortable table, the metrics plot, the skipped tensors."""
    template = _template("spectra.html.j2")
    fig = svg_uri(spectra_figure(res.table)) if len(res.table) else None
    return template.render(record=res.record, table=_table(res.table, _SPECTRA_COLS), skipped=res.skipped,
                           figure=fig, params=sorted(res.record["parameters"].items()),
                           versions=sorted(res.record["versions"].items()))


def write_report(result, path) -> Path:
    """Write ``report.html`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    text = render_report(result)
    fd, tmp = tempfile.mkstemp(prefix=".report.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        from .result import _umask

        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a report is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def rerender(directory) -> Path:
    """Re-render ``DIR/report.html`` from the saved results (no recomputation)."""
    from .result import load_result

    return write_report(load_result(directory), Path(directory) / "report.html")
