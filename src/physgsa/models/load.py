"""Anything to a Chain: :func:`chain_from`, :func:`load_chain` and :func:`detect`.

``chain_from`` takes ``example``, a matrix file or a model; ``load_chain`` takes a model (a
bundled name, a folder or file with its config, a hub id in the local cache, a state dict or an
nn.Module) and reads it through the adapter the registry (:mod:`.registry`) names for its
architecture, or through the generic walker (:mod:`.generic`) where none fits.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

from ..core.chain import Chain
from ..core.examples import example_chain
from ..core.resources import check_memory, default_limit
from ..core.validation import InvalidParameterError, Param, check_params, command_line, on_command_line, spell, unset
from . import jacobian
from .files import SafetensorsFile, read_chain
from .generic import check_build, check_sample_shape, layout_help, source_name, walk_chain, walk_source, without_layout
from .generic.options import check_freq
from .generic.samples import sample_inputs
from .registry import ARCHITECTURES, adapter, detection_order
from .resolve import resolve_source
from .sources import ModelSourceError, TensorDictSource, WeightSource, import_torch

__all__ = ["chain_from", "load_chain", "detect", "MODEL_PARAMS", "check_config_against_weights", "is_matrix_file",
           "check_model_options"]

MODEL_PARAMS = {
    "factor": Param("full", "choice", choices=("full", "branch"), doc="I + R (full) or R (branch)",
                    help="Model factors: full (I + R) or branch (R)."),
    "interfaces": Param("blocks", "choice", choices=("blocks", "heads"), doc="block factors or head-level W_V W_O",
                        help="Model interfaces: blocks, or heads (W_O^l -> W_V^{l+1})."),
    "conv": Param("dc", "choice", choices=("dc", "fft"), doc="conv channel matrices at zero frequency or at freq",
                  help="CNN channel matrices: dc (zero frequency) or fft (at --freq)."),
    "freq": Param((0, 0, 8), "floats", 0, None, doc="(u, v, n): the frequency of --conv fft on an n x n grid",
                  help="u,v,n: the Fourier mode of --conv fft on the n x n torus at the chain's input (n divisible "
                       "by every stride)."),
    "mode": Param("static", "choice", choices=("static", "jacobian"), doc="factors from weights or Jacobians",
                  help="Model factors from weights (static) or Jacobians at inputs (jacobian)."),
    "inputs": Param(None, "any", allow_none=True, doc="Jacobian inputs: None (bundled), 'random' (flagged), a file",
                    help="Jacobian inputs: a text file (one sentence a line), an .npy of images, or 'random' "
                         "(flagged). Default: bundled sentences / digits images."),
    "seed": Param(0, "int", 0, None, doc="seed of random Jacobian inputs and of the Hutchinson probes"),
    "tokens": Param("uniform", "choice", choices=("uniform", "diagonal"),
                    doc="Jacobian token reduction: (1/T) sum_{t,s} J[t,s] (uniform) or (1/T) sum_t J[t,t] (diagonal)",
                    help="Jacobian token reduction (transformers): uniform (the sum of the blocks J_ts over all token "
                         "pairs / T: keeps attention's token mixing) or diagonal (the mean of the blocks J_tt)."),
    # The generic walker (models/generic/): residual blocks from an execution on a sample.
    "sample": Param(None, "any", allow_none=True,
                    doc="an input for the generic walker (it runs the module on it): a tensor of any rank (images, "
                        "vectors, token ids), a tuple (positional) or dict (keyword) of tensors, or a sample file",
                    help="FILE.npy|.npz|.pt: find the residual blocks by running the model (--build) on this input: "
                         ".npy one array; .npz its arrays as keyword arguments by name (positional as arr_0, arr_1, "
                         "...); .pt a tensor, tuple or dict of tensors (read with weights_only). Float or integer "
                         "(token ids); the first array is walked, the others held."),
    "sample_shape": Param(None, "any", allow_none=True, extra=check_sample_shape,
                          doc="(N, C, H, W): the generic walker runs the module on a seeded normal sample of it",
                          help="N,C,H,W: find the residual blocks by running the model on a seeded standard normal "
                               "batch of this shape (--seed). Static factors freeze squeeze-excitation gates at it; "
                               "--mode jacobian differentiates at it (or at --inputs)."),
    "build": Param(None, "any", allow_none=True, extra=check_build,
                   doc="'file.py:function' or 'package.module:function' returning the nn.Module (runs that code)",
                   help="Make the model by calling FUNC() from FILE.py (or package.module:FUNC). This RUNS that file's "
                        "code; checkpoints never run code. A MODEL given too is a checkpoint whose weights are loaded "
                        "into the module. Needs --sample-shape."),
    "caller": Param("python", "choice", choices=("python", "cli"),
                    doc="who is asking: error messages name Python arguments or command-line flags"),
}


def is_matrix_file(source) -> bool:
    """Whether ``source`` is a file of factor matrices (an .npz, or a .safetensors without config.json)."""
    if not isinstance(source, (str, Path)):
        return False
    p = Path(source)
    return p.suffix == ".npz" or (p.suffix == ".safetensors" and not (p.parent / "config.json").is_file())


def chain_from(source=None, *, order=None, **model_params) -> Chain:
    """A chain from ``example``, a matrix file (.npz, or .safetensors without config.json), or a model.

    ``model_params`` go to :func:`load_chain`: among them ``sample=`` (an input
    batch: the generic walker finds the residual blocks of an nn.Module by running it),
    ``build="file.py:function"`` with ``sample_shape=`` (makes the module by running that file's
    code; ``source`` is then omitted, or a checkpoint whose weights are loaded into it) and
    ``caller="cli"`` (error messages name command-line flags).
    """
    with command_line() if model_params.get("caller") == "cli" else contextlib.nullcontext():
        check_model_options(source, order=order, **model_params)
        return _chain_from(source, order, model_params)


def check_model_options(source=None, *, order=None, **model_params) -> None:
    """Every refusal :func:`chain_from` makes from its arguments alone, before a model is trained or loaded:
    wrong values, model options on a chain of factor matrices, ``order`` on a model, options that
    contradict each other, Jacobian mode on a model physgsa trains.
    """
    with command_line() if model_params.get("caller") == "cli" else contextlib.nullcontext():
        p = check_params("load_chain", MODEL_PARAMS, model_params)
        walker = any(p[k] is not None for k in ("sample", "sample_shape", "build"))
        if isinstance(p["sample"], (str, Path)):
            sample_inputs(p["sample"], p["caller"])  # a bad --sample file: refused before anything is loaded
        plain = not walker and _plain_chain(source)
        if plain:
            _refuse_model_options(source, p)
        if order is not None and not plain:
            raise InvalidParameterError(f"{spell('order')} orders the arrays of a chain file (.npz, or .safetensors "
                                        f"without config.json); {source_name(source)} is a model, whose factors come "
                                        "in depth order. Leave it out.")
        if p["mode"] == "jacobian" and not walker:
            _refuse_trained_jacobian(source)
        if p["conv"] != "dc" and p["mode"] == "jacobian":
            raise InvalidParameterError(f"{spell('conv', p['conv'])} applies to static factors; Jacobian factors use "
                                        "spatially uniform directions (zero frequency). Drop one of them.")
        if p["conv"] == "dc" and tuple(p["freq"]) != tuple(MODEL_PARAMS["freq"].default):
            raise InvalidParameterError(f"{spell('freq')} is the frequency of {spell('conv', 'fft')}, which is not "
                                        f"given. Add {spell('conv', 'fft')}, or leave out {spell('freq')}.")


def _plain_chain(source) -> bool:
    """``example``, an .npz, or a .safetensors of 2-D arrays without config.json: a chain of factor matrices."""
    if isinstance(source, str) and source == "example":
        return True
    if not is_matrix_file(source):
        return False
    if Path(source).suffix == ".safetensors" and Path(source).is_file():
        try:
            stored = SafetensorsFile(Path(source))
            return all(len(stored.shape(k)) == 2 for k in stored.keys())
        except Exception:  # noqa: BLE001 - an unreadable file: read_chain names what is wrong
            return True
    return True


def _chain_from(source, order, model_params: dict) -> Chain:
    walker = any(model_params.get(k) is not None for k in ("sample", "sample_shape", "build"))
    if isinstance(source, str) and source == "example" and not walker:
        return example_chain()
    if is_matrix_file(source) and not walker:
        if Path(source).suffix == ".safetensors" and Path(source).is_file():
            stored = SafetensorsFile(Path(source))
            names = stored.keys()
            if any(len(stored.shape(k)) != 2 for k in names):
                # A state dict (conv kernels, norm vectors), not a stack of factor matrices: an
                # adapter may know its weight names; load_chain says how to give the layout if not.
                return load_chain(source, **model_params)
        chain = read_chain(source, order=order)
        if order is not None and on_command_line():
            _refuse_partial_order(Path(source), [f.name for f in chain.factors])
        return chain
    return load_chain(source, **model_params)


#: The model options, and why each is no option of a chain of factor matrices.
_MODEL_ONLY = {"factor": "a model's residual blocks", "interfaces": "a transformer's heads",
               "conv": "a CNN's convolutions", "freq": "a CNN's convolutions (with --conv fft)",
               "mode": "a network to differentiate", "inputs": "a network to differentiate",
               "tokens": "a transformer to differentiate"}


def _refuse_model_options(source, p: dict) -> None:
    """A chain of factor matrices (``example``, an .npz) takes no model option: one given is refused."""
    for name, needs in _MODEL_ONLY.items():
        if p[name] != MODEL_PARAMS[name].default and p[name] is not None:
            raise InvalidParameterError(
                f"{spell(name, p[name] if name != 'freq' else tuple(int(v) for v in p[name]))} needs {needs}; "
                f"{source_name(source)} is a chain of factor matrices, which has none. Leave it out, or give a "
                "model (a bundled name, a folder with config.json, a hub id).")


def _refuse_partial_order(path: Path, named: list[str]) -> None:
    """``--order`` naming fewer arrays than the file holds: the chain would silently lose factors."""
    if path.suffix == ".npz":
        import numpy as np  # the file was just read: its index only

        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
    else:
        keys = list(SafetensorsFile(path).keys())
    left = [k for k in keys if k not in named]
    if left:
        raise InvalidParameterError(
            f"{spell('order')} names {len(named)} of the {len(keys)} arrays chain file '{path}' holds; it leaves out "
            f"{', '.join(repr(k) for k in left)}. Name every array, in chain order (or leave out {spell('order')} "
            "for the file's key order).")


def detect(src: WeightSource) -> str:
    """The architecture of a source, from its config (``model_type`` / ``_class_name``)."""
    return detect_config(src.config, src)


def detect_config(config: dict, source: WeightSource | None = None) -> str:
    """The architecture a config names (for a torch ResNet, ``source``'s weight names)."""
    name = source.name if source is not None else "config"
    for key in ("model_type", "_class_name"):
        value = config.get(key)
        if value is not None and not isinstance(value, str):
            raise ModelSourceError(f"{name}: config.json's {key!r} must be a string; it is "
                                   f"{type(value).__name__}. Repair the config.")
    has = source.has if source is not None else _holds_nothing
    for arch in detection_order():
        if adapter(arch).matches(config, has):
            return arch
    kind = config.get("model_type") or config.get("_class_name")
    known = ", ".join(ARCHITECTURES)
    raise ModelSourceError(
        f"{name}: physgsa has no adapter for architecture {kind!r} (known: {known}). "
        "Export the factor matrices to an .npz chain instead."
    )


def _holds_nothing(key: str) -> bool:
    return False


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
    sample : tensor, tuple or dict of tensors, or a path, optional
        Any input the module takes: images (N, C, H, W) (channels on axis 1), a tensor of any
        other rank ((N, d), (N, T, d): channels on the last axis), integer token ids (N, T), a
        tuple of tensors (positional arguments) or a dict (keyword arguments), or a sample file
        (.npy, .npz, .pt; as ``--sample``). The first tensor is walked; the others are held at
        their values. Runs the generic walker (:func:`physgsa.models.generic.walk_blocks`) on the module
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
    with command_line() if params.get("caller") == "cli" else contextlib.nullcontext():
        return _load_chain(source, check_params("load_chain", MODEL_PARAMS, params))


def _load_chain(source, p: dict) -> Chain:
    if on_command_line():
        p["caller"] = "cli"  # the walker's messages name flags
    _check_inputs(p)
    if p["sample"] is not None or p["sample_shape"] is not None or p["build"] is not None:
        return walk_source(source, p)
    if source is None:
        raise InvalidParameterError("load_chain needs a model source (a bundled name, a path, a hub id or an "
                                    f"nn.Module), or {spell('build')} with {spell('sample_shape')}.")
    if isinstance(source, dict):
        source = TensorDictSource(source, None, "the state dict")
    if p["mode"] == "jacobian":
        _refuse_trained_jacobian(source)
        if not isinstance(source, import_torch().nn.Module) and without_layout(source):
            raise ModelSourceError(layout_help(source_name(source), p["caller"]))

        return jacobian.jacobian_chain(source, factor=p["factor"], tokens=p["tokens"], inputs=p["inputs"],
                                       seed=p["seed"])
    src = source if isinstance(source, WeightSource) else resolve_source(source)
    try:
        arch = detect(src)
    except ModelSourceError:
        if not src.config and not hasattr(source, "forward") and without_layout(source):
            raise ModelSourceError(layout_help(src.name, p["caller"])) from None
        return _walk_module(source, src)
    found = adapter(arch)
    if found.convolutional and p["interfaces"] == "heads":
        raise InvalidParameterError(f"{spell('interfaces', 'heads')} needs a transformer; {src.name} is a {arch}.")
    if not found.convolutional and p["conv"] != "dc":
        raise InvalidParameterError(f"{spell('conv', p['conv'])} needs convolutions; {src.name} is a {arch}, "
                                    f"which has none. Leave out {spell('conv')}.")
    freq = check_freq(p["freq"]) if found.convolutional else None
    return found.read(src, factor=p["factor"], interfaces=p["interfaces"], conv=p["conv"], freq=freq)


def _check_inputs(p: dict) -> None:
    """Refuse a Jacobian inputs file that is not there, before any model is loaded."""
    inputs = p["inputs"]
    if p["mode"] != "jacobian" or inputs is None or (isinstance(inputs, str) and inputs == "random"):
        return
    if isinstance(inputs, (str, Path)) and not Path(inputs).is_file():
        what = "is a folder, not a file" if Path(inputs).is_dir() else "does not exist"
        name, rand = spell("inputs", str(inputs)), spell("inputs", "random")
        raise InvalidParameterError(f"{name}: the Jacobian inputs file '{inputs}' {what}. Give a text file (one "
                                    f"sentence a line) or an .npy of images, or {rand} (flagged).")


def _refuse_trained_jacobian(source) -> None:
    """Jacobian mode on a model physgsa trains itself: the true reason it is not available."""
    if isinstance(source, str) and source in ("digits-vit", "digits-diffusion", "pysource-gpt"):
        from .bundled.trained import TRAINED_MODELS  # torch-free table

        spec = TRAINED_MODELS[source]
        raise ModelSourceError(
            f"Jacobian mode is not available for {source} yet: it differentiates minilm, digits-resnet and model "
            f"folders with config.json of the architectures `physgsa models` lists, and does not load the "
            f"models physgsa trains itself ({source}: a {spec.family}, {spec.architecture}). Use its static factors "
            f"({unset('mode', 'static')}).")


def _walk_module(source, src: WeightSource) -> Chain:
    """No adapter: the generic walker, on the module itself or on one transformers can build."""
    torch = import_torch()
    if isinstance(source, torch.nn.Module):
        return walk_chain(source, source=src.name)
    folder = Path(str(source))
    folder = folder.parent if folder.is_file() else folder
    if not (folder / "config.json").is_file():
        raise ModelSourceError(f"{src.name}: no adapter fits, and without a config.json the generic walker cannot "
                               f"build the model. {_module_hint()} or export an .npz chain.")
    import transformers  # start-up: transformers loads only when it must build a model

    try:
        # Never code from the folder: trust_remote_code stays False (a config's auto_map is refused).
        config = transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
        check_config_against_weights(config, src, torch, transformers)
        model = transformers.AutoModel.from_pretrained(str(folder), trust_remote_code=False)
    except ModelSourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - a config from a file can make transformers fail in any way
        first = (str(exc).splitlines() or [""])[0][:300]
        raise ModelSourceError(f"{src.name}: no adapter fits, and transformers cannot build it for the generic "
                               f"walker from its config.json ({type(exc).__name__}: {first}).") from None
    return walk_chain(model, source=src.name)


def _module_hint() -> str:
    if on_command_line():
        return f"Give {spell('build')} FILE.py:FUNC with {spell('sample_shape')} 1,C,H,W"
    return "Pass the nn.Module (with sample=)"


_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "num_decoder_layers", "num_encoder_layers")


def check_config_against_weights(config, src: WeightSource, torch, transformers) -> None:
    """Refuse a config.json that would make transformers build more than the checkpoint holds.

    The generic walker builds the model from the folder's config before loading its weights, so
    a hostile or broken config (a billion layers, a vocabulary of 2^40) could take all memory or
    time. The layer count may not exceed the number of stored tensors, and the model is first
    built on the meta device (no memory) to count its parameters, which may not exceed twice the
    stored ones (plus room for buffers) nor the memory limit.
    """
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
