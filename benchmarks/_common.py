"""Helpers every benchmark script shares: thread pinning and writing the JSON record."""

from __future__ import annotations

import json
import os

__all__ = ["pin_threads", "emit"]


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
