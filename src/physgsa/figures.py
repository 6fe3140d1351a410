"""The report's figures, drawn from saved results only, without matplotlib.

Heatmaps are the binned arrays themselves: each cell mapped through a colour table, repeated
to a few pixels and written as a PNG (:mod:`physgsa.png`); titles, axis labels, ticks, colour
bars and legends are left to the page's HTML, where the template escapes them. Line and
scatter plots are SVG text (:mod:`physgsa.svgplot`). Nothing here reads the clock, so the
same results give the same bytes.
"""

from __future__ import annotations

import base64
import math
from functools import lru_cache

import numpy as np

from . import svgplot
from .png import MAGMA, VIRIDIS, colourise, encode_png, hex_rgb

__all__ = ["profiles_figure", "interface_figure", "spectra_figure", "MASK_COLOURS", "LABEL_COLOURS",
           "png_uri", "svg_uri"]

MASK_COLOURS = ("#d9d9d9", "#1b9e77", "#d95f02")  # noise, core, overlap
LABEL_COLOURS = ("#1b9e77", "#7570b3", "#e7298a", "#ffffff")  # SC, SA, ST, zero
_TARGET = 288  # about this many pixels per heatmap side: 3 px per cell at the 96-bin maximum
_STRIP_W = 24  # pixels per column of the ICM label strip
_BAR_W = 12  # colour bar width in pixels
_TICK_PX = 11  # closest two tick labels (10 px text) may be, centre to centre
_LINE = (0, 0, 0)  # group and block boundaries
_TABLES = {"viridis": VIRIDIS, "magma": MAGMA}


def png_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def svg_uri(svg: str) -> str:
    """An SVG document as a ``data:`` URI (base64, so that no character of it needs quoting)."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def _pct(frac: float) -> str:
    return f"{100.0 * min(max(frac, 0.0), 1.0):.3f}"


def _upscale(rgb: np.ndarray, sy: int, sx: int) -> np.ndarray:
    """Nearest-neighbour enlargement by whole factors (the page shows it pixelated)."""
    return np.repeat(np.repeat(rgb, sy, axis=0), sx, axis=1)


def _scales(shape: tuple[int, int]) -> tuple[int, int]:
    return max(1, _TARGET // max(shape[0], 1)), max(1, _TARGET // max(shape[1], 1))


def _boundary_lines(img: np.ndarray, rows, cols, sy: int, sx: int) -> None:
    """Draw 1-px lines where groups (rows) and support blocks (columns) start, except the first."""
    h, w, _ = img.shape
    for p, _g in rows[1:]:
        y = int(round(p * sy))
        if 0 < y < h:
            img[y, :] = _LINE
    for p, _b in cols[1:]:
        x = int(round(p * sx))
        if 0 < x < w:
            img[:, x] = _LINE


def _thin(ticks: list[tuple[float, str]], pixels: int) -> list[tuple[str, str]]:
    """Drop labels that would overlap the one before (narrow groups), as percentages of the side."""
    out, last = [], -math.inf
    for frac, label in ticks:
        if (frac - last) * pixels >= _TICK_PX:
            out.append((_pct(frac), label))
            last = frac
    return out


def _span_ticks(starts, n: int, pixels: int, text) -> list[tuple[str, str]]:
    """A label at the middle of each span: span ``k`` runs from ``starts[k]`` to the next (or ``n``)."""
    pos = [p for p, _ in starts] + [n]
    return _thin([((pos[k] + pos[k + 1]) / 2 / n, text(lab)) for k, (_, lab) in enumerate(starts)], pixels)


def _cell_ticks(labels, n: int, pixels: int) -> list[tuple[str, str]]:
    """One label at the centre of each of ``n`` cells."""
    return _thin([((i + 0.5) / n, str(lab)) for i, lab in enumerate(labels)], pixels)


@lru_cache(maxsize=8)
def _gradient(table: str, height: int) -> str:
    """A vertical colour bar, highest colour at the top, as a data URI (the same for many panels)."""
    frac = 1.0 - (np.arange(height) + 0.5) / height
    rgb = colourise(frac[:, None].repeat(_BAR_W, axis=1), _TABLES[table], 0.0, 1.0)
    return png_uri(encode_png(rgb))


def _colour_bar(table: str, height: int, vmin: float, vmax: float, label: str) -> dict:
    if vmax > vmin:
        ticks = svgplot.nice_ticks(vmin, vmax, 5)
        fracs = [(t - vmin) / (vmax - vmin) for t in ticks]
    else:  # a constant map: one colour, one value
        ticks, fracs = [vmin], [0.0]
    texts = svgplot.tick_labels(ticks)
    return {"src": _gradient(table, height), "width": _BAR_W, "height": height, "label": label,
            "ticks": [(_pct(1.0 - f), t) for f, t in zip(fracs, texts)]}


def _panel(title: str, src: str, width: int, height: int, **extra) -> dict:
    """One panel for the template; every key present, so that the template needs no tests."""
    panel = {"title": title, "src": src, "width": width, "height": height, "xlabel": "", "ylabel": "",
             "yticks": [], "xticks": [], "colorbar": None, "legend": []}
    panel.update(extra)
    longest = max((len(t) for _, t in panel["xticks"]), default=0)
    # Room under the image for the column labels, in em of their font: they run upwards.
    panel["xtick_room"] = round(0.4 + 0.62 * longest, 2)
    return panel


def _image_panel(title: str, rgb: np.ndarray, **extra) -> dict:
    return _panel(title, png_uri(encode_png(rgb)), rgb.shape[1], rgb.shape[0], **extra)


def _max(a) -> float:
    """The largest finite value, 0 when there is none."""
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else 0.0


def _pam_axes(rows, cols, col_labels, shape: tuple[int, int], img: np.ndarray) -> dict:
    """Axis labels and the group/block ticks shared by the PAM-shaped maps (as ``_mark`` did)."""
    ticks = {"xlabel": "input channels (by support block)", "ylabel": "output rows (by group)"}
    if rows and len(rows) <= 24:
        ticks["yticks"] = _span_ticks(rows, shape[0], img.shape[0], lambda g: f"g{int(g)}")
    if cols and len(cols) <= 16:
        name = lambda b: col_labels[int(b)] if 0 <= int(b) < len(col_labels) else str(int(b))  # noqa: E731
        ticks["xticks"] = _span_ticks(cols, shape[1], img.shape[1], name)
    return ticks


def _heat(key: str, title: str, heat: dict, vmax: float, rows, cols, col_labels) -> dict:
    a = np.asarray(heat[key], dtype=np.float64)
    sy, sx = _scales(a.shape)
    img = _upscale(colourise(a, VIRIDIS, 0.0, vmax), sy, sx)
    _boundary_lines(img, rows, cols, sy, sx)
    return _image_panel(title, img, colorbar=_colour_bar("viridis", img.shape[0], 0.0, vmax, "mean |entry|"),
                        **_pam_axes(rows, cols, col_labels, a.shape, img))


def _mask(heat: dict, rows, cols, col_labels) -> dict:
    m = np.asarray(heat["mask"])
    sy, sx = _scales(m.shape)
    palette = np.array([hex_rgb(c) for c in MASK_COLOURS], dtype=np.uint8)
    img = _upscale(palette[np.clip(m, 0, 2)], sy, sx)
    _boundary_lines(img, rows, cols, sy, sx)
    return _image_panel("masks: core / overlap / noise", img, **_pam_axes(rows, cols, col_labels, m.shape, img),
                        legend=list(zip(MASK_COLOURS, ("noise", "core", "overlap"))))


def _label_strip(heat: dict) -> dict:
    """The ICM label of each row bin beside whether it is certified (certified rows in SC's colour)."""
    labels = np.clip(np.asarray(heat["labels"], dtype=np.intp), 0, 3)
    strip = np.stack([labels, np.where(np.asarray(heat["certified"]) >= 0.5, 0, 3)], axis=1)
    palette = np.array([hex_rgb(c) for c in LABEL_COLOURS], dtype=np.uint8)
    sy = _scales(strip.shape)[0]
    img = _upscale(palette[strip], sy, _STRIP_W)
    img[:, _STRIP_W] = (128, 128, 128)  # the two columns would run together where both are white
    return _image_panel("ICM labels", img, xticks=[("25.000", "label"), ("75.000", "certified")],
                        legend=list(zip(LABEL_COLOURS, ("SC", "SA", "ST", "zero/no"))))


def _block_energies(st: dict, b: np.ndarray) -> dict:
    labels = st["block_energy"]["labels"]
    finite = b[np.isfinite(b)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    sy, sx = _scales(b.shape)
    img = _upscale(colourise(b, MAGMA, vmin, vmax), sy, sx)
    extra = {"xlabel": "column block", "ylabel": "group"}
    if b.shape[1] <= 20:
        extra["xticks"] = _cell_ticks(labels[:b.shape[1]], b.shape[1], img.shape[1])
    if b.shape[0] <= 24:
        extra["yticks"] = _cell_ticks([f"g{g}" for g in range(b.shape[0])], b.shape[0], img.shape[0])
    bar = _colour_bar("magma", img.shape[0], vmin, vmax, "share of ||A0||_F^2")
    return _image_panel("block energies", img, colorbar=bar, **extra)


def _incidence_graph(st: dict, m: int) -> dict:
    """Groups on a circle, edges as wide as their weight, discs as large as their group."""
    size, c, radius = 300.0, 150.0, 112.0
    ang = 2 * np.pi * np.arange(m) / max(m, 1)
    xy = np.c_[c + radius * np.cos(ang), c - radius * np.sin(ang)]
    edges = [(int(e["g"]), int(e["h"]), float(e["w"])) for e in st["edges"]]
    edges = [(g, h, w if math.isfinite(w) else 0.0) for g, h, w in edges if 0 <= g < m and 0 <= h < m]
    wmax = max((w for _, _, w in edges), default=1.0)
    wmax = wmax if wmax > 0 else 1.0
    parts = []
    for g, h, w in edges:
        (x1, y1), (x2, y2) = xy[g], xy[h]
        parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#444" '
                     f'stroke-width="{0.5 + 3 * max(w, 0.0) / wmax:.2f}"/>')
    sizes = np.zeros(m)
    given = np.asarray(st["group_sizes"], dtype=np.float64)[:m]
    sizes[:given.size] = given
    for g in range(m):
        r = 0.75 * math.sqrt(60 + 400 * sizes[g] / max(sizes.max(), 1.0))
        parts.append(f'<circle cx="{xy[g, 0]:.1f}" cy="{xy[g, 1]:.1f}" r="{r:.1f}" fill="#1f78b4"/>')
        if m <= 24:
            parts.append(f'<text x="{xy[g, 0]:.1f}" y="{xy[g, 1]:.1f}" dy="0.35em" text-anchor="middle" '
                         f'font-size="9" fill="#fff">g{g}</text>')
    title = f"incidence graph: {len(st['edges'])} edges, {len(st['hubs'])} hubs"
    return _panel(title, svg_uri(svgplot.document(size, size, parts)), int(size), int(size))


def interface_figure(heat: dict, detail: dict) -> dict:
    """The panels of one interface: PAM heatmaps, ICM labels, mask map, block energies, incidence graph.

    Parameters
    ----------
    heat : dict
        The interface's saved arrays (``a0``, ``a1``, ``diff``, ``mask``, ``labels``,
        ``certified``, ``row_groups``, ``col_blocks``; see :mod:`physgsa.heatmaps`).
    detail : dict
        The interface's entry of the certificate (its ``structure`` is drawn).

    Returns
    -------
    dict
        ``{"panels": [...]}``, each panel a dict with ``title``, ``src`` (a data URI),
        ``width``/``height`` (natural pixels), axis labels, ``yticks``/``xticks`` as
        ``(percent, text)`` pairs, an optional ``colorbar`` and ``legend``. Texts are plain:
        the template escapes them.
    """
    st = detail["structure"]
    col_labels = [str(v) for v in st["block_energy"]["labels"]]
    rows = [(float(p), int(g)) for p, g in np.asarray(heat["row_groups"]).reshape(-1, 2)]
    cols = [(float(p), int(b)) for p, b in np.asarray(heat["col_blocks"]).reshape(-1, 2)]
    vmax = max(_max(heat["a0"]), _max(heat["a1"]), 1e-300)
    dmax = max(_max(heat["diff"]), 1e-300)
    panels = [_heat("a0", "|A0| (truncated)", heat, vmax, rows, cols, col_labels),
              _heat("a1", "|A1| (full)", heat, vmax, rows, cols, col_labels),
              _heat("diff", "|A1 - A0|", heat, dmax, rows, cols, col_labels),
              _label_strip(heat),
              _mask(heat, rows, cols, col_labels)]
    b = np.asarray(st["block_energy"]["matrix"], dtype=np.float64)
    if b.ndim == 2 and b.size:
        panels.append(_block_energies(st, b))
    panels.append(_incidence_graph(st, b.shape[0] if b.ndim == 2 else len(st["group_sizes"])))
    return {"panels": panels}


def _column(df, name: str) -> np.ndarray:
    """A column as float64, pandas' NA as NaN."""
    return df[name].to_numpy(dtype=np.float64, na_value=np.nan)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a / b`` where ``b > 0``, NaN (a gap) elsewhere: no division warnings."""
    return np.divide(a, b, out=np.full(a.shape, np.nan), where=np.isfinite(b) & (b > 0))


def profiles_figure(factors) -> str:
    """Part I profiles against depth: exponents, rho, windows, residuals, tails, window gaps.

    Parameters
    ----------
    factors : pandas.DataFrame
        The Result's factor table.

    Returns
    -------
    str
        An SVG document (six panels).
    """
    x = np.arange(len(factors), dtype=np.float64)
    r = _column(factors, "r")
    log_r = np.log(np.where(r > 0, r, np.nan))
    panels = []
    ax = svgplot.Axes("fitted exponents s_hat", "factor index", "s")
    for col, mk in (("s_top", "o"), ("s_mle", "s"), ("s_window", "^")):
        ax.plot(x, _column(factors, col), label=col, marker=mk)
    panels.append(ax)
    ax = svgplot.Axes("top-radial coordinate rho", "factor index", "rho")
    ax.plot(x, _column(factors, "rho"), label="rho")
    ax.plot(x, log_r, label="log r (max)", marker=None, dash=True)
    panels.append(ax)
    ax = svgplot.Axes("effective rank and window", "factor index", "rank")
    ax.plot(x, _column(factors, "k_q"), label="k_q")
    ax.plot(x, _column(factors, "k"), label="window k", marker="s")
    ax.plot(x, r, label="r", marker=None, dash=True)
    panels.append(ax)
    ax = svgplot.Axes("chart residual", "factor index", "residual")
    ax.plot(x, _column(factors, "hellinger"), label="Hellinger^2")
    ax.plot(x, _column(factors, "kl"), label="KL", marker="s")
    panels.append(ax)
    ax = svgplot.Axes("tail energy at the window", "factor index", "tail energy")
    ax.plot(x, _column(factors, "tau"), label="tau (empirical)")
    ax.plot(x, _column(factors, "tau_gc"), label="tau_GC (model)", marker="s")
    panels.append(ax)
    ax = svgplot.Axes("window gap (sigma_k - sigma_k+1)/sigma_1", "factor index", "gap (log scale)", log_y=True)
    ax.plot(x, _column(factors, "window_gap"))
    panels.append(ax)
    names = [str(v) for v in factors["name"].tolist()]
    if len(names) <= 16:
        for a in panels:
            a.set_categories(names)
    return svgplot.figure(panels, ncols=3)


def spectra_figure(table) -> str:
    """Per-matrix metrics of ``physgsa spectra``, in checkpoint order, as an SVG document."""
    x = np.arange(len(table), dtype=np.float64)
    r = _column(table, "r")
    panels = []
    ax = svgplot.Axes("power-law exponent alpha of the eigenvalue tail", "matrix index", "alpha")
    ax.hspan(2, 6, label="2 <= alpha <= 6")
    ax.scatter(x, _column(table, "alpha"))
    panels.append(ax)
    ax = svgplot.Axes("norms (log10)", "matrix index", "log10")
    ax.scatter(x, _column(table, "log_norm"), label="log_norm")
    ax.scatter(x, _column(table, "log_spectral_norm"), label="log_spectral_norm")
    panels.append(ax)
    ax = svgplot.Axes("effective ranks, as fractions of r", "matrix index", "fraction of r")
    ax.scatter(x, _ratio(_column(table, "stable_rank"), r), label="stable_rank / r")
    ax.scatter(x, _ratio(_column(table, "k_q"), r), label="k_q / r")
    panels.append(ax)
    ax = svgplot.Axes("Gibbs–Cartan exponents", "matrix index", "s")
    for col in ("s_top", "s_mle"):
        ax.scatter(x, _column(table, col), label=col)
    panels.append(ax)
    return svgplot.figure(panels, ncols=2, panel_w=630)
