"""``compare.html``: BASE's and OTHER's ``|A|`` side by side, the verdicts, and the trajectories.

The page shows, per interface, BASE's and OTHER's ``|A|`` side by side (rows by BASE's groups,
binned to at most 96 x 96 by mean ``|entry|``, :func:`physgsa.core.heatmaps.binned_abs`) with
the columns whose support changed marked underneath, what the graded certificate certifies under
the change in one plain sentence per share (:func:`graded_sentences`), the verdict table, and, for a sequence of
checkpoints, each interface's ``||Delta A||_F / rho_static`` and the factors' ``rho`` drift
against the checkpoint. It is drawn from a :class:`~physgsa.outputs.compare.CompareResult`
(its ``panels``), through the template ``templates/compare.html.j2``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup

from ..core.heatmaps import changed_bins
from ..outputs.compare import CompareResult
from .figures import png_uri
from .pages import template
from .png import VIRIDIS, colourise, encode_png
from .svgplot import Axes, figure

__all__ = ["render_compare_page", "draw_compare", "graded_sentences"]

_TABLE_COLS = ["other", "interface", "delta_norm", "drift_bound", "rho_static", "ratio", "certified", "direct_same",
               "changed", "labels_kept", "certified_share_apriori", "certified_share_measured",
               "profile_at_drift_bound", "profile_at_delta_norm"]


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
    ifs = result.interfaces
    rows = list(ifs[[c for c in _TABLE_COLS if c in ifs.columns]].itertuples(index=False))
    trajectory = _trajectory(result)
    graded = ({(r.other, r.interface): graded_sentences(r) for r in ifs.itertuples(index=False)}
              if "certified_share_apriori" in ifs.columns else {})
    return template("compare.html.j2").render(
        base=str(result.document["base"]), others=", ".join(result.document["others"]), rows=rows,
        trajectory=None if trajectory is None else Markup(trajectory),
        panels=[{**_images(p), "graded": graded.get((p["other"], p["interface"]), [])} for p in result.panels])


def draw_compare(result: CompareResult, directory: Path) -> None:
    """Write ``compare.html`` into ``directory``."""
    (Path(directory) / "compare.html").write_text(render_compare_page(result), encoding="utf-8")
