"""Models: anything -> Chain (architecture.md, "Factors from real architectures").

One file per architecture, each with one :class:`~physgsa.models.registry.Adapter` named
``ADAPTER``, listed once in :mod:`physgsa.models.registry` with the bundled model names. Each
reads its layout from the model's config and its weights by name through a
:class:`~physgsa.models.sources.WeightSource`; nothing after the Chain knows anything about
torch. :func:`chain_from` (anything) and :func:`load_chain` (a model) are the entry points
(:mod:`physgsa.models.load`).
"""

from __future__ import annotations

from .load import (
    MODEL_PARAMS,
    chain_from,
    check_config_against_weights,
    detect,
    detect_config,
    is_matrix_file,
    load_chain,
)
from .registry import ARCHITECTURES, BUNDLED_MODELS
from .resolve import resolve_source
from .sources import ModelSourceError

__all__ = ["chain_from", "load_chain", "detect", "detect_config", "is_matrix_file", "check_config_against_weights",
           "MODEL_PARAMS", "ARCHITECTURES", "BUNDLED_MODELS", "ModelSourceError", "resolve_source"]
