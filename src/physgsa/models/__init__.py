"""Adapters: factor chains from real networks (architecture.md, "Factors from real architectures").

One file per architecture. Each reads its layout from the model's config and its weights by
name through a :class:`~physgsa.models.sources.WeightSource`; nothing after the Chain knows
anything about torch. :func:`load_chain` is the one entry point.
"""

from __future__ import annotations

import math
from importlib import import_module
from pathlib import Path

from ..core.validation import InvalidParameterError, Param, check_params
from ..core.chain import Chain
from .sources import BUNDLED_MODELS, ModelSourceError, WeightSource, resolve_source

__all__ = ["load_chain", "detect", "MODEL_PARAMS", "ARCHITECTURES", "BUNDLED_MODELS",
           "ModelSourceError", "resolve_source"]

#: Transformer architectures (name, module), in the order they are tried.
_TRANSFORMERS = (("bert", "bert"), ("gpt2", "gpt2"), ("vit", "vit"), ("dit", "dit"), ("llama", "llama"),
                 ("clip", "clip"))

#: Channel-level CNN architectures (name, module; static mode, --conv dc), in the order they are
#: tried; each module has matches(config) and chain(src, factor=, conv=, freq=).
_CNNS = (("mobilenet_v2", "mobilenet"), ("efficientnet", "efficientnet"), ("convnext", "convnext"),
         ("regnet", "regnet"))

#: The architecture modules, imported when first needed (start-up: ``detect`` on a BERT needs
#: only ``bert``, and ``physgsa spectra`` of an .npz none of them).
_ARCH_MODULES = frozenset(m for _, m in _TRANSFORMERS + _CNNS) | {"resnet", "unet", "unet_cond"}


def _arch(module: str):
    return import_module(f".{module}", __name__)


def __getattr__(name: str):
    if name in _ARCH_MODULES:
        return _arch(name)
    if name == "transformer_chain":
        from ._transformer import transformer_chain

        return transformer_chain
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

#: What `physgsa models` lists.
ARCHITECTURES = {
    "bert": "BERT / MiniLM / RoBERTa (transformers): blocks.{l}.attn = W_O W_V, blocks.{l}.mlp = W_out W_in",
    "gpt2": "GPT-2 (transformers): Conv1D weights transposed, fused QKV split",
    "vit": "ViT (transformers): old and new parameter names",
    "dit": "DiT (diffusers DiTTransformer2DModel): attn1 and ff",
    "resnet": "ResNet (transformers ResNetModel, or torchvision-named torch ResNets): BatchNorm folded, "
              "projection shortcuts",
    "unet": "diffusers UNet2DModel: ResnetBlock2D with GroupNorm scales, spatial attention, resamplers; "
            "skip concatenations break the chain",
    "llama": "LLaMA / Mistral / Qwen2 / Qwen3 / Gemma / Gemma 2 / Gemma 3 text / Phi-3 (transformers): "
             "grouped-query OV circuit W_O repeat(W_V), gated MLP W_down W_up (gate = 1), norms left out",
    "clip": "CLIP (transformers CLIPModel, CLIPTextModel, CLIPVisionModel): pre-LN towers as GPT-2; "
            "text and vision towers broken apart",
    "mobilenet_v2": "MobileNetV2 (transformers): inverted residuals, depthwise convs, BatchNorm folded; "
                    "skips only where the module adds them",
    "efficientnet": "EfficientNet (transformers): MBConv with squeeze-excitation at its zero-input gate",
    "convnext": "ConvNeXt / ConvNeXt V2 (transformers): depthwise 7x7, LayerNorm scale, layer scale gamma, "
                "GRN as diag(1 + w); downsampling layers as plain factors",
    "regnet": "RegNet X / Y (transformers): grouped convs, squeeze-excitation, projection shortcuts",
    "unet_cond": "diffusers UNet2DConditionModel: as unet, with Transformer2DModels (self-attention OV, "
                 "cross-attention I, GEGLU with gate 1)",
}

MODEL_PARAMS = {
    "factor": Param("full", "choice", choices=("full", "branch"), doc="I + R (full) or R (branch)"),
    "interfaces": Param("blocks", "choice", choices=("blocks", "heads"), doc="block factors or head-level W_V W_O"),
    "conv": Param("dc", "choice", choices=("dc", "fft"), doc="conv channel matrices at zero frequency or at freq"),
    "freq": Param((0, 0, 8), "floats", 0, None, doc="(u, v, n): the frequency of --conv fft on an n x n grid"),
    "mode": Param("static", "choice", choices=("static", "jacobian"), doc="factors from weights or Jacobians"),
    "inputs": Param(None, "any", allow_none=True, doc="Jacobian inputs: None (bundled), 'random' (flagged), a file"),
    "seed": Param(0, "int", 0, None, doc="seed of random Jacobian inputs and of the Hutchinson probes"),
    "tokens": Param("uniform", "choice", choices=("uniform", "diagonal"),
                    doc="Jacobian token reduction: (1/T) sum_{t,s} J[t,s] (uniform) or (1/T) sum_t J[t,t] (diagonal)"),
    # The generic walker (adapters/generic.py): residual blocks from an execution on a sample.
    "sample": Param(None, "any", allow_none=True,
                    doc="an input batch (N, C, H, W) for the generic walker: it runs the module on it"),
    "sample_shape": Param(None, "any", allow_none=True, extra=lambda v, where: _generic().check_sample_shape(v, where),
                          doc="(N, C, H, W): the generic walker runs the module on a seeded normal sample of it"),
    "build": Param(None, "any", allow_none=True, extra=lambda v, where: _generic().check_build(v, where),
                   doc="'file.py:function' or 'package.module:function' returning the nn.Module (runs that code)"),
    "caller": Param("python", "choice", choices=("python", "cli"),
                    doc="who is asking: error messages name Python arguments or command-line flags"),
}


def _generic():
    from . import generic

    return generic


def detect(src: WeightSource) -> str:
    """The architecture of a source, from its config (``model_type`` / ``_class_name``)."""
    for key in ("model_type", "_class_name"):
        value = src.config.get(key)
        if value is not None and not isinstance(value, str):
            raise ModelSourceError(f"{src.name}: config.json's {key!r} must be a string; it is "
                                   f"{type(value).__name__}. Repair the config.")
    for name, mod in _TRANSFORMERS:
        if _arch(mod).matches(src.config):
            return name
    if _arch("unet_cond").matches(src.config):
        return "unet_cond"
    if _arch("unet").matches(src.config):
        return "unet"
    for name, mod in _CNNS:
        if _arch(mod).matches(src.config):
            return name
    if _arch("resnet").matches(src.config, src._keyset()):
        return "resnet"
    kind = src.config.get("model_type") or src.config.get("_class_name")
    known = ", ".join(ARCHITECTURES)
    raise ModelSourceError(
        f"{src.name}: physgsa has no adapter for architecture {kind!r} (known: {known}). "
        "Export the factor matrices to an .npz chain instead."
    )


def _spec(name: str):
    return _arch(dict(_TRANSFORMERS)[name]).SPEC


def load_chain(source=None, **params) -> Chain:
    """The factor chain of a model.

    Parameters
    ----------
    source : str, Path, dict or nn.Module, optional
        A bundled name (``minilm``), a local folder or file (``.safetensors``, ``.pt``, ``.bin``)
        with its ``config.json``, a Hugging Face id in the local cache, a state dict, or a module.
        With ``build=`` it may be omitted, or be a checkpoint whose weights are loaded into the
        built module.
    factor : {"full", "branch"}
        ``I + R`` (default) or the residual branch ``R``.
    interfaces : {"blocks", "heads"}
        Block factors (default) or the head-level chain ``W_O^l -> W_V^{l+1}``.
    conv : {"dc", "fft"}
        CNN channel matrices at zero frequency (default), or at ``freq = (u, v, n)`` in real form.
    mode : {"static", "jacobian"}
        Factors from the weights (default) or from Jacobians at real inputs.
    inputs : None, "random" or a path
        Jacobian inputs: bundled sentences / digits images (default), random (flagged), or a
        text file (one sentence a line) / an .npy of images.
    seed : int
        Seed of random Jacobian inputs and of the Hutchinson probes of ``energy_kept``.
    tokens : {"uniform", "diagonal"}
        Jacobian mode, transformers: how the sublayer Jacobian ``J[t, s] = d F(X)[t] / d X[s]``
        becomes one ``d x d`` factor. ``"uniform"`` (default): ``(1/T) sum_t sum_s J[t, s]``,
        the mean output along channel directions placed at every token (keeps attention's
        token mixing, ``d`` passes); ``"diagonal"``: ``(1/T) sum_t J[t, t]``. CNNs take
        ``"uniform"`` only. See :mod:`physgsa.models.jacobian`.
    sample : tensor (N, C, H, W), optional
        Runs the generic walker (:func:`physgsa.models.generic.walk_blocks`) on the module
        ``source``, even where an adapter exists: it traces the module with torch.fx, runs it on
        the sample, and takes the residual blocks (a tensor added to an earlier tensor of the same
        shape) and their order from that execution. Static factors freeze gates
        (squeeze-excitation) at the sample; ``mode="jacobian"`` differentiates each block at it
        (or at ``inputs``).
    sample_shape : (N, C, H, W), optional
        As ``sample``, with a standard normal sample of this shape drawn from ``seed``.
    build : str, optional
        ``"path/to/file.py:function"`` or ``"package.module:function"``: imports the file and
        calls ``function()`` to get the nn.Module. **This runs that file's code** (a checkpoint
        never runs code; a build file always does). Needs ``sample_shape`` (or ``sample``).
        With a checkpoint as ``source``, its weights are loaded into the module first.
    caller : {"python", "cli"}
        Whether error messages name Python arguments (``sample=``) or flags (``--build``).
    """
    p = check_params("load_chain", MODEL_PARAMS, params)
    if p["sample"] is not None or p["sample_shape"] is not None or p["build"] is not None:
        return _generic().walk_source(source, p)
    if source is None:
        raise InvalidParameterError("load_chain needs a model source (a bundled name, a path, a hub id or an nn.Module), "
                                    "or build='file.py:function' with sample_shape=.")
    if isinstance(source, dict):
        from .sources import TensorDictSource

        source = TensorDictSource(source, None, "the state dict")
    if p["mode"] == "jacobian":
        from .jacobian import jacobian_chain
        from .sources import _torch

        if not isinstance(source, _torch().nn.Module) and _generic().without_layout(source):
            raise ModelSourceError(_generic().layout_help(_generic().source_name(source), p["caller"]))

        return jacobian_chain(source, factor=p["factor"], tokens=p["tokens"], inputs=p["inputs"], seed=p["seed"])
    src = source if isinstance(source, WeightSource) else resolve_source(source)
    try:
        arch = detect(src)
    except ModelSourceError:
        if not src.config and not hasattr(source, "forward") and _generic().without_layout(source):
            raise ModelSourceError(_generic().layout_help(src.name, p["caller"])) from None
        return _walk(source, src)
    if arch in ("resnet", "unet", "unet_cond", *dict(_CNNS)) and p["interfaces"] == "heads":
        raise InvalidParameterError(f"interfaces='heads' needs a transformer; {src.name} is a {arch}.")
    if arch in ("resnet", "unet", "unet_cond", *dict(_CNNS)):
        freq = p["freq"]
        if len(freq) != 3 or any(float(x) != int(x) for x in freq) or int(freq[2]) < 1:
            raise InvalidParameterError(
                f"The 'freq' parameter of load_chain (--freq) must be three integers u, v, n with n >= 1; got {freq!r}."
            )
        u, v, n = (int(x) for x in freq)
        if arch in ("unet", "unet_cond", "resnet"):
            build = getattr(_arch(arch), f"{arch}_chain")
        else:
            build = _arch(dict(_CNNS)[arch]).chain
        return build(src, factor=p["factor"], conv=p["conv"], freq=(u, v, n))
    module = _arch(dict(_TRANSFORMERS)[arch])
    if hasattr(module, "chain"):  # layout from the config class (LLaMA family, CLIP)
        return module.chain(src, factor=p["factor"], interfaces=p["interfaces"])
    from ._transformer import transformer_chain

    return transformer_chain(src, _spec(arch), factor=p["factor"], interfaces=p["interfaces"])


def _walk(source, src: WeightSource) -> Chain:
    """No adapter: the generic walker, on the module itself or on one transformers can build."""
    from .generic import walk_chain
    from .sources import _torch

    torch = _torch()
    if isinstance(source, torch.nn.Module):
        return walk_chain(source, source=src.name)
    folder = Path(str(source))
    folder = folder.parent if folder.is_file() else folder
    if not (folder / "config.json").is_file():
        raise ModelSourceError(f"{src.name}: no adapter fits, and without a config.json the generic walker cannot "
                               "build the model. Pass the nn.Module (with sample=) or export an .npz chain.")
    import transformers

    try:
        # Never code from the folder: trust_remote_code stays False (a config's auto_map is refused).
        config = transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
        _check_config_against_weights(config, src, torch, transformers)
        model = transformers.AutoModel.from_pretrained(str(folder), trust_remote_code=False)
    except ModelSourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - a config from a file can make transformers fail in any way
        first = (str(exc).splitlines() or [""])[0][:300]
        raise ModelSourceError(f"{src.name}: no adapter fits, and transformers cannot build it for the generic "
                               f"walker from its config.json ({type(exc).__name__}: {first}).") from None
    return walk_chain(model, source=src.name)


_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "num_decoder_layers", "num_encoder_layers")


def _check_config_against_weights(config, src: WeightSource, torch, transformers) -> None:
    """Refuse a config.json that would make transformers build more than the checkpoint holds.

    The generic walker builds the model from the folder's config before loading its weights, so
    a hostile or broken config (a billion layers, a vocabulary of 2^40) could take all memory or
    time. The layer count may not exceed the number of stored tensors, and the model is first
    built on the meta device (no memory) to count its parameters, which may not exceed twice the
    stored ones (plus room for buffers) nor the memory limit.
    """
    from ..core.resources import check_memory, default_limit

    keys = [k for k in src.keys()]
    stored = sum(math.prod(src.shape(k)) for k in keys)
    for key in _LAYER_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > len(keys):
            raise ModelSourceError(
                f"{src.name}: config.json sets {key} = {value}, more than the {len(keys)} tensors its checkpoint "
                "holds. The config contradicts the weights."
            )
    with torch.device("meta"):
        meta = transformers.AutoModel.from_config(config, trust_remote_code=False)
    n_params = sum(p.numel() for p in meta.parameters())
    if n_params > 2 * stored + (1 << 20):
        raise ModelSourceError(
            f"{src.name}: config.json describes a model of {n_params} parameters, but its checkpoint holds "
            f"{stored}. The config contradicts the weights."
        )
    check_memory(8 * n_params, default_limit(), f"{src.name}: building the model for the generic walker")
