"""Small line and scatter plots written as SVG text, for the report's profile and spectra figures.

matplotlib took seconds per figure, mostly laying out text; these plots need only an axes box,
a few ticks, polylines, markers and a legend, which are a few hundred lines of SVG. Every
text and attribute goes through XML escaping (names come from untrusted files), coordinates
are printed with a fixed precision, and nothing depends on the clock or the machine, so the
same data give the same bytes. The report embeds the SVG as an ``<img>``, where no script in
it could run anyway.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Axes", "figure", "document", "text", "attr", "rich", "text_width", "nice_ticks", "log_ticks", "tick_labels",
           "colour_bar", "spread"]

CYCLE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
_CHAR_W = 6.2  # rough width of one character at the 11 px font, for layout only
_TITLE_H, _LEGEND_H, _LEFT, _RIGHT, _SUBTITLE_H = 24, 15, 60, 12, 14
# Characters XML 1.0 forbids: a name carrying one would make the whole image unreadable.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _escape(data: str) -> str:
    # As xml.sax.saxutils.escape (whose import pulls in urllib: 40 ms of every command's start-up).
    return data.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;")


def text(value) -> str:
    """``value`` as XML character data (escaped, forbidden characters replaced)."""
    return _escape(_NOT_XML.sub("\ufffd", str(value)))


def attr(value) -> str:
    """``value`` as a quoted XML attribute value, quotes included (as ``xml.sax.saxutils.quoteattr``:
    newlines, returns and tabs as character references; single quotes around a value holding
    only double quotes, else double quotes with ``&quot;`` inside).
    """
    data = _escape(_NOT_XML.sub("\ufffd", str(value)))
    data = data.replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
    if '"' not in data:
        return f'"{data}"'
    return f"'{data}'" if "'" not in data else '"{}"'.format(data.replace('"', "&quot;"))


# Our own labels carry a little markup for the math: ``_{...}`` a subscript, ``^{...}`` a
# superscript (``‖A_{0}‖_{F}^{2}``). Names from files never go through it (they use :func:`text`).
_MARK = re.compile(r"([_^])\{([^{}]*)\}")
_SCRIPT = 0.72  # size of a sub- or superscript, relative to the text around it


def _runs_of(label: str) -> list[tuple[str, int]]:
    """``label`` as runs of (text, level): 0 on the line, -1 subscript, +1 superscript."""
    out, pos = [], 0
    for m in _MARK.finditer(label):
        if m.start() > pos:
            out.append((label[pos:m.start()], 0))
        out.append((m.group(2), 1 if m.group(1) == "^" else -1))
        pos = m.end()
    if pos < len(label):
        out.append((label[pos:], 0))
    return out


def rich(value, size: float = 11.0) -> str:
    """One of our own labels as SVG character data: sub- and superscripts as ``tspan`` elements.

    ``size`` is the font size of the enclosing ``text`` element in px (the shifts are in px, so
    they do not depend on the script's own smaller size). Everything is escaped.
    """
    parts, offset = [], 0.0
    for chunk, level in _runs_of(str(value)):
        target = {0: 0.0, -1: 0.28 * size, 1: -0.38 * size}[level]
        body = text(chunk)
        if level == 0 and offset == 0.0:
            parts.append(body)
            continue
        small = f' font-size="{num(_SCRIPT * size)}"' if level else ""
        parts.append(f'<tspan dy="{num(target - offset)}"{small}>{body}</tspan>')
        offset = target
    return "".join(parts)  # each label is its own text element: nothing after it to shift back


def text_width(value, size: float = 11.0, markup: bool = True) -> float:
    """A rough width of a label in px (for layout only: about 0.6 em a character)."""
    runs = _runs_of(str(value)) if markup else [(str(value), 0)]
    return sum(0.6 * size * (_SCRIPT if level else 1.0) * len(chunk) for chunk, level in runs)


def spread(wanted: list[float], gap: float, lo: float, hi: float) -> list[float]:
    """Positions as close as possible to ``wanted`` (sorted) with at least ``gap`` between them.

    Labels that would overlap are pushed apart (and back inside ``[lo, hi]``) instead of being
    dropped, so that every group keeps its label; the caller draws a leader line from a moved
    label to its place.
    """
    n = len(wanted)
    if n == 0:
        return []
    gap = min(gap, (hi - lo) / max(n - 1, 1)) if n > 1 else gap
    pos = list(wanted)
    for i in range(1, n):  # push down
        pos[i] = max(pos[i], pos[i - 1] + gap)
    if pos[-1] > hi:  # then up from the end
        pos[-1] = hi
        for i in range(n - 2, -1, -1):
            pos[i] = min(pos[i], pos[i + 1] - gap)
    if pos[0] < lo:
        shift = lo - pos[0]
        pos = [p + shift for p in pos]
    return pos


def colour_bar(x: float, y: float, height: float, stops: list[str], vmin: float, vmax: float, label: str,
               gid: str, width: float = 12.0) -> list[str]:
    """A vertical colour bar (a vector gradient, highest value at the top), its ticks and its label.

    ``stops`` are colours from the lowest value to the highest; ``label`` is one of our own labels
    (markup allowed). The label runs upwards beside the tick labels, inside the bar's own column.
    """
    parts = [f'<defs><linearGradient id="{gid}" x1="0" y1="1" x2="0" y2="0">'
             + "".join(f'<stop offset="{i / max(len(stops) - 1, 1):.4f}" stop-color="{c}"/>'
                       for i, c in enumerate(stops))
             + "</linearGradient></defs>",
             f'<rect x="{num(x)}" y="{num(y)}" width="{num(width)}" height="{num(height)}" fill="url(#{gid})" '
             'stroke="#555" stroke-width="0.8"/>']
    if vmax > vmin:
        ticks = nice_ticks(vmin, vmax, 5)
        fracs = [(t - vmin) / (vmax - vmin) for t in ticks]
    else:  # a constant map: one colour, one value
        ticks, fracs = [vmin], [0.0]
    labels = tick_labels(ticks)
    for f, lab in zip(fracs, labels):
        ty = y + height * (1.0 - f)
        parts.append(f'<line x1="{num(x + width)}" y1="{num(ty)}" x2="{num(x + width + 3)}" y2="{num(ty)}" '
                     f'stroke="#555"/>'
                     f'<text x="{num(x + width + 5)}" y="{num(ty)}" dy="0.32em" font-size="10">{text(lab)}</text>')
    room = max((text_width(t, 10, markup=False) for t in labels), default=0.0)
    lx = x + width + 9 + room + 10
    parts.append(f'<text transform="translate({num(lx)},{num(y + height / 2)}) rotate(-90)" text-anchor="middle" '
                 f'font-size="11">{rich(label, 11)}</text>')
    return parts


def colour_bar_width(vmin: float, vmax: float, width: float = 12.0) -> float:
    """The horizontal room :func:`colour_bar` takes, from its left edge to the end of its label."""
    ticks = nice_ticks(vmin, vmax, 5) if vmax > vmin else [vmin]
    room = max((text_width(t, 10, markup=False) for t in tick_labels(ticks)), default=0.0)
    return width + 9 + room + 10 + 6


def num(v: float) -> str:
    """A coordinate with one decimal: short, and the same on every machine."""
    s = f"{v:.1f}"
    return "0.0" if s == "-0.0" else s


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) inside ``[lo, hi]``.

    Parameters
    ----------
    lo, hi : float
        The range; ``hi <= lo`` gives ``[lo]``.
    n : int
        About how many ticks to aim for (at most this many intervals).

    Returns
    -------
    list of float
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / n
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if (hi - lo) / (m * mag) <= n)
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [k * step for k in range(first, last + 1)]  # k * step, not a running sum: no drift


def log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values for a log axis over ``[lo, hi]`` (both positive): decades, else 1-2-5 steps, else linear."""
    e0, e1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    decades = [10.0 ** e for e in range(e0, e1 + 1) if lo <= 10.0 ** e <= hi]
    if len(decades) >= 2:
        every = max(1, math.ceil(len(decades) / 6))
        return decades[::every]
    for mantissas in ((1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0 ** e for e in range(e0, e1 + 1) for m in mantissas if lo <= m * 10.0 ** e <= hi]
        if len(ticks) >= 2:
            return ticks
    return nice_ticks(lo, hi, 4)  # a range narrower than from one digit to the next: linear steps


def tick_labels(ticks: list[float], log: bool = False) -> list[str]:
    """Short labels for tick values, with as few decimals as tell them apart."""
    if log or not ticks:
        return [f"{t:.3g}" for t in ticks]
    big = max(abs(t) for t in ticks)
    if big >= 1e5 or 0 < big < 1e-3:
        return [f"{t:.3g}" for t in ticks]
    step = min((abs(b - a) for a, b in zip(ticks, ticks[1:])), default=big or 1.0)
    decimals = next((d for d in range(9) if all(abs(round(t, d) - t) < 1e-6 * step for t in ticks)), 8)
    return [("0" if abs(t) < 1e-12 * (big or 1.0) else f"{t:.{decimals}f}") for t in ticks]


@dataclass
class _Series:
    x: np.ndarray
    y: np.ndarray
    label: str | None
    colour: str
    marker: str | None
    line: bool
    dash: bool
    step: bool = False  # a step function: y[i] holds on [x[i], x[i + 1])
    bar: tuple[float, float] | None = None  # bars: (width, offset) in x units


@dataclass
class _VLine:
    x: float
    label: str | None
    colour: str
    dash: bool


@dataclass
class _Span:
    lo: float
    hi: float
    label: str | None
    colour: str


def _marker_path(kind: str, xs, ys, r: float) -> str:
    """Every marker of a series as one path (one element, however many points)."""
    out = []
    for x, y in zip(xs, ys):
        if kind == "s":
            out.append(f"M{num(x - r)} {num(y - r)}h{num(2 * r)}v{num(2 * r)}h{num(-2 * r)}z")
        elif kind == "^":
            out.append(f"M{num(x)} {num(y - 1.2 * r)}l{num(1.1 * r)} {num(1.9 * r)}h{num(-2.2 * r)}z")
        else:  # a circle, as two arcs
            arc = f"a{num(r)} {num(r)} 0 1 0"
            out.append(f"M{num(x - r)} {num(y)}{arc} {num(2 * r)} 0{arc} {num(-2 * r)} 0")
    return "".join(out)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Start and end (exclusive) of each run of True: the pieces of a line between gaps."""
    d = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


@dataclass
class Axes:
    """One panel: a title, axis labels, series and an optional shaded band.

    Parameters
    ----------
    title, xlabel, ylabel : str
        Our own labels: escaped when drawn, with ``_{...}`` and ``^{...}`` drawn as sub- and
        superscripts (:func:`rich`).
    subtitle : str
        Plain text under the title (a name from a file may go here).
    log_y, log_x : bool
        A log10 axis: only positive values are drawn.
    ylim : (float, float) or None
        A fixed y range instead of the data's.
    """

    title: str
    xlabel: str = ""
    ylabel: str = ""
    log_y: bool = False
    #: A second line under the title, plain text (it may hold a name from a file: never markup).
    subtitle: str = ""
    series: list = field(default_factory=list)
    spans: list = field(default_factory=list)
    categories: list | None = None
    log_x: bool = False
    ylim: tuple | None = None
    vlines: list = field(default_factory=list)

    def _colour(self, colour):
        return colour or CYCLE[len(self.series) % len(CYCLE)]

    def plot(self, x, y, label=None, marker="o", dash=False, colour=None) -> None:
        """A line through the points, broken where a value is missing, with markers."""
        self.series.append(_Series(_floats(x), _floats(y), label, self._colour(colour), marker, True, dash))

    def scatter(self, x, y, label=None, colour=None) -> None:
        """Markers only."""
        self.series.append(_Series(_floats(x), _floats(y), label, self._colour(colour), "o", False, False))

    def step(self, x, y, label=None, dash=False, colour=None) -> None:
        """A step function: ``y[i]`` from ``x[i]`` to ``x[i + 1]`` (the last value ends at ``x[-1]``)."""
        self.series.append(_Series(_floats(x), _floats(y), label, self._colour(colour), None, True, dash, step=True))

    def bar(self, x, y, label=None, colour=None, width=0.8, offset=0.0) -> None:
        """Bars from 0 to ``y`` centred at ``x + offset``, ``width`` wide (in x units)."""
        self.series.append(_Series(_floats(x), _floats(y), label, self._colour(colour), None, False, False,
                                   bar=(float(width), float(offset))))

    def vline(self, x: float, label=None, colour="#444", dash=True) -> None:
        """A vertical marker line at ``x`` across the plot (skipped where ``x`` cannot be drawn)."""
        self.vlines.append(_VLine(float(x), label, colour, dash))

    def hspan(self, lo: float, hi: float, label=None, colour="#52be80") -> None:
        """A shaded horizontal band from ``lo`` to ``hi``."""
        self.spans.append(_Span(float(lo), float(hi), label, colour))

    def set_categories(self, labels) -> None:
        """Label the integer x positions 0, 1, ... with these texts (drawn slanted)."""
        self.categories = [str(v) for v in labels]

    def _ok(self, y: np.ndarray) -> np.ndarray:
        ok = np.isfinite(y)
        if self.log_y:
            ok &= np.where(ok, y, 0.0) > 0
        return ok

    def _xok(self, x: np.ndarray) -> np.ndarray:
        ok = np.isfinite(x)
        if self.log_x:
            ok &= np.where(ok, x, 0.0) > 0
        return ok

    def _tx(self, x: np.ndarray) -> np.ndarray:
        """The x values in plot coordinates (log10 on a log axis; what cannot be drawn is NaN)."""
        x = np.asarray(x, dtype=np.float64)
        if not self.log_x:
            return x
        ok = self._xok(x)
        return np.where(ok, np.log10(np.where(ok, x, 1.0)), np.nan)

    def _ranges(self):
        xs = [self._tx(s.x)[self._xok(s.x)] for s in self.series]
        xs += [self._tx(np.array([v.x]))[self._xok(np.array([v.x]))] for v in self.vlines]
        ys = [s.y[self._ok(s.y) & self._xok(s.x)] for s in self.series]
        x = np.concatenate(xs) if xs else np.zeros(0)
        y = np.concatenate(ys) if ys else np.zeros(0)
        if self.categories:
            x = np.r_[x, 0, len(self.categories) - 1]
        if any(s.bar for s in self.series):
            x = np.r_[x, [v for s in self.series if s.bar for v in (s.x.min() + s.bar[1] - s.bar[0] / 2,
                                                                    s.x.max() + s.bar[1] + s.bar[0] / 2)]]
        if self.log_y:
            y = np.log10(y)
        elif self.spans:
            y = np.r_[y, [v for s in self.spans for v in (s.lo, s.hi) if math.isfinite(v)]]
        xr = _padded(x, (0.0, 1.0))
        if any(s.step for s in self.series) and x.size:
            xr = (float(x.min()), float(x.max()))  # a step function fills its axis: no margins
        return xr, (tuple(self.ylim) if self.ylim is not None else _padded(y, (0.0, 1.0)))

    def _legend_rows(self, width: float) -> list[list]:
        items = [s for s in self.spans + self.series + self.vlines if s.label]
        rows, used = [[]], 0.0
        for it in items:
            w = 34 + text_width(it.label)
            if rows[-1] and used + w > width:
                rows.append([])
                used = 0.0
            rows[-1].append(it)
            used += w
        return rows if items else []

    def render(self, x0: float, y0: float, w: float, header: float, plot_h: float) -> list[str]:
        """SVG elements of the panel, its top left corner at ``(x0, y0)``."""
        (xlo, xhi), (ylo, yhi) = self._ranges()
        left, right = x0 + self.left_margin(), x0 + w - _RIGHT
        top, bottom = y0 + header, y0 + header + plot_h
        px = lambda v: left + (v - xlo) / (xhi - xlo) * (right - left)  # noqa: E731
        py = lambda v: bottom - (v - ylo) / (yhi - ylo) * (bottom - top)  # noqa: E731
        out = [f'<text x="{num((left + right) / 2)}" y="{num(y0 + 16)}" text-anchor="middle" font-size="13">'
               f"{rich(self.title, 13)}</text>"]
        sub = _SUBTITLE_H if self.subtitle else 0
        if self.subtitle:
            out.append(f'<text x="{num((left + right) / 2)}" y="{num(y0 + 30)}" text-anchor="middle" fill="#666">'
                       f"{text(shorten(self.subtitle, 70))}</text>")
        out += self._legend(left, y0 + _TITLE_H + sub, right - left)
        out += self._yaxis(left, right, py, ylo, yhi)
        out += self._xaxis(bottom, px, xlo, xhi)
        for s in self.spans:
            lo, hi = max(s.lo, ylo), min(s.hi, yhi)
            if hi > lo and not self.log_y:
                out.append(f'<rect x="{num(left)}" y="{num(py(hi))}" width="{num(right - left)}" '
                           f'height="{num(py(lo) - py(hi))}" fill={attr(s.colour)} fill-opacity="0.15"/>')
        for s in self.series:
            ok = self._ok(s.y) & self._xok(s.x)
            y = np.log10(np.where(ok, s.y, 1.0)) if self.log_y else s.y
            X, Y = px(self._tx(s.x)), py(y)
            if s.bar is not None:
                out += _bars(s, X, ok, px, py(max(ylo, 0.0)), py)
                continue
            if s.step:
                dash = ' stroke-dasharray="6 4"' if s.dash else ""
                for a, b in _runs(ok):
                    out.append(f'<polyline points="{_step_points(X[a:b], Y[a:b])}" fill="none" '
                               f'stroke={attr(s.colour)} stroke-width="1.6"{dash}/>')
                continue
            if s.line:
                for a, b in _runs(ok):
                    pts = " ".join(f"{num(X[i])},{num(Y[i])}" for i in range(a, b))
                    dash = ' stroke-dasharray="6 4"' if s.dash else ""
                    out.append(f'<polyline points="{pts}" fill="none" stroke={attr(s.colour)} stroke-width="1.6"'
                               f'{dash}/>')
            if s.marker and ok.any():
                r = 3.2 if s.line else 2.6
                out.append(f'<path d="{_marker_path(s.marker, X[ok], Y[ok], r)}" fill={attr(s.colour)} '
                           f'fill-opacity="0.9"/>')
        for v in self.vlines:
            xv = self._tx(np.array([v.x]))[0]
            if math.isfinite(xv) and xlo <= xv <= xhi:
                dash = ' stroke-dasharray="4 3"' if v.dash else ""
                out.append(f'<line x1="{num(px(xv))}" y1="{num(top)}" x2="{num(px(xv))}" y2="{num(bottom)}" '
                           f'stroke={attr(v.colour)} stroke-width="1.3"{dash}/>')
        out.append(f'<rect x="{num(left)}" y="{num(top)}" width="{num(right - left)}" height="{num(plot_h)}" '
                   'fill="none" stroke="#444"/>')
        out.append(f'<text transform="translate({num(x0 + 13)},{num((top + bottom) / 2)}) rotate(-90)" '
                   f'text-anchor="middle">{rich(self.ylabel)}</text>')
        return out

    def _legend(self, x: float, y: float, width: float) -> list[str]:
        out = []
        for k, row in enumerate(self._legend_rows(width)):
            cx, cy = x, y + k * _LEGEND_H + 8
            for it in row:
                if isinstance(it, _Span):
                    out.append(f'<rect x="{num(cx)}" y="{num(cy - 5)}" width="22" height="10" fill={attr(it.colour)} '
                               'fill-opacity="0.3"/>')
                elif isinstance(it, _VLine):
                    dash = ' stroke-dasharray="4 3"' if it.dash else ""
                    out.append(f'<line x1="{num(cx + 11)}" y1="{num(cy - 6)}" x2="{num(cx + 11)}" y2="{num(cy + 6)}" '
                               f'stroke={attr(it.colour)} stroke-width="1.3"{dash}/>')
                elif it.bar is not None:
                    out.append(f'<rect x="{num(cx + 4)}" y="{num(cy - 5)}" width="14" height="10" '
                               f'fill={attr(it.colour)}/>')
                else:
                    if it.line:
                        dash = ' stroke-dasharray="6 4"' if it.dash else ""
                        out.append(f'<line x1="{num(cx)}" y1="{num(cy)}" x2="{num(cx + 22)}" y2="{num(cy)}" '
                                   f'stroke={attr(it.colour)} stroke-width="1.6"{dash}/>')
                    if it.marker:
                        out.append(f'<path d="{_marker_path(it.marker, [cx + 11], [cy], 3.2)}" '
                                   f'fill={attr(it.colour)}/>')
                out.append(f'<text x="{num(cx + 27)}" y="{num(cy + 4)}">{rich(it.label)}</text>')
                cx += 34 + text_width(it.label)
        return out

    def _yaxis(self, left, right, py, ylo, yhi) -> list[str]:
        if self.log_y:
            ticks = [math.log10(t) for t in log_ticks(10.0 ** ylo, 10.0 ** yhi)]
            labels = tick_labels([10.0 ** t for t in ticks], log=True)
        else:
            ticks = nice_ticks(ylo, yhi)
            labels = tick_labels(ticks)
        out = []
        for t, lab in zip(ticks, labels):
            y = num(py(t))
            out.append(f'<line x1="{num(left)}" y1="{y}" x2="{num(right)}" y2="{y}" stroke="#e8e8e8"/>'
                       f'<line x1="{num(left - 4)}" y1="{y}" x2="{num(left)}" y2="{y}" stroke="#444"/>'
                       f'<text x="{num(left - 6)}" y="{y}" dy="0.32em" text-anchor="end">{text(lab)}</text>')
        return out

    def _xaxis(self, bottom, px, xlo, xhi) -> list[str]:
        out = []
        if self.categories:
            # Every position gets a tick; names are written where they do not overlap (every
            # ``step``-th one: the table beside the figure lists them all, in the same order).
            spacing = abs(px(1) - px(0)) if len(self.categories) > 1 else 99.0
            step = max(1, math.ceil(_CATEGORY_PX / max(spacing, 1e-9)))
            for i, lab in enumerate(self.categories):
                x = num(px(i))
                out.append(f'<line x1="{x}" y1="{num(bottom)}" x2="{x}" y2="{num(bottom + 4)}" stroke="#444"/>')
                if i % step == 0:
                    out.append(f'<text transform="translate({x},{num(bottom + 10)}) rotate(-60)" text-anchor="end" '
                               f'dy="0.32em" font-size="10">{text(shorten(lab))}</text>')
            room = 14 + _category_room(self.categories)
        else:
            if self.log_x:
                ticks = [math.log10(t) for t in log_ticks(10.0 ** xlo, 10.0 ** xhi)]
                labels = tick_labels([10.0 ** t for t in ticks], log=True)
            else:
                ticks = nice_ticks(xlo, xhi)
                labels = tick_labels(ticks)
            for t, lab in zip(ticks, labels):
                x = num(px(t))
                out.append(f'<line x1="{x}" y1="{num(bottom)}" x2="{x}" y2="{num(bottom + 4)}" stroke="#444"/>'
                           f'<text x="{x}" y="{num(bottom + 15)}" text-anchor="middle">{text(lab)}</text>')
            room = 20
        out.append(f'<text x="{num((px(xlo) + px(xhi)) / 2)}" y="{num(bottom + room + 12)}" text-anchor="middle">'
                   f"{rich(self.xlabel)}</text>")
        return out

    def left_margin(self) -> float:
        """Room left of the plot: the y ticks, and the first slanted name, which reaches left of its tick."""
        if not self.categories:
            return _LEFT
        return max(_LEFT, 8 + 0.5 * text_width(shorten(self.categories[0]), 10, markup=False))

    def bottom_room(self) -> float:
        """Height needed under the plot for the x tick labels and the x label."""
        return (14 + _category_room(self.categories) if self.categories else 20) + 20


def _step_points(X: np.ndarray, Y: np.ndarray) -> str:
    """A step function's polyline: across to each next x, then up or down; sub-pixel steps merged.

    Steps closer than 0.1 px are drawn as one vertical stroke through the lowest and highest
    value among them (nothing visible is lost), and a run of one value as one horizontal stroke,
    so that a profile of thousands of steps stays a small file. ``X`` and ``Y`` are finite pixel
    coordinates. Vectorized (a profile has tens of thousands of steps): the points and their
    0.1-px columns are arrays, and each column keeps its first point, its first lowest and first
    highest points and its last point, in order.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    n = X.shape[0]
    # The polyline's points: (X0, Y0), then across to (X_i, Y_{i-1}) and up or down to (X_i, Y_i).
    px = np.empty(2 * n - 1)
    py = np.empty(2 * n - 1)
    px[0], py[0] = X[0], Y[0]
    px[1::2], px[2::2] = X[1:], X[1:]
    py[1::2], py[2::2] = Y[:-1], Y[1:]
    # One stroke per 0.1-px column: runs of equal round(10 x) (half to even, as Python's round).
    key = np.rint(px * 10.0)
    start = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    run = np.repeat(np.arange(start.shape[0]), np.diff(np.append(start, px.shape[0])))
    idx = np.arange(px.shape[0])
    keep = np.zeros(px.shape[0], dtype=bool)
    keep[start] = True
    keep[np.append(start[1:] - 1, px.shape[0] - 1)] = True
    for order in (np.lexsort((idx, py, run)), np.lexsort((idx, -py, run))):
        # The first point of each run in (run, y, index) order: the run's first lowest (or highest).
        first = np.concatenate(([True], run[order][1:] != run[order][:-1]))
        keep[order[first]] = True
    kx, ky = px[keep], py[keep]
    # Interior points of a horizontal run say nothing.
    flat = np.zeros(kx.shape[0], dtype=bool)
    flat[1:-1] = (ky[:-2] == ky[1:-1]) & (ky[1:-1] == ky[2:])
    return " ".join(f"{num(x)},{num(y)}" for x, y in zip(kx[~flat].tolist(), ky[~flat].tolist()))


def _bars(s: _Series, X: np.ndarray, ok: np.ndarray, px, y0: float, py) -> list[str]:
    """A bar series: one rectangle per drawable value, from the baseline ``y0`` (pixels) to it."""
    width, offset = s.bar
    half = abs(px(width / 2) - px(0.0))
    shift = px(offset) - px(0.0)
    out = []
    for x, y, good in zip(X, s.y, ok):
        if not good:
            continue
        top = py(y)
        lo, hi = min(top, y0), max(top, y0)
        out.append(f'<rect x="{num(x + shift - half)}" y="{num(lo)}" width="{num(2 * half)}" '
                   f'height="{num(hi - lo)}" fill={attr(s.colour)}/>')
    return out


def _floats(v) -> np.ndarray:
    """Any column or sequence as float64, with None and pandas' NA as NaN."""
    try:
        return np.asarray(v.to_numpy(dtype=float, na_value=np.nan), dtype=np.float64)
    except (AttributeError, TypeError):
        return np.array([np.nan if x is None else x for x in v], dtype=np.float64)


def _padded(v: np.ndarray, empty: tuple[float, float]) -> tuple[float, float]:
    """The data range with 5 % margins (matplotlib's default); a constant gets a unit-ish width."""
    if v.size == 0:
        return empty
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        d = abs(lo) * 0.1 or 0.5
        return lo - d, hi + d
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


_MAX_LABEL = 26
_CATEGORY_PX = 14.0  # closest two slanted category names may be, in px along the axis


def shorten(label: str, most: int = _MAX_LABEL) -> str:
    """A long name, shortened so that names that differ stay different (the table has it in full).

    A dotted module path first abbreviates its words to their initials from the left, keeping
    every number and the last two parts (``encoder.layer.3.attention.self.key.weight`` ->
    ``e.l.3.a.self.key.weight``): the layer index is what tells the factors apart. Anything still
    too long keeps its head and tail.
    """
    if len(label) <= most:
        return label
    parts = label.split(".")
    for i in range(max(len(parts) - 2, 0)):
        if len(".".join(parts)) <= most:
            break
        if parts[i] and not parts[i].isdigit():
            parts[i] = parts[i][0]
    short = ".".join(parts)
    if len(short) <= most:
        return short
    head = max(9, most // 3)
    return short[:head] + "…" + short[-(most - head - 1):]


def _category_room(labels) -> float:
    longest = max((len(shorten(s)) for s in labels), default=0)
    return 5.6 * longest * math.sin(math.radians(60))


def document(width: float, height: float, parts: list[str]) -> str:
    """A standalone SVG document of the given size around ``parts`` (a white background)."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'width="{num(width)}" height="{num(height)}" '
            f'viewBox="0 0 {num(width)} {num(height)}" font-family={attr(FONT)} font-size="11" fill="#222">'
            f'<rect width="100%" height="100%" fill="#fff"/>' + "\n".join(parts) + "</svg>\n")


def figure(axes: list[Axes], ncols: int, panel_w: float = 420, plot_h: float = 170) -> str:
    """Panels in a grid, ``ncols`` wide, as one SVG document.

    Parameters
    ----------
    axes : list of Axes
        The panels, row by row.
    ncols : int
        Panels per row.
    panel_w, plot_h : float
        Width of a panel and height of its plotting box, in px; titles, legends and tick labels
        add to the height, row by row, so that the boxes of one row line up.

    Returns
    -------
    str
        The SVG text.
    """
    parts, y = [], 8.0
    for start in range(0, len(axes), ncols):
        row = axes[start:start + ncols]
        header = (_TITLE_H + 4 + _LEGEND_H * max(len(a._legend_rows(panel_w - _LEFT - _RIGHT)) for a in row)
                  + (_SUBTITLE_H if any(a.subtitle for a in row) else 0))
        for k, a in enumerate(row):
            parts += a.render(k * panel_w, y, panel_w, header, plot_h)
        y += header + plot_h + max(a.bottom_room() for a in row) + 8
    return document(ncols * panel_w, y, parts)
