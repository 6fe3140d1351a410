"""Decompositions and products: LAPACK through numpy, or a backend the caller passes.

``backend=None`` (the default) is numpy/LAPACK. A backend is any object with ``svd(a)`` and
``matmul(a, b)`` returning numpy arrays; :class:`physgsa.models.device.TorchBackend` runs them
through torch on a device (the ``device`` option of certify). The core never imports torch.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import scipy.linalg

__all__ = ["Backend", "svd", "matmul"]


class Backend(Protocol):
    """Where decompositions and products run when not in LAPACK."""

    def svd(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray: ...


def svd(a: np.ndarray, backend: Backend | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD ``(U, sigma, V^T)`` of a float64 matrix."""
    if backend is None:
        try:
            return np.linalg.svd(a, full_matrices=False)
        except np.linalg.LinAlgError:
            # gesdd occasionally fails to converge; gesvd is slower but more robust.
            return scipy.linalg.svd(a, full_matrices=False, lapack_driver="gesvd")
    return backend.svd(a)


def matmul(a: np.ndarray, b: np.ndarray, backend: Backend | None) -> np.ndarray:
    """``a @ b`` in float64."""
    if backend is None:
        product: np.ndarray = a @ b
        return product
    return backend.matmul(a, b)
