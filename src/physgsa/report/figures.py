"""The report's figures, drawn from saved results only, without matplotlib: one SVG per panel.

Every panel is a standalone SVG document, ready to drop into a paper: the report embeds each one
as an image, :func:`physgsa.save` and ``physgsa report DIR`` write each one to ``DIR/figures/``,
and :func:`physgsa.report.panels` returns them in a notebook without touching a file.

* Heatmaps are the binned arrays themselves: each cell mapped through a colour table, enlarged
  by a whole factor and embedded as a PNG (:mod:`physgsa.report.png`, drawn pixelated so the cells
  stay sharp); group and block boundaries, ticks, labels and colour bars are vector graphics
  and text around it. Colour bars are vector gradients with their label beside them.
* Line and scatter plots are SVG text (:mod:`physgsa.report.svgplot`).
* Our own labels use real typography for the math (``‖A₀‖²_F``, ``|A₁ − A₀|``, ``ρ_static``):
  Unicode symbols, and sub- and superscripts as ``tspan`` elements. Names that come from a model
  or a file are escaped and never interpreted.

Nothing here reads the clock, so the same results give the same bytes.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import svgplot
from .png import MAGMA, VIRIDIS, colourise, encode_png, hex_rgb
from .svgplot import attr, num, rich, text, text_width

__all__ = ["Figure", "profile_figures", "interface_figures", "window_search_figure", "result_figures",
           "profiles_figure", "spectra_figure", "graded_profile_figure", "graded_shares_figure", "hatched",
           "MASK_COLOURS", "LABEL_COLOURS", "GRADED_SHARES", "png_uri", "svg_uri"]

MASK_COLOURS = ("#d9d9d9", "#1b9e77", "#d95f02")  # noise, core, overlap
LABEL_COLOURS = ("#1b9e77", "#7570b3", "#e7298a", "#ffffff")  # SC, SA, ST, zero
_TARGET = 288  # about this many pixels per heatmap side: 3 px per cell at the 96-bin maximum
_STRIP_W = 24  # pixels per column of the ICM label strip
_TICK_GAP = 11.0  # closest two tick labels (10 px text) may be, centre to centre
_MAX_ROW_LABELS, _MAX_COL_LABELS = 24, 20
_TABLES = {"viridis": VIRIDIS, "magma": MAGMA}
_UNIT_WORDS = {"channels": "channels", "heads": "heads", "groups": "groups"}
#: The model-level figure of the graded certificate (named so that OWN_FIGURE owns it).
GRADED_SHARES = "profiles-graded-shares"
_HATCH = "hatch"  # a legend entry drawn as the hatching itself
_HATCH_EVERY = 4  # one hatch line every 4 pixels, on the diagonal


def png_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def svg_uri(svg: str) -> str:
    """An SVG document as a ``data:`` URI (base64, so that no character of it needs quoting)."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


@dataclass(frozen=True)
class Figure:
    """One panel: a standalone SVG document and what it shows.

    ``name`` is the file name under ``DIR/figures/`` without ``.svg`` (built from fixed words and
    indices only, never from a name in a file); ``title`` says in plain words what it shows.
    In a notebook the figure displays itself (``_repr_svg_``).
    """

    name: str
    title: str
    svg: str
    width: float
    height: float
    interface: str | None = None

    def _repr_svg_(self) -> str:
        return self.svg

    @property
    def uri(self) -> str:
        """The figure as a ``data:`` URI, for an ``<img>``."""
        return svg_uri(self.svg)

    def save(self, path) -> Path:
        """Write the SVG document to ``path`` (a file name, or a folder to put ``NAME.svg`` in)."""
        path = Path(path)
        if path.is_dir():
            path = path / f"{self.name}.svg"
        path.write_text(self.svg, encoding="utf-8")
        return path


# -- heatmap panels ------------------------------------------------------------------------------

def _scales(shape: tuple[int, int]) -> tuple[int, int]:
    return max(1, _TARGET // max(shape[0], 1)), max(1, _TARGET // max(shape[1], 1))


def _stops(table: str, n: int = 17) -> list[str]:
    colours = _TABLES[table][np.linspace(0, 255, n).round().astype(int)]
    return ["#%02x%02x%02x" % tuple(int(v) for v in c) for c in colours]


def _spans(starts, n: int) -> list[tuple[float, float, str]]:
    """(start, end, label) of each span, as fractions of ``n``: span ``k`` runs to the next start."""
    pos = [p for p, _ in starts] + [n]
    return [(pos[k] / n, pos[k + 1] / n, lab) for k, (_, lab) in enumerate(starts)]


def hatched(rgb: np.ndarray, hatch: np.ndarray, scale: tuple[int, int]) -> np.ndarray:
    """The cells enlarged by whole factors, diagonal lines drawn over the cells where ``hatch`` is True.

    A hatched pixel is one with ``(x + y) mod 4 = 0`` (pixel coordinates of the enlarged
    image) inside a hatched cell; it is blended 65% towards white on a dark cell and 45% towards
    black on a light one, so the lines show on every colour and the cell's own colour still shows
    between them. The lines run on across neighbouring hatched cells: a region reads as one texture.
    """
    sy, sx = scale
    big = np.repeat(np.repeat(np.asarray(rgb, dtype=np.uint8), sy, axis=0), sx, axis=1)
    mask = np.repeat(np.repeat(np.asarray(hatch, dtype=bool), sy, axis=0), sx, axis=1)
    yy, xx = np.indices(mask.shape)
    on = mask & ((xx + yy) % _HATCH_EVERY == 0)
    px = big.astype(np.float64)
    light = (px @ np.array([0.299, 0.587, 0.114])) > 150
    towards = np.where(light[..., None], 0.55 * px, px + 0.65 * (255.0 - px))
    out = np.where(on[..., None], np.rint(towards), px)
    return np.clip(out, 0, 255).astype(np.uint8)


def _thin(spans: list, limit: int) -> list:
    """At most ``limit`` labelled spans (every ``step``-th one) where there are too many to write."""
    step = max(1, math.ceil(len(spans) / limit))
    return spans[::step]


@dataclass
class _Map:
    """A heatmap-like panel: an image of cells, labelled spans on both axes, a colour bar or a legend."""

    name: str
    title: str
    rgb: np.ndarray  # (rows, cols, 3) uint8, one pixel per cell
    subtitle: str = ""
    rows: list = None  # (start frac, end frac, label)
    cols: list = None
    row_lines: list = None  # fractions where a boundary line is drawn
    col_lines: list = None
    xlabel: str = ""
    ylabel: str = ""
    bar: tuple | None = None  # (table, vmin, vmax, label)
    legend: list = None  # (colour, label)
    sx: int | None = None
    sy: int | None = None
    hatch: np.ndarray | None = None  # (rows, cols) booleans: cells drawn hatched

    def _png(self, sy: int, sx: int) -> bytes:
        if self.hatch is None or not np.any(self.hatch):
            return encode_png(self.rgb, scale=(sy, sx))
        return encode_png(hatched(self.rgb, self.hatch, (sy, sx)))

    def render(self) -> tuple[str, float, float]:
        h_cells, w_cells, _ = self.rgb.shape
        sy, sx = _scales((h_cells, w_cells))
        sy, sx = self.sy or sy, self.sx or sx
        H, W = float(h_cells * sy), float(w_cells * sx)
        rows = _thin(self.rows or [], max(1, min(_MAX_ROW_LABELS, int(H // 10))))
        cols = _thin(self.cols or [], max(1, min(_MAX_COL_LABELS, int(W // 10))))
        ylab_w = max((text_width(lab, 10, markup=False) for _, _, lab in rows), default=0.0)
        xlab_h = max((text_width(lab, 10, markup=False) for _, _, lab in cols), default=0.0)
        left = 10 + (18 if self.ylabel else 0) + (ylab_w + 14 if rows else 0)
        top = 26 + (15 if self.subtitle else 0)
        img_bottom = top + H
        y = img_bottom + (xlab_h + 14 if cols else 6)
        parts = []
        # The cells, then the group and block boundaries as vector lines over them.
        parts.append(f'<image x="{num(left)}" y="{num(top)}" width="{num(W)}" height="{num(H)}" '
                     f'preserveAspectRatio="none" style="image-rendering:pixelated;image-rendering:crisp-edges" '
                     f'xlink:href="{png_uri(self._png(sy, sx))}"/>')
        lines = []
        for f in self.row_lines or []:
            yy = top + round(f * h_cells) * sy
            if top < yy < img_bottom:
                lines.append(f"M{num(left)} {num(yy)}h{num(W)}")
        for f in self.col_lines or []:
            xx = left + round(f * w_cells) * sx
            if left < xx < left + W:
                lines.append(f"M{num(xx)} {num(top)}v{num(H)}")
        if lines:
            parts.append(f'<path d="{"".join(lines)}" stroke="#000" stroke-width="1" fill="none"/>')
        parts.append(f'<rect x="{num(left)}" y="{num(top)}" width="{num(W)}" height="{num(H)}" fill="none" '
                     'stroke="#555" stroke-width="1"/>')
        # Every labelled span keeps its label: labels that would overlap are moved apart and
        # joined to their span by a short leader line.
        if rows:
            want = [top + (a + b) / 2 * H for a, b, _ in rows]
            got = svgplot.spread(want, _TICK_GAP, top + 4, img_bottom - 4)
            for (_, _, lab), w, g in zip(rows, want, got):
                parts.append(f'<path d="M{num(left - 1)} {num(w)}L{num(left - 8)} {num(g)}h-3" stroke="#777" '
                             f'fill="none" stroke-width="0.8"/>'
                             f'<text x="{num(left - 13)}" y="{num(g)}" dy="0.32em" text-anchor="end" font-size="10">'
                             f"{text(lab)}</text>")
        if cols:
            want = [left + (a + b) / 2 * W for a, b, _ in cols]
            got = svgplot.spread(want, _TICK_GAP, left + 4, left + W - 4)
            for (_, _, lab), w, g in zip(cols, want, got):
                parts.append(f'<path d="M{num(w)} {num(img_bottom + 1)}L{num(g)} {num(img_bottom + 8)}v3" '
                             f'stroke="#777" fill="none" stroke-width="0.8"/>'
                             f'<text transform="translate({num(g)},{num(img_bottom + 13)}) rotate(-90)" dy="0.32em" '
                             f'text-anchor="end" font-size="10">{text(lab)}</text>')
        if self.ylabel:
            parts.append(f'<text transform="translate(18,{num(top + H / 2)}) rotate(-90)" text-anchor="middle">'
                         f"{rich(self.ylabel)}</text>")
        if self.xlabel:
            y += 14
            parts.append(f'<text x="{num(left + W / 2)}" y="{num(y)}" text-anchor="middle">{rich(self.xlabel)}</text>')
            y += 6
        right = left + W + 10
        if self.bar is not None:
            table, vmin, vmax, label = self.bar
            bx = left + W + 14
            parts += svgplot.colour_bar(bx, top, H, _stops(table), vmin, vmax, label, gid="bar")
            right = bx + svgplot.colour_bar_width(vmin, vmax)
        for colour, label in self.legend or []:
            y += 16
            if colour == _HATCH:
                parts.append(f'<rect x="{num(left)}" y="{num(y - 10)}" width="11" height="11" fill="#fff" '
                             f'stroke="#555" stroke-width="0.8"/><path d="M{num(left)} {num(y - 2)}l8 -8'
                             f'M{num(left)} {num(y + 1)}l11 -11M{num(left + 3)} {num(y + 1)}l8 -8" stroke="#555" '
                             f'stroke-width="0.8"/><text x="{num(left + 16)}" y="{num(y)}">{rich(label)}</text>')
                right = max(right, left + 24 + text_width(label))
                continue
            parts.append(f'<rect x="{num(left)}" y="{num(y - 10)}" width="11" height="11" fill={attr(colour)} '
                         f'stroke="#555" stroke-width="0.8"/>'
                         f'<text x="{num(left + 16)}" y="{num(y)}">{rich(label)}</text>')
            right = max(right, left + 24 + text_width(label))
        content = max(right, text_width(self.title, 13) + 20)
        # A long name (the subtitle) is shortened to the panel's width rather than widening it
        # (an empty right third); the full name is its tooltip.
        subtitle = _fitted(self.subtitle, content - 20)
        width = max(content, text_width(subtitle, 11, markup=False) + 20)
        title_x = width / 2
        head = [f'<text x="{num(title_x)}" y="17" text-anchor="middle" font-size="13">{rich(self.title, 13)}</text>']
        if self.subtitle:
            tip = f"<title>{text(self.subtitle)}</title>" if subtitle != self.subtitle else ""
            head.append(f'<text x="{num(title_x)}" y="32" text-anchor="middle" fill="#666">'
                        f'{tip}{text(subtitle)}</text>')
        height = y + 10
        return svgplot.document(width, height, head + parts), width, height

    def figure(self, interface: str | None) -> Figure:
        svg, w, h = self.render()
        return Figure(self.name, plain_title(self.title), svg, w, h, interface)


def _fitted(label: str, room: float) -> str:
    """``label`` as it is where it fits in ``room`` px, else each side of its '->' shortened
    (:func:`svgplot.shorten`) until it fits, down to 8 characters a side.
    """
    if not label or text_width(label, 11, markup=False) <= room:
        return label
    short = label
    for most in range(48, 7, -2):
        short = "->".join(svgplot.shorten(p, most) for p in label.split("->"))
        if text_width(short, 11, markup=False) <= room:
            break
    return short


def plain_title(title: str) -> str:
    """A title without its sub/superscript markup (for alt texts and captions)."""
    return re.sub(r"[_^]\{([^{}]*)\}", r"\1", title)


def _max(a) -> float:
    """The largest finite value, 0 when there is none."""
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else 0.0


def _axes_words(st: dict, band: bool = False) -> tuple[str, str]:
    unit = _UNIT_WORDS.get(str(st.get("unit_strategy", "channels")), "channels")
    by = "head" if st.get("group_strategy") == "heads" else "group"
    cols = f"input {unit} (by support block; the inactive ones as one band)" if band else \
        f"input {unit} (by support block)"
    return cols, f"output rows (by {by})"


def _band(heat: dict) -> tuple[int, int]:
    """The aggregated inactive band's column bin and how many columns it holds ((-1, 0): no band)."""
    band = int(np.asarray(heat.get("col_band", [-1])).reshape(-1)[0])
    counts = np.asarray(heat.get("col_counts", []), dtype=np.int64)
    return (band, int(counts[band])) if 0 <= band < counts.shape[0] else (-1, 0)


def _pam_ticks(rows, cols, col_labels, shape, band: tuple[int, int] = (-1, 0)) -> dict:
    """Group spans on the rows and support-block spans on the columns of a PAM-shaped map.

    The aggregated band's label says how many columns it holds.
    """
    def name(b, pos):
        lab = col_labels[int(b)] if 0 <= int(b) < len(col_labels) else str(int(b))
        return f"{lab} ({band[1]})" if band[0] >= 0 and round(pos * shape[1]) == band[0] else lab

    return {
        "rows": [(a, b, f"g{int(g)}") for a, b, g in _spans(rows, shape[0])] if rows else [],
        "cols": [(a, b, name(blk, a)) for a, b, blk in _spans(cols, shape[1])] if cols else [],
        "row_lines": [p / shape[0] for p, _ in rows[1:]],
        "col_lines": [p / shape[1] for p, _ in cols[1:]],
    }


def _file_stem(index: int, width: int) -> str:
    return f"interface-{index:0{width}d}"


def interface_figures(heat: dict, detail: dict, index: int = 0, width: int = 2) -> list[Figure]:
    """The panels of one interface: the PAM maps, the ICM labels, the masks, the block energies, the graph.

    Parameters
    ----------
    heat : dict
        The interface's saved arrays (``a0``, ``a1``, ``diff``, ``mask``, ``labels``,
        ``certified``, ``row_groups``, ``col_blocks``, and where saved ``col_counts``,
        ``col_band``, ``graded_apriori``; see :mod:`physgsa.core.heatmaps`). The |A0| map and the
        mask map hatch the cells where fewer than half the memberships are certified a priori.
    detail : dict
        The interface's entry of the certificate (its ``structure`` is drawn; its name is each
        panel's subtitle).
    index, width : int
        The interface's index, and how many digits the file names give it.

    Returns
    -------
    list of Figure
    """
    st = detail["structure"]
    where = str(detail.get("interface", ""))
    stem = _file_stem(index, width)
    col_labels = [str(v) for v in st["block_energy"]["labels"]]
    rows = [(float(p), int(g)) for p, g in np.asarray(heat["row_groups"]).reshape(-1, 2)]
    cols = [(float(p), int(b)) for p, b in np.asarray(heat["col_blocks"]).reshape(-1, 2)]
    band = _band(heat)
    xlabel, ylabel = _axes_words(st, band[0] >= 0)
    a0 = np.asarray(heat["a0"], dtype=np.float64)
    ticks = _pam_ticks(rows, cols, col_labels, a0.shape, band)
    graded = heat.get("graded_apriori")
    hatch = None if graded is None else np.asarray(graded, dtype=np.float64) < 0.5
    hatch_key = [] if hatch is None else [(_HATCH, "hatched: under half the cell's memberships certified a priori")]
    vmax = max(_max(heat["a0"]), _max(heat["a1"]), 1e-300)
    dmax = max(_max(heat["diff"]), 1e-300)
    out = []
    for key, suffix, title, top in (("a0", "pam-truncated-A0", "|A_{0}|: truncated transport (windows)", vmax),
                                    ("a1", "pam-full-A1", "|A_{1}|: full transport", vmax),
                                    ("diff", "pam-difference-E", "|E| = |A_{1} − A_{0}|", dmax)):
        a = np.asarray(heat[key], dtype=np.float64)
        shade = hatch if key == "a0" else None
        out.append(_Map(f"{stem}-{suffix}", title, colourise(a, VIRIDIS, 0.0, top), subtitle=where, xlabel=xlabel,
                        ylabel=ylabel, bar=("viridis", 0.0, top, "mean |entry| per cell"), hatch=shade,
                        legend=hatch_key if shade is not None else None, **ticks).figure(where))
    out.append(_label_strip(heat, stem, where, rows, ylabel))
    m = np.asarray(heat["mask"])
    palette = np.array([hex_rgb(c) for c in MASK_COLOURS], dtype=np.uint8)
    out.append(_Map(f"{stem}-masks", "masks: core / overlap / noise", palette[np.clip(m, 0, 2)], subtitle=where,
                    xlabel=xlabel, ylabel=ylabel, hatch=hatch,
                    legend=[(MASK_COLOURS[1], "core: the group's own input (degree 1)"),
                            (MASK_COLOURS[2], "overlap: shared with other groups (degree ≥ 2)"),
                            (MASK_COLOURS[0], "noise: outside the group's support")] + hatch_key,
                    **ticks).figure(where))
    b = np.asarray(st["block_energy"]["matrix"], dtype=np.float64)
    if b.ndim == 2 and b.size:
        out.append(_block_energies(st, b, stem, where))
    out.append(_incidence_graph(st, b.shape[0] if b.ndim == 2 and b.size else len(st["group_sizes"]), stem, where))
    return out


#: The right column of the ICM strip: a certified row, in a colour no label uses (a certified SA
#: row in SC's green read as SC).
CERTIFIED_COLOUR = "#404040"


def _label_strip(heat: dict, stem: str, where: str, rows, ylabel: str) -> Figure:
    """The ICM label of each row bin beside whether it is certified (its own colour, not a label's)."""
    labels = np.clip(np.asarray(heat["labels"], dtype=np.intp), 0, 3)
    strip = np.stack([labels, np.where(np.asarray(heat["certified"]) >= 0.5, 4, 3)], axis=1)
    palette = np.array([hex_rgb(c) for c in (*LABEL_COLOURS, CERTIFIED_COLOUR)], dtype=np.uint8)
    n = strip.shape[0]
    sy = _scales((n, 2))[0]
    row_spans = [(a, b, f"g{int(g)}") for a, b, g in _spans(rows, n)] if rows else []
    return _Map(f"{stem}-icm-labels", "ICM labels (Invariant Channel Mapping)", palette[strip], subtitle=where,
                rows=row_spans, row_lines=[p / n for p, _ in rows[1:]], col_lines=[0.5],
                cols=[(0.0, 0.5, "label"), (0.5, 1.0, "certified")], ylabel=ylabel, sy=sy, sx=_STRIP_W,
                legend=[(LABEL_COLOURS[0], "SC: single-core"),
                        (LABEL_COLOURS[1], "SA: shared, aligned"), (LABEL_COLOURS[2], "ST: shared, transit"),
                        (CERTIFIED_COLOUR, "certified (right column)"),
                        (LABEL_COLOURS[3], "zero row, or not certified")]).figure(where)


def _block_energies(st: dict, b: np.ndarray, stem: str, where: str) -> Figure:
    labels = [str(v) for v in st["block_energy"]["labels"]]
    finite = b[np.isfinite(b)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    rows = [(g / b.shape[0], (g + 1) / b.shape[0], f"g{g}") for g in range(b.shape[0])]
    cols = [(j / b.shape[1], (j + 1) / b.shape[1], labels[j] if j < len(labels) else str(j)) for j in range(b.shape[1])]
    return _Map(f"{stem}-block-energies", "block energies B[g, b]", colourise(b, MAGMA, vmin, vmax), subtitle=where,
                rows=rows, cols=cols, xlabel="column block", ylabel="group",
                bar=("magma", vmin, vmax, "share of ‖A_{0}‖_{F}^{2}")).figure(where)


def _incidence_graph(st: dict, m: int, stem: str, where: str) -> Figure:
    """Groups on a circle, edges as wide as their weight, discs whose area is the group's size, and a key."""
    size, c, radius = 300.0, 150.0, 106.0
    top = 46.0 if where else 30.0
    ang = 2 * np.pi * np.arange(m) / max(m, 1) + np.pi / 2
    xy = np.c_[c + radius * np.cos(ang), top + c - radius * np.sin(ang)]
    edges = [(int(e["g"]), int(e["h"]), float(e["w"])) for e in st["edges"]]
    edges = [(g, h, w if math.isfinite(w) else 0.0) for g, h, w in edges if 0 <= g < m and 0 <= h < m]
    wmax = max((w for _, _, w in edges), default=0.0)
    wmin = min((w for _, _, w in edges), default=0.0)
    width_of = lambda w: 0.6 + 4.0 * max(w, 0.0) / wmax if wmax > 0 else 0.6  # noqa: E731
    parts = []
    for g, h, w in edges:
        (x1, y1), (x2, y2) = xy[g], xy[h]
        parts.append(f'<line x1="{num(x1)}" y1="{num(y1)}" x2="{num(x2)}" y2="{num(y2)}" stroke="#555" '
                     f'stroke-opacity="0.8" stroke-width="{width_of(w):.2f}"/>')
    sizes = np.zeros(m)
    given = np.asarray(st["group_sizes"], dtype=np.float64)[:m]
    sizes[:given.size] = given
    smax = max(float(sizes.max()) if m else 0.0, 1.0)
    r_of = lambda s: max(2.5, 16.0 * math.sqrt(max(s, 0.0) / smax))  # noqa: E731 - area proportional to rows
    for g in range(m):
        r = r_of(sizes[g])
        parts.append(f'<circle cx="{num(xy[g, 0])}" cy="{num(xy[g, 1])}" r="{num(r)}" fill="#1f78b4" stroke="#fff"/>')
        if m <= 32:
            lx, ly = c + (radius + r + 11) * math.cos(ang[g]), top + c - (radius + r + 11) * math.sin(ang[g])
            parts.append(f'<text x="{num(lx)}" y="{num(ly)}" dy="0.35em" text-anchor="middle" '
                         f'font-size="10">g{g}</text>')
    # The key: what the size of a disc, the width of a line and the hub count mean.
    unit = _UNIT_WORDS.get(str(st.get("unit_strategy", "channels")), "channels")
    y = top + size + 8
    smin = float(sizes[sizes > 0].min()) if np.any(sizes > 0) else 0.0
    key = []
    y += 14
    key.append(f'<circle cx="20" cy="{num(y - 4)}" r="{num(r_of(smin))}" fill="#1f78b4"/>'
               f'<circle cx="{num(44 + r_of(smin))}" cy="{num(y - 4)}" r="{num(r_of(smax))}" fill="#1f78b4"/>'
               f'<text x="{num(66 + r_of(smin) + r_of(smax))}" y="{num(y)}">disc area: rows in the group '
               f"({int(smin)} to {int(smax)})</text>")
    y += max(22, 2 * r_of(smax) + 6) - 8
    if edges:
        key.append(f'<line x1="8" y1="{num(y - 4)}" x2="30" y2="{num(y - 4)}" stroke="#555" '
                   f'stroke-width="{width_of(wmin):.2f}"/><line x1="38" y1="{num(y - 4)}" x2="60" y2="{num(y - 4)}" '
                   f'stroke="#555" stroke-width="{width_of(wmax):.2f}"/>'
                   f'<text x="68" y="{num(y)}">line width: shared weight w<tspan dy="3" font-size="8">gh</tspan>'
                   f'<tspan dy="-3"> ({wmin:.3g} to {wmax:.3g})</tspan>'
                   "</text>")
    else:
        key.append(f'<text x="8" y="{num(y)}">no edges: no two groups share enough input</text>')
    y += 18
    n_hubs = len(st.get("hubs", []))
    hub_deg = st.get("hub_degree", 3)
    one = unit[:-1] if n_hubs == 1 else unit
    key.append(f'<text x="8" y="{num(y)}">hubs: {n_hubs} input {one} in ≥ {hub_deg} supports</text>')
    y += 14
    key.append(f'<text x="8" y="{num(y)}" fill="#666">(hubs are input {unit}, not nodes: the nodes are the {m} groups)'
               "</text>")
    height = y + 10
    width = max(size, 16 + text_width(f"(hubs are input {unit}, not nodes: the nodes are the {m} groups)"))
    n_e = len(edges)
    title = f"incidence graph: {m} groups, {n_e} edge{'s' * (n_e != 1)}"
    head = [f'<text x="{num(width / 2)}" y="17" text-anchor="middle" font-size="13">{text(title)}</text>']
    if where:
        head.append(f'<text x="{num(width / 2)}" y="32" text-anchor="middle" fill="#666">{text(where)}</text>')
    svg = svgplot.document(width, height, head + parts + key)
    return Figure(f"{stem}-incidence-graph", title, svg, width, height, where)


# -- line plots ----------------------------------------------------------------------------------

def factor_column(df, name: str) -> np.ndarray:
    """A column as float64, pandas' NA as NaN (all NaN where the table has no such column)."""
    if name not in df.columns:
        return np.full(len(df), np.nan)
    return df[name].to_numpy(dtype=np.float64, na_value=np.nan)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a / b`` where ``b > 0``, NaN (a gap) elsewhere: no division warnings."""
    return np.divide(a, b, out=np.full(a.shape, np.nan), where=np.isfinite(b) & (b > 0))


def _profile_axes(factors, gap_floor: float | None = None) -> list[tuple[str, svgplot.Axes]]:
    x = np.arange(len(factors), dtype=np.float64)
    r = factor_column(factors, "r")
    log_r = np.log(np.where(r > 0, r, np.nan))
    xl = "factor (chain order)"
    out = []
    ax = svgplot.Axes("fitted power-law exponents ŝ", xl, "s")
    for col, mk in (("s_top", "o"), ("s_mle", "s"), ("s_window", "^")):
        ax.plot(x, factor_column(factors, col), label=col.replace("s_", "s_{") + "}", marker=mk)
    out.append(("profiles-exponents", ax))
    ax = svgplot.Axes("top-radial coordinate ρ = log λ_{1}", xl, "ρ")
    ax.plot(x, factor_column(factors, "rho"), label="ρ")
    ax.plot(x, log_r, label="log r (its maximum)", marker=None, dash=True)
    out.append(("profiles-rho", ax))
    ax = svgplot.Axes("effective rank k_{q} and window k", xl, "rank")
    ax.plot(x, factor_column(factors, "k_q"), label="k_{q}")
    ax.plot(x, factor_column(factors, "k"), label="window k", marker="s")
    ax.plot(x, r, label="r", marker=None, dash=True)
    out.append(("profiles-ranks", ax))
    ax = svgplot.Axes("chart residual", xl, "residual")
    ax.plot(x, factor_column(factors, "hellinger"), label="Hellinger^{2}")
    ax.plot(x, factor_column(factors, "kl"), label="KL", marker="s")
    out.append(("profiles-chart-residual", ax))
    ax = svgplot.Axes("tail energy beyond the window", xl, "tail energy")
    ax.plot(x, factor_column(factors, "tau"), label="τ (measured)")
    ax.plot(x, factor_column(factors, "tau_gc"), label="τ_{GC} (Gibbs–Cartan model)", marker="s")
    out.append(("profiles-tail-energy", ax))
    ax = svgplot.Axes("window gap (σ_{k} − σ_{k+1}) / σ_{1}", xl, "gap (log scale)", log_y=True)
    ax.plot(x, factor_column(factors, "window_gap"), label="window gap")
    if gap_floor is not None and gap_floor > 0:
        # The floor below which a window is flagged (protocol item 3): what the gaps are read against.
        ax.plot(x, np.full(x.shape, gap_floor), label=f"gap floor ({gap_floor:g})", marker=None, dash=True)
    out.append(("profiles-window-gap", ax))
    names = [str(v) for v in factors["name"].tolist()]
    for _, a in out:
        a.set_categories(names)
    return out


def profile_figures(factors, gap_floor: float | None = None) -> list[Figure]:
    """Part I profiles against depth, one figure each: exponents, rho, ranks, residuals, tails, window gaps.

    ``gap_floor`` (the run's parameter) is drawn as a dashed line on the window-gap profile.
    """
    figs = []
    for name, ax in _profile_axes(factors, gap_floor):
        svg = svgplot.figure([ax], ncols=1)
        w, h = figure_size(svg)
        figs.append(Figure(name, plain_title(ax.title), svg, w, h))
    return figs


def profiles_figure(factors) -> str:
    """The six Part I profiles in one SVG document (three a row)."""
    return svgplot.figure([ax for _, ax in _profile_axes(factors)], ncols=3)


def figure_size(svg: str) -> tuple[float, float]:
    m = re.search(r'width="([\d.]+)" height="([\d.]+)"', svg)
    return float(m.group(1)), float(m.group(2))


def window_search_figure(detail: dict, index: int = 0, width: int = 2) -> Figure | None:
    """``trunc_error`` and ``rho_static`` against q for one interface (``--window-search``), or None."""
    ws = detail.get("window_search")
    if not ws or not ws.get("steps"):
        return None
    steps = ws["steps"]
    x = np.arange(len(steps), dtype=np.float64)
    val = lambda k: np.array([np.nan if s.get(k) is None else float(s[k]) for s in steps])  # noqa: E731
    where = str(detail.get("interface", ""))
    ax = svgplot.Axes("window search: ‖E‖_{F} and ρ_{static} against q", "q (energy kept by each window)",
                      "Frobenius norm (log scale)", log_y=True, subtitle=where)
    err, rho = val("trunc_error"), val("rho_static")
    ax.plot(x, err, label="‖E‖_{F}, exact truncation error")
    ax.plot(x, rho, label="ρ_{static}", marker="s")
    direct = np.array([bool(s.get("direct_same")) for s in steps])
    ax.scatter(x, np.where(direct, err, np.nan), label="direct check holds", colour="#2ca02c")
    ax.set_categories([f"{float(s['q']):g}" for s in steps])
    svg = svgplot.figure([ax], ncols=1)
    w, h = figure_size(svg)
    return Figure(f"{_file_stem(index, width)}-window-search", plain_title(ax.title), svg, w, h, where)


_PROFILE_SERIES = (("column_share", "columns (energy share)", "#1f77b4"),
                   ("membership_share", "memberships (energy share)", "#ff7f0e"),
                   ("pair_share", "pairs of groups", "#2ca02c"), ("hub_share", "hubs", "#9467bd"))


def _positive(v) -> float | None:
    """``v`` as a float where it is finite and positive (drawable on a log axis), else None."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x > 0 else None


def graded_profile_figure(rows, detail: dict, index: int = 0, width: int = 2,
                          drift: float | None = None) -> Figure | None:
    """The robustness profile of one interface (definitions section 5b) as step functions of r, or None.

    Parameters
    ----------
    rows : DataFrame
        The interface's rows of ``profile.parquet``: row ``i`` holds the certified shares on
        ``[r_i, r_{i+1})``, the first row ``r = 0``.
    detail : dict
        The interface's entry of the certificate: ``margins.rho_static``, ``truncation.eps_trunc``
        and ``truncation.exact`` (``||E||_F``) are marked.
    index, width : int
        The interface's index, and how many digits the file name gives it.
    drift : float, optional
        A drift bound from a compare (``||Delta A0||_F`` or its bound), marked where given.

    Notes
    -----
    The x axis is logarithmic; ``r = 0`` cannot sit on it, so the first step is drawn from the
    left edge, a third of the smallest positive radius or marker (the axis label says so).
    """
    if rows is None or not len(rows):
        return None
    r = factor_column(rows, "r")
    marks = [("ρ_{static}", (detail.get("margins") or {}).get("rho_static"), "#d62728"),
             ("ε_{trunc}", (detail.get("truncation") or {}).get("eps_trunc"), "#bcbd22"),
             ("‖E‖_{F}", (detail.get("truncation") or {}).get("exact"), "#17becf")]
    if drift is not None:
        marks.append(("drift", drift, "#7f7f7f"))
    pos = [x for x in r[1:] if math.isfinite(x) and x > 0] + [v for _, m, _ in marks if (v := _positive(m))]
    lo, hi = (min(pos), max(pos)) if pos else (1e-3, 1.0)
    left, right = lo / 3.0, (hi * 3.0 if hi > lo else lo * 10.0)
    x = np.r_[left, r[1:], right]  # r = 0 at the left edge; the last step runs to the right edge
    where = str(detail.get("interface", ""))
    ax = svgplot.Axes("robustness profile: certified shares against the perturbation size r",
                      "perturbation size r = ‖E‖_{F} (log scale; the left edge stands for r → 0)", "certified share",
                      subtitle=where, log_x=True, ylim=(-0.03, 1.03))
    for col, label, colour in _PROFILE_SERIES:
        y = factor_column(rows, col)
        if not np.isfinite(y).any():
            label += ": none to count"
        ax.step(x, np.r_[y, y[-1]], label=label, colour=colour)
    for name, value, colour in marks:
        v = _positive(value)
        if v is not None:
            ax.vline(v, label=f"{name} = {v:.3g}", colour=colour)
        elif value is not None:  # 0 (or not finite): said in the legend, not drawn on the log axis
            ax.vline(float("nan"), label=f"{name} = {float(value):.3g} (off the log axis)", colour=colour)
    svg = svgplot.figure([ax], ncols=1, panel_w=520, plot_h=190)
    w, h = figure_size(svg)
    return Figure(f"{_file_stem(index, width)}-profile", plain_title(ax.title), svg, w, h, where)


def graded_shares_figure(graded: dict | None) -> Figure | None:
    """Each interface's certified membership share, a priori and measured, and the model's (or None).

    ``graded`` is ``certificate.json``'s ``verdict.graded``: per interface the energy shares of the
    memberships the graded certificate certifies, and the model's energy-weighted shares.
    """
    per = (graded or {}).get("interfaces") or []
    if not per:
        return None
    val = lambda v: np.nan if v is None else float(v)  # noqa: E731
    x = np.arange(len(per), dtype=np.float64)
    ax = svgplot.Axes("certified membership share per interface (graded certificate)", "interface (chain order)",
                      "share of ‖A_{0}‖_{F}^{2}", ylim=(0.0, 1.05))
    ax.bar(x, [val(d.get("apriori")) for d in per], label="a priori (from the windows)", colour="#1f77b4",
           width=0.38, offset=-0.2)
    ax.bar(x, [val(d.get("measured")) for d in per], label="measured (exact error)", colour="#ff7f0e",
           width=0.38, offset=0.2)
    ends = np.array([-0.45, len(per) - 0.55])
    for how, colour in (("apriori", "#1f77b4"), ("measured", "#ff7f0e")):
        v = graded.get(how)
        if v is not None:
            word = "a priori" if how == "apriori" else "measured"
            ax.plot(ends, [float(v)] * 2, label=f"model, {word}: {float(v):.3g}", marker=None, dash=True,
                    colour=colour)
    ax.set_categories([str(d.get("interface", "")) for d in per])
    svg = svgplot.figure([ax], ncols=1, panel_w=max(560.0, 120.0 + 28.0 * len(per)))
    w, h = figure_size(svg)
    return Figure(GRADED_SHARES, plain_title(ax.title), svg, w, h)


def result_figures(result, drift: float | None = None) -> dict[str, Figure]:
    """Every panel of a Result's report, by file name (without ``.svg``), in the report's order.

    ``drift`` (a compare's drift bound) is marked on every interface's robustness profile.
    """
    figs: list[Figure] = []
    if len(result.factors):
        figs += profile_figures(result.factors, result.certificate.get("parameters", {}).get("gap_floor"))
    heats: dict[str, dict] = {}
    for key, value in result.heatmaps.items():
        i, name = key.split("/", 1)
        heats.setdefault(i, {})[name] = value
    details = result.certificate.get("interfaces", [])
    width = max(2, len(str(max(len(details) - 1, 0))))
    profile = getattr(result, "profile", None)
    for i, det in enumerate(details):
        heat = heats.get(str(i))
        if heat:
            figs += interface_figures(heat, det, i, width)
        if profile is not None and len(profile):
            fig = graded_profile_figure(profile[profile["interface"] == det["interface"]], det, i, width, drift)
            if fig is not None:
                figs.append(fig)
    shares = graded_shares_figure(result.certificate.get("verdict", {}).get("graded"))
    if shares is not None:
        figs.append(shares)
    for i, det in enumerate(details):
        fig = window_search_figure(det, i, width)
        if fig is not None:
            figs.append(fig)
    return {f.name: f for f in figs}


def spectra_figure(table) -> str:
    """Per-matrix metrics of ``physgsa spectra``, in depth order with the matrices' names, as an SVG document."""
    x = np.arange(len(table), dtype=np.float64)
    r = factor_column(table, "r")
    names = [str(v) for v in table["name"].tolist()]
    xl = "matrix (depth order: names sorted with their numbers by value)"
    panels = []
    ax = svgplot.Axes("power-law exponent α of the eigenvalue tail", xl, "α")
    ax.hspan(2, 6, label="2 ≤ α ≤ 6")
    ax.scatter(x, factor_column(table, "alpha"))
    panels.append(ax)
    ax = svgplot.Axes("norms (log_{10})", xl, "log_{10}")
    ax.scatter(x, factor_column(table, "log_norm"), label="log_norm = log_{10} ‖W‖_{F}^{2}")
    ax.scatter(x, factor_column(table, "log_spectral_norm"), label="log_spectral_norm = log_{10} σ_{1}^{2}")
    panels.append(ax)
    ax = svgplot.Axes("effective ranks, as fractions of r", xl, "fraction of r")
    ax.scatter(x, _ratio(factor_column(table, "stable_rank"), r), label="stable_rank / r")
    ax.scatter(x, _ratio(factor_column(table, "k_q"), r), label="k_{q} / r")
    panels.append(ax)
    ax = svgplot.Axes("Gibbs–Cartan exponents", xl, "s")
    for col in ("s_top", "s_mle"):
        ax.scatter(x, factor_column(table, col), label=col.replace("s_", "s_{") + "}")
    panels.append(ax)
    for a in panels:
        a.set_categories(names)
    return svgplot.figure(panels, ncols=2, panel_w=630)
