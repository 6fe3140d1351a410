"""``compare.html``: BASE's and OTHER's ``|A|`` side by side, the verdicts, and the trajectories.

The page shows, per interface, BASE's and OTHER's ``|A|`` side by side (rows by BASE's groups,
binned to at most 96 x 96 by mean ``|entry|``, :func:`physgsa.core.heatmaps.binned_abs`) with
the columns whose support changed marked underneath, the verdict table, and, for a sequence of
checkpoints, each interface's ``||Delta A||_F / rho_static`` and the factors' ``rho`` drift
against the checkpoint. It is drawn from a :class:`~physgsa.outputs.compare.CompareResult`
(its ``panels``), through the template ``templates/compare.html.j2``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from markupsafe import Markup

from ..core.heatmaps import changed_bins
from ..outputs.compare import CompareResult
from .figures import png_uri
from .pages import template
from .png import VIRIDIS, colourise, encode_png
from .svgplot import Axes, figure

__all__ = ["render_compare_page", "draw_compare"]

_TABLE_COLS = ["other", "interface", "delta_norm", "drift_bound", "rho_static", "ratio", "certified", "direct_same",
               "changed", "labels_kept"]


def _png(img: np.ndarray, vmax: float, scale: int = 3) -> str:
    rgb = colourise(img, VIRIDIS, 0.0, vmax)
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    return png_uri(encode_png(rgb))


def _marks(cols: list[int], n: int, scale: int = 3) -> str:
    """A strip with the changed columns in red, at the binned heatmap's column positions."""
    hit = changed_bins(cols, n)
    rgb = np.full((4, hit.shape[0], 3), 235, dtype=np.uint8)
    rgb[:, hit] = (214, 39, 40)
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    return png_uri(encode_png(rgb))


def _images(panel: dict) -> dict:
    """One interface's images: both maps on one colour scale, and the changed-column strip."""
    vmax = float(max(panel["base"].max(), panel["other_map"].max())) or 1.0
    return {**panel, "base": _png(panel["base"], vmax), "other_img": _png(panel["other_map"], vmax),
            "marks": _marks(panel["cols"], panel["n_cols"]),
            "cols_text": ", ".join(map(str, panel["cols"][:40])) or "none"}


def _trajectory(result: CompareResult) -> str | None:
    """Each interface's ``||Delta A||_F / rho_static`` against the checkpoint (a sequence of OTHERs only)."""
    if len(result.document["others"]) <= 1:
        return None
    ifs = result.interfaces
    ax = Axes(title="||ΔA||_F / rho_static against the checkpoint", xlabel="checkpoint", ylabel="ratio")
    x = np.arange(len(result.document["others"]), dtype=float)
    for name in ifs["interface"].unique():
        sel = ifs[ifs["interface"] == name]
        ax.plot(x, np.asarray(sel["ratio"].astype("float64").fillna(np.nan)), label=str(name))
    return figure([ax], 1)


def render_compare_page(result: CompareResult) -> str:
    """The page of ``physgsa compare``, as a string."""
    rows = list(result.interfaces[_TABLE_COLS].itertuples(index=False))
    trajectory = _trajectory(result)
    return template("compare.html.j2").render(
        base=str(result.document["base"]), others=", ".join(result.document["others"]), rows=rows,
        trajectory=None if trajectory is None else Markup(trajectory),
        panels=[_images(p) for p in result.panels])


def draw_compare(result: CompareResult, directory: Path) -> None:
    """Write ``compare.html`` into ``directory``."""
    (Path(directory) / "compare.html").write_text(render_compare_page(result), encoding="utf-8")
