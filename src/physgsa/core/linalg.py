"""Decompositions and products: LAPACK through numpy, or a backend the caller passes.

``backend=None`` (the default) is numpy/LAPACK. A backend is any object with ``svd(a)`` and
``matmul(a, b)`` returning numpy arrays; :class:`physgsa.models.device.TorchBackend` runs them
through torch on a device (the ``device`` option of certify). The core never imports torch.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

# scipy.linalg is imported only where gesdd fails (rare): the spectra command never loads it.
__all__ = ["Backend", "UNIT_ROUNDOFF", "gamma", "svd", "svdvals", "eigvalsh_descending", "matmul"]

#: Higham's unit roundoff ``u = eps / 2`` of float64.
UNIT_ROUNDOFF = float(np.finfo(np.float64).eps) / 2.0


def gamma(n: float) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)``: the relative rounding of an ``n``-term sum of products."""
    nu = n * UNIT_ROUNDOFF
    return nu / (1.0 - nu) if nu < 0.5 else float("inf")


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
            import scipy.linalg

            return scipy.linalg.svd(a, full_matrices=False, lapack_driver="gesvd")
    return backend.svd(a)


def svdvals(a: np.ndarray) -> np.ndarray:
    """Singular values, descending (LAPACK gesdd; gesvd where gesdd does not converge)."""
    try:
        values: np.ndarray = np.linalg.svd(a, compute_uv=False)
        return values
    except np.linalg.LinAlgError:
        import scipy.linalg

        out: np.ndarray = scipy.linalg.svd(a, compute_uv=False, lapack_driver="gesvd")
        return out


def eigvalsh_descending(g: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric matrix (its lower triangle), descending (LAPACK syevd)."""
    lam: np.ndarray = np.linalg.eigvalsh(g)[::-1]
    return lam


def matmul(a: np.ndarray, b: np.ndarray, backend: Backend | None) -> np.ndarray:
    """``a @ b`` in float64."""
    if backend is None:
        product: np.ndarray = a @ b
        return product
    return backend.matmul(a, b)
