"""Channel matrices of convolutions and normalizations, shared by the CNN adapters.

- A conv kernel ``W`` (out, in, kh, kw) reduces to its zero-frequency channel matrix
  ``sum_{h,w} W[:, :, h, w]`` (out x in): the exact Jacobian for spatially constant inputs.
- BatchNorm in eval mode is ``diag(gamma / sqrt(var + eps))`` on the channels (its shift drops
  out of the linear map).
- GroupNorm contributes its affine scale ``diag(gamma)`` (its normalization depends on the
  input and is not a fixed linear map; architecture.md).
- ``--conv fft``: the channel matrix at spatial frequency ``(u, v)`` of an ``n x n`` periodic
  grid, ``sum_{h,w} W[:, :, h, w] exp(-2 pi i (u h + v w) / n)``. It is complex; physgsa's core
  is real, so it is returned in the real form ``[[Re, -Im], [Im, Re]]`` (2 out x 2 in), whose
  singular values are those of the complex matrix, each twice. The union over all frequencies
  of the complex matrices' singular values is the spectrum of the circular convolution operator.
"""

from __future__ import annotations

import numpy as np

from .sources import ModelSourceError, WeightSource

__all__ = ["conv_dc", "conv_at_frequency", "realify", "bn_scale", "conv_matrix", "grouped_channel_matrix"]


def conv_dc(w: np.ndarray) -> np.ndarray:
    """``sum_{h,w} W[:, :, h, w]``: the channel matrix at zero frequency (rows = outputs)."""
    return w.sum(axis=(2, 3)) if w.ndim == 4 else w


def grouped_channel_matrix(blocks: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """The block-diagonal channel matrix of a grouped convolution, and the group of each input.

    ``blocks`` is a channel matrix per output row over its group's inputs, ``(out, in / groups)``
    (e.g. :func:`conv_dc` of a kernel ``(out, in / groups, kh, kw)``). Output ``o`` belongs to
    group ``o // (out / groups)`` and reads only that group's inputs, so the full ``out x in``
    matrix is block-diagonal (diagonal for a depthwise conv, ``groups = in = out``). The input
    groups are the conv's natural column units (``units="groups"``).
    """
    out, per = blocks.shape
    if groups < 1 or out % groups:
        raise ValueError(f"{out} output channels do not split into {groups} conv groups")
    n_in = per * groups
    per_out = out // groups
    full = np.zeros((out, n_in), dtype=np.result_type(blocks, np.float64))
    for g in range(groups):
        full[g * per_out:(g + 1) * per_out, g * per:(g + 1) * per] = blocks[g * per_out:(g + 1) * per_out]
    return full, np.arange(n_in, dtype=np.int64) // per


def conv_at_frequency(w: np.ndarray, u: int, v: int, n: int) -> np.ndarray:
    """The complex channel matrix of a kernel at frequency ``(u, v)`` on an ``n x n`` torus."""
    kh, kw = w.shape[2], w.shape[3]
    ph = np.exp(-2j * np.pi * u * np.arange(kh) / n)
    pw = np.exp(-2j * np.pi * v * np.arange(kw) / n)
    return np.einsum("oihw,h,w->oi", w, ph, pw)


def realify(z: np.ndarray) -> np.ndarray:
    """The real ``2m x 2n`` form ``[[Re, -Im], [Im, Re]]`` of a complex ``m x n`` matrix."""
    return np.block([[z.real, -z.imag], [z.imag, z.real]])


def conv_matrix(w: np.ndarray, conv: str, freq: tuple[int, int, int]) -> np.ndarray:
    """The channel matrix the ``conv`` option asks for: ``dc`` or ``fft`` at ``freq = (u, v, n)``."""
    if conv == "dc" or w.ndim != 4:
        return conv_dc(w)
    return realify(conv_at_frequency(w, *freq))


def lift(m: np.ndarray, conv: str) -> np.ndarray:
    """A real channel-diagonal factor (BatchNorm, identity) in the same coordinates as ``conv``."""
    return m if conv == "dc" else np.block([[m, np.zeros_like(m)], [np.zeros_like(m), m]])


def bn_scale(src: WeightSource, prefix: str, eps: float) -> np.ndarray:
    """``gamma / sqrt(running_var + eps)`` of the BatchNorm at ``prefix`` (eval mode)."""
    gamma = src.get(prefix + "weight") if src.has(prefix + "weight") else None
    var = src.get(prefix + "running_var") if src.has(prefix + "running_var") else None
    if var is None:
        raise ModelSourceError(f"{src.name} is missing {prefix}running_var, which eval-mode BatchNorm needs.")
    scale = 1.0 / np.sqrt(var + eps)
    return scale if gamma is None else gamma * scale
