"""``compare.html``: the verdict, the tables, BASE's and OTHER's ``|A|`` side by side, and the trajectories.

The page opens with its verdict (how many interfaces are certified the same under the change,
what the direct check finds, the graded shares), then two sortable tables whose every header
carries its definition (:data:`physgsa.report.glossary.COMPARE_COLUMNS`, also in the glossary
at the end of the page). Per interface, BASE's and OTHER's ``|A|`` (rows by BASE's groups,
labelled g0, g1, ...; binned to at most 96 x 96 by mean ``|entry|``,
:func:`physgsa.core.heatmaps.binned_abs`) are drawn with their axes and one shared colour
bar, OTHER's with the columns whose support changed hatched; what the graded certificate
certifies under the change is said in one plain sentence per share (:func:`graded_sentences`).
For a sequence of checkpoints, each interface's ``||Delta A||_F / rho_static`` is plotted
against the checkpoints, named on the axis. It is drawn from a
:class:`~physgsa.outputs.compare.CompareResult` (its ``panels``), through the template
``templates/compare.html.j2``; it fits a 900-px window.
"""

from __future__ import annotations

import html
import re
from pathlib import Path, PurePath

import numpy as np
import pandas as pd
from markupsafe import Markup

from ..core.heatmaps import changed_bins
from ..outputs.compare import CompareResult
from . import glossary, svgplot
from .figures import _HATCH, Figure, _Map, svg_uri
from .pages import fmt, template
from .png import VIRIDIS, colourise
from .svgplot import Axes, figure

__all__ = ["render_compare_page", "draw_compare", "graded_sentences"]

def _pct(v) -> str | None:
    """A share as a percentage (one decimal), or None where there is none (a zero matrix)."""
    if v is None or v is pd.NA or not np.isfinite(float(v)):
        return None
    return f"{100.0 * float(v):.1f}%"


def graded_sentences(row) -> list[str]:
    """The graded certificate under the change, one plain sentence per share (definitions.md, compare).

    ``row`` is one row of ``compare.parquet`` (attribute access). A membership is one unit's
    being in or out of one group's support; its share weighs it by its energy in BASE's ``A0``.
    """
    other = str(row.other)
    n = int(row.n_units)
    ap, me = _pct(row.certified_share_apriori), _pct(row.certified_share_measured)
    pb, pd_ = _pct(row.profile_at_drift_bound), _pct(row.profile_at_delta_norm)
    if ap is None or me is None or pb is None or pd_ is None:
        return ["BASE's matrix at this interface is zero, so there is no routing to certify."]
    return [
        f"A priori, from the factor changes alone, the group memberships holding {ap} of BASE's energy are "
        f"certified unchanged in {other}, and {int(row.certified_columns_apriori)} of {n} columns keep every "
        "membership.",
        f"Measured on the exact change of each block, the memberships holding {me} of the energy are certified "
        f"unchanged, and {int(row.certified_columns_measured)} of {n} columns keep every membership.",
        f"BASE's robustness profile at the drift bound ({float(row.drift_bound):.3g}) certifies the memberships "
        f"holding {pb} of the energy against any change of that Frobenius size.",
        f"At the change's actual size, ||ΔA0||_F = {float(row.delta_norm):.3g}, the profile certifies the "
        f"memberships holding {pd_} of the energy.",
    ]


#: The page's two tables (compare.parquet has every column): the drift and its verdicts, then
#: the graded certificate under the change; each fits a 900-px window.
_TABLES = (("compare", "drift and verdicts", ("other", "interface", "delta_norm", "drift_bound", "rho_static", "ratio",
                                             "certified", "direct_same", "changed", "labels_kept")),
           ("compare-graded", "graded certificate under the change (shares of BASE's energy)",
            ("other", "interface", "certified_share_apriori", "certified_share_measured", "profile_at_drift_bound",
             "profile_at_delta_norm")))
_NAME_COLS = ("other", "interface")
#: Where a name may wrap: after a dot, a slash, an underscore or a whole '->' (never inside it).
_BREAKS = re.compile(r"(?<=->)|(?<=[./_\\])")
#: The symbols the page keeps on one line.
_SYMBOLS = re.compile(r"(\|\|ΔA0?\|\|_F|rho_static)")


def _wrapped(value) -> Markup:
    """A long name (a path, a module, an interface) with break opportunities after its separators only."""
    parts = [p for p in _BREAKS.split(str(value)) if p]
    return Markup("<wbr>").join(Markup(f'<span class="nb">{html.escape(p)}</span>') for p in parts)


def _nobreak(value) -> Markup:
    """Text with "||ΔA||_F" and the like kept on one line."""
    return Markup("".join(f'<span class="nb">{html.escape(p)}</span>' if i % 2 else html.escape(p)
                          for i, p in enumerate(_SYMBOLS.split(str(value)))))


def _header(col: str) -> dict:
    """A column header: its name (break opportunities after underscores), its compare definition, its anchor."""
    return {"name": col, "parts": col.split("_"), "title": glossary.column(col, "compare"), "anchor": f"g-{col}"}


def _cell(col: str, v):
    if col in _NAME_COLS:
        return _wrapped(_short_other(v) if col == "other" else v)
    text = fmt(v)
    return text.replace(",", ", ") if col == "changed" else text


def _short_other(name) -> str:
    """OTHER's name as the page shows it: a file's name without its folder (the full path is in compare.json)."""
    s = str(name)
    return PurePath(s).name if ("/" in s or "\\" in s) and PurePath(s).name else s


def _tables(ifs) -> list[dict]:
    out = []
    for tid, caption, cols in _TABLES:
        cols = [c for c in cols if c in ifs.columns]
        if len(cols) <= 2:
            continue
        out.append({"id": tid, "caption": caption, "cols": [_header(c) for c in cols],
                    "rows": [[_cell(c, v) for c, v in zip(cols, row)] for row in ifs[cols].itertuples(index=False)]})
    return out


def _verdict(ifs) -> dict:
    """The headline: how many interfaces are certified the same, and what the direct check finds."""
    n = len(ifs)
    cert = int(ifs["certified"].fillna(False).astype(bool).sum()) if n else 0
    same = int(ifs["direct_same"].fillna(False).astype(bool).sum()) if n else 0
    kind = "none" if not n or cert == 0 else ("all" if cert == n else "some")
    pieces = {}
    for col in ("certified_share_apriori", "certified_share_measured"):
        if col in ifs.columns:
            v = ifs[col].astype("float64").to_numpy()
            v = v[np.isfinite(v)]
            pieces[col] = _pct(v.mean()) if v.size else None
    return {"sentence": f"{cert} of {n} interfaces certified the same under the change",
            "direct": f"the direct check finds the same structure at {same} of {n}", "kind": kind,
            "percent": f"{100.0 * cert / n:.1f}" if n else "0",
            "apriori": pieces.get("certified_share_apriori"), "measured": pieces.get("certified_share_measured")}


def _map(panel: dict, key: str, title: str, vmax: float, name: str) -> Figure:
    """One binned ``|A|`` with its axes, BASE's groups along the rows and the shared colour bar; OTHER's
    map hatches the columns whose support changed.
    """
    img = np.asarray(panel[key], dtype=np.float64)
    sizes = [int(s) for s in panel.get("group_sizes") or []]
    m = sum(sizes)
    rows, lines = [], []
    if m:
        edges = np.concatenate([[0], np.cumsum(sizes)])
        rows = [(edges[g] / m, edges[g + 1] / m, f"g{g}") for g in range(len(sizes)) if sizes[g]]
        lines = [e / m for e in edges[1:-1] if 0 < e < m]
    hatch, legend = None, None
    if key == "other_map" and panel["cols"]:
        hit = changed_bins(panel["cols"], panel["n_cols"])
        hatch = np.broadcast_to(hit[None, :], img.shape)
        legend = [(_HATCH, "hatched: columns whose support changed")]
    binned = img.shape[1] < int(panel["n_cols"])
    return _Map(name, title, colourise(img, VIRIDIS, 0.0, vmax), subtitle="", rows=rows, row_lines=lines,
                xlabel="input unit (column)" + (", binned" if binned else ""),
                ylabel="output row, by BASE's group", bar=("viridis", 0.0, vmax, "mean |entry| per cell"),
                hatch=hatch, legend=legend).figure(str(panel["interface"]))


def _images(panel: dict) -> dict:
    """One interface's maps: both on one colour scale, OTHER's with the changed columns hatched."""
    vmax = float(max(panel["base"].max(), panel["other_map"].max())) or 1.0
    other = _short_other(panel["other"])
    return {**panel, "other_name": other,
            "maps": [_map(panel, "base", "BASE: |A_{0}|", vmax, "base"),
                     _map(panel, "other_map", f"{svgplot.shorten(other, 40)}: |A_{{0}}|", vmax, "other")],
            "cols_text": ", ".join(map(str, panel["cols"][:40])) + (" …" if len(panel["cols"]) > 40 else "")
            if panel["cols"] else "none"}


def _short_interface(name) -> str:
    return "->".join(svgplot.shorten(p, 24) for p in str(name).split("->"))


def _trajectory(result: CompareResult) -> str | None:
    """Each interface's ``||Delta A||_F / rho_static`` against the checkpoint (a sequence of OTHERs only)."""
    others = list(result.document["others"])
    if len(others) <= 1:
        return None
    ifs = result.interfaces
    ax = Axes(title="||ΔA_{0}||_F / ρ_{static} against the checkpoint", xlabel="checkpoint (in the order given)",
              ylabel="||ΔA_{0}||_F / ρ_{static}")
    position = {str(o): k for k, o in enumerate(others)}
    for name in ifs["interface"].unique():
        sel = ifs[ifs["interface"] == name]
        x = np.array([position.get(str(o), np.nan) for o in sel["other"]], dtype=float)
        ax.plot(x, np.asarray(sel["ratio"].astype("float64").fillna(np.nan)), label=_short_interface(name))
    ax.set_categories([_short_other(o) for o in others])
    return figure([ax], 1, panel_w=620, plot_h=200)


def render_compare_page(result: CompareResult) -> str:
    """The page of ``physgsa compare``, as a string."""
    ifs = result.interfaces
    trajectory = _trajectory(result)
    graded = ({(r.other, r.interface): graded_sentences(r) for r in ifs.itertuples(index=False)}
              if "certified_share_apriori" in ifs.columns else {})
    tables = _tables(ifs)
    used = [h["name"] for t in tables for h in t["cols"]]
    gloss = [(c, glossary.column(c, "compare")) for c in dict.fromkeys(used) if glossary.column(c, "compare")]
    return template("compare.html.j2").render(
        base=str(result.document["base"]), others=", ".join(map(str, result.document["others"])),
        tables=tables, verdict=_verdict(ifs), columns_glossary=gloss, nobreak=_nobreak, wrapname=_wrapped,
        trajectory=None if trajectory is None else svg_uri(trajectory),
        panels=[{**_images(p), "graded": graded.get((p["other"], p["interface"]), [])} for p in result.panels])


def draw_compare(result: CompareResult, directory: Path) -> None:
    """Write ``compare.html`` into ``directory``."""
    (Path(directory) / "compare.html").write_text(render_compare_page(result), encoding="utf-8")
