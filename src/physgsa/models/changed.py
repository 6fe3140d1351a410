"""A model's weights after a simulated change (quantization, pruning, noise), for ``physgsa compare``.

:class:`ChangedSource` wraps any :class:`~physgsa.models.sources.WeightSource` and changes each
weight tensor of two or more axes named ``*weight`` (the linear and conv weights that
quantizers change; biases, norms and scalar buffers are left as they are) when an adapter reads
it, one tensor at a time. The adapters then build the changed model's factors exactly as they
build the base model's. A weight its adapter stores (in, out) (``Adapter.stored_in_out``: GPT-2's
Conv1D) is quantized as the (out, in) matrix the adapter reads: per output channel, and in groups
along the input axis.
"""

from __future__ import annotations

import numpy as np

from ..core.perturb import Change, apply_change
from .sources import WeightSource

__all__ = ["ChangedSource"]


class ChangedSource(WeightSource):
    """The weights of ``base`` with ``change`` applied to each ``*weight`` tensor as it is read."""

    def __init__(self, base: WeightSource, change: Change):
        super().__init__(f"{base.name} [{change.label()}]", base.config)
        self.base, self.change = base, change
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
        if w.ndim >= 2 and key.endswith("weight") and "embed" not in key and "wte" not in key and "wpe" not in key:
            return apply_change(w, self.change, key, in_out=self._stored_in_out(key))
        return w
