"""Decompositions and products on the CPU (LAPACK through numpy) or through torch on a device.

``device=None`` (the default) is numpy/LAPACK. ``device="cpu"`` or ``"cuda"`` (or
``"cuda:N"``) runs the factors' SVDs and the interfaces' big products through torch, in float64,
and brings the results back as numpy arrays: the rest of the pipeline is unchanged. torch is
imported only when a device is named, so the core still imports without it.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from .validation import InvalidParameterError

__all__ = ["svd", "matmul", "check_device"]


def _torch_device(device: str):
    try:
        import torch
    except ImportError:
        raise InvalidParameterError(
            f"device={device!r} runs through torch, which is not installed: pip install 'physgsa[models]'."
        ) from None
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InvalidParameterError(f"The 'device' parameter of certify: {exc}.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(f"device={device!r} asks for CUDA, and torch sees no CUDA device here. "
                                    "Use device=None (LAPACK) or 'cpu'.")
    return torch, dev


def check_device(value, what: str):
    """The ``device`` parameter: None, or a torch device string that exists here."""
    if not isinstance(value, str):
        raise InvalidParameterError(f"{what} must be None, 'cpu' or 'cuda[:N]'. Got {value!r} instead.")
    _torch_device(value)
    return value


def svd(a: np.ndarray, device: str | None):
    """Thin SVD ``(U, sigma, V^T)`` of a float64 matrix."""
    if device is None:
        try:
            return np.linalg.svd(a, full_matrices=False)
        except np.linalg.LinAlgError:
            # gesdd occasionally fails to converge; gesvd is slower but more robust.
            return scipy.linalg.svd(a, full_matrices=False, lapack_driver="gesvd")
    torch, dev = _torch_device(device)
    # np.array copies: torch wants a writable array, and the factors are read-only.
    u, s, vt = torch.linalg.svd(torch.from_numpy(np.array(a, order="C")).to(dev), full_matrices=False)
    return u.cpu().numpy(), s.cpu().numpy(), vt.cpu().numpy()


def matmul(a: np.ndarray, b: np.ndarray, device: str | None) -> np.ndarray:
    """``a @ b`` in float64."""
    if device is None:
        return a @ b
    torch, dev = _torch_device(device)
    ta = torch.from_numpy(np.array(a, order="C")).to(dev)
    tb = torch.from_numpy(np.array(b, order="C")).to(dev)
    return (ta @ tb).cpu().numpy()
