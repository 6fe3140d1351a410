"""Any model source to a :class:`~physgsa.models.sources.WeightSource`: a bundled name, a path,
a hub id in the local cache, or an nn.Module.
"""

from __future__ import annotations

from pathlib import Path

from .bundled import bundled_weights
from .registry import BUNDLED_MODELS
from .sources import WeightSource, path_source

__all__ = ["resolve_source"]


def resolve_source(spec) -> WeightSource:
    """A :class:`WeightSource` for a bundled name, a path, a hub id in the local cache, or a module."""
    if isinstance(spec, (str, Path)) and str(spec) in BUNDLED_MODELS:
        return bundled_weights(str(spec))
    return path_source(spec)
