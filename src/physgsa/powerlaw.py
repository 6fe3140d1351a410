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
    best = None
    for i in range(n - min_tail + 1):
        nt = n - i
        s = suffix[i] - nt * logx[i]
        if s <= 0:
            continue
        alpha = 1.0 + nt / s
        tail = x[i:]
        model = 1.0 - (tail / x[i]) ** (1.0 - alpha)
        emp = np.arange(nt) / nt
        d = float(np.max(np.abs(emp - model)))
        if best is None or d < best[0]:
            best = (d, alpha, float(x[i]), nt)
    if best is None:
        return {"alpha": None, "xmin": None, "D": None, "n_tail": 0}
    d, alpha, xmin, nt = best
    return {"alpha": float(alpha), "xmin": xmin, "D": d, "n_tail": int(nt)}


def weight_metrics(sigma: np.ndarray, shape: tuple[int, int]) -> dict:
    """The WeightWatcher-style metrics of a matrix with singular values ``sigma``."""
    lam = sigma.astype(np.float64) ** 2
    fro2 = float(lam.sum())
    rank = int(np.count_nonzero(sigma > max(shape) * np.finfo(np.float64).eps * sigma[0]))
    p = lam[lam > 0] / fro2
    ent_rank = rank if rank > 1 else 1.000001  # WeightWatcher's guard for rank one
    out = {
        "log_norm": float(np.log10(fro2)),
        "log_spectral_norm": float(np.log10(lam[0])),
        "stable_rank": fro2 / float(lam[0]),
        "matrix_rank": rank,
        "entropy": float(-np.sum(p * np.log(p)) / np.log(ent_rank)),
    }
    fit = powerlaw_fit(lam)
    out.update({"alpha": fit["alpha"], "xmin": fit["xmin"], "alpha_D": fit["D"], "alpha_n_tail": fit["n_tail"]})
    return out
