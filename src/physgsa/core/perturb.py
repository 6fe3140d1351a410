"""Simulated weight changes for ``physgsa compare``: quantization, pruning, Gaussian noise.

Every scheme acts on one weight tensor at a time (a matrix, or a conv kernel: the first axis is
the output channel), in float64, and is deterministic (noise is seeded per tensor name). A matrix
stored (in, out), as GPT-2's Conv1D weights are, is quantized as the (out, in) matrix it stands
for (``in_out=True``): its channels are its columns and its groups run down its columns.

Quantization is symmetric round-to-nearest, as the common libraries do it for weights
(bitsandbytes' absmax int8, GPTQ/AWQ's round-to-nearest baseline, torch's fake-quant):

- ``int8`` / ``int4`` / ``int3``: ``scale = max|w| / q_max`` over the scaling block (``q_max`` = 127, 7
  or 3),
  ``w' = scale * clip(round_half_even(w / scale), -q_max, q_max)``. The scaling block is the
  whole tensor (``granularity="tensor"``), one output channel (``"channel"``, the default), or
  ``group_size`` consecutive input entries of one output channel (``"group"``; the last group of
  a row may be shorter). A block of zeros stays zero.
- ``fp8``: e4m3 (max 448, 3 mantissa bits, exponent bias 7, subnormals down to 2^-9), with the
  same absmax scaling to 448 over the block, round-half-even on the e4m3 grid.
- ``bf16`` / ``fp16``: a cast with round-half-even (bf16: keep 8 bits of significand), no
  scaling (``fp16`` overflows beyond 65504: such a tensor is refused).

Pruning ``magnitude:p`` zeroes the fraction ``p`` of entries with the smallest ``|w|`` in each
tensor (unstructured; ties broken by position). Noise ``REL`` adds ``REL * ||w||_F * G / ||G||_F``
with ``G`` i.i.d. standard normal, seeded by the run's seed and the tensor's name.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .chain import Chain, Factor, check_matrix
from .validation import InvalidParameterError

__all__ = ["Change", "parse_change", "apply_change", "QUANT_FORMATS"]

QUANT_FORMATS = ("int8", "int4", "int3", "fp8", "bf16", "fp16")
_QMAX = {"int8": 127.0, "int4": 7.0, "int3": 3.0}
_FP8_MAX = 448.0


@dataclass(frozen=True)
class Change:
    """One simulated change: ``kind`` in quantize / prune / noise, and its settings."""

    kind: str
    fmt: str | None = None
    granularity: str = "channel"
    group_size: int | None = None
    fraction: float | None = None
    rel: float | None = None
    seed: int = 0

    def label(self) -> str:
        if self.kind == "quantize":
            assert self.fmt is not None  # parse_change sets the format of every quantize change
            g = f"group{self.group_size}" if self.granularity == "group" else self.granularity
            return f"{self.fmt}-{g}" if self.fmt in _QMAX or self.fmt == "fp8" else self.fmt
        if self.kind == "prune":
            return f"prune-magnitude-{self.fraction:g}"
        return f"noise-{self.rel:g}"

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "format": self.fmt, "granularity": self.granularity, "group_size": self.group_size,
                "fraction": self.fraction, "rel": self.rel, "seed": self.seed, "label": self.label()}


def parse_change(*, quantize: str | None = None, group_size: int | None = None, granularity: str | None = None,
                 prune: str | None = None, noise: float | str | None = None, seed: int = 0) -> Change:
    """The one change the options ask for (exactly one of quantize / prune / noise)."""
    given = [name for name, v in (("quantize", quantize), ("prune", prune), ("noise", noise)) if v is not None]
    if len(given) != 1:
        raise InvalidParameterError(
            "Give exactly one simulated change: --quantize FORMAT, --prune magnitude:FRACTION or --noise REL "
            f"(got {', '.join('--' + g for g in given) or 'none'})."
        )
    if quantize is not None:
        fmt = str(quantize).lower()
        if fmt not in QUANT_FORMATS:
            raise InvalidParameterError(f"--quantize must be one of {', '.join(QUANT_FORMATS)}; got {quantize!r}.")
        gran = "group" if group_size is not None else (granularity or "channel")
        if gran not in ("tensor", "channel", "group"):
            raise InvalidParameterError(f"--granularity must be tensor or channel; got {granularity!r}.")
        if group_size is not None and (not isinstance(group_size, int) or group_size < 1):
            raise InvalidParameterError(f"--group-size must be a positive integer; got {group_size!r}.")
        if fmt in ("bf16", "fp16") and (group_size is not None or granularity not in (None, "tensor", "channel")):
            raise InvalidParameterError(f"--quantize {fmt} is a cast: it takes no --group-size.")
        return Change(kind="quantize", fmt=fmt, granularity=gran, group_size=group_size, seed=seed)
    if prune is not None:
        m = re.fullmatch(r"magnitude:([0-9]*\.?[0-9]+)", str(prune).strip())
        frac = float(m.group(1)) if m else None
        if frac is None or not 0.0 <= frac < 1.0:
            raise InvalidParameterError(
                f"--prune must be magnitude:FRACTION with FRACTION in [0, 1), e.g. magnitude:0.5; got {prune!r}.")
        return Change(kind="prune", fraction=frac, seed=seed)
    assert noise is not None  # exactly one change is given, and it is not quantize or prune
    try:
        rel = float(noise)
    except (TypeError, ValueError):
        rel = -1.0
    if not (rel >= 0 and np.isfinite(rel)):
        raise InvalidParameterError(f"--noise must be a relative size >= 0, e.g. 0.01; got {noise!r}.")
    return Change(kind="noise", rel=rel, seed=seed)


def _blocks(w: np.ndarray, change: Change) -> np.ndarray:
    """``w`` as a 2-D array of scaling blocks (rows), in an order :func:`_unblocks` undoes."""
    rows = w.reshape(w.shape[0], -1) if w.ndim > 1 else w.reshape(1, -1)
    if change.granularity == "tensor":
        return rows.reshape(1, -1)
    if change.granularity == "channel":
        return rows
    g = change.group_size
    assert g is not None  # parse_change gives every group-wise change its size
    pad = (-rows.shape[1]) % g
    # Padding with zeros never changes a block's absmax; the padded entries are dropped after.
    return np.pad(rows, ((0, 0), (0, pad))).reshape(-1, g)


def _unblocks(b: np.ndarray, w: np.ndarray, change: Change) -> np.ndarray:
    n = w.reshape(w.shape[0], -1).shape[1] if w.ndim > 1 else w.size
    m = w.shape[0] if w.ndim > 1 else 1
    if change.granularity == "group":
        b = b.reshape(m, -1)[:, :n]
    return b.reshape(w.shape)


def _absmax_scale(blocks: np.ndarray, qmax: float) -> np.ndarray:
    amax = np.max(np.abs(blocks), axis=1, keepdims=True)
    scale: np.ndarray = np.where(amax > 0, amax / qmax, 1.0)
    return scale


def _round_fp8_e4m3(x: np.ndarray) -> np.ndarray:
    """Round to the e4m3 grid (|x| <= 448 after scaling), half to even."""
    a = np.abs(x)
    # Exponent of each value, clamped at the subnormal range (2^-6 is the smallest normal).
    e = np.floor(np.log2(np.where(a > 0, a, 1.0)))
    e = np.clip(e, -6, 8)
    step = np.ldexp(1.0, (e - 3).astype(np.int64))  # 3 mantissa bits
    rounded: np.ndarray = np.sign(x) * np.minimum(np.round(a / step) * step, _FP8_MAX)
    return rounded


def _round_bf16(x: np.ndarray) -> np.ndarray:
    """Round float64 to bfloat16 (8 significant bits), half to even, via float32."""
    f = x.astype(np.float32)
    u = f.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


def _check_underflow(w: np.ndarray, cast: np.ndarray, name: str, fmt: str) -> np.ndarray:
    """``cast``, unless the cast turned a nonzero tensor into zeros: the format underflows there."""
    if np.any(w) and not np.any(cast):
        smallest = "6e-8" if fmt == "fp16" else "9.2e-41"
        raise InvalidParameterError(f"Tensor {name!r} is below the {fmt} range (its largest entry "
                                    f"{float(np.max(np.abs(w))):.3g} rounds to 0; the smallest {fmt} value is "
                                    f"{smallest}); --quantize {fmt} would underflow every entry to 0.")
    return cast


def apply_change(w: np.ndarray, change: Change, name: str = "", *, in_out: bool = False) -> np.ndarray:
    """``w`` after the change (a new float64 array); ``name`` seeds the noise of this tensor.

    ``in_out``: ``w`` is a matrix stored (in, out); quantization blocks (channels, groups) are
    taken on the (out, in) matrix ``w.T``, and the result is returned in ``w``'s layout. Noise and
    pruning act entry by entry on the whole tensor and do not depend on it.
    """
    w = np.asarray(w, dtype=np.float64)
    if in_out and change.kind == "quantize" and w.ndim == 2:
        return np.ascontiguousarray(apply_change(w.T, change, name).T)
    if change.kind == "noise":
        assert change.rel is not None  # parse_change gives every noise change its size
        digest = hashlib.sha256(name.encode()).digest()
        rng = np.random.default_rng([change.seed, int.from_bytes(digest[:8], "little")])
        g = rng.standard_normal(w.shape)
        ng = float(np.linalg.norm(g))
        noisy: np.ndarray = w + (change.rel * float(np.linalg.norm(w)) / ng) * g if ng > 0 else w.copy()
        return noisy
    if change.kind == "prune":
        assert change.fraction is not None  # parse_change gives every prune change its fraction
        flat = np.abs(w).reshape(-1)
        k = int(np.floor(change.fraction * flat.size))
        out = w.copy().reshape(-1)
        if k:
            out[np.argsort(flat, kind="stable")[:k]] = 0.0
        pruned: np.ndarray = out.reshape(w.shape)
        return pruned
    fmt = change.fmt
    if fmt == "fp16":
        if np.max(np.abs(w)) > 65504:
            raise InvalidParameterError(f"Tensor {name!r} exceeds the fp16 range (65504); --quantize fp16 would "
                                        "overflow. Use bf16.")
        return _check_underflow(w, w.astype(np.float16).astype(np.float64), name, fmt)
    if fmt == "bf16":
        with np.errstate(over="ignore"):  # beyond float32's range the cast is inf: refused just below
            cast = _round_bf16(w)
        if not np.all(np.isfinite(cast)):
            raise InvalidParameterError(f"Tensor {name!r} exceeds the bf16 range (3.39e38); --quantize bf16 would "
                                        "overflow.")
        return _check_underflow(w, cast, name, fmt)
    b = _blocks(w, change)
    if fmt == "fp8":
        scale = _absmax_scale(b, _FP8_MAX)
        q = _round_fp8_e4m3(b / scale) * scale
    else:
        assert fmt is not None  # every quantize change has its format
        qmax = _QMAX[fmt]
        scale = _absmax_scale(b, qmax)
        q = np.clip(np.round(b / scale), -qmax, qmax) * scale
    return _unblocks(q, w, change)


def changed_chain(chain: Chain, change: Change) -> Chain:
    """The chain with every factor matrix changed (for chains given as matrices)."""
    factors = []
    for f in chain.factors:
        m = apply_change(f.matrix, change, f.name)
        factors.append(Factor(name=f.name, matrix=check_matrix(m, f.name, chain.source), row_heads=f.row_heads,
                              col_heads=f.col_heads, col_groups=f.col_groups,
                              provenance={**f.provenance, "change": change.label()}))
    links = [(k.left, k.right) for k in chain.links]
    return Chain.from_factors(factors, source=f"{chain.source} [{change.label()}]", skipped=chain.skipped,
                              links=links)
