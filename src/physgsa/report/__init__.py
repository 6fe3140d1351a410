"""The report: every result's pages and figures, drawn from the result alone (never computed here).

=================  =============================================  ==========================
result             what is drawn                                  drawn by
=================  =============================================  ==========================
Result (certify)   ``report.html`` and ``figures/NAME.svg``        :func:`pages.draw_certify`
SpectraResult      ``spectra.html``                               :func:`pages.draw_spectra`
CompareResult      ``compare.html``                               :func:`compare.draw_compare`
PlanResult         ``plan.html``                                  :func:`plan.draw_plan`
=================  =============================================  ==========================

:func:`draw` writes a result's pages into a folder (the staging folder of a save:
:func:`physgsa.save` passes it to ``result.save(out, pages=...)`` so that the pages land
together with the data); :func:`write` redraws them into an existing output directory through
the one staged write; :func:`rerender` is ``physgsa report DIR``; :func:`panels` returns the
panels in a notebook without writing a file, and :func:`summary` the verdict as HTML.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from html import escape
from pathlib import Path
from typing import Any

from ..core.validation import OutputDirectoryError
from ..outputs.compare import CompareResult
from ..outputs.directory import FIGURES_DIR, OutputLock, held, staged_write
from ..outputs.plan import PlanResult
from ..outputs.result import OWN_FIGURE, Result, load_result
from ..outputs.spectra import SpectraResult
from ..outputs.study import OWN_FIGURE as STUDY_FIGURE
from ..outputs.study import StudyResult
from .compare import draw_compare
from .figures import Figure, result_figures
from .pages import draw_certify, draw_spectra, fmt, verdict_view
from .plan import draw_plan
from .study import draw_study

__all__ = ["draw", "write", "rerender", "panels", "summary"]


@dataclass(frozen=True)
class _Pages:
    """How one result type is drawn: its page writer and the folders it merges (with their own files)."""

    draw: Callable[[Any, Path], None]
    folders: dict[str, re.Pattern[str]]


def _draw_study(result: StudyResult, directory: Path) -> None:
    """The reports of the models the study certified just now (into their own run directories), then its page."""
    for entry in result.entries:
        if entry.fresh and entry.run is not None:
            write(entry.result, entry.run)
    draw_study(result, directory)


#: Each result type's pages. The study's (StudyResult: report.study's page and figures/study-*.svg,
#: merged by outputs.study.OWN_FIGURE) joins here.
_PAGES: dict[type, _Pages] = {
    Result: _Pages(draw_certify, {FIGURES_DIR: OWN_FIGURE}),
    SpectraResult: _Pages(draw_spectra, {}),
    CompareResult: _Pages(draw_compare, {}),
    PlanResult: _Pages(draw_plan, {}),
    StudyResult: _Pages(_draw_study, {FIGURES_DIR: STUDY_FIGURE}),
}


def _pages(result: Any) -> _Pages:
    try:
        return _PAGES[type(result)]
    except KeyError:
        raise TypeError(f"physgsa.report draws {', '.join(t.__name__ for t in _PAGES)}; "
                        f"got {type(result).__name__}.") from None


def folders(result: Any) -> dict[str, re.Pattern[str]]:
    """The folders ``result``'s pages merge into an output directory, with the pattern of their own files."""
    return _pages(result).folders


def draw(result: Any, directory: Path) -> None:
    """Write the pages (and figures) of ``result`` into the folder ``directory``, as they are."""
    _pages(result).draw(result, Path(directory))


def write(result: Any, out, *, lock: OutputLock | None = None) -> Path:
    """Draw the pages of ``result`` into the output directory ``out``, replacing the old ones together.

    The pages are staged and renamed into place (:func:`~physgsa.outputs.directory.staged_write`):
    a failure leaves the old pages; physgsa's stale figures go, a user's files stay.

    Parameters
    ----------
    result : Result, SpectraResult or CompareResult
    out : path
        An output directory.
    lock : OutputLock, optional
        The lock the caller holds on ``out``; without it ``out`` is locked while writing.
    """
    out = Path(out)
    with held(out, lock, what="report") as own:
        return staged_write(out, partial(draw, result), lock=own, folders=folders(result))


def rerender(directory) -> Path:
    """Re-render ``DIR/report.html`` and ``DIR/figures/`` from the saved results (no recomputation)."""
    d = Path(directory)
    if not d.is_dir():
        raise OutputDirectoryError(f"'{d}' is not a physgsa output directory: it does not exist or is not a folder.")
    with OutputLock(d, what="report") as lock:
        write(load_result(d), d, lock=lock)
    return d / "report.html"


def panels(result: Result) -> dict[str, Figure]:
    """Every panel of the report, drawn from ``result`` without reading or writing a file.

    Returns a dict from file name (as under ``DIR/figures/``, without ``.svg``) to
    :class:`~physgsa.report.figures.Figure`: each one shows itself in a notebook and has ``.svg``
    (the SVG text) and ``.save(path)``.
    """
    return result_figures(result)


class HTML(str):
    """HTML text that a notebook shows rendered (``_repr_html_``); everywhere else a plain ``str``."""

    def _repr_html_(self) -> str:
        return str(self)


def summary(result: Result) -> HTML:
    """In a notebook: the verdict and the smallest margins, as the report's top shows them (HTML)."""
    v = result.verdict
    view = verdict_view(v)
    colour = {"all": "#e9f7ef", "some": "#fef5e0", "none": "#fbeaea"}[view["kind"]]
    rows = "".join(
        f"<tr><td>{escape(str(m['interface']))}</td><td>{fmt(m['rho_static'])}</td>"
        f"<td>{escape(str(m['binding'].get('kind', '')))}</td><td>{fmt(m['a_priori_ratio'])}</td>"
        f"<td>{fmt(m['measured_ratio'])}</td></tr>" for m in v.get("smallest_margins", []))
    t = v.get("n_no_channel_structure", 0)
    trivial = f"; {t} without channel structure" if t else ""
    return HTML(f'<div style="padding:0.5em 0.8em;border-radius:5px;background:{colour}">'
                f"<strong>{escape(view['sentence'])}</strong>; {escape(view['breaks'])}{trivial}.</div>"
                "<table><tr><th>interface</th><th>rho_static</th><th>binding margin</th>"
                "<th>eps_trunc / (safety · rho_static)</th><th>||E||_F / rho_static</th></tr>"
                f"{rows}</table><p>A ratio above 1 means that verdict fails, by that factor. "
                "<code>physgsa.report.panels(result)</code> draws every panel of the report; "
                "<code>physgsa.save(result, DIR)</code> writes the files, the report and the figures.</p>")
