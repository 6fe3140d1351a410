"""``report.html``: one self-contained page drawn from a saved Result, and its figures as files.

Styles, the sorting script and every figure (one SVG per panel, as base64 ``data:`` URIs) are
inline, and the page makes no network request, so it reads offline and can travel as a mail
attachment. Every name that comes from a model or a file is escaped (jinja2 autoescaping; the
SVG figures escape their own texts). The same panels are written one file each to
``DIR/figures/`` (:func:`write_figures`), ready for a paper. ``physgsa report DIR``
re-renders the page and the figures from the saved files without recomputing.

The page opens with how to read it (:mod:`physgsa.report.glossary`), then the verdict; every table
column carries its definition (a tooltip, and a link to the glossary at the end of the page).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jinja2
import numpy as np
from markupsafe import Markup

from . import glossary
from .figures import natural_key, result_figures, spectra_figure, svg_uri

__all__ = ["render_report", "write_report", "write_figures", "rerender", "render_spectra_page", "verdict_view",
           "FIGURES_DIR"]

FIGURES_DIR = "figures"
# The report's wide tables, each split in two so that it fits a 900-px window and a printed page.
_FACTOR_TABLES = (
    ("factors", "spectrum", ("name", "rows", "cols", "r", "rho", "s_top", "s_mle", "s_window", "window_r2",
                             "hellinger")),
    ("factors-window", "window and tail", ("name", "k_q", "k", "window_gap", "tau", "tau_gc", "numerical_rank",
                                           "flags")),
)
_INTERFACE_TABLES = (
    ("interfaces", "verdicts", ("interface", "trunc_error", "eps_trunc", "rho_static", "binding",
                                "certified_a_priori", "certified_measured", "direct_same", "member", "failed_items")),
    ("interfaces-structure", "windows and structure", ("interface", "k_left", "k_right", "slack", "energy_core",
                                                       "energy_overlap", "energy_noise", "n_groups", "n_edges",
                                                       "n_hubs")),
    ("interfaces-alignment", "alignment and flags", ("interface", "commutator", "intersection_dim", "flags")),
)
#: Files physgsa writes into ``DIR/figures/`` (anything else there is left alone).
_OWN_FIGURE = re.compile(r"^(profiles|interface-\d+)-[A-Za-z0-9-]+\.svg$")


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


def _cell(col: str, v) -> str:
    text = _fmt(v)
    if col in ("flags", "failed_items"):  # lists: a break opportunity after each separator
        text = text.replace(";", "; ").replace(",", ", ")
    return text


def _table(df, cols, tid: str = "", caption: str = "") -> dict:
    cols = [c for c in cols if c in df.columns]
    return {"id": tid, "caption": caption, "cols": [_header(c) for c in cols],
            "rows": [[_cell(c, v) for c, v in zip(cols, row)] for row in df[cols].itertuples(index=False)]}


def _header(col: str) -> dict:
    """A column header: its name (with break opportunities after underscores) and its definition."""
    # A break opportunity after each underscore, except inside "a_priori".
    return {"name": col, "parts": re.split(r"_(?!priori)", col), "title": glossary.column(col), "anchor": f"g-{col}"}


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


def _readable(value, depth: int = 0) -> str:
    """A protocol or parameter value as words: ``key: value`` pairs, numbers to 4 digits, yes/no, lists."""
    if isinstance(value, dict):
        if not value:
            return "none"
        sep, pair = ("; ", "{}: {}") if depth == 0 else (", ", "{} {}")
        # Sorted, as certificate.json stores them: a re-rendered report gives the same bytes.
        return sep.join(pair.format(str(k).replace("_", " "), _readable(v, depth + 1))
                        for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))
    if isinstance(value, (list, tuple)):
        return ", ".join(_readable(v, depth + 1) for v in value) if value else "none"
    if isinstance(value, str):
        return value
    return _fmt(value)


def _name(value) -> Markup:
    """A name that may wrap only after its arrows ('a->b' breaks as 'a->' / 'b', never inside '->')."""
    parts = re.split(r"(?<=->)", str(value))
    return Markup("<wbr>").join(Markup('<span class="nb">{}</span>').format(p) for p in parts if p)


@lru_cache(maxsize=None)
def _template(name: str) -> jinja2.Template:
    """A template, compiled once per process (compiling costs more than rendering a small page)."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["fmt"] = _fmt
    env.filters["compact"] = _compact
    env.filters["readable"] = _readable
    env.filters["nm"] = _name
    return env.from_string(resources.files("physgsa.report").joinpath("templates", name).read_text("utf-8"))


def verdict_view(verdict: dict) -> dict:
    """The verdict in words and its colour class: ``all`` (green), ``some`` (amber) or ``none`` (red)."""
    n, m = int(verdict.get("n_interfaces") or 0), int(verdict.get("n_members") or 0)
    summary = str(verdict.get("summary", ""))
    counted = re.match(r"^\d+ of \d+ ", summary) is not None  # "2 of 5 interfaces are members": no repeat
    sentence = summary + (" of the certificate domain" if n else "") + ("" if counted or not n else f" ({m} of {n})")
    kind = "none" if not n else ("all" if m == n else ("none" if m == 0 else "some"))
    b = int(verdict.get("n_chain_breaks") or 0)
    return {"sentence": sentence, "kind": kind, "percent": f"{100.0 * m / n:.1f}" if n else "0",
            "breaks": f"{b} chain break{'s' * (b != 1)}"}


def _window_rows(details) -> list[dict]:
    out = []
    for det in details:
        ws = det.get("window_search")
        if not ws:
            continue
        steps = ws.get("steps") or []

        def show(step):
            if not step:
                last = steps[-1]["q"] if steps else None
                return None if last is None else f"none up to q = {last:g}"
            return f"q = {step['q']:g}: k = {step['k_left']}, k′ = {step['k_right']}"

        out.append({"interface": det["interface"], "direct": show(ws.get("smallest_direct")),
                    "measured": show(ws.get("smallest_measured")), "steps": steps})
    return out


def render_report(result, figures: dict | None = None) -> str:
    """The report page of a Result, as a string (``figures``: :func:`physgsa.report.figures.result_figures`)."""
    cert = result.certificate
    template = _template("report.html.j2")
    figs = result_figures(result) if figures is None else figures
    profiles = [f for name, f in figs.items() if name.startswith("profiles-")]
    details = cert["interfaces"]
    width = max(2, len(str(max(len(details) - 1, 0))))
    heads = result.heads
    interfaces = []
    for i, det in enumerate(details):
        stem = f"interface-{i:0{width}d}-"
        panels = [f for name, f in figs.items() if name.startswith(stem) and not name.endswith("-window-search")]
        interfaces.append({"detail": det, "panels": panels, "index": i,
                           "window": figs.get(f"{stem}window-search"),
                           "heads": _head_grid(heads[heads["interface"] == det["interface"]])})
    used = [c for _, _, cols in _FACTOR_TABLES + _INTERFACE_TABLES for c in cols]
    used += ["a_priori_ratio", "measured_ratio", "binding margin"]
    gloss = [(c, glossary.column(c)) for c in dict.fromkeys(used) if glossary.column(c)]
    return template.render(
        cert=cert, provenance=getattr(result, "provenance", None) or {}, verdict=cert["verdict"],
        view=verdict_view(cert["verdict"]),
        factor_tables=[_table(result.factors, cols, tid, cap) for tid, cap, cols in _FACTOR_TABLES],
        interface_tables=[_table(result.interfaces, cols, tid, cap) for tid, cap, cols in _INTERFACE_TABLES],
        margin_cols={k: _header(k) for k in ("interface", "rho_static", "binding margin", "a_priori_ratio",
                                             "measured_ratio")},
        interfaces=interfaces, profiles=profiles, window_rows=_window_rows(details),
        reading=glossary.READING, failing=glossary.FAILING, next_steps=glossary.NEXT_STEPS,
        protocol_words=glossary.PROTOCOL, columns_glossary=gloss, figures_dir=FIGURES_DIR,
        params=sorted(cert["parameters"].items()), versions=sorted(cert["versions"].items()),
    )


_SPECTRA_COLS = ("name", "rows", "cols", "log_norm", "log_spectral_norm", "stable_rank", "matrix_rank", "entropy",
                 "alpha", "xmin", "rho", "s_top", "s_mle", "s_window", "k_q", "k", "note")


def depth_order(table):
    """The rows of a spectra table in depth order: names sorted with their numbers by value (``h.2``
    before ``h.10``), ties in their original order."""
    if not len(table) or "name" not in table.columns:
        return table
    order = sorted(range(len(table)), key=lambda i: natural_key(str(table["name"].iloc[i])))
    return table.iloc[order].reset_index(drop=True)


def render_spectra_page(res) -> str:
    """The page of ``physgsa spectra``: its sortable table (depth order), the metrics plot, the skipped tensors."""
    template = _template("spectra.html.j2")
    table = depth_order(res.table)
    fig = svg_uri(spectra_figure(table)) if len(table) else None
    # Notes repeat (every split QKV says so): each distinct note is written once, under the
    # table, and a row shows its number, so that no row grows several lines tall.
    notes: dict[str, int] = {}
    view = _table(table, _SPECTRA_COLS, "spectra")
    if "note" in table.columns:
        col = [h["name"] for h in view["cols"]].index("note")
        for row in view["rows"]:
            text = row[col]
            if text and text != "—":
                row[col] = f"[{notes.setdefault(text, len(notes) + 1)}]"
            else:
                row[col] = ""
    cols = [h["name"] for h in view["cols"]]
    gloss = [(c, glossary.column(c)) for c in cols if glossary.column(c)]
    return template.render(record=res.record, table=view, skipped=res.skipped, figure=fig,
                           notes=[(n, text) for text, n in notes.items()], columns_glossary=gloss,
                           note_titles={f"[{n}]": text for text, n in notes.items()},
                           params=sorted(res.record["parameters"].items()),
                           versions=sorted(res.record["versions"].items()))


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".physgsa-tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        from ..outputs.result import _umask

        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a report is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(result, path, figures: dict | None = None) -> Path:
    """Write ``report.html`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    _atomic_text(path, render_report(result, figures))
    return path


def write_figures(result, directory, *, replacing=None, figures: dict | None = None) -> Path:
    """Write every panel of the report as ``directory/NAME.svg`` (one standalone SVG per panel).

    Parameters
    ----------
    result : Result
    directory : path
        Created if missing. Normally a staging folder that is renamed onto ``replacing`` next.
    replacing : path, optional
        The figures folder ``directory`` will replace. physgsa's own old figures are removed
        from it (and the empty folder with them), so that the rename can happen; a stale panel of
        an earlier run never survives. If it also holds files physgsa did not write, those are
        left untouched: the new figures are then moved into it one by one and ``directory`` is
        removed.

    Returns
    -------
    Path
        Where the figures are now: ``directory``, or ``replacing`` when they were moved there.
    """
    from ..core.validation import OutputDirectoryError
    from ..outputs.result import _umask

    directory = Path(directory)
    figs = result_figures(result) if figures is None else figures
    directory.mkdir(parents=True, exist_ok=True)
    mode = 0o666 & ~_umask()
    for name, fig in figs.items():
        target = directory / f"{name}.svg"
        target.write_text(fig.svg, encoding="utf-8")
        os.chmod(target, mode)
    if replacing is None:
        return directory
    replacing = Path(replacing)
    if not (replacing.exists() or replacing.is_symlink()):
        return directory
    if replacing.is_symlink() or not replacing.is_dir():
        raise OutputDirectoryError(
            f"'{replacing}' is not a folder physgsa made (it is a file or a link); physgsa writes its figures "
            "there. Move it away and run the same command again.")
    entries = list(replacing.iterdir())
    own = [p for p in entries if _OWN_FIGURE.match(p.name) and p.is_file() and not p.is_symlink()]
    foreign = [p for p in entries if p not in own]
    if not foreign:
        for p in own:
            p.unlink()
        replacing.rmdir()
        return directory
    new = {f"{name}.svg" for name in figs}
    for name in sorted(new):
        os.replace(directory / name, replacing / name)
    for p in own:
        if p.name not in new:
            p.unlink(missing_ok=True)
    shutil.rmtree(directory, ignore_errors=True)
    return replacing


def rerender(directory) -> Path:
    """Re-render ``DIR/report.html`` and ``DIR/figures/`` from the saved results (no recomputation)."""
    from ..core.validation import OutputDirectoryError
    from ..runs.records import OutputLock
    from ..outputs.result import load_result

    d = Path(directory)
    if not d.is_dir():
        raise OutputDirectoryError(f"'{d}' is not a physgsa output directory: it does not exist or is not a folder.")
    with OutputLock(d, what="report"):
        result = load_result(d)
        figs = result_figures(result)
        try:
            stage = Path(tempfile.mkdtemp(prefix=".physgsa-figures-", dir=d))
        except PermissionError as exc:
            raise OutputDirectoryError(f"Cannot write to '{d}': {exc.strerror}.") from None
        try:
            os.chmod(stage, 0o777 & ~_umask_now())
            where = write_figures(result, stage, replacing=d / FIGURES_DIR, figures=figs)
            if where == stage:
                os.replace(stage, d / FIGURES_DIR)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return write_report(result, d / "report.html", figs)


def _umask_now() -> int:
    from ..outputs.result import _umask

    return _umask()
