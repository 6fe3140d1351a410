"""The per-matrix metrics WeightWatcher users read, from one set of singular values.

For a weight matrix ``W`` with singular values ``sigma`` (eigenvalues ``lambda = sigma^2`` of
``W^T W``, its empirical spectral density):

- ``log_norm = log10 ||W||_F^2``; ``log_spectral_norm = log10 sigma_1^2``;
- ``stable_rank = ||W||_F^2 / sigma_1^2``; ``matrix_rank = #{sigma > max(m, n) eps sigma_1}``;
- ``entropy``: spectral entropy ``-sum p log p / log(rank)``, ``p = lambda / sum lambda``
  (WeightWatcher's matrix entropy);
- ``alpha``: the power-law exponent of the eigenvalue tail, by continuous maximum likelihood,
  ``alpha = 1 + n / sum_{lambda >= xmin} log(lambda / xmin)``, with ``xmin`` the candidate
  (an eigenvalue) that minimizes the Kolmogorov–Smirnov distance between the empirical tail
  and the fitted law; ``D`` is that distance.

These are beyond the two papers (WeightWatcher's definitions, recomputed here); the section 2
quantities come from :mod:`physgsa.spectra`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["powerlaw_fit", "weight_metrics"]


def powerlaw_fit(evals: np.ndarray, *, min_tail: int = 2) -> dict:
    """Continuous power-law MLE with ``xmin`` chosen by the Kolmogorov–Smirnov distance.

    Every positive eigenvalue but the last ``min_tail - 1`` is a candidate ``xmin``; for each,
    ``alpha = 1 + n / sum log(x / xmin)`` over the tail, and ``D = max |S(x) - P(x)|`` with the
    empirical CDF ``S(x_j) = j / n`` (j = 0..n-1 on the sorted tail) and the model CDF
    ``P(x) = 1 - (x / xmin)^(1 - alpha)``. Returns ``alpha``, ``xmin``, ``D``, ``n_tail``; with
    fewer than ``min_tail`` distinct positive values the fit is undefined (all None).
    """
    x = np.sort(evals[evals > 0])
    n = x.shape[0]
    if n < min_tail or x[-1] == x[0]:
        return {"alpha": None, "xmin": None, "D": None, "n_tail": 0}
    logx = np.log(x)
    # Suffix sums of log x give sum_{j>=i} log(x_j / x_i) for every candidate i at once.
    suffix = np.cumsum(logx[::-1])[::-1]
    cand = np.arange(n - min_tail + 1)
    nt = n - cand
    s = suffix[cand] - nt * logx[cand]
    cand, nt, s = cand[s > 0], nt[s > 0], s[s > 0]
    if cand.size == 0:
        return {"alpha": None, "xmin": None, "D": None, "n_tail": 0}
    alpha = 1.0 + nt / s
    d = np.empty(cand.size)
    j = np.arange(n)
    # The KS distance of every candidate, a block of candidates at a time (block x n floats):
    # entries left of a candidate's xmin are masked to zero difference.
    step = max(1, (1 << 21) // n)
    for lo in range(0, cand.size, step):
        c, a, t = cand[lo:lo + step], alpha[lo:lo + step], nt[lo:lo + step]
        j0 = int(c[0])  # columns left of the block's first xmin are masked for all of it
        jj = j[j0:]
        with np.errstate(over="ignore", invalid="ignore"):
            # (x_j / xmin)^(1 - alpha) as exp((1 - alpha) log(x_j / xmin)): one exp, no pow.
            model = 1.0 - np.exp((1.0 - a[:, None]) * (logx[None, j0:] - logx[c, None]))
            emp = (jj[None, :] - c[:, None]) / t[:, None]
            diff = np.where(jj[None, :] >= c[:, None], np.abs(emp - model), 0.0)
        d[lo:lo + step] = diff.max(axis=1)
    b = int(np.argmin(d))  # the first candidate on ties, as in a left-to-right scan
    return {"alpha": float(alpha[b]), "xmin": float(x[cand[b]]), "D": float(d[b]), "n_tail": int(nt[b])}


def weight_metrics(sigma: np.ndarray, shape: tuple[int, int]) -> dict:
    """The WeightWatcher-style metrics of a matrix with singular values ``sigma``.

    Computed on ``sigma / sigma_1`` and rescaled in log space, so a matrix with entries near
    1e150 (whose ``lambda = sigma^2`` would overflow) or near 1e-160 (underflow) gets finite
    norms; ``alpha`` is scale-free, and ``xmin`` is None where ``sigma_1^2`` itself is not a
    finite positive float64.
    """
    c = float(sigma[0])
    lam = (sigma.astype(np.float64) / c) ** 2
    fro2 = float(lam.sum())
    rank = int(np.count_nonzero(sigma > max(shape) * np.finfo(np.float64).eps * c))
    p = lam[lam > 0] / fro2
    ent_rank = rank if rank > 1 else 1.000001  # WeightWatcher's guard for rank one
    log_c2 = 2.0 * float(np.log10(c))
    out = {
        "log_norm": float(np.log10(fro2)) + log_c2,
        "log_spectral_norm": log_c2,
        "stable_rank": fro2,
        "matrix_rank": rank,
        "entropy": float(-np.sum(p * np.log(p)) / np.log(ent_rank)),
    }
    fit = powerlaw_fit(lam)
    xmin = None
    if fit["xmin"] is not None:
        with np.errstate(over="ignore", under="ignore"):
            xmin = fit["xmin"] * c * c
        xmin = xmin if np.isfinite(xmin) and xmin > 0 else None
    out.update({"alpha": fit["alpha"], "xmin": xmin, "alpha_D": fit["D"], "alpha_n_tail": fit["n_tail"]})
    return out
