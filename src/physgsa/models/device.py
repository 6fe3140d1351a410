"""The ``device`` option: decompositions and products through torch, on the CPU or a GPU.

``device=None`` (the default) is numpy/LAPACK (:mod:`physgsa.core.linalg`). ``device="cpu"`` or
``"cuda"`` (or ``"cuda:N"``) runs the factors' SVDs and the interfaces' big products through
torch, in float64, and brings the results back as numpy arrays: the rest of the pipeline is
unchanged. A :class:`TorchBackend` is what the core's ``svd`` and ``matmul`` receive in place
of ``None``; the core itself never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.validation import InvalidParameterError, spell, unset

__all__ = ["TorchBackend", "backend", "check_device"]


def _torch_device(device: str):
    try:
        import torch  # start-up: torch loads only when a device is named
    except ImportError:
        raise InvalidParameterError(
            f"{spell('device', device)} runs through torch, which is not installed: pip install 'physgsa[models]'."
        ) from None
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InvalidParameterError(f"{spell('device', device)}: {exc}.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(f"{spell('device', device)} asks for CUDA, and torch sees no CUDA device here. "
                                    f"Instead: {unset('device')} (LAPACK), or {spell('device', 'cpu')}.")
    return torch, dev


def check_device(value, what: str):
    """The ``device`` parameter: None, or a torch device string that exists here."""
    if not isinstance(value, str):
        raise InvalidParameterError(f"{what} must be None, 'cpu' or 'cuda[:N]'. Got {value!r} instead.")
    _torch_device(value)
    return value


@dataclass(frozen=True)
class TorchBackend:
    """SVDs and products through torch on ``device``, in float64 (a :class:`physgsa.core.linalg.Backend`)."""

    device: str

    def svd(self, a: np.ndarray):
        """Thin SVD ``(U, sigma, V^T)`` of a float64 matrix."""
        torch, dev = _torch_device(self.device)
        # np.array copies: torch wants a writable array, and the factors are read-only.
        u, s, vt = torch.linalg.svd(torch.from_numpy(np.array(a, order="C")).to(dev), full_matrices=False)
        return u.cpu().numpy(), s.cpu().numpy(), vt.cpu().numpy()

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a @ b`` in float64."""
        torch, dev = _torch_device(self.device)
        ta = torch.from_numpy(np.array(a, order="C")).to(dev)
        tb = torch.from_numpy(np.array(b, order="C")).to(dev)
        return (ta @ tb).cpu().numpy()


def backend(device: str | None) -> TorchBackend | None:
    """What the core's ``svd`` / ``matmul`` take for the ``device`` option: None is LAPACK."""
    return None if device is None else TorchBackend(device)
