"""The name physgsa 0.2 gave to :mod:`physgsa.models`, kept so that users' scripts keep working.

``physgsa.adapters.load_chain`` is :func:`physgsa.models.load_chain`, and
``physgsa.adapters.digits`` is :mod:`physgsa.models.bundled.digits`. New code imports
:mod:`physgsa.models`.
"""

from importlib import import_module

from .models import *  # noqa: F403 - the same public names, under the old name
from .models import __all__ as __all__  # noqa: F401


def __getattr__(name: str):
    # The bundled models' modules (they import torch and scikit-learn) load when first named.
    if name in ("digits", "trained"):
        return import_module(f".models.bundled.{name}", __package__)
    return getattr(import_module(".models", __package__), name)
