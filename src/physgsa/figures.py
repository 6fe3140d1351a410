"""The report's figures, drawn with matplotlib (Agg) from saved results only.

Every figure returns PNG bytes (no timestamp or software metadata, so the same results give
the same bytes). Axes are labelled, heatmaps carry colour bars, groups and blocks are marked
where they fit.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

__all__ = ["profiles_figure", "interface_figure", "spectra_figure", "MASK_COLOURS", "LABEL_COLOURS"]

MASK_COLOURS = ("#d9d9d9", "#1b9e77", "#d95f02")  # noise, core, overlap
LABEL_COLOURS = ("#1b9e77", "#7570b3", "#e7298a", "#ffffff")  # SC, SA, ST, zero
_DPI = 80


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def profiles_figure(factors) -> bytes:
    """Part I profiles against depth: exponents, rho, windows, residuals, tails."""
    x = np.arange(len(factors))
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    ax = axes[0, 0]
    for col, mk in (("s_top", "o"), ("s_mle", "s"), ("s_window", "^")):
        y = factors[col].to_numpy(dtype=float, na_value=np.nan)
        ax.plot(x, y, marker=mk, label=col)
    ax.set(title="fitted exponents s_hat", xlabel="factor index", ylabel="s")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.plot(x, factors["rho"], marker="o", label="rho")
    ax.plot(x, np.log(factors["r"].to_numpy(float)), ls="--", label="log r (max)")
    ax.set(title="top-radial coordinate rho", xlabel="factor index", ylabel="rho")
    ax.legend(fontsize=8)
    ax = axes[0, 2]
    ax.plot(x, factors["k_q"], marker="o", label="k_q")
    ax.plot(x, factors["k"], marker="s", label="window k")
    ax.plot(x, factors["r"], ls="--", label="r")
    ax.set(title="effective rank and window", xlabel="factor index", ylabel="rank")
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    ax.plot(x, factors["hellinger"], marker="o", label="Hellinger^2")
    ax.plot(x, factors["kl"], marker="s", label="KL")
    ax.set(title="chart residual", xlabel="factor index", ylabel="residual")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    ax.plot(x, factors["tau"], marker="o", label="tau (empirical)")
    ax.plot(x, factors["tau_gc"], marker="s", label="tau_GC (model)")
    ax.set(title="tail energy at the window", xlabel="factor index", ylabel="tail energy")
    ax.legend(fontsize=8)
    ax = axes[1, 2]
    ax.plot(x, factors["window_gap"], marker="o")
    ax.set_yscale("log")
    ax.set(title="window gap (sigma_k - sigma_k+1)/sigma_1", xlabel="factor index", ylabel="gap")
    names = factors["name"].tolist()
    if len(names) <= 16:
        for a in axes.flat:
            a.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _mark(ax, rows, cols, col_labels, shape):
    if len(rows) and len(rows) <= 24:
        ax.set_yticks([p for p, _ in rows], [f"g{int(g)}" for _, g in rows], fontsize=7)
    else:
        ax.set_yticks([])
    for p, _ in rows[1:]:
        ax.axhline(p - 0.5, color="k", lw=0.5)
    if len(cols) and len(cols) <= 16:
        ax.set_xticks([p for p, _ in cols], [col_labels[int(b)] for _, b in cols], rotation=60, ha="right",
                      fontsize=7)
    else:
        ax.set_xticks([])
    for p, _ in cols[1:]:
        ax.axvline(p - 0.5, color="k", lw=0.5)


def interface_figure(heat: dict, detail: dict) -> bytes:
    """PAM heatmaps, mask map, ICM labels, block energies and the incidence graph of one interface."""
    st = detail["structure"]
    labels = st["block_energy"]["labels"]
    rows = [tuple(r) for r in heat["row_groups"]]
    cols = [tuple(c) for c in heat["col_blocks"]]
    fig = plt.figure(figsize=(15, 8))
    gs = fig.add_gridspec(2, 4, width_ratios=[1, 1, 1, 0.25])
    vmax = float(max(heat["a0"].max(), heat["a1"].max(), 1e-300))
    for i, (key, title) in enumerate((("a0", "|A0| (truncated)"), ("a1", "|A1| (full)"), ("diff", "|A1 - A0|"))):
        ax = fig.add_subplot(gs[0, i])
        im = ax.imshow(heat[key], aspect="auto", cmap="viridis", vmin=0,
                       vmax=vmax if key != "diff" else float(max(heat["diff"].max(), 1e-300)),
                       interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, label="mean |entry|")
        ax.set(title=title, xlabel="input channels (by support block)", ylabel="output rows (by group)")
        _mark(ax, rows, cols, labels, heat[key].shape)
    ax = fig.add_subplot(gs[0, 3])
    strip = np.stack([heat["labels"], np.where(heat["certified"] >= 0.5, 0, 3)], axis=1)
    ax.imshow(strip, aspect="auto", cmap=ListedColormap(LABEL_COLOURS), vmin=-0.5, vmax=3.5,
              interpolation="nearest")
    ax.set_xticks([0, 1], ["label", "certified"], fontsize=7)
    ax.set_yticks([])
    ax.set_title("ICM labels", fontsize=9)
    for k, (lab, c) in enumerate(zip(("SC", "SA", "ST", "zero/no"), LABEL_COLOURS)):
        ax.text(1.6, 0.05 + 0.06 * k, lab, color="k", transform=ax.transAxes, fontsize=7,
                bbox={"facecolor": c, "edgecolor": "k", "lw": 0.3})
    ax = fig.add_subplot(gs[1, 0])
    ax.imshow(heat["mask"], aspect="auto", cmap=ListedColormap(MASK_COLOURS), vmin=-0.5, vmax=2.5,
              interpolation="nearest")
    ax.set(title="masks: core / overlap / noise", xlabel="input channels (by support block)",
           ylabel="output rows (by group)")
    _mark(ax, rows, cols, labels, heat["mask"].shape)
    for k, (lab, c) in enumerate(zip(("noise", "core", "overlap"), MASK_COLOURS)):
        ax.text(1.02, 0.1 + 0.1 * k, lab, transform=ax.transAxes, fontsize=7,
                bbox={"facecolor": c, "edgecolor": "k", "lw": 0.3})
    ax = fig.add_subplot(gs[1, 1])
    b = np.asarray(st["block_energy"]["matrix"], dtype=float)
    im = ax.imshow(b, aspect="auto", cmap="magma", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of ||A0||_F^2")
    ax.set(title="block energies", xlabel="column block", ylabel="group")
    if b.shape[1] <= 20:
        ax.set_xticks(range(b.shape[1]), labels, rotation=60, ha="right", fontsize=7)
    if b.shape[0] <= 24:
        ax.set_yticks(range(b.shape[0]), [f"g{g}" for g in range(b.shape[0])], fontsize=7)
    ax = fig.add_subplot(gs[1, 2])
    m = b.shape[0]
    ang = 2 * np.pi * np.arange(m) / max(m, 1)
    xy = np.c_[np.cos(ang), np.sin(ang)]
    ws = [e["w"] for e in st["edges"]] or [1.0]
    for e in st["edges"]:
        g, h = e["g"], e["h"]
        ax.plot(*xy[[g, h]].T, color="#444", lw=0.5 + 3 * e["w"] / max(ws))
    sizes = np.asarray(st["group_sizes"], dtype=float)
    ax.scatter(xy[:, 0], xy[:, 1], s=60 + 400 * sizes / max(sizes.max(), 1), c="#1f78b4", zorder=3)
    if m <= 24:
        for g in range(m):
            ax.annotate(f"g{g}", xy[g], ha="center", va="center", fontsize=7, color="w", zorder=4)
    ax.set(title=f"incidence graph: {len(st['edges'])} edges, {len(st['hubs'])} hubs", xlim=(-1.3, 1.3),
           ylim=(-1.3, 1.3))
    ax.set_aspect("equal")
    ax.axis("off")
    fig.add_subplot(gs[1, 3]).axis("off")
    fig.tight_layout()
    return _png(fig)


def spectra_figure(table) -> bytes:
    """Per-matrix metrics of ``physgsa spectra``, in checkpoint order."""
    x = np.arange(len(table))
    fig, axes = plt.subplots(2, 2, figsize=(13, 6.5))
    ax = axes[0, 0]
    ax.scatter(x, table["alpha"].to_numpy(dtype=float, na_value=np.nan), s=12)
    ax.axhspan(2, 6, color="#52be80", alpha=0.12, label="2 <= alpha <= 6")
    ax.set(title="power-law exponent alpha of the eigenvalue tail", xlabel="matrix index", ylabel="alpha")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.scatter(x, table["log_norm"], s=12, label="log_norm")
    ax.scatter(x, table["log_spectral_norm"], s=12, label="log_spectral_norm")
    ax.set(title="norms (log10)", xlabel="matrix index", ylabel="log10")
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    ax.scatter(x, table["stable_rank"] / table["r"], s=12, label="stable_rank / r")
    ax.scatter(x, table["k_q"] / table["r"], s=12, label="k_q / r")
    ax.set(title="effective ranks, as fractions of r", xlabel="matrix index", ylabel="fraction of r")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    for col in ("s_top", "s_mle"):
        ax.scatter(x, table[col], s=12, label=col)
    ax.set(title="Gibbs–Cartan exponents", xlabel="matrix index", ylabel="s")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)
