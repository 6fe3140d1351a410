"""WeightWatcher 0.7.7's per-layer metrics, as its ``analyze()`` computes them with its defaults.

These are beyond the two papers: WeightWatcher's definitions (``weightwatcher==0.7.7``,
files ``weightwatcher.py``, ``RMT_Util.py``, ``WW_powerlaw.py`` and ``constants.py``),
recomputed here from the same eigenvalues. Line numbers below are those of 0.7.7.

What ``analyze()`` does by default, and what this module reproduces:

- **Which matrices.** Linear, Embedding and Conv1D (GPT-2's) weights are one matrix ``W``
  (``WWLayer.set_weight_matrices``, weightwatcher.py:1167-1171). A Conv2d kernel
  ``(out, in, kh, kw)`` is its ``kh * kw`` slices ``W[:, :, i, j]`` (``conv2D_Wmats``,
  weightwatcher.py:1258-1334, with PyTorch's ``channels = LAST``), and because ``pool=True``
  and ``conv2d_fft=False`` (analyze's defaults, weightwatcher.py:3376-3378) their eigenvalues
  are pooled into one spectrum of ``kh * kw * min(out, in)`` values
  (``combined_eigenvalues``, weightwatcher.py:2784-2857).
- **conv2d_norm.** ``conv2d_norm=True`` multiplies every Conv2d slice by
  ``sqrt(conv2d_count / 2) = sqrt(1/2)`` before the SVD (``apply_normalize_Wmats``,
  weightwatcher.py:2889-2891; ``conv2d_count = 1`` when pooling, weightwatcher.py:1017): every
  Conv2d eigenvalue is halved, 1x1 convs included (``log_norm`` lower by ``log10 2``).
- **The size filters.** A layer is analysed only if ``min_evals <= M * rf <= max_evals`` and
  ``N <= max_N`` (``layer_supported``, weightwatcher.py:1735-1745; ``min_evals = 8``,
  ``max_evals = 15000``, ``max_N = 50000``, constants.py:144-152), where for a matrix
  ``N = max``, ``M = min`` of its shape and ``rf = 1``, and for a Conv2d ``rf = kh * kw`` and
  ``(N, M)`` as ``conv2D_Wmats`` leaves them (see :func:`conv2d_layout`).
- **Norms.** ``log_norm = log10 sum lambda``, ``log_spectral_norm = log10 max lambda``,
  ``stable_rank = sum lambda / max lambda``, ``alpha_weighted = alpha log_spectral_norm``,
  ``log_alpha_norm = log10 sum lambda^alpha`` over every pooled eigenvalue
  (``apply_norm_metrics``, weightwatcher.py:4568-4605).
- **Rank and entropy.** ``matrix_rank = #{s > max(s) N eps}`` on ``s = sqrt(lambda)``
  (RMT_Util.py:317-327, with the layer's ``N``); ``entropy = -sum p log p / log(rank + 1e-10)``
  with ``p = lambda / sum lambda + 1e-10`` over every eigenvalue, zeros included
  (``matrix_entropy``, RMT_Util.py:336-348; ``EPSILON = 1e-10``, constants.py:191).
- **The power-law fit** (``fit_powerlaw``, weightwatcher.py:4170-4461, ``pl_package='ww'``):
  only eigenvalues ``> 1e-5`` enter (``thresh=EVALS_THRESH``, weightwatcher.py:4172 and 4296;
  constants.py:190). With ``n >= 20`` of them (``SMALL_N_CUTOFF``, WW_powerlaw.py:26), every value but the largest
  is a candidate ``xmin``: ``alpha = 1 + n / (sum log x - n log xmin)`` over the tail and
  ``D = max |1 - (x / xmin)^(1 - alpha) - j / n|`` (``fit_power_law_standard``,
  WW_powerlaw.py:77-92); the first candidate of least ``D`` wins. With fewer than 20
  (``fit_powerlaw_smallN``, WW_powerlaw.py:96-191) only tails of at least 8 values whose
  ``sum log(x / xmin) > 1e-12`` are candidates, with the bias-corrected
  ``alpha = 1 + (n - 1) / sum log(x / xmin)``; if there is none, the whole sample is the tail.
  The small-sample code ranks candidates by ``J = D - 0.868 / sqrt(n)``, but ``WWFit.__init__``
  then selects again by least ``D`` (WW_powerlaw.py:56-60), and that choice is what
  ``analyze()`` reports: so does this module. ``alpha_n_tail`` is WeightWatcher's
  ``num_pl_spikes``, ``#{lambda >= xmin}`` (weightwatcher.py:4331).

Where WeightWatcher returns a sentinel instead of a fit (``alpha = -1`` when fewer than two
eigenvalues exceed 1e-5, weightwatcher.py:4192 and 4318-4323; ``alpha = 0`` from the small-sample
code's degenerate branch, WW_powerlaw.py:161-173 then 56-59; an infinite ``alpha`` for a tail of equal
values), ``alpha``, ``xmin``, ``alpha_D``, ``alpha_weighted`` and ``log_alpha_norm`` are null
here and ``alpha_status`` says why.

This reproduces WeightWatcher on the CPU. With CUDA available, 0.7.7 converts weights to
float16 and uses ``EPSILON = 6e-5`` and ``EVALS_THRESH = 1e-4`` (RMT_Util.py:198-205), so its
numbers on a GPU machine differ from these (and from its own CPU numbers).

Every eigenvalue here is carried as ``lam * 2^e`` (:class:`Energies`), so weights near
1e150 or 1e-160 give finite norms; the power-of-two scale is exact, so ratios, ranks and the
thresholds are those of the unscaled values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .linalg import svdvals
from .spectra import gram_energies

__all__ = ["Energies", "WWLayer", "energies", "energies_from_sigma", "pool", "powerlaw_fit", "ww_metrics",
           "weight_metrics", "conv2d_layout", "ww_filter", "dense_layer", "conv2d_layer",
           "EPSILON", "EVALS_THRESH", "SMALL_N_CUTOFF", "SMALL_N_K_MIN", "MIN_EVALS", "MAX_EVALS", "MAX_N",
           "CONV2D_NORM"]

WW_VERSION = "0.7.7"
EPSILON = 1e-10          # constants.py:191 (RMT_Util.matrix_entropy)
EVALS_THRESH = 1e-5      # constants.py:190 (fit_powerlaw's thresh)
SMALL_N_CUTOFF = 20      # WW_powerlaw.py:26
SMALL_N_K_MIN = 8        # WW_powerlaw.fit_powerlaw_smallN(k_min=8)
MIN_EVALS = 8            # constants.py:144
MAX_EVALS = 15000        # constants.py:148
MAX_N = 50000            # constants.py:152
CONV2D_NORM = float(np.sqrt(1 / 2.0))  # weightwatcher.py:2891, conv2d_count = 1 when pooling
_EPS64 = float(np.finfo(np.float64).eps)


# --------------------------------------------------------------------------------------------
# Eigenvalues, carried with an exact power-of-two scale
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Energies:
    """Eigenvalues ``lambda = ldexp(lam, e)`` of ``W^T W`` (``e`` even, so ``sqrt`` stays exact)."""

    lam: np.ndarray
    e: int = 0

    def raw(self) -> np.ndarray:
        """The eigenvalues themselves (overflow to inf or underflow to 0 only at extreme scales)."""
        with np.errstate(over="ignore", under="ignore"):
            raw: np.ndarray = np.ldexp(self.lam, self.e)
            return raw


def _pow2_split(f: float) -> tuple[float, int]:
    """``f = m * 2^k`` with ``k`` even and ``m`` in ``[0.25, 1)``: an exact split."""
    m, k = math.frexp(f)
    if k % 2:
        m, k = m / 2.0, k + 1
    return m, k


def energies_from_sigma(sigma: np.ndarray, factor: float = 1.0) -> Energies:
    """Eigenvalues of a matrix whose singular values are ``sigma * factor`` (``factor > 0``).

    The product rounds as ``sigma * factor`` would; only powers of two are moved into ``e``.
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    smax = float(sigma.max()) if sigma.size else 0.0
    if smax == 0.0:
        return Energies(lam=sigma * sigma, e=0)
    mf, kf = _pow2_split(float(factor))
    _, ks = _pow2_split(smax)
    s = np.ldexp(sigma, -ks) * mf
    return Energies(lam=s * s, e=2 * (ks + kf))


def energies(a: np.ndarray) -> Energies:
    """The eigenvalues of ``A^T A``: from the Gram matrix when resolved, else a values-only SVD.

    The same rule as the Part I pass (:func:`physgsa.core.spectra.gram_energies`): the Gram path is
    taken only when every eigenvalue exceeds twice its rounding bound.
    """
    if not np.any(a):  # a zero slice of a kernel (pruned taps): all its eigenvalues are 0
        return Energies(lam=np.zeros(min(a.shape)), e=0)
    got = gram_energies(a)
    if got is not None:
        lam, c = got
        if c == 1.0:
            return Energies(lam=np.asarray(lam, dtype=np.float64), e=0)
        return _rescaled(lam, c)
    _, k = _pow2_split(float(np.max(np.abs(a))))
    scale = math.ldexp(1.0, k)  # a power of two: dividing by it is exact
    sigma = svdvals(a / scale)
    return Energies(lam=sigma * sigma, e=2 * k)


def _rescaled(lam: np.ndarray, c: float) -> Energies:
    # gram_energies scaled by c = max |A| (not a power of two): lambda = lam c^2.
    m, k = _pow2_split(c)
    return Energies(lam=lam * (m * m), e=2 * k)


def pool(parts: list[Energies], weight: float = 1.0) -> Energies:
    """The eigenvalues of several matrices, concatenated, each matrix multiplied by ``weight`` first.

    ``weight`` is applied to the eigenvalues as ``weight**2``, with the rounding of
    WeightWatcher's ``W * norm`` then ``s * s`` only to the last bit.
    """
    e = max(p.e for p in parts)
    with np.errstate(under="ignore"):
        lam = np.concatenate([np.ldexp(p.lam, p.e - e) for p in parts])
    if weight != 1.0:
        lam = lam * (weight * weight)
    return Energies(lam=lam, e=e)


# --------------------------------------------------------------------------------------------
# Which matrices, and which layers analyze() keeps
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WWLayer:
    """How WeightWatcher sees one weight: its matrices, their scale, ``N``, ``M``, ``rf``.

    ``slices`` is None when WeightWatcher's matrix has the eigenvalues of the row's own
    (Part I) matrix, which are then reused; else a tuple of 2-D arrays whose eigenvalues are
    pooled. ``analysed`` says whether ``analyze()`` with its defaults includes the layer, and
    ``reason`` why not.
    """

    matrix: str
    N: int
    M: int
    rf: int
    scale: float = 1.0
    slices: tuple[np.ndarray, ...] | None = None
    analysed: bool = True
    reason: str = ""


def conv2d_layout(shape: tuple[int, int, int, int]) -> tuple[int, int, int]:
    """``(N, M, rf)`` exactly as WeightWatcher's ``conv2D_Wmats`` leaves them for a torch kernel.

    weightwatcher.py:1266-1331 with ``channels = LAST``. If ``out + in >= kh + kw`` the slices
    are ``W[:, :, i, j]``, and ``N, M`` are swapped once per slice whose rows are fewer than its
    columns: for ``out < in`` they end as ``(in, out)`` when ``kh * kw`` is odd and as
    ``(out, in)`` when it is even. Otherwise (the kernel looks channels-first) the same slices
    are taken through the "flip" branch and ``(N, M) = (out, in)`` unchanged.
    """
    out, cin, kh, kw = (int(x) for x in shape)
    rf = kh * kw
    if out + cin >= kh + kw and out < cin and rf % 2 == 1:
        return cin, out, rf
    return out, cin, rf


def ww_filter(N: int, M: int, rf: int) -> str:
    """Why ``layer_supported`` (weightwatcher.py:1735-1745) drops a layer, or ``""``."""
    if M * rf < MIN_EVALS:
        return f"WeightWatcher skips it: M * rf = {M * rf} eigenvalues < min_evals = {MIN_EVALS}"
    if M * rf > MAX_EVALS:
        return f"WeightWatcher skips it: M * rf = {M * rf} eigenvalues > max_evals = {MAX_EVALS}"
    if N > MAX_N:
        return f"WeightWatcher skips it: N = {N} > max_N = {MAX_N}"
    return ""


def dense_layer(shape: tuple[int, int], matrix: str = "W", *, kept: str = "") -> WWLayer:
    """A Linear / Embedding / Conv1D weight: one matrix, reused from the row's own eigenvalues.

    ``kept`` is a reason the layer is not analysed before the size filters (its module type).
    """
    n, m = max(shape), min(shape)
    reason = kept or ww_filter(n, m, 1)
    return WWLayer(matrix=matrix, N=n, M=m, rf=1, analysed=not reason, reason=reason)


def conv2d_layer(w: np.ndarray, *, kept: str = "", same_as_row: bool = False) -> WWLayer:
    """A Conv2d kernel ``(out, in / groups, kh, kw)``: its slices, pooled, times ``sqrt(1/2)``.

    ``same_as_row``: the row's own matrix is ``W[:, :, 0, 0]`` (a dense 1x1 conv), whose
    eigenvalues are reused.
    """
    out, cin, kh, kw = w.shape
    n, m, rf = conv2d_layout(w.shape)
    reason = kept or ww_filter(n, m, rf)
    if kh * kw == 1:
        text = "W[:, :, 0, 0] * sqrt(1/2) (WeightWatcher's conv2d_norm)"
    else:
        text = (f"the {kh * kw} slices W[:, :, i, j] ({out} x {cin}) * sqrt(1/2), eigenvalues pooled "
                "(WeightWatcher's conv2d_norm and pool)")
    slices = None if (same_as_row and kh * kw == 1) else tuple(w[:, :, i, j] for i in range(kh) for j in range(kw))
    return WWLayer(matrix=text, N=n, M=m, rf=rf, scale=CONV2D_NORM, slices=slices, analysed=not reason,
                   reason=reason)


# --------------------------------------------------------------------------------------------
# The power-law fit (WW_powerlaw.WWFit): the same candidates, the same alphas, the same choice
# --------------------------------------------------------------------------------------------

def _ks(data: np.ndarray, i: int, alpha: float, n: float, n_int: int) -> float:
    # WW_powerlaw.py:86-90 (standard) and 141-145 (small sample): the same value.
    xmin = data[i]
    return float(np.max(np.abs(1 - (data[i:] / xmin) ** (-alpha + 1) - np.arange(n_int) / n)))


def _ks_all(data: np.ndarray, cand: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """:func:`_ks` of many candidates at once, a block of 32 at a time.

    ``(x / xmin)^(1 - alpha)`` is computed as ``exp((1 - alpha) (log x - log xmin))``: one
    vectorized exp instead of a pow per entry (several times faster), equal to WeightWatcher's
    pow to a few units in the last place of ``D`` (which moves the argmin only on a tie to
    1e-15). Entries left of a candidate's ``xmin`` are masked to 0 (the distance is 0 there).
    """
    n_all = data.shape[0]
    logx = np.log(data)
    out = np.empty(cand.shape[0])
    j = np.arange(n_all)
    step = 32  # rows per block: the masked (wasted) triangle stays about 32 columns wide
    for lo in range(0, cand.shape[0], step):
        c = cand[lo:lo + step]
        a = alphas[lo:lo + step]
        j0 = int(c[0])
        jj = j[j0:]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            dlog = logx[None, j0:] - logx[c, None]
            # x = xmin gives 1 for any alpha, as pow(1, 1 - alpha) does (also for alpha = inf).
            model = np.exp(np.where(dlog == 0.0, 0.0, (1.0 - a[:, None]) * dlog))
            emp = (jj[None, :] - c[:, None]) / (n_all - c)[:, None].astype(np.float64)
            diff = np.abs(1 - model - emp)
        diff[jj[None, :] < c[:, None]] = 0.0
        out[lo:lo + step] = diff.max(axis=1)
    return out


def powerlaw_fit(evals: np.ndarray, *, thresh: float = EVALS_THRESH) -> dict[str, Any]:
    """WeightWatcher's power-law fit of the eigenvalues ``evals`` (any order, any scale).

    Returns ``alpha``, ``xmin``, ``D``, ``n_tail`` (``num_pl_spikes``), ``small_n`` (whether the
    small-sample branch ran) and ``status``: ``"ok"``, or why WeightWatcher's value is a sentinel
    (then ``alpha``, ``xmin``, ``D`` are None).
    """
    evals = np.asarray(evals, dtype=np.float64)
    data = np.sort(evals[evals > thresh])
    n_all = int(data.shape[0])
    out = {"alpha": None, "xmin": None, "D": None, "n_tail": None, "small_n": n_all < SMALL_N_CUTOFF}
    if n_all < 2:
        # WWFit: xmins = data[:-1] is empty and argmin raises; fit_powerlaw reports alpha = -1.
        return {**out,
                "status": f"fit failed: {n_all} eigenvalue(s) above the 1e-5 threshold (WeightWatcher: alpha = -1)"}
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_data = np.log(data, dtype=np.float64)
        alphas = np.zeros(n_all - 1)
        ds = np.ones(n_all - 1)
        if n_all >= SMALL_N_CUTOFF:
            for i in range(n_all - 1):
                n = float(n_all - i)
                alphas[i] = 1 + n / (np.sum(log_data[i:]) - n * log_data[i])
            cand = np.flatnonzero(alphas > 1)
            if cand.size:
                ds[cand] = _ks_all(data, cand, alphas[cand])
        else:
            found = False
            for i in range(n_all - 1):
                n_int = n_all - i
                if n_int < SMALL_N_K_MIN:
                    continue
                n = float(n_int)
                s = np.sum(log_data[i:]) - n * log_data[i]
                if s <= 1e-12:
                    continue
                alpha = 1.0 + (n - 1.0) / s
                alphas[i] = alpha
                if alpha <= 1.0:
                    continue
                ds[i] = _ks(data, i, alpha, n, n_int)
                found = True
            if not found:
                # No tail of k_min values: the whole sample (WW_powerlaw.py:158-183).
                n = float(n_all)
                s = np.sum(log_data) - n * log_data[0]
                if s <= 1e-12:
                    return {**out, "status": "degenerate tail: sum log(x / xmin) <= 1e-12 (WeightWatcher: alpha = 0)"}
                alphas[0] = 1.0 + (n - 1.0) / s
                ds[0] = _ks(data, 0, alphas[0], n, n_all)
    b = int(np.argmin(ds))  # WWFit.__init__, WW_powerlaw.py:56: the first least D
    alpha, xmin, d = float(alphas[b]), float(data[b]), float(ds[b])
    if not np.isfinite(alpha) or alpha <= 1.0:
        return {**out, "status": f"degenerate tail: alpha = {alpha} (equal eigenvalues)"}
    status = "ok"
    if n_all < SMALL_N_CUTOFF:
        status = f"ok: small-sample fit ({n_all} eigenvalues > 1e-5, fewer than {SMALL_N_CUTOFF})"
    return {**out, "alpha": alpha, "xmin": xmin, "D": d, "n_tail": int(np.count_nonzero(evals >= xmin)),
            "status": status}


# --------------------------------------------------------------------------------------------
# The metrics
# --------------------------------------------------------------------------------------------

_LOG10_2 = math.log10(2.0)


def ww_metrics(en: Energies, n_big: int) -> dict[str, Any]:
    """WeightWatcher's metrics of one layer from its pooled eigenvalues and its ``N``."""
    lam = np.asarray(en.lam, dtype=np.float64)
    e = en.e
    lmax = float(lam.max())
    total = float(np.sum(lam))
    out = {
        "log_norm": math.log10(total) + e * _LOG10_2 if total > 0 else None,
        "log_spectral_norm": math.log10(lmax) + e * _LOG10_2 if lmax > 0 else None,
        "stable_rank": total / lmax if lmax > 0 else None,
    }
    # matrix_rank / matrix_entropy on s = sqrt(lambda) (RMT_Util.py:317-348); e is even, so the
    # scale of s is the exact power 2^(e/2) and drops out of every comparison and ratio.
    s = np.sqrt(np.maximum(lam, 0.0))
    rank = int(np.count_nonzero(s > np.max(s) * n_big * _EPS64))
    out["matrix_rank"] = rank
    if total > 0:
        ev = s * s
        p = ev / np.sum(ev) + EPSILON
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = float(-np.sum(p * np.log(p)) / np.log(rank + EPSILON))
        out["entropy"] = ent if np.isfinite(ent) else None
    else:
        out["entropy"] = None
    # The fit on the eigenvalues themselves when they are finite (always, for real weights), so
    # logs and sums round as WeightWatcher's do; else on the scaled values (ratios are exact).
    pos = lam[lam > 0]
    with np.errstate(over="ignore", under="ignore"):
        exact = pos.size == 0 or (np.isfinite(np.ldexp(lmax, e))
                                  and float(np.ldexp(pos.min(), e)) >= np.finfo(np.float64).tiny)
    if exact:
        fit = powerlaw_fit(en.raw())
        xmin_raw = fit["xmin"]
    else:
        with np.errstate(over="ignore", under="ignore"):
            thresh = float(np.ldexp(EVALS_THRESH, -e))
        fit = powerlaw_fit(lam, thresh=thresh)
        xmin_raw = None if fit["xmin"] is None else _ldexp_or_none(fit["xmin"], e)
    alpha = fit["alpha"]
    out.update({
        "alpha": alpha, "xmin": xmin_raw, "alpha_D": fit["D"], "alpha_n_tail": fit["n_tail"],
        "alpha_status": fit["status"],
    })
    if alpha is not None and lmax > 0:
        out["alpha_weighted"] = alpha * out["log_spectral_norm"]
        # log10 sum lambda^alpha = alpha log10 lambda_max + log10 sum (lambda / lambda_max)^alpha
        with np.errstate(under="ignore"):
            rel = np.sum((lam / lmax) ** alpha)
        out["log_alpha_norm"] = alpha * out["log_spectral_norm"] + math.log10(rel)
    else:
        out["alpha_weighted"] = None
        out["log_alpha_norm"] = None
    out["ww_num_evals"] = int(lam.shape[0])
    return out


def _ldexp_or_none(x: float, e: int) -> float | None:
    try:
        v = math.ldexp(x, e)
    except OverflowError:
        return None
    return v if v > 0 and math.isfinite(v) else None


def weight_metrics(sigma: np.ndarray, shape: tuple[int, int]) -> dict[str, Any]:
    """WeightWatcher's metrics of one dense matrix (Linear, Embedding, Conv1D) with singular values ``sigma``."""
    return ww_metrics(energies_from_sigma(sigma), max(shape))
