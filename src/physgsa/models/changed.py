"""A model's weights after a simulated change (quantization, pruning, noise), for ``physgsa compare``.

:class:`ChangedSource` wraps any :class:`~physgsa.models.sources.WeightSource` and changes each
weight tensor of two or more axes named ``*weight`` (the linear and conv weights that
quantizers change; biases, norms and scalar buffers are left as they are) when an adapter reads
it, one tensor at a time. The adapters then build the changed model's factors exactly as they
build the base model's.
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
            return apply_change(w, self.change, key)
        return w
