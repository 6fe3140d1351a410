"""Writing a comparison: compare.parquet, compare_factors.parquet, compare.json and compare.html.

The page shows, per interface, BASE's and OTHER's ``|A|`` side by side (rows by BASE's groups,
binned to at most 96 x 96 by mean ``|entry|``) with the columns whose support changed marked
underneath, the verdict table, and, for a sequence of checkpoints, each interface's
``||Delta A||_F / rho_static`` and the factors' ``rho`` drift against the checkpoint.
"""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..runs.records import OutputLock, refuse_foreign
from .png import VIRIDIS, colourise, encode_png
from .pages import _fmt

__all__ = ["save_compare", "COMPARE_FILES"]

COMPARE_FILES = ("compare.parquet", "compare_factors.parquet", "compare.json", "compare.html")


def _binned(a: np.ndarray, order: np.ndarray, size: int = 96) -> np.ndarray:
    x = np.abs(a[order])
    rows = np.array_split(np.arange(x.shape[0]), min(size, x.shape[0]))
    cols = np.array_split(np.arange(x.shape[1]), min(size, x.shape[1]))
    return np.array([[x[np.ix_(r, c)].mean() for c in cols] for r in rows])


def _png(img: np.ndarray, vmax: float, scale: int = 3) -> str:
    rgb = colourise(img, VIRIDIS, 0.0, vmax)
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    return "data:image/png;base64," + base64.b64encode(encode_png(rgb)).decode()


def _marks(cols: list[int], n: int, width: int, scale: int = 3) -> str:
    """A strip with the changed columns in red, at the binned heatmap's column positions."""
    nb = min(96, n)
    bins = np.array_split(np.arange(n), nb)
    hit = np.array([any(c in set(cols) for c in b) for b in bins])
    rgb = np.full((4, nb, 3), 235, dtype=np.uint8)
    rgb[:, hit] = (214, 39, 40)
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    return "data:image/png;base64," + base64.b64encode(encode_png(rgb)).decode()


def _page(result, images: list[dict]) -> str:
    ifs = result.interfaces
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>"
        for r in ifs[["other", "interface", "delta_norm", "drift_bound", "rho_static", "ratio", "certified",
                      "direct_same", "changed", "labels_kept"]].itertuples(index=False))
    panels = []
    for im in images:
        panels.append(
            f"<section><h3>{html.escape(im['other'])} · {html.escape(im['interface'])} — "
            f"{'certified the same' if im['certified'] else 'not certified'}; direct check: "
            f"{'same' if im['direct_same'] else 'differs in ' + html.escape(im['changed'])}</h3>"
            f"<div class='pair'><figure><img alt='base |A0|' src='{im['base']}'><figcaption>base |A₀|</figcaption>"
            f"</figure><figure><img alt='other |A|' src='{im['other_img']}'><figcaption>{html.escape(im['other'])}"
            f" |A| (same windows, groups, thresholds)</figcaption></figure></div>"
            f"<img alt='changed columns' src='{im['marks']}'><div class='muted'>columns whose support changed: "
            f"{html.escape(', '.join(map(str, im['cols'][:40])) or 'none')}</div></section>")
    traj = ""
    if len(result.document["others"]) > 1:
        from .svgplot import Axes, figure

        ax = Axes(title="||ΔA||_F / rho_static against the checkpoint", xlabel="checkpoint", ylabel="ratio")
        x = np.arange(len(result.document["others"]), dtype=float)
        for name in ifs["interface"].unique():
            sel = ifs[ifs["interface"] == name]
            ax.plot(x, np.asarray(sel["ratio"].astype("float64").fillna(np.nan)), label=str(name))
        traj = f"<h2>Trajectories</h2><div>{figure([ax], 1)}</div>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>physgsa compare</title><style>"
        "body{font-family:sans-serif;margin:1.5em;max-width:1400px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}.pair{display:flex;gap:1em}"
        "figure{margin:0}.muted{color:#666;font-size:12px}</style></head><body>"
        f"<h1>physgsa compare</h1><p>base: <code>{html.escape(str(result.document['base']))}</code>; others: "
        f"{html.escape(', '.join(result.document['others']))}. An interface is certified the same when OTHER's "
        "matrix lies within BASE's static radius (then its supports, graph, hubs and masks provably did not "
        "change); the direct check recomputes them.</p>"
        "<h2>Interfaces</h2><table><tr><th>other</th><th>interface</th><th>||ΔA||_F</th><th>a priori bound</th>"
        f"<th>rho_static</th><th>ratio</th><th>certified</th><th>direct same</th><th>changed</th><th>labels kept</th>"
        f"</tr>{rows}</table>{traj}<h2>Side by side</h2>{''.join(panels)}</body></html>\n")


def save_compare(result, out, *, keep_others: bool = False) -> Path:
    """Write the comparison's four files into ``out`` (locked; physgsa's own files only)."""
    out = Path(out)
    with OutputLock(out, what="compare"):
        refuse_foreign(out, keep_others)
        stage = Path(tempfile.mkdtemp(prefix=".physgsa-save-", dir=out))
        try:
            result.interfaces.to_parquet(stage / "compare.parquet", index=False, engine="pyarrow",
                                         compression="zstd")
            result.factors.to_parquet(stage / "compare_factors.parquet", index=False, engine="pyarrow",
                                      compression="zstd")
            (stage / "compare.json").write_text(json.dumps(result.document, indent=2, sort_keys=True,
                                                           default=_json) + "\n", encoding="utf-8")
            (stage / "compare.html").write_text(_page(result, result.images), encoding="utf-8")
            for name in COMPARE_FILES:
                os.replace(stage / name, out / name)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return out


def _json(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def interface_images(name, where, a0, a_o, part, cols, certified, direct_same, changed) -> dict:
    """The side-by-side images of one interface (rows ordered by BASE's groups)."""
    order = np.argsort(part.groups, kind="stable")
    b0, b1 = _binned(a0, order), _binned(a_o, order)
    vmax = float(max(b0.max(), b1.max())) or 1.0
    return {"other": name, "interface": where, "base": _png(b0, vmax), "other_img": _png(b1, vmax),
            "marks": _marks(cols, a0.shape[1], 0), "cols": cols, "certified": certified,
            "direct_same": direct_same, "changed": changed}
