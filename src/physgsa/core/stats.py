"""Rank correlation and percentile bootstrap intervals (docs/validation.md, "Agreement").

Two questions of issue 23 need them: how uncertain a damage figure is, given the held-out
examples it was measured on (:func:`bootstrap_ci` over examples, base and changed outputs
resampled together), and how well a predictor ranks units by their damage (:func:`spearman`,
with :func:`spearman_ci` over units, each unit's (predictor, damage) pair resampled together).

Conventions, fixed once:

- The bootstrap draws ``n_boot`` resamples of the ``n`` rows with replacement from
  ``numpy.random.default_rng(seed).integers(0, n, size=(n_boot, n))``: resample ``b`` is the
  rows ``idx[b]``. Every array of a paired input is indexed with the same ``idx[b]``.
- The interval is the percentile interval: the ``(1 - level) / 2`` and ``(1 + level) / 2``
  quantiles of the resampled statistics, ``numpy.quantile``'s default (linear) interpolation.
  The point value is the statistic of the data as given, not a bootstrap mean.
- A resample whose statistic is undefined (the statistic raises :class:`ConstantInputError`,
  or returns NaN) is left out of the quantiles and counted in ``Interval.n_undefined``. For a
  rank correlation this happens when a resample draws one unit only, or only tied values.
- :func:`spearman` **refuses** a constant input (:class:`ConstantInputError`) rather than
  returning 0 or None: a predictor that gives every unit the same value ranks nothing, and
  reporting a correlation for it (0 or otherwise) would say something it did not measure.

Everything is float64; the same input and seed give the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from .validation import InvalidParameterError, PhysgsaError

__all__ = ["Interval", "ConstantInputError", "bootstrap_ci", "bootstrap_indices", "ranks", "spearman",
           "spearman_ci"]

ArrayLike = npt.ArrayLike
Data = Union[ArrayLike, tuple[ArrayLike, ...]]


class ConstantInputError(PhysgsaError):
    """A rank correlation of an input whose values are all equal (it has no ranking)."""


@dataclass(frozen=True)
class Interval:
    """A point value and its percentile bootstrap interval.

    Attributes
    ----------
    point : float
        The statistic of the data as given.
    low, high : float
        The ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled statistics
        (NaN when no resample is defined).
    level : float
        The coverage asked for (0.95: a 95% interval).
    n_boot : int
        Resamples drawn.
    n_undefined : int
        Resamples whose statistic is undefined, left out of the quantiles.
    """

    point: float
    low: float
    high: float
    level: float
    n_boot: int
    n_undefined: int = 0

    def as_dict(self) -> dict[str, float | int]:
        return {"point": self.point, "low": self.low, "high": self.high, "level": self.level,
                "n_boot": self.n_boot, "n_undefined": self.n_undefined}


def _check_common(n_boot: int, level: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise InvalidParameterError(f"n_boot must be a positive integer; got {n_boot!r}.")
    if not (isinstance(level, (float, int)) and 0.0 < float(level) < 1.0):
        raise InvalidParameterError(f"level must lie strictly between 0 and 1; got {level!r}.")


def bootstrap_indices(n: int, n_boot: int, seed: int) -> npt.NDArray[np.int64]:
    """The resampled rows, ``(n_boot, n)``: ``default_rng(seed).integers(0, n, size=(n_boot, n))``."""
    if n < 1:
        raise InvalidParameterError("The bootstrap needs at least one example; got none.")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n)).astype(np.int64)


def _as_arrays(values_or_pairs: Data) -> tuple[list[npt.NDArray[Any]], bool]:
    """The input as a list of arrays sharing their first axis, and whether it was a tuple of them."""
    paired = isinstance(values_or_pairs, tuple)
    if paired and not values_or_pairs:
        raise InvalidParameterError("The bootstrap needs data; got an empty tuple.")
    arrays = [np.asarray(v) for v in values_or_pairs] if isinstance(values_or_pairs, tuple) else [
        np.asarray(values_or_pairs)]
    for a in arrays:
        if a.ndim == 0:
            raise InvalidParameterError("The bootstrap resamples rows: give arrays of one axis or more.")
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise InvalidParameterError(
            f"Paired arrays must have the same number of rows; got {[a.shape[0] for a in arrays]}.")
    return arrays, paired


def _value(statistic: Callable[..., Any], arrays: list[npt.NDArray[Any]], paired: bool) -> float:
    """The statistic as a float, NaN where it is undefined."""
    try:
        out = statistic(*arrays) if paired else statistic(arrays[0])
    except ConstantInputError:
        return float("nan")
    return float("nan") if out is None else float(out)


def bootstrap_ci(values_or_pairs: Data, statistic: Callable[..., Any], *, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> Interval:
    """Percentile bootstrap interval of ``statistic`` over the rows (examples) of the data.

    Parameters
    ----------
    values_or_pairs : array or tuple of arrays
        One array (or list) whose first axis is the examples, or a **tuple** of arrays with the
        same first axis (paired data: row ``i`` of each is example ``i``; every array is resampled
        with the same rows, so a base and a changed model's outputs stay paired).
    statistic : callable
        ``statistic(a)`` for one array, ``statistic(a, b, ...)`` for a tuple; returns a number.
        None, NaN or a :class:`ConstantInputError` mark a resample where it is undefined.
    n_boot : int
        Resamples.
    seed : int
        Seed of ``numpy.random.default_rng``.
    level : float
        Coverage of the interval, in (0, 1).

    Returns
    -------
    Interval
        ``point = statistic(data)``; ``low, high = Q_{(1-level)/2}, Q_{(1+level)/2}`` of
        ``{statistic(data[idx_b])}`` over the defined resamples ``b``.
    """
    _check_common(n_boot, level)
    arrays, paired = _as_arrays(values_or_pairs)
    idx = bootstrap_indices(arrays[0].shape[0], int(n_boot), seed)
    point = _value(statistic, arrays, paired)
    stats = np.array([_value(statistic, [a[row] for a in arrays], paired) for row in idx], dtype=np.float64)
    defined = stats[np.isfinite(stats)]
    if defined.size == 0:
        low = high = float("nan")
    else:
        alpha = (1.0 - float(level)) / 2.0
        low, high = (float(q) for q in np.quantile(defined, [alpha, 1.0 - alpha]))
    return Interval(point=point, low=low, high=high, level=float(level), n_boot=int(n_boot),
                    n_undefined=int(stats.size - defined.size))


def ranks(x: ArrayLike) -> npt.NDArray[np.float64]:
    """Ranks ``1..n`` of ``x``, tied values sharing the average of the ranks they span."""
    a = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(a, kind="stable")
    sorted_a = a[order]
    # Runs of equal values: each gets the mean of positions start+1 .. end (1-based).
    starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])
    ends = np.r_[starts[1:], a.size]
    avg = (starts + 1 + ends) / 2.0
    out = np.empty(a.size, dtype=np.float64)
    out[order] = np.repeat(avg, ends - starts)
    return out


def _vectors(x: ArrayLike, y: ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.size != b.size:
        raise InvalidParameterError(f"spearman needs paired values; got {a.size} and {b.size}.")
    if a.size < 2:
        raise InvalidParameterError(f"spearman needs at least two units; got {a.size}.")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise InvalidParameterError("spearman refuses NaN or infinite values: say which units are undefined first.")
    return a, b


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rank correlation: Pearson's correlation of the average ranks.

    ``rho = sum_i (r_i - mean r)(s_i - mean s) / sqrt(sum_i (r_i - mean r)^2 sum_i (s_i - mean s)^2)``
    with ``r = ranks(x)``, ``s = ranks(y)`` (ties share their average rank). In [-1, 1].

    Raises
    ------
    ConstantInputError
        When ``x`` or ``y`` is constant (no ranking to correlate).
    InvalidParameterError
        Unequal lengths, fewer than two units, or a non-finite value.
    """
    a, b = _vectors(x, y)
    r, s = ranks(a), ranks(b)
    r -= r.mean()
    s -= s.mean()
    rr, ss = float(r @ r), float(s @ s)
    if rr == 0.0 or ss == 0.0:
        which = "x" if rr == 0.0 else "y"
        raise ConstantInputError(f"spearman: every value of {which} is the same; it ranks nothing.")
    return float(np.clip((r @ s) / np.sqrt(rr * ss), -1.0, 1.0))


def spearman_ci(x: ArrayLike, y: ArrayLike, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """:func:`spearman` with its percentile bootstrap interval over units (each ``(x_i, y_i)`` resampled
    together). Resamples with a constant side are undefined (``Interval.n_undefined``).
    """
    a, b = _vectors(x, y)
    spearman(a, b)  # a constant side is refused here, not reported as an undefined point
    return bootstrap_ci((a, b), spearman, n_boot=n_boot, seed=seed, level=level)
