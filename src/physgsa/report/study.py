"""The study's panels and its page, drawn from a :class:`~physgsa.outputs.study.StudyResult` alone.

:func:`study_figures` draws every panel of ``study.html``: the Part I profiles of all models on
shared axes (depth normalised to [0, 1]), the distributions of ``rho_static``, ``trunc_error``
and their ratio, the core/overlap/noise energy shares, the ICM label shares, the verdict counts,
and a grid of each model's most and least certified interface (its ``|A0|`` and its block
energies). :func:`draw_study` writes them under ``figures/`` and the page ``study.html``
(:func:`render_study`, templates/study.html.j2) into a folder: :func:`physgsa.report.draw`
dispatches a :class:`~physgsa.outputs.study.StudyResult` here. Nothing here computes a quantity or reads the
clock: the same result gives the same bytes.
"""

from __future__ import annotations

import html
import math
import os
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jinja2
import numpy as np
from markupsafe import Markup

from ..outputs.directory import FIGURES_DIR
from . import glossary, svgplot
from .figures import Figure, factor_column, figure_size, plain_title, png_uri
from .pages import fmt
from .png import MAGMA, VIRIDIS, colourise, encode_png
from .svgplot import attr, num, text, text_width

__all__ = ["study_figures", "render_study", "draw_study", "SHARE_COLOURS", "LABEL_COLOURS", "VERDICT_COLOURS"]

_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf")
SHARE_COLOURS = {"core": "#1b9e77", "overlap": "#d95f02", "noise": "#bdbdbd"}
LABEL_COLOURS = {"SC": "#1b9e77", "SA": "#7570b3", "ST": "#e7298a", "zero": "#d9d9d9"}
VERDICT_COLOURS = {"member": "#2ca02c", "not a member": "#d62728", "no channel structure": "#bdbdbd"}


# -- figures ------------------------------------------------------------------------------------------

def _colours(entries) -> list[tuple[str, bool]]:
    """(colour, dashed) per entry: a random control takes its trained model's colour, dashed."""
    base, out = {}, []
    for e in entries:
        key = e.pair or e.label
        if key not in base:
            base[key] = _PALETTE[len(base) % len(_PALETTE)]
        out.append((base[key], e.weights == "random"))
    return out


def _profile_panels(entries, colours) -> list[tuple[str, svgplot.Axes]]:
    specs = (
        ("exponent", "fitted power-law exponent ŝ_{top}", "ŝ_{top}", False, lambda f: factor_column(f, "s_top")),
        ("rho", "top-radial coordinate ρ = log λ_{1}", "ρ", False, lambda f: factor_column(f, "rho")),
        ("rank-fraction", "effective rank k_{q} / r", "k_{q} / r", False,
         lambda f: factor_column(f, "k_q") / np.where(factor_column(f, "r") > 0, factor_column(f, "r"), np.nan)),
        ("chart-residual", "chart residual (Hellinger^{2})", "Hellinger^{2}", False,
         lambda f: factor_column(f, "hellinger")),
        ("tail-energy", "tail energy beyond the window τ", "τ", False, lambda f: factor_column(f, "tau")),
        ("window-gap", "window gap (σ_{k} − σ_{k+1}) / σ_{1}", "gap (log scale)", True,
         lambda f: factor_column(f, "window_gap")),
    )
    panels = []
    for key, title, ylabel, log, get in specs:
        ax = svgplot.Axes(title, "relative depth (first factor 0, last 1)", ylabel, log_y=log)
        for e, (colour, dashed) in zip(entries, colours):
            f = e.result.factors
            if not len(f):
                continue
            x = np.arange(len(f), dtype=np.float64) / max(len(f) - 1, 1)
            with np.errstate(invalid="ignore", divide="ignore"):
                y = get(f)
            ax.plot(x, y, label=e.label, colour=colour, dash=dashed, marker="s" if dashed else "o")
        panels.append((f"study-profile-{key}", ax))
    return panels


def _jitter(n: int) -> np.ndarray:
    """Fixed horizontal offsets that spread ``n`` points of one category (the same on every machine)."""
    return np.zeros(n) if n <= 1 else (np.arange(n) / (n - 1) - 0.5) * 0.3


def _distribution_panels(entries, table, colours) -> list[tuple[str, svgplot.Axes]]:
    labels = [e.label for e in entries]
    out = []
    for key, col, title, ylabel in (
            ("rho-static", "rho_static", "static radius ρ_{static} per interface", "ρ_{static} (log scale)"),
            ("trunc-error", "trunc_error", "truncation error ‖E‖_{F} per interface", "‖E‖_{F} (log scale)"),
            ("ratio", "ratio", "‖E‖_{F} / ρ_{static} per interface (above 1: the measured verdict fails)",
             "ratio (log scale)")):
        ax = svgplot.Axes(title, "model", ylabel, log_y=True)
        for k, (e, (colour, _)) in enumerate(zip(entries, colours)):
            vals = table.loc[table["model"] == e.label, col].to_numpy(dtype=np.float64, na_value=np.nan)
            vals = vals[np.isfinite(vals)]
            if vals.size:
                ax.scatter(k + _jitter(vals.size), vals, colour=colour)
        if key == "ratio" and entries:
            ax.plot([-0.4, len(entries) - 0.6], [1.0, 1.0], label="ratio 1", marker=None, dash=True, colour="#444")
        ax.set_categories(labels)
        out.append((f"study-{key}", ax))
    return out


def _figure(name: str, title: str, svg: str) -> Figure:
    w, h = figure_size(svg)
    return Figure(name, plain_title(title), svg, w, h)


def _stacked(name: str, title: str, note: str, labels: list[str], parts: list[dict], keys: list[str],
             colours: dict) -> Figure:
    """Horizontal stacked bars (one per model), each part a share in [0, 1], with a legend."""
    bar_w, bar_h, gap = 380.0, 16.0, 6.0
    left = 16 + max((text_width(svgplot.shorten(s, 34), 11, markup=False) for s in labels), default=40.0)
    width = left + bar_w + 24
    y = 22.0
    head = [(f'<text x="{num(width / 2)}" y="{num(y - 4)}" text-anchor="middle" font-size="13">'
             f"{svgplot.rich(title, 13)}</text>")]
    if note:
        y += 14
        head.append(f'<text x="{num(width / 2)}" y="{num(y - 4)}" text-anchor="middle" fill="#666">{text(note)}</text>')
    # The legend: one row of keys.
    x = left
    y += 10
    for key in keys:
        head.append(f'<rect x="{num(x)}" y="{num(y - 9)}" width="11" height="11" fill={attr(colours[key])} '
                    f'stroke="#555" stroke-width="0.6"/><text x="{num(x + 15)}" y="{num(y)}">{text(key)}</text>')
        x += 30 + text_width(key)
    y += 12
    body = []
    for label, share in zip(labels, parts):
        body.append(f'<text x="{num(left - 8)}" y="{num(y + bar_h / 2)}" dy="0.32em" text-anchor="end">'
                    f"{text(svgplot.shorten(label, 34))}</text>")
        total = sum(v for v in share.values() if v is not None and math.isfinite(v))
        if total <= 0:
            body.append(f'<text x="{num(left + 4)}" y="{num(y + bar_h / 2)}" dy="0.32em" fill="#666">no interfaces'
                        "</text>")
        else:
            x = left
            for key in keys:
                v = share.get(key)
                if v is None or not math.isfinite(v) or v <= 0:
                    continue
                w = bar_w * v / total
                body.append(f'<rect x="{num(x)}" y="{num(y)}" width="{num(w)}" height="{num(bar_h)}" '
                            f'fill={attr(colours[key])}><title>{text(f"{label}: {key} {100 * v / total:.1f}%")}'
                            "</title></rect>")
                if w >= 34:
                    body.append(f'<text x="{num(x + w / 2)}" y="{num(y + bar_h / 2)}" dy="0.32em" text-anchor="middle" '
                                f'font-size="10" fill="#fff">{100 * v / total:.0f}%</text>')
                x += w
            body.append(f'<rect x="{num(left)}" y="{num(y)}" width="{num(bar_w)}" height="{num(bar_h)}" fill="none" '
                        'stroke="#555" stroke-width="0.6"/>')
        y += bar_h + gap
    height = y + 8
    return _figure(name, title, svgplot.document(width, height, head + body))


def _mean(col) -> float | None:
    vals = col.to_numpy(dtype=np.float64, na_value=np.nan)
    vals = vals[np.isfinite(vals)]
    return float(vals.mean()) if vals.size else None


def _share_figures(entries, table) -> list[Figure]:
    labels = [e.label for e in entries]
    energy, icm, verdicts = [], [], []
    for e in entries:
        sel = table[(table["model"] == e.label) & table["interface"].notna()]
        energy.append({k: _mean(sel[f"energy_{k}"]) for k in ("core", "overlap", "noise")})
        rows = e.result.rows
        counts = rows["label"].astype(str).value_counts() if len(rows) else {}
        n = float(counts.sum()) if len(rows) else 0.0
        icm.append({k: (float(counts.get(k, 0)) / n if n else None) for k in LABEL_COLOURS})
        # Members, then the failing interfaces with channel structure, then those without any.
        n_if = len(sel)
        member = sel["member"].fillna(False).astype(bool)
        trivial = int((~member & sel["no_channel_structure"].fillna(False).astype(bool)).sum())
        verdicts.append({"member": int(member.sum()) / n_if, "not a member": (int((~member).sum()) - trivial) / n_if,
                         "no channel structure": trivial / n_if} if n_if else
                        {k: None for k in VERDICT_COLOURS})
    return [
        _stacked("study-energy-shares", "energy shares of core, overlap and noise",
                 "mean over each model's interfaces of the shares of ‖A0‖²_F", labels, energy,
                 list(SHARE_COLOURS), SHARE_COLOURS),
        _stacked("study-icm-labels", "ICM label shares", "share of all PAM rows of all interfaces", labels, icm,
                 list(LABEL_COLOURS), LABEL_COLOURS),
        _stacked("study-verdicts", "interfaces: members, and failing ones with and without channel structure",
                 "share of each model's interfaces", labels, verdicts, list(VERDICT_COLOURS), VERDICT_COLOURS),
    ]


def _extremes(table, label: str) -> tuple[int | None, int | None]:
    """Positions of the most and the least certified interface of a model (smallest and largest
    ‖E‖_F / ρ_static; interfaces without a finite ratio come last).
    """
    sel = table[(table["model"] == label) & table["interface"].notna()]
    if not len(sel):
        return None, None
    ratio = sel["ratio"].to_numpy(dtype=np.float64, na_value=np.inf)
    idx = sel["index"].to_numpy(dtype=np.int64)
    order = np.lexsort((idx, ratio))
    return int(idx[order[0]]), int(idx[order[-1]])


def _cell_image(a: np.ndarray, table: np.ndarray, size: int = 132) -> tuple[str, float, float]:
    """A heatmap as a PNG ``data:`` URI scaled to its own maximum, each cell enlarged by whole
    factors to about ``size`` pixels a side; and its width and height in pixels.
    """
    a = np.abs(np.asarray(a, dtype=np.float64))
    if a.ndim != 2 or not a.size:
        a = np.zeros((1, 1))
    finite = a[np.isfinite(a)]
    top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    rgb = colourise(np.where(np.isfinite(a), a, 0.0), table, 0.0, top)
    sy, sx = max(1, size // a.shape[0]), max(1, size // a.shape[1])
    return png_uri(encode_png(rgb, scale=(sy, sx))), float(a.shape[1] * sx), float(a.shape[0] * sy)


def _heatmap_grid(entries, table) -> Figure:
    """Each model's most and least certified interface: its |A0| and its block energies."""
    cell, label_w, head = 150.0, 190.0, 58.0
    cols = ("most certified: |A0|", "most certified: block energies", "least certified: |A0|",
            "least certified: block energies")
    width = label_w + 4 * (cell + 16) + 10
    parts = [(f'<text x="{num(width / 2)}" y="18" text-anchor="middle" font-size="13">most and least certified '
              "interface of each model</text>"),
             (f'<text x="{num(width / 2)}" y="34" text-anchor="middle" fill="#666">by ‖E‖_F / ρ_static; each map '
              "scaled to its own maximum (|A0|: viridis, block energies: magma)</text>")]
    for k, c in enumerate(cols):
        parts.append(f'<text x="{num(label_w + k * (cell + 16) + cell / 2)}" y="{num(head - 6)}" text-anchor="middle" '
                     f'font-size="10">{text(c)}</text>')
    y = head
    for e in entries:
        lo, hi = _extremes(table, e.label)
        parts.append(f'<text x="{num(label_w - 10)}" y="{num(y + cell / 2)}" text-anchor="end" dy="0.32em">'
                     f"{text(svgplot.shorten(e.label, 28))}</text>")
        if lo is None:
            parts.append(f'<text x="{num(label_w)}" y="{num(y + cell / 2)}" dy="0.32em" '
                         f'fill="#666">no interfaces</text>')
            y += 40
            continue
        details = e.result.certificate.get("interfaces", [])
        for k, (i, what) in enumerate(((lo, "a0"), (lo, "block"), (hi, "a0"), (hi, "block"))):
            x = label_w + k * (cell + 16)
            if what == "a0":
                arr = e.result.heatmaps.get(f"{i}/a0")
                uri, w, h = _cell_image(np.zeros((1, 1)) if arr is None else arr, VIRIDIS)
            else:
                st = details[i].get("structure", {}) if i < len(details) else {}
                b = np.asarray(st.get("block_energy", {}).get("matrix", [[0.0]]), dtype=np.float64)
                uri, w, h = _cell_image(b if b.ndim == 2 and b.size else np.zeros((1, 1)), MAGMA)
            scale = min(cell / w, cell / h)  # drawn pixelated: enlarged cells stay sharp
            w, h = w * scale, h * scale
            box = f'x="{num(x)}" y="{num(y)}" width="{num(w)}" height="{num(h)}"'
            parts.append(f'<image {box} preserveAspectRatio="none" '
                         f'style="image-rendering:pixelated;image-rendering:crisp-edges" xlink:href="{uri}"/>'
                         f'<rect {box} fill="none" stroke="#555"/>')
            ratio = table.loc[(table["model"] == e.label) & (table["index"] == i), "ratio"]
            ratio = ratio.to_numpy(dtype=np.float64, na_value=np.nan)
            r = float(ratio[0]) if ratio.size and np.isfinite(ratio[0]) else None
            name = str(details[i].get("interface", "")) if i < len(details) else ""
            parts.append(f'<text x="{num(x)}" y="{num(y + h + 12)}" font-size="9">{text(svgplot.shorten(name, 28))}'
                         "</text>")
            if what == "a0":
                parts.append(f'<text x="{num(x)}" y="{num(y + h + 24)}" font-size="10" fill="#666">'
                             f"‖E‖/ρ = {'—' if r is None else f'{r:.3g}'}</text>")
        y += cell + 34
    return _figure("study-heatmaps", "most and least certified interface of each model",
                   svgplot.document(width, y + 6, parts))


def study_figures(result) -> dict[str, Figure]:
    """Every panel of the study page, by file name (without ``.svg``), in the page's order.

    Parameters
    ----------
    result : StudyResult
        The entries (one per model, with its certificate) and study.parquet's table.
    """
    entries, table = result.entries, result.table
    colours = _colours(entries)
    figs = []
    for name, ax in _profile_panels(entries, colours) + _distribution_panels(entries, table, colours):
        figs.append(_figure(name, ax.title, svgplot.figure([ax], ncols=1, panel_w=620, plot_h=220)))
    figs += _share_figures(entries, table)
    figs.append(_heatmap_grid(entries, table))
    return {f.name: f for f in figs}


# -- the page -----------------------------------------------------------------------------------------

#: The page's interfaces tables, each fitting a 900-px window (all of study.parquet's columns are in the file).
_INTERFACE_TABLES = (("interfaces", "radii, errors and verdicts",
                      ("model", "interface", "depth", "rho_static", "trunc_error", "ratio", "member",
                       "no_channel_structure")),
                     ("interfaces-shares", "energy shares and ICM label shares",
                      ("model", "interface", "energy_core", "energy_overlap", "energy_noise", "share_SC", "share_SA",
                       "share_ST")))
_INTERFACE_COLS = tuple(dict.fromkeys(c for _, _, cols in _INTERFACE_TABLES for c in cols))
#: The models table's columns (the last: the link to each model's report).
_MODEL_COLS = ("model", "family", "architecture", "weights", "factors", "interfaces", "members", "chain breaks",
               "no channel structure", "verdict", "smallest margins", "report")
#: The page's sections: (title, the figures in it: a name prefix or the names).
_SECTIONS = (("Part I profiles against relative depth", "study-profile-"),
             ("Radii and truncation errors", ("study-rho-static", "study-trunc-error", "study-ratio")),
             ("Energy shares, ICM labels and verdicts", ("study-energy-shares", "study-icm-labels",
                                                         "study-verdicts")),
             ("Matrices and block energies", ("study-heatmaps",)))


def _esc(value) -> Markup:
    """HTML-escaped text as :func:`html.escape` escapes it (quotes as ``&quot;`` and ``&#x27;``)."""
    return Markup(html.escape(str(value), quote=True))


def _wrap(value) -> Markup:
    """A long name with break opportunities after its dots, slashes and whole '->' only."""
    parts = [p for p in re.split(r"(?<=->)|(?<=[./])", str(value)) if p]
    return Markup("<wbr>").join(Markup(f'<span class="nb">{html.escape(p)}</span>') for p in parts)


def _header(col: str) -> dict:
    """A column header: its name (a break opportunity after each underscore) and its study definition."""
    return {"name": col, "parts": col.split("_"), "title": glossary.column(col, "study"),
            "anchor": "g-" + col.replace(" ", "-")}


def _verdict(result) -> dict:
    """The headline: members of all interfaces, and the models whose every interface is a member."""
    v = [e.result.certificate.get("verdict", {}) for e in result.entries]
    n = sum(int(x.get("n_interfaces") or 0) for x in v)
    m = sum(int(x.get("n_members") or 0) for x in v)
    full = sum(1 for x in v if int(x.get("n_interfaces") or 0) and x.get("n_members") == x.get("n_interfaces"))
    k = len(v)
    kind = "none" if not n or m == 0 else ("all" if m == n else "some")
    return {"sentence": f"{m} of {n} interfaces are members of the certificate domain", "kind": kind,
            "models": f"{full} of {k} model{'s' * (k != 1)} have every interface a member"}


@lru_cache(maxsize=None)
def _template() -> jinja2.Template:
    """study.html.j2, compiled once per process."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["esc"] = _esc
    env.filters["wrap"] = _wrap
    return env.from_string(resources.files("physgsa.report").joinpath("templates", "study.html.j2")
                           .read_text("utf-8"))


def _margins(entry, n: int = 3) -> list[str]:
    """The ``n`` smallest radii of a model, one line each."""
    return [f"{m.get('interface')}: ρ_static {fmt(m.get('rho_static'))}, ‖E‖/ρ {fmt(m.get('measured_ratio'))}"
            for m in entry.result.certificate.get("verdict", {}).get("smallest_margins", [])[:n]]


def _href(entry, out: Path | None) -> str | None:
    """Where the page links to the model's own report: relative to ``out`` where it can be."""
    if entry.run is None:
        return None
    target = Path(entry.run) / "report.html"
    if out is not None:
        try:
            href = os.path.relpath(target.resolve(), out.resolve())
        except ValueError:
            href = target.resolve().as_uri()
    else:
        href = target.resolve().as_uri()
    return Path(href).as_posix()


def _model_row(entry, out: Path | None) -> dict:
    v = entry.result.certificate.get("verdict", {})
    n, m = int(v.get("n_interfaces") or 0), int(v.get("n_members") or 0)
    return {"entry": entry, "random": entry.weights == "random",
            "n_factors": len(entry.result.certificate.get("factors", [])), "n_interfaces": n, "n_members": m,
            "n_chain_breaks": int(v.get("n_chain_breaks") or 0),
            "n_no_channel_structure": int(v.get("n_no_channel_structure") or 0),
            "summary": str(v.get("summary", "")), "margins": _margins(entry), "href": _href(entry, out)}


def render_study(result, figures: dict[str, Figure] | None = None, out=None) -> str:
    """study.html as a string: the models' table, every figure, and the interfaces' table.

    Parameters
    ----------
    result : StudyResult
    figures : dict, optional
        :func:`study_figures` of ``result`` (drawn here when not given).
    out : path, optional
        The directory the page is written to: links to each model's report are relative to it.
    """
    figures = study_figures(result) if figures is None else figures
    sections = [(title, [f for k, f in figures.items()
                         if (k.startswith(names) if isinstance(names, str) else k in names)])
                for title, names in _SECTIONS]
    tables = [{"id": tid, "caption": caption, "cols": [_header(c) for c in cols],
               "rows": [[fmt(x) for x in row] for row in result.table[list(cols)].itertuples(index=False)]}
              for tid, caption, cols in _INTERFACE_TABLES]
    n = len(result.entries)
    used = dict.fromkeys(_MODEL_COLS + _INTERFACE_COLS)
    return _template().render(
        n_models=n, n_interfaces=int(result.table["interface"].notna().sum()), verdict=_verdict(result),
        models=[_model_row(e, None if out is None else Path(out)) for e in result.entries],
        model_cols=[_header(c) for c in _MODEL_COLS], sections=sections, tables=tables,
        columns_glossary=[("g-" + c.replace(" ", "-"), c, glossary.column(c, "study")) for c in used
                          if glossary.column(c, "study")])


def draw_study(result, directory) -> None:
    """Write the panels of ``result`` as ``directory/figures/study-*.svg`` and the page ``directory/study.html``.

    Each panel is drawn once and used twice (embedded in the page, and as its own file). The
    links to each model's report are relative to the output directory the page lands in:
    ``directory`` itself, or the one holding it when it is a save's staging folder
    (``.physgsa-*``, :func:`physgsa.outputs.directory.staged_write`).
    """
    directory = Path(directory)
    figures = study_figures(result)
    (directory / FIGURES_DIR).mkdir(exist_ok=True)
    for name, fig in figures.items():
        (directory / FIGURES_DIR / f"{name}.svg").write_text(fig.svg, encoding="utf-8")
    out = directory.parent if directory.name.startswith(".physgsa-") else directory
    (directory / "study.html").write_text(render_study(result, figures, out), encoding="utf-8")
