"""Factors and chains (definitions section 1).

Matrix convention, fixed here for the whole package: a factor is an ``m x n`` real matrix
whose **rows are output channels and columns are input channels**, so that a chain
``A_1, ..., A_L`` composes as ``A_L ... A_2 A_1`` and interface ``l`` joins the output space
of ``A_l`` (its rows, size ``m_l``) to the input space of ``A_{l+1}`` (its columns,
``n_{l+1}``). Where ``n_{l+1} != m_l`` the chain is broken there: the break is reported,
never guessed over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .validation import InvalidFactorError

__all__ = ["Factor", "Deferred", "Chain", "Link", "Break", "check_matrix"]


def check_matrix(value: ArrayLike, name: str, where: str = "", *, copy: bool = True) -> NDArray[np.float64]:
    """Return ``value`` as a read-only C-contiguous float64 matrix or raise a named error.

    With ``copy=False`` the result is a read-only view when ``value`` already is a float64 array,
    in whatever memory order (the caller's array itself stays writable); otherwise a new array.

    Rejected, each with the factor's name in the message: non-numeric or complex arrays,
    anything but 2-D, an empty matrix, NaN or Inf entries, and the zero matrix (its
    Frobenius normalization is undefined).
    """
    src = f" in {where}" if where else ""
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "fiu":
        raise InvalidFactorError(
            f"Factor {name!r}{src} has dtype {arr.dtype}, which is not a real number type. "
            "Give a float or integer matrix."
        )
    if arr.ndim != 2:
        raise InvalidFactorError(
            f"Factor {name!r}{src} must be a 2-D matrix (rows = outputs, columns = inputs). "
            f"Got an array of shape {arr.shape} ({arr.ndim}-D) instead."
        )
    if arr.size == 0:
        raise InvalidFactorError(
            f"Factor {name!r}{src} is empty (shape {arr.shape}). Give a matrix with at least one entry."
        )
    # A signalling NaN in a float32 input warns as it is widened; it is reported just below.
    with np.errstate(invalid="ignore"):
        out = np.array(arr, dtype=np.float64, order="C", copy=True) if copy else \
            np.asarray(arr, dtype=np.float64).view()
    # Two reductions instead of elementwise masks: a NaN propagates to both, an Inf to one.
    hi, lo = float(out.max()), float(out.min())
    if not (np.isfinite(hi) and np.isfinite(lo)):
        bad = int(np.count_nonzero(~np.isfinite(out)))
        raise InvalidFactorError(
            f"Factor {name!r}{src} has {bad} NaN or Inf entries. Remove or repair them."
        )
    if hi == 0.0 and lo == 0.0:
        raise InvalidFactorError(
            f"Factor {name!r}{src} is the zero matrix; its Frobenius normalization is undefined. "
            "Drop it from the chain."
        )
    out.setflags(write=False)
    return out


def _dtype_name(arr: object) -> str:
    """The stored precision of an input (recorded: every computation is in float64)."""
    return str(getattr(arr, "dtype", np.asarray(arr).dtype)).replace("torch.", "")


def _check_heads(heads: ArrayLike | None, size: int, name: str, axis: str) -> NDArray[np.int64] | None:
    if heads is None:
        return None
    arr = np.asarray(heads)
    if arr.ndim != 1 or arr.shape[0] != size or arr.dtype.kind not in "iu":
        raise InvalidFactorError(
            f"The {axis} head layout of factor {name!r} must be a 1-D integer array of length {size} "
            f"(one head index per {axis[:-1]}). Got shape {arr.shape}, dtype {arr.dtype} instead."
        )
    out = arr.astype(np.int64)
    out.setflags(write=False)
    return out


class Deferred:
    """A factor's matrix that is read from its source when it is needed, and not kept.

    Subclasses give ``shape`` (known without reading) and ``read()``, which returns the checked
    read-only float64 matrix (:func:`check_matrix`) every time it is called. An instance must be
    small and picklable: a Dask worker or a pool process receives it instead of the array, and
    reads the matrix itself from a path it can reach.
    """

    shape: tuple[int, int]

    def read(self) -> NDArray[np.float64]:  # pragma: no cover - abstract
        raise NotImplementedError


class Factor:
    """A named factor of a chain.

    Parameters
    ----------
    name : str
        Unique within the chain (for models: ``blocks.{l}.attn``, ``blocks.{l}.mlp``).
    matrix : ndarray of shape (m, n), or Deferred
        Rows = output channels, columns = input channels; float64, read-only. A
        :class:`Deferred` is read from its source each time ``.matrix`` is asked for, so a
        chain of deferred factors holds no matrix: memory is set by the factors in use.
    row_heads, col_heads : ndarray of int, optional
        Head (or group) index of each row / column, where the architecture has heads.
    col_groups : ndarray of int, optional
        Conv group of each column (input channel), where the factor is a grouped or depthwise
        convolution: ``units="groups"`` makes them the PAM's column units (definitions section 4).
    provenance : dict
        Where the matrix came from: ``source`` ("matrix", "static" or "jacobian"), ``kind``
        ("full" = I + R, "branch" = R, or "given") and, where known, ``dtype``: the stored
        precision (float16 and bfloat16 weights are widened exactly and computed in float64).
    """

    __slots__ = ("name", "_matrix", "row_heads", "col_heads", "provenance", "col_groups")

    # Declared for the type checker only (no values: the slots above hold them).
    name: str
    _matrix: NDArray[np.float64] | Deferred
    row_heads: NDArray[np.int64] | None
    col_heads: NDArray[np.int64] | None
    provenance: dict[str, Any]
    col_groups: NDArray[np.int64] | None

    def __init__(self, name: str, matrix: NDArray[np.float64] | Deferred, row_heads: NDArray[np.int64] | None = None,
                 col_heads: NDArray[np.int64] | None = None, provenance: dict[str, Any] | None = None,
                 col_groups: NDArray[np.int64] | None = None) -> None:
        values = (name, matrix, row_heads, col_heads,
                  {"source": "matrix", "kind": "given"} if provenance is None else provenance, col_groups)
        for slot, value in zip(self.__slots__, values):
            object.__setattr__(self, slot, value)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"Factor is immutable; build a new Factor instead of setting {key!r}.")

    def __reduce__(self) -> tuple[type[Factor], tuple[object, ...]]:
        # Pickled as its constructor call: a deferred factor travels as its small source reference.
        return (Factor, (self.name, self._matrix, self.row_heads, self.col_heads, self.provenance, self.col_groups))

    def __repr__(self) -> str:
        kind = "deferred" if self.deferred else "in memory"
        return f"Factor(name={self.name!r}, shape={self.shape}, {kind})"

    @property
    def deferred(self) -> bool:
        """Whether the matrix is read from its source on demand (never held by the chain)."""
        return isinstance(self._matrix, Deferred)

    @property
    def matrix(self) -> NDArray[np.float64]:
        """The matrix (read from its source now, for a deferred factor: keep it only while needed)."""
        m = self._matrix
        return m.read() if isinstance(m, Deferred) else m

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self._matrix.shape)


@dataclass(frozen=True)
class Link:
    """Interface ``left -> right``: the output space of ``left`` is the input of ``right``."""

    index: int
    left: int
    right: int

    def name(self, chain: "Chain") -> str:
        return f"{chain.factors[self.left].name}->{chain.factors[self.right].name}"


@dataclass(frozen=True)
class Break:
    """A place where adjacent sizes differ (n_{l+1} != m_l): no interface, reported."""

    left: str
    right: str
    reason: str


@dataclass(frozen=True)
class Chain:
    """An ordered list of factors and the interfaces between adjacent, size-matched ones."""

    factors: tuple[Factor, ...]
    links: tuple[Link, ...]
    breaks: tuple[Break, ...]
    skipped: tuple[dict[str, Any], ...] = ()
    source: str = "matrices"

    @classmethod
    def from_factors(cls, factors: Sequence[Factor], *, source: str = "matrices",
                     skipped: Iterable[dict[str, Any]] = (), links: Sequence[tuple[int, int]] | None = None) -> "Chain":
        """A chain of ``factors``; interfaces between adjacent ones, or only the ``links`` given.

        ``links`` lists ``(left, right)`` index pairs (an adapter uses it for head-level chains,
        where only ``W_O^l -> W_V^{l+1}`` are interfaces). A pair whose sizes do not meet is a
        break, reported with its reason.
        """
        factors = tuple(factors)
        if not factors:
            raise InvalidFactorError(f"The chain from {source} holds no factor. Give at least one 2-D matrix.")
        seen: set[str] = set()
        for f in factors:
            if not isinstance(f.name, str) or not f.name:
                raise InvalidFactorError(f"Every factor needs a non-empty string name; got {f.name!r} in {source}.")
            if f.name in seen:
                raise InvalidFactorError(f"Factor name {f.name!r} appears twice in {source}; names must be unique.")
            seen.add(f.name)
        pairs = [(i, i + 1) for i in range(len(factors) - 1)] if links is None else list(links)
        found: list[Link] = []
        breaks: list[Break] = []
        for i, j in pairs:
            a, b = factors[i], factors[j]
            if b.shape[1] == a.shape[0]:
                found.append(Link(index=len(found), left=i, right=j))
            else:
                breaks.append(
                    Break(
                        left=a.name,
                        right=b.name,
                        reason=(
                            f"{a.name!r} has {a.shape[0]} output channels but {b.name!r} has "
                            f"{b.shape[1]} input channels"
                        ),
                    )
                )
        return cls(factors=factors, links=tuple(found), breaks=tuple(breaks), skipped=tuple(skipped), source=source)

    @classmethod
    def from_arrays(cls, pairs: Mapping[Any, ArrayLike] | Iterable[object], *, source: str = "matrices") -> "Chain":
        """Build a chain from ``(name, array)`` pairs (or a mapping, in its order).

        Each array is checked by :func:`check_matrix`; a bad one raises
        :class:`~physgsa.InvalidFactorError` naming it.
        """
        items = list(pairs.items()) if hasattr(pairs, "items") else list(pairs)
        factors: list[Factor] = []
        for item in items:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise InvalidFactorError(
                    f"A chain from {source} is built from (name, array) pairs; got {type(item).__name__} instead."
                )
            name, arr = item
            factors.append(Factor(name=str(name), matrix=check_matrix(arr, str(name), source),
                                  provenance={"source": "matrix", "kind": "given", "dtype": _dtype_name(arr)}))
        return cls.from_factors(factors, source=source)

    @classmethod
    def from_layout(cls, factors: Sequence[tuple[Any, ...]], *, source: str = "matrices") -> "Chain":
        """Build a chain from ``(name, array, row_heads, col_heads)`` tuples, or
        ``(name, array, row_heads, col_heads, col_groups)`` where a factor is a grouped conv.
        """
        out: list[Factor] = []
        for item in factors:
            name, arr, rh, ch = item[:4]
            cg = item[4] if len(item) > 4 else None
            m = check_matrix(arr, str(name), source)
            out.append(
                Factor(
                    name=str(name),
                    matrix=m,
                    row_heads=_check_heads(rh, m.shape[0], str(name), "rows"),
                    col_heads=_check_heads(ch, m.shape[1], str(name), "columns"),
                    col_groups=_check_heads(cg, m.shape[1], str(name), "columns"),
                )
            )
        return cls.from_factors(out, source=source)
