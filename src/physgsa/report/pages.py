"""``report.html``: one self-contained page drawn from a saved Result, and its figures as files.

Styles, the sorting script and every figure (one SVG per panel, as base64 ``data:`` URIs) are
inline, and the page makes no network request, so it reads offline and can travel as a mail
attachment. Every name that comes from a model or a file is escaped (jinja2 autoescaping; the
SVG figures escape their own texts). The same panels are written one file each to
``DIR/figures/`` (:func:`draw_certify`), ready for a paper. ``physgsa report DIR``
re-renders the page and the figures from the saved files without recomputing
(:func:`physgsa.report.rerender`).

The page opens with how to read it (:mod:`physgsa.report.glossary`), then the verdict; every table
column carries its definition (a tooltip, and a link to the glossary at the end of the page).
"""

from __future__ import annotations

import html
import json
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from ..outputs.directory import FIGURES_DIR
from ..outputs.result import Result
from ..outputs.spectra import SpectraResult, depth_order
from . import figures as figure_module
from . import glossary
from .figures import GRADED_SHARES, Figure, spectra_figure, svg_uri

__all__ = ["render_report", "render_spectra_page", "draw_certify", "draw_spectra", "verdict_view", "graded_view",
           "template", "FIGURES_DIR"]

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
    ("interfaces-graded", "graded certificate (which parts are certified)",
     ("interface", "certified_share_apriori", "certified_share_measured", "certified_columns_apriori",
      "hubs_certified_apriori", "n_hubs", "pairs_certified_apriori")),
)

#: The three things the graded certificate reports, one plain sentence each (glossary.READING's words).
_GRADED_TERMS = ("certified share, a priori", "certified share, measured", "robustness profile")


def fmt(v) -> str:
    """A table cell's text: 4 significant digits, yes/no, and a dash for what is undefined."""
    if v is None or v is pd.NA or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        x = float(v)
        # One notation down a column: positional from 1e-3 to 1e6 (28520 beside 7825, not
        # 2.852e+04), scientific outside, always 4 significant digits.
        if x == 0 or 1e-3 <= abs(x) < 1e6:
            return np.format_float_positional(x, precision=4, unique=False, fractional=False, trim="-")
        return f"{x:.4g}"
    return str(v)


def _escape(v) -> Markup:
    """``html.escape`` (quotes as ``&#x27;`` and ``&quot;``): the f-string pages' escaping, kept byte for byte."""
    return Markup(html.escape(str(v)))


def _cell(col: str, v) -> str:
    text = fmt(v)
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
        # An empty text says nothing ("reason: " with nothing after it): left out.
        return sep.join(pair.format(str(k).replace("_", " "), _readable(v, depth + 1))
                        for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
                        if not (isinstance(v, str) and not v.strip())) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(_readable(v, depth + 1) for v in value) if value else "none"
    if isinstance(value, str):
        return value
    return fmt(value)


def _name(value) -> Markup:
    """A name that may wrap only after its arrows ('a->b' breaks as 'a->' / 'b', never inside '->')."""
    parts = re.split(r"(?<=->)", str(value))
    return Markup("<wbr>").join(Markup('<span class="nb">{}</span>').format(p) for p in parts if p)


@lru_cache(maxsize=None)
def template(name: str) -> jinja2.Template:
    """A template, compiled once per process (compiling costs more than rendering a small page)."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["fmt"] = fmt
    env.filters["compact"] = _compact
    env.filters["readable"] = _readable
    env.filters["nm"] = _name
    env.filters["h"] = _escape
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


def graded_view(verdict: dict) -> dict | None:
    """The model's energy-weighted graded shares as percentages for the headline (None where there are none)."""
    g = verdict.get("graded") or {}

    def pct(v) -> str | None:
        if v is None or not np.isfinite(float(v)):
            return None
        x = 100.0 * float(v)
        # ">99%" rather than a rounded "100%" that is not one.
        return ">99%" if 99.0 < x < 100.0 else ("<1%" if 0.0 < x < 1.0 else f"{x:.0f}%")

    apriori, measured = pct(g.get("apriori")), pct(g.get("measured"))
    if apriori is None and measured is None:
        return None
    return {"apriori": apriori, "measured": measured}


def _window_rows(details) -> list[dict]:
    out = []
    for det in details:
        ws = det.get("window_search")
        if not ws:
            continue
        steps = ws.get("steps") or []

        def show(step, steps=steps):
            if not step:
                last = steps[-1]["q"] if steps else None
                return None if last is None else f"none up to q = {last:g}"
            return f"q = {step['q']:g}: k = {step['k_left']}, k′ = {step['k_right']}"

        out.append({"interface": det["interface"], "direct": show(ws.get("smallest_direct")),
                    "measured": show(ws.get("smallest_measured")), "steps": steps})
    return out


def _plain_matrices(result) -> bool:
    """Whether the run's factors are plain matrices (an .npz or arrays), not read from a network."""
    src = result.factors["source"] if "source" in result.factors else None
    return src is not None and len(src) > 0 and bool((src == "matrix").all())


def render_report(result, figures: dict | None = None) -> str:
    """The report page of a Result, as a string (``figures``: :func:`physgsa.report.figures.result_figures`)."""
    cert = result.certificate
    page = template("report.html.j2")
    figs = figure_module.result_figures(result) if figures is None else figures
    profiles = [f for name, f in figs.items() if name.startswith("profiles-") and name != GRADED_SHARES]
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
    reading = dict(glossary.READING)
    gloss = [(c, glossary.column(c)) for c in dict.fromkeys(used) if glossary.column(c)]
    return page.render(
        cert=cert, provenance=getattr(result, "provenance", None) or {}, verdict=cert["verdict"],
        view=verdict_view(cert["verdict"]),
        factor_tables=[_table(result.factors, cols, tid, cap) for tid, cap, cols in _FACTOR_TABLES],
        interface_tables=[_table(result.interfaces, cols, tid, cap) for tid, cap, cols in _INTERFACE_TABLES],
        margin_cols={k: _header(k) for k in ("interface", "rho_static", "binding margin", "a_priori_ratio",
                                             "measured_ratio")},
        interfaces=interfaces, profiles=profiles, window_rows=_window_rows(details),
        graded=graded_view(cert["verdict"]), graded_figure=figs.get(GRADED_SHARES),
        graded_terms=[(t, reading[t]) for t in _GRADED_TERMS if t in reading],
        # A chain read from the weights (not Jacobians at inputs): say what that structure is.
        weight_space=glossary.WEIGHT_SPACE if "source" in result.factors
        and (result.factors["source"] == "static").any() else None,
        reading=glossary.READING, failing=glossary.FAILING,
        # A chain of plain matrices has no branches, heads or Jacobians to try.
        next_steps=[s for s in glossary.NEXT_STEPS
                    if not (_plain_matrices(result) and s[0] in glossary.MODEL_ONLY_STEPS)],
        protocol_words=glossary.PROTOCOL, columns_glossary=gloss, figures_dir=FIGURES_DIR,
        params=sorted(cert["parameters"].items()), versions=sorted(cert["versions"].items()),
    )


_SPECTRA_COLS = ("name", "rows", "cols", "log_norm", "log_spectral_norm", "stable_rank", "matrix_rank", "entropy",
                 "alpha", "xmin", "rho", "s_top", "s_mle", "s_window", "k_q", "k", "note")


#: The spectra page's two tables (WeightWatcher's metrics, then Part I's), each fitting a 900-px window.
_SPECTRA_TABLES = (("spectra", "WeightWatcher's metrics", _SPECTRA_COLS[:10]),
                   ("spectra-part1", "Part I coordinates and windows", ("name",) + _SPECTRA_COLS[10:]))


def _dotted(value) -> Markup:
    """A long dotted name with a break opportunity after each dot (and slash) only."""
    parts = [p for p in re.split(r"(?<=[./])", str(value)) if p]
    return Markup("<wbr>").join(Markup('<span class="nb">{}</span>').format(p) for p in parts)


def render_spectra_page(res) -> str:
    """The page of ``physgsa spectra``: its sortable tables (depth order), the metrics plot, the skipped tensors."""
    page = template("spectra.html.j2")
    table = depth_order(res.table)
    fig = svg_uri(spectra_figure(table)) if len(table) else None
    # Notes repeat (every split QKV says so): each distinct note is written once, under the
    # table, and a row shows its number, so that no row grows several lines tall.
    notes: dict[str, int] = {}
    views = [_table(table, cols, tid, caption) for tid, caption, cols in _SPECTRA_TABLES]
    for view in views:
        names = [h["name"] for h in view["cols"]]
        for row in view["rows"]:
            if names and names[0] == "name":
                row[0] = _dotted(row[0])
            if "note" in names:
                col = names.index("note")
                text = row[col]
                row[col] = f"[{notes.setdefault(text, len(notes) + 1)}]" if text and text != "—" else ""
    cols = [h["name"] for view in views for h in view["cols"]]
    gloss = [(c, glossary.column(c)) for c in dict.fromkeys(cols) if glossary.column(c)]
    return page.render(record=res.record, tables=views, skipped=res.skipped, figure=fig,
                       notes=[(n, text) for text, n in notes.items()], columns_glossary=gloss,
                       note_titles={f"[{n}]": text for text, n in notes.items()},
                       params=sorted(res.record["parameters"].items()),
                       versions=sorted(res.record["versions"].items()))


def draw_certify(result: Result, directory: Path, figures: dict[str, Figure] | None = None) -> None:
    """Write ``report.html`` and ``figures/NAME.svg`` (one standalone SVG per panel) into ``directory``.

    ``directory`` is a staging folder (:func:`physgsa.outputs.directory.staged_write` puts the
    files in place); every panel is drawn once and used twice, embedded in the page and as a file.
    """
    directory = Path(directory)
    # Through the module, so that the one drawing can be counted (tests/test_startup.py).
    figs = figure_module.result_figures(result) if figures is None else figures
    (directory / "report.html").write_text(render_report(result, figs), encoding="utf-8")
    folder = directory / FIGURES_DIR
    folder.mkdir()
    for name, fig in figs.items():
        (folder / f"{name}.svg").write_text(fig.svg, encoding="utf-8")


def draw_spectra(res: SpectraResult, directory: Path) -> None:
    """Write ``spectra.html`` into ``directory``."""
    (Path(directory) / "spectra.html").write_text(render_spectra_page(res), encoding="utf-8")
