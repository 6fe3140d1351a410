"""A model's weights after a simulated change (quantization, pruning, noise), for ``physgsa compare``.

:class:`ChangedSource` wraps any :class:`~physgsa.models.sources.WeightSource` and changes each
weight tensor of two or more axes named ``*weight`` (the linear and conv weights that
quantizers change; biases, norms and scalar buffers are left as they are) when an adapter reads
it, one tensor at a time. The adapters then build the changed model's factors exactly as they
build the base model's. A weight its adapter stores (in, out) (``Adapter.stored_in_out``: GPT-2's
Conv1D) is quantized as the (out, in) matrix the adapter reads: per output channel, and in groups
along the input axis.

With ``parts`` (a unit's weights, :mod:`physgsa.models.units`), only the named tensors change,
and of each only its block of rows and columns of the (out, in) matrix the adapter reads
(:func:`change_part`): quantization groups run along the input axis within the block, and
pruning ranks the block's own entries. Every other entry, and every other tensor, is read
unchanged.
"""

from __future__ import annotations

import numpy as np

from ..core.perturb import Change, apply_change
from .sources import WeightSource

__all__ = ["ChangedSource", "change_part", "Part"]

#: One block of a weight tensor: (key, rows, columns) of the (out, in) matrix an adapter reads
#: (``None``: all of them). A conv kernel's rows are its output channels, its columns its input channels.
Part = tuple[str, "slice | None", "slice | None"]


def change_part(w: np.ndarray, change: Change, key: str, rows: slice | None, cols: slice | None, *,
                in_out: bool = False) -> np.ndarray:
    """``w`` (stored layout) with ``change`` applied to the block ``[rows, cols]`` of its (out, in) matrix only.

    The block ``B = M[rows, cols]`` of ``M = w`` (``w.T`` for ``in_out``), and for a conv kernel
    ``w[rows, cols, :, :]``, is changed as a tensor of its own (:func:`physgsa.core.perturb.apply_change`:
    group-wise quantization runs along ``B``'s input axis, magnitude pruning zeroes the fraction
    of ``B``'s smallest entries); everything outside ``B`` is returned as it was, in float64.
    """
    w = np.asarray(w, dtype=np.float64)
    m = w.T if in_out else w
    out = np.array(m, dtype=np.float64, copy=True)
    r = slice(None) if rows is None else rows
    c = slice(None) if cols is None else cols
    out[r, c] = apply_change(np.ascontiguousarray(m[r, c]), change, key)
    return np.ascontiguousarray(out.T) if in_out else out


class ChangedSource(WeightSource):
    """The weights of ``base`` with ``change`` applied to each ``*weight`` tensor as it is read."""

    def __init__(self, base: WeightSource, change: Change, parts: tuple[Part, ...] | None = None,
                 label: str | None = None):
        what = change.label() if label is None else f"{change.label()} on {label}"
        super().__init__(f"{base.name} [{what}]", base.config)
        self.base, self.change = base, change
        self.parts: dict[str, list[tuple[slice | None, slice | None]]] | None = None
        if parts is not None:
            self.parts = {}
            for key, rows, cols in parts:
                self.parts.setdefault(key, []).append((rows, cols))
        self._in_out: object = False  # not looked up yet

    def _stored_in_out(self, key: str) -> bool:
        """Whether the adapter of the base model reads ``key``'s transpose (its weight is stored (in, out))."""
        if self._in_out is False:
            from .load import detect  # models.load imports the adapters; only when a weight is changed
            from .registry import adapter
            from .sources import ModelSourceError

            try:
                self._in_out = adapter(detect(self.base)).stored_in_out
            except ModelSourceError:
                self._in_out = None  # no adapter reads it: load_chain says so
        pred = self._in_out
        return callable(pred) and bool(pred(key))

    def keys(self):
        return self.base.keys()

    def shape(self, key):
        return self.base.shape(key)

    def dtype(self, key):
        return self.base.dtype(key)

    def _read(self, key):
        return self.base._read(key)

    def get(self, key: str) -> np.ndarray:
        w = self.base.get(key)
        if self.parts is not None:
            if key not in self.parts:
                return w
            in_out = self._stored_in_out(key)
            for rows, cols in self.parts[key]:
                w = change_part(w, self.change, key, rows, cols, in_out=in_out)
            return w
        if w.ndim >= 2 and key.endswith("weight") and "embed" not in key and "wte" not in key and "wpe" not in key:
            return apply_change(w, self.change, key, in_out=self._stored_in_out(key))
        return w
