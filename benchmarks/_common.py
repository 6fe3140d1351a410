"""Helpers every benchmark script shares: thread pinning and writing the JSON record."""

from __future__ import annotations

import json
import os

__all__ = ["pin_threads", "emit", "residual_factors"]


def pin_threads(n: int) -> None:
    """Pin BLAS and OpenMP threads; call before numpy (or torch) is imported."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
        os.environ[var] = str(n)


def emit(out: dict, path: str = "") -> None:
    """Print the record as JSON, and write it to ``path`` when one is given."""
    text = json.dumps(out, indent=2, sort_keys=True)
    print(text)
    if path:
        with open(path, "w") as fh:
            fh.write(text + "\n")


def residual_factors(n_factors: int, n: int, seed: int = 0):
    """The benchmarks' synthetic chain, one factor at a time: ``I + R``, ``R`` a power-law
    spectrum ``3 k^-0.7`` in random orthogonal frames (seeded). Import numpy only after pinning.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    s = 3.0 * np.arange(1, n + 1) ** -0.7
    for _ in range(n_factors):
        u, _ = np.linalg.qr(rng.standard_normal((n, n)))
        v, _ = np.linalg.qr(rng.standard_normal((n, n)))
        yield np.eye(n) + (u * s) @ v.T
