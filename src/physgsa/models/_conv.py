"""Channel matrices of convolutions and normalizations, shared by the CNN adapters.

One convention for the whole package. A conv with kernel ``W`` (out, in, kh, kw), stride ``s``
and padding ``(p_h, p_w)`` computes, as torch does (cross-correlation),

    y[o, i, j] = sum_{c, h, w} W[o, c, h, w] x[c, s i + h - p_h, s j + w - p_w].

Zero frequency (``--conv dc``, the default)
    ``W_0 = sum_{h,w} W[:, :, h, w]`` (out x in). It is the exact Jacobian for spatially
    constant inputs on a torus (circular padding). With zero padding it is exact only at
    pixels whose receptive field lies inside the image (for one conv, at least ``p`` from every
    border; for a block, the sum over its convs): a pixel nearer a border misses the taps that
    fall outside, so the spatial mean of the response is not ``W_0 a``. The block factors
    are therefore not the spatial-mean JVP (Jacobian mode's CNN factors) on zero-padded images.
    Measured on the 8 x 8 digits ResNet, ReLUs linearized, spatially constant tangent, mean
    over the output grid: ``||F_dc - mean JVP||_F / ||F_dc||_F`` is 23%, 34% and 56% for the
    trained weights' three blocks (output grids 8 x 8, 4 x 4, 2 x 2; with random BatchNorm
    statistics 8%, 27%, 41%), and below 5e-16 with circular padding
    (``tests/test_conv_exact.py``).

Fourier mode ``(u, v)`` on an ``n x n`` torus (``--conv fft --freq u,v,n``)
    The input mode ``x[c, i, j] = a_c exp(+2 pi i (u i + v j) / n)`` goes to the output mode
    ``y[o, i, j] = (Z a)_o exp(+2 pi i (u' i + v' j) / n')`` on the output grid ``n' = n / s``,
    at ``u' = u mod n'``, ``v' = v mod n'``, with

        Z = sum_{h,w} W[:, :, h, w] exp(+2 pi i (u (h - p_h) + v (w - p_w)) / n).

    The phase is that of the offset ``h - p_h`` the tap reads, on the conv's own input grid
    ``n``. For ``s = 1`` this is numpy's DFT convention: ``fft2(y)[:, u, v] = Z fft2(x)[:, u, v]``.
    (physgsa 0.2.0 used ``exp(-2 pi i (u h + v w) / n)``: the conjugate matrix without
    the padding offset. Its singular values were those of one conv, but the product of
    several convs, the padding and the shortcut were wrong.)

    A layer's factor is followed along the network with :class:`FourierMode`: the chain's
    input mode ``(u, v)`` on grid ``n``, and on every later grid ``m`` the same mode at
    ``(u mod m, v mod m)``. A stride ``s`` needs ``s | m`` (refused otherwise).

    Aliasing: a stride-``s`` layer sends the ``s^2`` input modes ``(u + k n', v + l n')``,
    ``0 <= k, l < s``, to the same output mode. The factor at ``(u, v)`` is the map from that
    single input mode; its aliasing partners are other input modes with their own factors.
    (The layer restricted to one output mode is the row ``[Z_(u + k n', v + l n')]_{k,l}``.)

    Nearest upsampling by ``s`` (UNet up blocks) sends one mode on grid ``m`` to the ``s^2``
    modes of grid ``s m`` congruent to it mod ``m``; the factor keeps the one at the followed
    frequency ``(u mod s m, v mod s m)``, whose amplitude is ``g(u') g(v')`` with
    ``g(k) = (1/s) sum_{r<s} exp(-2 pi i k r / (s m))``.

    ``Z`` is complex; physgsa's core is real, so a factor is returned in the real form
    ``[[Re Z, -Im Z], [Im Z, Re Z]]`` (2 out x 2 in), which maps ``[Re a; Im a]`` to
    ``[Re Z a; Im Z a]`` and has the singular values of ``Z``, each twice. Over all ``(u, v)``
    the singular values of the stride-1 ``Z`` are those of the circular convolution operator.

Grouped and depthwise convolutions
    A conv with ``groups = g`` splits its ``in`` inputs and ``out`` outputs into ``g`` groups;
    output ``o`` reads only the inputs of its group ``o // (out / g)``. Its kernel is stored
    ``(out, in / g, kh, kw)``. At zero frequency and on every Fourier mode its channel matrix is
    therefore block-diagonal: block ``g`` is ``Z`` (the formulas above) of the kernel rows of group
    ``g``, on the inputs of group ``g`` (:func:`grouped_channel_matrix`); for a depthwise conv
    (``g = in = out``) the matrix is diagonal, ``Z[c, c] = sum_{h,w} W[c, 0, h, w] exp(...)``.
    A dilation ``d`` puts tap ``h`` at offset ``d h - p_h``, so its phase is
    ``exp(+2 pi i (u (d_h h - p_h) + v (d_w w - p_w)) / n)``.

Normalizations
    BatchNorm in eval mode is ``diag(gamma / sqrt(var + eps))`` on the channels (its shift
    drops out of the linear map); it acts per pixel, so it is the same at every frequency.
    GroupNorm contributes its affine scale ``diag(gamma)`` (its normalization depends on the
    input and is not a fixed linear map; architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.validation import InvalidParameterError
from .sources import ModelSourceError, WeightSource

__all__ = ["FourierMode", "apply_grouped", "avg_pool_gain", "bn_scale", "conv_at_frequency", "conv_blocks", "conv_dc",
           "conv_factor", "fourier_mode", "grouped_channel_matrix", "input_groups", "nearest_upsample_gain", "realify",
           "same_padding"]


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


def input_groups(n_in: int, groups: int) -> np.ndarray:
    """The conv group of each of ``n_in`` input channels: ``c // (n_in / groups)``."""
    if groups < 1 or n_in % groups:
        raise ValueError(f"{n_in} input channels do not split into {groups} conv groups")
    return np.arange(n_in, dtype=np.int64) // (n_in // groups)


def conv_at_frequency(w: np.ndarray, u: int, v: int, n: int, *, padding: tuple[int, int],
                      dilation: tuple[int, int] = (1, 1)) -> np.ndarray:
    """The complex channel matrix of a conv kernel on the input mode ``(u, v)`` of an ``n x n`` torus.

    ``Z = sum_{h,w} W[:, :, h, w] exp(+2 pi i (u (d_h h - p_h) + v (d_w w - p_w)) / n)`` with
    ``padding = (p_h, p_w)`` and ``dilation = (d_h, d_w)``: the tap at ``h`` reads the input at
    offset ``d_h h - p_h`` (module docstring). The stride does not enter ``Z``; it sets the
    output grid (:class:`FourierMode`). For a grouped kernel ``(out, in / g, kh, kw)`` this is
    the per-group block matrix (:func:`conv_blocks`).
    """
    kh, kw = w.shape[2], w.shape[3]
    ph = np.exp(2j * np.pi * u * (dilation[0] * np.arange(kh) - padding[0]) / n)
    pw = np.exp(2j * np.pi * v * (dilation[1] * np.arange(kw) - padding[1]) / n)
    return np.einsum("oihw,h,w->oi", w, ph, pw)


def conv_blocks(w: np.ndarray, mode: FourierMode | None, *, padding: tuple[int, int],
                dilation: tuple[int, int] = (1, 1)) -> np.ndarray:
    """The per-group channel blocks ``(out, in / g)`` of a (grouped) conv kernel on ``mode``.

    Zero frequency (``mode=None``): :func:`conv_dc`, real. Otherwise :func:`conv_at_frequency`
    at the mode's frequency on its own grid, complex. Row ``o`` holds output ``o``'s weights on
    the inputs of its group; :func:`grouped_channel_matrix` or :func:`apply_grouped` place them.
    """
    if mode is None:
        return conv_dc(w)
    u, v = mode.here
    return conv_at_frequency(w, u, v, mode.n, padding=padding, dilation=dilation)


def apply_grouped(blocks: np.ndarray, groups: int, m: np.ndarray) -> np.ndarray:
    """``grouped_channel_matrix(blocks, groups)[0] @ m`` without forming the block-diagonal matrix.

    ``blocks`` is ``(out, in / g)`` (:func:`conv_blocks`), ``m`` is ``(in, k)``. One batched
    product over the groups (a depthwise conv is a row scaling).
    """
    out, per = blocks.shape
    if groups < 1 or out % groups or m.shape[0] != per * groups:
        raise ValueError(f"a grouped conv with {out} outputs, {per} inputs per group and {groups} groups "
                         f"cannot act on {m.shape[0]} channels")
    if per == 1 and out == groups:  # depthwise: diagonal
        return blocks[:, 0][:, None] * m
    b = blocks.reshape(groups, out // groups, per)
    return (b @ m.reshape(groups, per, m.shape[1])).reshape(out, m.shape[1])


def realify(z: np.ndarray) -> np.ndarray:
    """The real ``2m x 2n`` form ``[[Re, -Im], [Im, Re]]`` of a complex ``m x n`` matrix."""
    return np.block([[z.real, -z.imag], [z.imag, z.real]])


def same_padding(w: np.ndarray) -> tuple[int, int]:
    """``(kh // 2, kw // 2)``: the padding every conv of the ResNet and UNet layouts uses.

    transformers' ``ResNetConvLayer`` sets ``padding=kernel_size // 2``; torchvision's blocks
    and diffusers' ``ResnetBlock2D`` / ``Upsample2D`` pad their 3x3 convs by 1 and their 1x1
    convs by 0. Only ``Downsample2D`` reads its padding from the config (``downsample_padding``).
    """
    return w.shape[2] // 2, w.shape[3] // 2


@dataclass(frozen=True)
class FourierMode:
    """The chain's input mode ``(u, v)`` followed onto the grid ``n`` of one layer.

    ``u, v`` are the frequencies on the chain's input grid; on grid ``n`` the mode sits at
    ``(u mod n, v mod n)`` (:attr:`here`). ``spec`` is the user's ``--freq`` for messages.
    """

    u: int
    v: int
    n: int
    spec: tuple[int, int, int]

    @property
    def here(self) -> tuple[int, int]:
        return self.u % self.n, self.v % self.n

    def strided(self, stride: int, where: str) -> FourierMode:
        """The same mode on the output grid ``n / stride`` of a strided layer."""
        if stride == 1:
            return self
        if self.n % stride:
            u, v, n = self.spec
            raise InvalidParameterError(
                f"--freq {u},{v},{n}: the grid is {self.n} x {self.n} at {where}, which has stride {stride}; "
                f"{self.n} is not divisible by {stride}, so a Fourier mode of it is not a mode of the output grid. "
                "Choose n divisible by the product of every stride on the path."
            )
        return FourierMode(self.u, self.v, self.n // stride, self.spec)

    def upsampled(self, factor: int) -> FourierMode:
        """The same mode on the grid ``factor * n`` of an upsampling layer."""
        return FourierMode(self.u, self.v, self.n * factor, self.spec)


def fourier_mode(conv: str, freq, total_stride: int, where: str) -> FourierMode | None:
    """The mode ``--conv fft --freq u,v,n`` asks for (``None`` for ``--conv dc``), checked.

    ``n`` is the grid at the chain's input. It must be divisible by ``total_stride``, the
    product of every stride on the path, so that each strided layer's output grid is whole.
    """
    if conv == "dc":
        return None
    u, v, n = (int(x) for x in freq)
    if n < 1:
        raise InvalidParameterError(f"--freq {u},{v},{n}: the grid size n must be a positive integer.")
    if n % total_stride:
        raise InvalidParameterError(
            f"--freq {u},{v},{n}: {where} downsamples by {total_stride} in all, so the grid n at its first "
            f"block must be a multiple of {total_stride} (each strided conv's output grid must be whole on "
            f"the torus); {n} is not."
        )
    return FourierMode(u % n, v % n, n, (u, v, n))


def conv_factor(w: np.ndarray, mode: FourierMode | None, *, stride: int, padding: tuple[int, int],
                where: str, groups: int = 1,
                dilation: tuple[int, int] = (1, 1)) -> tuple[np.ndarray, FourierMode | None]:
    """A conv's channel matrix on ``mode`` and the mode on its output grid.

    With ``mode=None`` (``--conv dc``) the real :func:`conv_dc`; otherwise the complex
    :func:`conv_at_frequency` on the conv's own input grid ``mode.n``, and the mode on the
    output grid ``mode.n / stride``. A grouped kernel (``groups > 1``, stored
    ``(out, in / groups, kh, kw)``) gives the block-diagonal ``out x in`` matrix at either
    (:func:`grouped_channel_matrix`; its column groups are :func:`input_groups`).
    """
    if w.ndim != 4:
        raise ModelSourceError(f"{where} has shape {w.shape}; a conv kernel is 4-D.")
    if groups < 1 or w.shape[0] % groups:
        raise ModelSourceError(f"{where} has {w.shape[0]} output channels, which do not split into {groups} groups.")
    z = conv_blocks(w, mode, padding=padding, dilation=dilation)
    if groups > 1:
        z = grouped_channel_matrix(z, groups)[0]
    return z, (None if mode is None else mode.strided(stride, where))


def avg_pool_gain(kernel: tuple[int, int], padding: tuple[int, int], mode: FourierMode | None) -> complex:
    """The gain of ``k x k`` average pooling on ``mode`` (the same on every channel).

    On the torus it is the depthwise conv with every tap ``1 / (k_h k_w)``:
    ``mean_{h,w} exp(+2 pi i (u (h - p_h) + v (w - p_w)) / n)``, and 1 at zero frequency.
    (With zero padding and ``count_include_pad=False`` only the border pixels differ.)
    """
    if mode is None:
        return 1.0
    u, v = mode.here
    ph = np.exp(2j * np.pi * u * (np.arange(kernel[0]) - padding[0]) / mode.n).mean()
    pw = np.exp(2j * np.pi * v * (np.arange(kernel[1]) - padding[1]) / mode.n).mean()
    return complex(ph * pw)


def nearest_upsample_gain(mode: FourierMode, factor: int) -> tuple[complex, FourierMode]:
    """Nearest upsampling by ``factor``: the amplitude on the followed mode, and that mode.

    ``y[i] = x[i // s]`` sends ``exp(2 pi i k i' / m)`` on grid ``m`` to ``s^2`` modes of grid
    ``s m``; on the followed one, ``k = u mod s m`` per axis, its amplitude is
    ``g(k) = (1/s) sum_{r<s} exp(-2 pi i k r / (s m))``, and the gain is ``g(k_u) g(k_v)``.
    """
    out = mode.upsampled(factor)
    r = np.arange(factor)
    gains = [np.exp(-2j * np.pi * k * r / out.n).mean() for k in out.here]
    return complex(gains[0] * gains[1]), out


def bn_scale(src: WeightSource, prefix: str, eps: float) -> np.ndarray:
    """``gamma / sqrt(running_var + eps)`` of the BatchNorm at ``prefix`` (eval mode)."""
    gamma = src.get(prefix + "weight") if src.has(prefix + "weight") else None
    var = src.get(prefix + "running_var") if src.has(prefix + "running_var") else None
    if var is None:
        raise ModelSourceError(f"{src.name} is missing {prefix}running_var, which eval-mode BatchNorm needs.")
    scale = 1.0 / np.sqrt(var + eps)
    return scale if gamma is None else gamma * scale
