"""The generic walkers: models without an adapter.

Residual blocks from an execution (:func:`walk_blocks`; ``load_chain(module, sample=x)``)
-----------------------------------------------------------------------------------------
The model (a float64, eval-mode copy: the caller's module is never changed) is traced with
``torch.fx`` while it runs on the sample: every operation is recorded and also computed, so
Python control flow on shapes or values takes the branch the sample takes (transformers'
CNNs check their input's channels, pad by its size, ...). The graph must reproduce the
module's own output on the sample (and on Jacobian ``inputs``), or the walker refuses. In-place
operations are rewritten out of place where nothing reads the overwritten tensor afterwards,
and refused where something does. Everything below is read from that execution, never from
module names or weight shapes:

- A **residual block** is an addition of two tensors of the same shape that both depend on
  the input (``x + f(x)``, ``S(x) + f(x)``). Its input ``x`` is the addition's immediate
  dominator in the data-flow graph: the last tensor every path from the input to the addition
  runs through. The operand that is ``x`` itself, or else the one with fewer linear layers
  (on a tie, the second operand), is the shortcut; the other is the branch. Activations that
  follow the addition alone (ResNet's ReLU after the add) belong to the block. Blocks are
  ordered as they run and must form a sequence (each block's input at or after the previous
  block's output); nested or parallel residual paths are refused.
- Between two consecutive blocks, a stretch of layers with no residual (EfficientNet's stride-2
  or width-changing MBConv blocks) is one **plain** factor: the linear map from the previous
  block's output to the next block's input. Layers before the first block (the stem) and after
  the last (the head, the classifier) are not in the chain: they are listed as skipped.
- Factor names are the modules the factor's operations run in (the outermost modules all of
  whose operations belong to it, joined by ``+``), else ``residual.{k}`` / ``segment.{k}``.

Static factors (``mode="static"``), channel-level, at zero frequency or on one Fourier mode:

- convolutions (dense, grouped, depthwise; any stride, padding, dilation) are their channel
  matrices (``_conv``: block-diagonal for grouped, diagonal for depthwise); BatchNorm (eval) is
  ``diag(gamma / sqrt(running_var + eps))`` with the module's own ``eps``; average pooling is
  its per-channel gain; zero padding (``F.pad``, ``ZeroPad2d``: TF-style "same" padding) is
  the identity on the channels and, on a Fourier mode, adds its offset to the padding of the
  conv that reads it; constant scales (layer scale, ``x * 0.5``) are diagonal; additive terms
  that do not depend on the block's input (biases, BatchNorm shifts) drop out;
- ReLU-family activations (ReLU, ReLU6, LeakyReLU, PReLU, ELU, CELU, SiLU/Swish, GELU,
  Hardswish, Mish, Softplus) are linearized as **all-active**: slope 1, the identity. Dropout and
  Identity are the identity (eval);
- a **gate** is a product ``h * g`` where ``g`` is computed from the block's own activations
  through a spatial reduction (a global mean or max pool): squeeze-excitation
  ``g = sigmoid(W_2 act(W_1 mean(h)))`` and its variants. Its static factor (ours) is the gate
  **frozen at the sample**: ``diag(g(sample))``, the per-channel scale the gate applies to the
  sample. A factor is the mean over the sample's items of the factor with each item's own gate
  values. The gate's own layers enter only through these values and are listed as skipped.
  Why frozen: static mode replaces each nonlinearity by a fixed linear map at an operating
  point (ReLU: all-active). A sigmoid gate has no data-free operating point that keeps what it
  does (all-open, ``g = 1``, would drop the channel weighting the gate learned), and its
  derivative needs every activation of the block, which is Jacobian mode. Frozen, it is exactly
  the block's linear map with the gate's input path held fixed; on a torus with activations
  all-active it is the exact JVP of the block on every Fourier mode that is not zero frequency
  on the gate's grid (a spatial mean does not see such a mode); at zero frequency the true
  Jacobian adds the gate's derivative term, which Jacobian mode includes. Static factors of a
  model with gates therefore depend on the sample (recorded in the provenance: ``gates``).
- Anything else on a factor's path (a sigmoid or tanh outside a gate, max pooling, channel
  concatenation or reshuffling, normalizations other than BatchNorm, products of two
  activations) is refused with the operation and module named.

Residual block factors: ``full`` = ``S + R`` (``S = I`` or the projection path), ``branch`` =
``R``, the product of the linear maps along the branch. Plain factors are their linear map in
both (``provenance.kind = "plain"``). ``conv="fft"``: each factor on the Fourier mode
``(u, v)`` of the ``n x n`` torus at the input of the chain's first factor, followed through the
strides (``_conv.FourierMode``), in real form. A factor whose input is read by a grouped
convolution (through per-channel maps only) carries its input groups as ``col_groups``
(``units="groups"``).

Jacobian factors (``mode="jacobian"``): each factor's map (the block with its shortcut and its
trailing activations for ``full``; the branch operand for ``branch``; a plain factor's stretch)
is run from the traced graph on the factor's input at the sample (or at ``inputs``), and
reduced by :func:`physgsa.models.jacobian.channel_jacobian`: column ``c`` is the spatial mean
of the JVP along ``e_c`` times ones, averaged over the items. Activations and gates are
differentiated exactly.

Layers in execution order (:func:`walk_chain`; no sample, transformers models built from a
config)
-----------------------------------------------------------------------------------------------
A forward pass with a hook on every leaf module records the Linear, Conv1D (transformers) and
Conv1d/Conv2d layers in the order they run; each becomes a plain factor (its weight, rows =
outputs; a conv kernel as its zero-frequency channel matrix, block-diagonal for a grouped conv,
with ``col_groups``), named by its module path. Adjacent layers whose sizes meet are interfaces;
the others are breaks, reported. Every other module with weights and every layer the pass never
ran is listed as skipped, with the reason. The sample input is the caller's, or a transformers
model's own ``dummy_inputs``; it only fixes the execution order, never a factor's values.

``build="file.py:function"`` (:func:`build_module`) imports the named file and calls the
function to make the module: **it runs that file's code**, as importing it would (checkpoints
never run code; a build file always does). Silent skips are bugs.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import itertools
import math
import operator
import os
import re
import sys
from pathlib import Path

import numpy as np

from ..core.validation import InvalidParameterError
from ..core.chain import Chain, Factor, check_matrix
from ._conv import FourierMode, apply_grouped, avg_pool_gain, conv_blocks, conv_dc, fourier_mode, grouped_channel_matrix, input_groups, realify
from .sources import ModelSourceError, _torch

__all__ = [
    "ACTIVATIONS",
    "build_module",
    "check_build",
    "check_sample_shape",
    "layout_help",
    "seeded_sample",
    "source_name",
    "walk_blocks",
    "walk_chain",
    "walk_source",
    "without_layout",
]

#: The activations static mode linearizes as all-active (slope 1), by module class name.
ACTIVATIONS = ("ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "CELU", "SiLU", "GELU", "Hardswish", "Mish", "Softplus")
_IDENTITY_MODULES = ("Identity", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
                     "FeatureAlphaDropout")


def _flag(name: str, caller: str) -> str:
    """How a parameter is spelled for the caller: ``sample_shape=`` in Python, ``--sample-shape`` on the CLI."""
    return f"--{name.replace('_', '-')}" if caller == "cli" else f"{name}="


def layout_help(name: str, interface: str = "python") -> str:
    """The one-line error for weights whose layout physgsa cannot tell (no config, no adapter, no sample).

    ``interface`` is ``"python"`` (the arguments of ``load_chain`` / ``chain_from``) or ``"cli"``
    (the flags of ``physgsa certify``).
    """
    if interface not in ("python", "cli"):
        raise InvalidParameterError(f"The 'interface' parameter of layout_help must be one of {{'python', 'cli'}}. "
                                    f"Got {interface!r} instead.")
    head = (f"{name}: physgsa cannot tell this model's layout: it holds weights but no config.json, and no adapter "
            "recognizes its weight names. Give the layout one of these ways: put the model's config.json beside the "
            "weights (for an architecture `physgsa models` lists); ")
    if interface == "cli":
        return head + ("or rerun with --build FILE.py:FUNC --sample-shape 1,C,H,W, where FUNC() returns the "
                       "nn.Module (--build runs FILE's code), the weights are loaded into it, and the generic walker "
                       "finds its residual blocks by running it on a seeded random input of that shape; or export "
                       "the factor matrices to an .npz chain and certify that.")
    return head + ("or pass the nn.Module itself with sample= (an input batch, e.g. torch.randn(1, 3, 224, 224)), and "
                   "the generic walker finds its residual blocks by running it; or pass build='file.py:function' "
                   "(the function returns the nn.Module; this runs the file's code) with sample_shape=(1, C, H, W), "
                   "and the weights are loaded into it; or export the factor matrices to an .npz chain.")


def source_name(source) -> str:
    """A source's name for messages."""
    from .sources import WeightSource

    return source.name if isinstance(source, WeightSource) else str(source)


def without_layout(source) -> bool:
    """Weights with nothing that tells their layout: a state dict, or a file or folder without config.json."""
    from .sources import BUNDLED_MODELS, WeightSource

    if isinstance(source, WeightSource):
        return not source.config
    text = str(source)
    if text in BUNDLED_MODELS:
        return False
    path = Path(text)
    if not path.exists():
        return False  # a hub id: resolve_source says what is missing
    folder = path.parent if path.is_file() else path
    return not (folder / "config.json").is_file()


# ----- parameters -------------------------------------------------------------------------------

_BUILD_RE = re.compile(r"^(?P<target>.+):(?P<func>[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)$")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def check_build(value, where: str = "The 'build' parameter of load_chain"):
    """``'path/to/file.py:function'`` or ``'package.module:function'``, checked (not imported)."""
    if not isinstance(value, (str, os.PathLike)):
        raise InvalidParameterError(f"{where} must be 'FILE.py:FUNCTION' or 'package.module:FUNCTION'. "
                                    f"Got {type(value).__name__} instead.")
    text = str(value)
    m = _BUILD_RE.match(text)
    if not m:
        raise InvalidParameterError(f"{where} must be 'FILE.py:FUNCTION' or 'package.module:FUNCTION' (a function "
                                    f"that takes no arguments and returns the nn.Module). Got {text!r} instead.")
    target = m.group("target")
    if not (target.endswith(".py") or "/" in target or os.sep in target or _MODULE_RE.match(target)):
        raise InvalidParameterError(f"{where}: {target!r} is neither a .py file nor a dotted module name. "
                                    f"Got {text!r}.")
    return text


def check_sample_shape(value, where: str = "The 'sample_shape' parameter of load_chain"):
    """``(N, C, H, W)``: four positive integers (a tuple, or a string ``"1,3,32,32"``)."""
    raw = value
    if isinstance(value, str):
        try:
            value = tuple(int(v) for v in value.replace("x", ",").split(","))
        except ValueError:
            value = None
    try:
        ok = value is not None and len(value) == 4 and all(
            not isinstance(v, bool) and int(v) == v and int(v) >= 1 for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidParameterError(f"{where} must be four positive integers N, C, H, W (a batch of images, e.g. "
                                    f"1,3,32,32). Got {raw!r} instead.")
    return tuple(int(v) for v in value)


def seeded_sample(shape, seed: int):
    """A float64 standard normal batch of ``shape`` from ``torch.Generator().manual_seed(seed)``."""
    torch = _torch()
    from ..core.resources import check_memory, default_limit

    check_memory(8 * math.prod(shape), default_limit(), f"A sample of shape {tuple(shape)}")
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def build_module(spec: str, *, caller: str = "python", weights=None):
    """Import ``FILE.py`` or ``package.module`` and return ``FUNCTION()`` (an nn.Module).

    This runs the named file's code (importing it, then calling the function), exactly as
    ``python FILE.py`` would run its top level. Only use it on code you trust. With ``weights``
    (a checkpoint path, a hub id in the local cache, or a state dict), they are loaded into the
    module (every key must match, shapes too; checkpoints are read as everywhere in physgsa,
    never running code). Every failure is one :class:`ModelSourceError` line naming the file
    and the function.
    """
    torch = _torch()
    where = f"{_flag('build', caller)}{spec}" if caller == "cli" else f"build={spec!r}"
    text = check_build(spec, "--build" if caller == "cli" else "The 'build' parameter of load_chain")
    m = _BUILD_RE.match(text)
    target, func = m.group("target"), m.group("func")
    path = Path(target)
    as_file = target.endswith(".py") or "/" in target or os.sep in target
    added = None
    try:
        if as_file:
            if not path.is_file():
                raise ModelSourceError(f"{where}: the file '{path}' does not exist.")
            name = f"physgsa_build_{abs(hash(str(path.resolve()))):x}"
            loader_spec = importlib.util.spec_from_file_location(name, path)
            if loader_spec is None or loader_spec.loader is None:
                raise ModelSourceError(f"{where}: '{path}' cannot be imported as Python.")
            module = importlib.util.module_from_spec(loader_spec)
            folder = str(path.resolve().parent)
            if folder not in sys.path:  # its sibling modules import as when run as a script
                sys.path.insert(0, folder)
                added = folder
            sys.modules[name] = module
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        obj = module
        for part in func.split("."):
            if not hasattr(obj, part):
                raise ModelSourceError(f"{where}: {target} defines no {func!r}.")
            obj = getattr(obj, part)
        if not callable(obj):
            raise ModelSourceError(f"{where}: {target}:{func} is a {type(obj).__name__}, not a function.")
        model = obj()
    except ModelSourceError:
        raise
    except BaseException as exc:  # the user's code can fail in any way; SystemExit too
        if isinstance(exc, KeyboardInterrupt):
            raise
        first = (str(exc).splitlines() or [""])[0][:300]
        raise ModelSourceError(f"{where}: running {target}:{func} raised {type(exc).__name__}: {first}") from None
    finally:
        if added is not None and added in sys.path:
            sys.path.remove(added)
    if not isinstance(model, torch.nn.Module):
        raise ModelSourceError(f"{where}: {func}() returned a {type(model).__name__}, not a torch nn.Module.")
    if weights is not None:
        _load_weights(model, weights, caller)
    return model


def _load_weights(model, source, caller: str) -> str:
    """Load a checkpoint (path, hub id in the cache, or a dict of tensors) into the built module."""
    torch = _torch()
    from .sources import TensorDictSource, resolve_source

    src = TensorDictSource(source, None, "the state dict") if isinstance(source, dict) else resolve_source(source)
    state = {key: src._t[key] if isinstance(src, TensorDictSource) else torch.from_numpy(src.get(key))
             for key in src.keys()}  # noqa: SIM118 - a WeightSource, not a dict
    mine = model.state_dict()
    missing = [k for k in mine if k not in state]
    unexpected = [k for k in state if k not in mine]
    if missing or unexpected:
        def few(keys):
            return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        parts = ([f"missing {few(missing)}"] if missing else []) + ([f"unexpected {few(unexpected)}"] if unexpected else [])
        raise ModelSourceError(f"The weights of {src.name} do not fit the module {_flag('build', caller)} made "
                               f"({'; '.join(parts)}).")
    bad = [k for k in mine if tuple(mine[k].shape) != tuple(state[k].shape)]
    if bad:
        k = bad[0]
        raise ModelSourceError(f"The weights of {src.name} do not fit the module {_flag('build', caller)} made: {k} has "
                               f"shape {tuple(state[k].shape)} there and {tuple(mine[k].shape)} in the module.")
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
    return src.name


def walk_source(source, p: dict) -> Chain:
    """``load_chain`` with ``sample=``, ``sample_shape=`` or ``build=``: the residual-block walker.

    ``p`` holds load_chain's checked parameters. The module is ``source`` (an nn.Module), or
    ``build()``, with the weights of ``source`` (a checkpoint) loaded into it where given.
    """
    torch = _torch()
    caller = p.get("caller", "python")
    def f(name):
        return _flag(name, caller)

    if p["sample"] is not None and p["sample_shape"] is not None:
        raise InvalidParameterError(f"Give either {f('sample')} or {f('sample_shape')}, not both: the sample shape "
                                    "makes a seeded random sample.")
    if p["interfaces"] != "blocks":
        raise InvalidParameterError(f"{f('interfaces')}{p['interfaces']} needs a transformer adapter; the generic walker "
                                    "gives block factors (interfaces='blocks').")
    if p["tokens"] != "uniform":
        raise InvalidParameterError(f"{f('tokens')}{p['tokens']}: the generic walker's Jacobian uses spatially uniform "
                                    "directions (tokens='uniform').")
    freq = p["freq"]
    if len(freq) != 3 or any(float(x) != int(x) for x in freq) or int(freq[2]) < 1:
        raise InvalidParameterError(
            f"The 'freq' parameter of load_chain (--freq) must be three integers u, v, n with n >= 1; got {freq!r}.")
    if p["mode"] == "jacobian" and p["conv"] != "dc":
        raise InvalidParameterError(f"{f('conv')}fft applies to static factors; Jacobian factors use spatially uniform "
                                    "directions (zero frequency). Drop one of them.")
    if p["mode"] == "static" and p["inputs"] is not None:
        raise InvalidParameterError(f"{f('inputs')} gives Jacobian inputs (mode='jacobian'); static factors read their "
                                    "gates at the sample. Drop it or use mode='jacobian'.")
    note = ""
    if p["build"] is not None:
        if isinstance(source, torch.nn.Module):
            raise InvalidParameterError(f"Pass either an nn.Module or {f('build')} (which makes one), not both.")
        model = build_module(p["build"], caller=caller)
        name = p["build"]
        if source is not None:
            name = f"{_load_weights(model, source, caller)} in {p['build']}"
    elif isinstance(source, torch.nn.Module):
        model, name = source, type(source).__name__
    else:
        what = "nothing" if source is None else repr(str(source)) if isinstance(source, (str, Path)) else \
            f"a {type(source).__name__}"
        if caller == "cli":
            raise ModelSourceError(f"--sample-shape needs --build FILE.py:FUNC (FUNC() returns the nn.Module the generic "
                                   f"walker runs; --build runs FILE's code); {what} is not a module.")
        raise ModelSourceError(f"sample= and sample_shape= need the nn.Module itself (the generic walker runs it); got "
                               f"{what}. Pass the module, or build='file.py:function' to make it from your code.")
    if p["sample"] is not None:
        sample = p["sample"]
        if isinstance(sample, np.ndarray):
            sample = torch.from_numpy(sample)
        if not isinstance(sample, torch.Tensor) or sample.ndim != 4 or not sample.dtype.is_floating_point:
            desc = (f"a {sample.ndim}-D {str(sample.dtype).replace('torch.', '')} tensor"
                    if isinstance(sample, torch.Tensor) else f"a {type(sample).__name__}")
            raise InvalidParameterError(f"The 'sample' parameter of load_chain must be a 4-D float tensor of images "
                                        f"(N, C, H, W). Got {desc} instead.")
        if not bool(torch.isfinite(sample).all()):
            raise InvalidParameterError("The 'sample' parameter of load_chain has NaN or Inf entries.")
        note = f"the given sample of shape {tuple(sample.shape)}"
        shape, seed = tuple(sample.shape), None
    else:
        shape = p["sample_shape"]
        if shape is None:
            shape_text = f"{f('sample_shape')} 1,C,H,W" if caller == "cli" else \
                f"{f('sample_shape')}(1, C, H, W) (or sample=)"
            raise InvalidParameterError(f"{f('build')} needs {shape_text}: the walker runs the module on a sample to "
                                        "find its residual blocks.")
        seed = p["seed"]
        sample = seeded_sample(shape, seed)
        note = f"a seeded standard normal sample of shape {shape} (seed {seed})"
    record = {"sample_shape": list(shape)}
    if seed is not None:
        record["sample_seed"] = int(seed)
    if p["build"] is not None:
        record["build"] = str(p["build"])
    u, v, n = (int(x) for x in freq)
    return walk_blocks(model, sample, factor=p["factor"], conv=p["conv"], freq=(u, v, n), mode=p["mode"],
                       inputs=p["inputs"], seed=p["seed"], source=name, sample_note=note, record=record)


# ----- the traced graph ---------------------------------------------------------------------------


def _first_line(exc) -> str:
    return (str(exc).splitlines() or [""])[0][:300]


def _concrete_tracer(sample):
    """A torch.fx tracer whose proxies carry the values the operations compute on ``sample``.

    Each recorded operation is also run on the concrete values of its arguments, so Python
    control flow that reads a tensor's shape or value (``if x.shape[1] != c``, ``len(x)``,
    ``range(x.size(1))``) follows the branch the sample takes, as in the real execution: the
    graph is the one the sample ran through. (``torch.fx.symbolic_trace`` refuses such code.)
    A value lives on its proxy, so it is freed when the traced code drops the proxy, as in a
    forward pass.
    """
    torch = _torch()
    fx = torch.fx
    from torch.fx import _symbolic_trace
    from torch.fx.node import map_aggregate
    from torch.fx.proxy import Attribute

    def value_of(v):
        if isinstance(v, Attribute):  # x.shape before it is used: fx makes its node lazily
            return getattr(value_of(v.root), v.attr)
        return v.concrete

    class ConcreteProxy(fx.Proxy):
        def __len__(self):
            return len(value_of(self))

        def __index__(self):
            return int(value_of(self))

        def __int__(self):
            return int(value_of(self))

        def __float__(self):
            return float(value_of(self))

        def __setitem__(self, key, value):
            raise TypeError("an item assignment (x[...] = v) writes a tensor in place, which a traced graph cannot "
                            "show; write it out of place (torch.where, torch.cat, or a mask product)")

    class ConcreteTracer(fx.Tracer):
        def __init__(self):
            super().__init__()
            self.n_placeholders = 0

        def proxy(self, node):
            return ConcreteProxy(node, self)

        def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
            proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
            if kind == "output":
                return proxy
            # fx patches Module.__call__ / __getattr__ while it traces: run the real thing unpatched
            patcher = _symbolic_trace.CURRENT_PATCHER
            if patcher is not None:
                patcher.revert_all_patches()
            try:
                proxy.concrete = self._compute(kind, target, args, kwargs)
            finally:
                if patcher is not None:
                    patcher.reapply_all_patches()
            return proxy

        def _compute(self, kind, target, args, kwargs):
            if kind == "placeholder":
                self.n_placeholders += 1
                return sample if self.n_placeholders == 1 else (args[0] if args else None)
            if kind == "get_attr":
                value = self.root
                for part in str(target).split("."):
                    value = getattr(value, part)
                return value
            concrete = (lambda a: map_aggregate(a, lambda v: value_of(v) if isinstance(v, fx.Proxy) else v))
            cargs, ckwargs = concrete(tuple(args)), concrete(dict(kwargs))
            with torch.no_grad():
                if kind == "call_function":
                    return target(*cargs, **ckwargs)
                if kind == "call_method":
                    return getattr(cargs[0], target)(*cargs[1:], **ckwargs)
                return self.root.get_submodule(target)(*cargs, **ckwargs)  # call_module

        def to_bool(self, obj):
            return bool(value_of(obj))

        def iter(self, obj):
            return iter([obj[i] for i in range(len(value_of(obj)))])

        def keys(self, obj):
            return list(value_of(obj).keys())

    return ConcreteTracer()


#: The traced root wraps the model as ``model`` (so its own signature, defaults and decorators run
#: as in a call ``model(x)``); module paths in messages and names drop this prefix.
_ROOT = "model"


def _trace(model, name: str, sample):
    torch = _torch()

    class Root(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.model = inner

        def forward(self, x):
            return self.model(x)

    try:
        tracer = _concrete_tracer(sample.clone())
        root = Root(model)
        graph = tracer.trace(root)
        return torch.fx.GraphModule(root, graph, type(model).__name__)
    except Exception as exc:  # noqa: BLE001 - tracing user code fails in many ways
        raise ModelSourceError(f"The generic walker cannot trace {name} with torch.fx ({type(exc).__name__}: "
                               f"{_first_line(exc)}).") from None


_INPLACE_FUNCTIONS = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
                      operator.itruediv: operator.truediv}
_META_METHODS = ("size", "dim", "shape")


def _functional(gm, name: str) -> None:
    """Make the traced graph free of in-place operations (or refuse where it depends on mutation).

    ``y = x.add_(z)`` becomes ``y = x.add(z)`` when nothing reads ``x`` afterwards; where something
    does (``x.add_(z); return relu(x)``), the graph's edges do not show the data flow, and the
    walker refuses. Modules and functions called with ``inplace=True`` run out of place.
    """
    torch = _torch()
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    data: set = set()
    for n in gm.graph.nodes:
        if (n.op == "placeholder" and not data) or any(a in data for a in n.all_input_nodes):
            data.add(n)
    for n in list(gm.graph.nodes):
        inplace = False
        if n.op == "call_function" and n.target is operator.setitem and n.args and n.args[0] in data:
            inplace = "setitem"
        elif n.op == "call_method" and isinstance(n.target, str) and n.target.endswith("_") \
                and not n.target.startswith("_") and hasattr(torch.Tensor, n.target[:-1]):
            inplace = "method"
        elif n.op == "call_function" and n.target in _INPLACE_FUNCTIONS:
            inplace = "operator"
        elif n.op == "call_function" and getattr(n.target, "__name__", "").endswith("_") \
                and hasattr(n.target, "__module__") and (n.target.__module__ or "").startswith("torch"):
            base = getattr(sys.modules.get(n.target.__module__), n.target.__name__[:-1], None)
            if base is None:
                base = getattr(torch, n.target.__name__[:-1], None)
            if callable(base):
                inplace = ("function", base)
        elif n.op == "call_function":
            if n.kwargs.get("inplace") is True:
                inplace = "kwarg"
            else:
                try:
                    bound = inspect.signature(n.target).bind(*n.args, **n.kwargs)
                    if bound.arguments.get("inplace") is True:
                        inplace = "kwarg"
                except (TypeError, ValueError):
                    pass
        elif n.op == "call_module":
            mod = gm.get_submodule(n.target)
            if getattr(mod, "inplace", False) is True:
                inplace = "module"
        if not inplace or not n.args or not isinstance(n.args[0], torch.fx.Node):
            continue
        target = n.args[0]
        later = [u for u in target.users if u is not n and order[u] > order[n]
                 and not (u.op == "call_method" and u.target in _META_METHODS)
                 and not (u.op == "call_function" and u.target is getattr and u.args[1:] == ("shape",))]
        if later:
            raise ModelSourceError(
                f"{name}: {_describe(n)} changes {target.name} in place and {later[0].name} reads it afterwards; the "
                "traced graph does not show that data flow. Write it out of place (y = x + z, or inplace=False).")
        if inplace == "setitem":
            continue
        if inplace == "method":
            n.target = n.target[:-1]
        elif inplace == "operator":
            n.target = _INPLACE_FUNCTIONS[n.target]
        elif isinstance(inplace, tuple):
            n.target = inplace[1]
        elif inplace == "kwarg":
            if "inplace" in n.kwargs:
                n.kwargs = {**n.kwargs, "inplace": False}
            else:
                bound = inspect.signature(n.target).bind(*n.args, **n.kwargs)
                bound.arguments["inplace"] = False
                n.args, n.kwargs = tuple(bound.args), dict(bound.kwargs)
        elif inplace == "module":
            gm.get_submodule(n.target).inplace = False
    # Concrete tracing leaves the shape reads whose results became Python ints without users.
    gm.graph.eliminate_dead_code()
    gm.recompile()


def _module_paths(n) -> list[str]:
    """The qualified names of the modules a node runs in, outermost first (the root excluded)."""
    stack = n.meta.get("nn_module_stack") or {}
    out = []
    for key, val in stack.items():
        path = val[0] if isinstance(val, tuple) and val and isinstance(val[0], str) else str(key)
        path = _user_path(path)
        if path and path not in out:
            out.append(path)
    if n.op == "call_module" and _user_path(n.target) not in out:
        out.append(_user_path(n.target))
    return out


def _user_path(path) -> str:
    """A module path as the user's model names it (the traced root's ``model.`` prefix dropped)."""
    path = str(path)
    return "" if path == _ROOT else path[len(_ROOT) + 1:] if path.startswith(_ROOT + ".") else path


def _describe(n) -> str:
    if n.op == "call_module":
        return f"module {_user_path(n.target)}"
    what = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
    paths = _module_paths(n)
    return f"{what} ({n.name}{' in ' + paths[-1] if paths else ''})"


class _Graph:
    """A traced module, its execution on a sample, and the data-flow facts the walker needs."""

    def __init__(self, model, sample, name: str):
        torch = _torch()
        self.torch = torch
        self.name = name
        self.model = model
        with torch.no_grad():
            try:
                ref = model(sample.clone())
            except Exception as exc:  # noqa: BLE001
                raise ModelSourceError(f"{name} fails on the sample ({type(exc).__name__}: {_first_line(exc)}).") from None
        self.gm = _trace(model, name, sample)
        _functional(self.gm, name)
        self.modules = dict(self.gm.named_modules())
        self.nodes = list(self.gm.graph.nodes)
        self.pos = {n: i for i, n in enumerate(self.nodes)}
        places = [n for n in self.nodes if n.op == "placeholder"]
        if not places:
            raise ModelSourceError(f"{name}.forward takes no input.")
        self.src = places[0]
        self.data = {}
        for n in self.nodes:
            self.data[n] = n is self.src or any(self.data.get(a, False) for a in n.all_input_nodes)
        self.values = self.run(sample)
        out = self.values[next(n for n in self.nodes if n.op == "output")]
        self._check_same(ref, out)
        self._classify()
        self._dominators()
        # Second pass: the values the static factors read (gates, shapes, data-derived constants).
        self.values = self.run(sample, keep={n for n, k in self.kind.items() if k in ("pooled", "meta", "meta_tensor")})

    def run(self, x, keep=()):
        """Every node's value on input ``x``: tensors that depend on the input only as their shape
        (a meta tensor: an image-sized activation per node would take gigabytes), except the nodes
        in ``keep`` and the output (detached copies); everything else as computed."""
        torch = self.torch
        values, data, keep = {}, self.data, set(keep)

        class Recorder(torch.fx.Interpreter):
            def run_node(self, n):
                out = super().run_node(n)
                if isinstance(out, torch.Tensor):
                    if data.get(n) and n not in keep and n.op != "output":
                        values[n] = torch.empty(out.shape, dtype=out.dtype, device="meta")
                    else:
                        values[n] = out.detach().clone()
                elif n.op == "output":
                    values[n] = torch.utils._pytree.tree_map(
                        lambda t: t.detach().clone() if isinstance(t, torch.Tensor) else t, out)
                else:
                    values[n] = out
                return out

        with torch.no_grad():
            try:
                Recorder(self.gm).run(x.clone())
            except Exception as exc:  # noqa: BLE001
                raise ModelSourceError(f"The traced graph of {self.name} fails on the sample ({type(exc).__name__}: "
                                       f"{_first_line(exc)}).") from None
        return values

    def _check_same(self, ref, out):
        torch = self.torch
        from torch.utils._pytree import tree_leaves

        a = [t for t in tree_leaves(ref) if isinstance(t, torch.Tensor)]
        b = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        same = len(a) == len(b) and all(x.shape == y.shape for x, y in zip(a, b))
        if same:
            for x, y in zip(a, b):
                scale = float(x.abs().max()) if x.numel() else 0.0
                if x.numel() and float((x - y).abs().max()) > 1e-9 * max(scale, 1.0):
                    same = False
        if not same:
            raise ModelSourceError(f"The torch.fx trace of {self.name} does not reproduce its output on the sample (its "
                                   "forward depends on something the trace does not record); the generic walker "
                                   "cannot read its structure.")

    def _data_inputs(self, n):
        return [a for a in n.all_input_nodes if self.data[a]]

    def _reduction(self, n) -> bool:
        """A spatial reduction (global pooling) of a main tensor: where a gate's computation starts."""
        torch = self.torch
        F = torch.nn.functional
        if n.op == "call_module":
            ok = type(self.modules[n.target]).__name__ in ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "AvgPool2d",
                                                           "MaxPool2d", "AdaptiveAvgPool1d", "AdaptiveMaxPool1d")
        elif n.op == "call_method":
            ok = n.target in ("mean", "sum", "amax", "max", "amin", "min", "std", "var", "logsumexp", "norm")
        elif n.op == "call_function":
            ok = n.target in (torch.mean, torch.sum, torch.amax, torch.max, torch.amin, torch.min, torch.std,
                              torch.var, torch.logsumexp, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
                              F.avg_pool2d, F.max_pool2d, F.adaptive_avg_pool1d, F.adaptive_max_pool1d)
        else:
            ok = False
        if not ok or not n.args or not isinstance(n.args[0], self.torch.fx.Node):
            return False
        inp, out = self.values.get(n.args[0]), self.values.get(n)
        if isinstance(out, tuple):  # torch.max(x, dim) -> (values, indices)
            out = out[0]
        if not isinstance(inp, torch.Tensor) or not isinstance(out, torch.Tensor) or inp.ndim < 2:
            return False
        return out.numel() <= inp.shape[0] * inp.shape[1]

    def _classify(self):
        """``kind[n]``: "const" (no data), "meta" (not a tensor), "pooled" (gate computation) or "main"."""
        torch = self.torch
        kind = {}
        for n in self.nodes:
            if not self.data[n]:
                kind[n] = "const"
                continue
            if n is self.src:
                kind[n] = "main"
                continue
            val = self.values.get(n)
            ins = self._data_inputs(n)
            if not isinstance(val, torch.Tensor):
                # A tuple of tensors from a reduction (torch.max) counts as its tensors.
                kind[n] = "pooled" if self._reduction(n) else "meta"
                if kind[n] == "meta" and any(kind[a] == "pooled" for a in ins):
                    kind[n] = "pooled"
                continue
            reduces = any(kind[a] == "main" for a in ins) and self._reduction(n) and kind[n.args[0]] == "main"
            # gate.expand_as(x): the gate's values, at the image's size
            expands = n.op in ("call_method", "call_function") and n.target in ("expand_as", "expand", "broadcast_to",
                                                                                 torch.broadcast_to) \
                and isinstance(n.args[0], torch.fx.Node) and kind.get(n.args[0]) == "pooled"
            derived = ins and all(kind[a] in ("pooled", "meta") for a in ins) and any(kind[a] == "pooled" for a in ins)
            if reduces or expands or derived:
                kind[n] = "pooled"
            elif ins and all(kind[a] == "meta" for a in ins):
                kind[n] = "meta_tensor"  # e.g. torch.zeros(x.shape): no data flows, a constant
            else:
                kind[n] = "main"
        self.kind = kind

    def _dominators(self):
        """The immediate dominator of every data node in the graph from the input (a DAG)."""
        idom, depth = {self.src: None}, {self.src: 0}

        def lca(a, b):
            while a is not b:
                if depth[a] > depth[b]:
                    a = idom[a]
                elif depth[b] > depth[a]:
                    b = idom[b]
                else:
                    a, b = idom[a], idom[b]
            return a

        for n in self.nodes:
            if n is self.src or not self.data[n]:
                continue
            preds = self._data_inputs(n)
            d = preds[0]
            for q in preds[1:]:
                d = lca(d, q)
            idom[n], depth[n] = d, depth[d] + 1
        self.idom, self.depth = idom, depth

    def dominates(self, a, b) -> bool:
        while b is not None and self.pos[b] >= self.pos[a]:
            if b is a:
                return True
            b = self.idom[b]
        return False

    def between(self, entry, exit_) -> list:
        """The data nodes on paths from ``entry`` to ``exit_`` (``entry`` excluded), in execution order."""
        back, stack = {exit_}, [exit_]
        while stack:
            n = stack.pop()
            for a in self._data_inputs(n):
                if a not in back and a is not entry and self.pos[a] > self.pos[entry]:
                    back.add(a)
                    stack.append(a)
        return sorted(back, key=self.pos.__getitem__)

    # -- the residual additions ---------------------------------------------------------------

    def _is_add(self, n) -> bool:
        torch = self.torch
        return (n.op == "call_function" and n.target in (operator.add, torch.add)) or \
            (n.op == "call_method" and n.target == "add")

    def residual_adds(self) -> list:
        out = []
        for n in self.nodes:
            if not self._is_add(n) or self.kind[n] != "main":
                continue
            ops = [a for a in n.args[:2] if isinstance(a, self.torch.fx.Node)]
            if len(ops) == 2 and all(self.kind[a] == "main" for a in ops) \
                    and tuple(self.values[ops[0]].shape) == tuple(self.values[ops[1]].shape):
                out.append(n)
        return out

    def is_passthrough(self, n) -> bool:
        """An elementwise activation or identity-like op (one data input, its first argument)."""
        name = self.op_name(n)
        return name in ACTIVATIONS or name in _IDENTITY_MODULES or name in ("relu", "contiguous", "clone")

    def op_name(self, n) -> str:
        """A class-like name for the op: the module class, or the function / method name."""
        torch = self.torch
        F = torch.nn.functional
        if n.op == "call_module":
            return type(self.modules[n.target]).__name__
        if n.op == "call_method":
            return {"relu": "ReLU"}.get(n.target, n.target)
        if n.op == "call_function":
            table = {F.relu: "ReLU", torch.relu: "ReLU", F.relu6: "ReLU6", F.leaky_relu: "LeakyReLU",
                     F.prelu: "PReLU", F.elu: "ELU", F.celu: "CELU", F.silu: "SiLU", F.gelu: "GELU",
                     F.hardswish: "Hardswish", F.mish: "Mish", F.softplus: "Softplus",
                     F.dropout: "Dropout", F.dropout1d: "Dropout1d", F.dropout2d: "Dropout2d",
                     F.alpha_dropout: "AlphaDropout", F.feature_alpha_dropout: "FeatureAlphaDropout",
                     torch.clone: "clone"}
            try:
                return table.get(n.target) or getattr(n.target, "__name__", str(n.target))
            except TypeError:  # unhashable target
                return getattr(n.target, "__name__", str(n.target))
        return n.op


# ----- the units of the chain ---------------------------------------------------------------------


def _units(g: _Graph) -> list[dict]:
    """Residual blocks and the plain stretches between them, in execution order."""
    adds = g.residual_adds()
    if not adds:
        raise ModelSourceError(f"The generic walker found no residual block in {g.name} (no tensor added to an earlier "
                               "tensor of the same shape on the sample). For a chain of its layers, call "
                               "physgsa.models.generic.walk_chain(model, sample=...).")
    blocks = []
    for a in adds:
        x = g.idom[a]
        if g.kind.get(x) != "main":
            raise ModelSourceError(f"{g.name}: the residual addition {_describe(a)} starts at {x.name}, which is not an "
                                   "image tensor on the residual path.")
        ops = [o for o in a.args[:2]]
        run = a
        while True:
            users = list(run.users)
            if len(users) == 1 and g.kind.get(users[0]) == "main" and g.is_passthrough(users[0]) \
                    and users[0].args and users[0].args[0] is run and g._data_inputs(users[0]) == [run]:
                run = users[0]
            else:
                break
        blocks.append({"kind": "residual", "entry": x, "add": a, "exit": run, "operands": ops})
    for prev, nxt in itertools.pairwise(blocks):
        if not (nxt["entry"] is prev["exit"] or g.dominates(prev["exit"], nxt["entry"])):
            raise ModelSourceError(
                f"{g.name}: the residual block ending at {_describe(nxt['add'])} starts at {nxt['entry'].name}, not after "
                f"the block ending at {_describe(prev['add'])}: nested or parallel residual paths. The generic walker "
                "reads a sequence of blocks.")
    units = []
    for k, blk in enumerate(blocks):
        if k and blk["entry"] is not blocks[k - 1]["exit"]:
            units.append({"kind": "plain", "entry": blocks[k - 1]["exit"], "exit": blk["entry"]})
        units.append(blk)
    for u in units:
        u["nodes"] = g.between(u["entry"], u["exit"])
        if u["kind"] == "residual":
            _split_branch(g, u)
    return units


def _n_linear(g: _Graph, nodes) -> int:
    return sum(1 for n in nodes if g.op_name(n) in ("Conv2d", "conv2d", "Linear", "linear"))


def _split_branch(g: _Graph, u: dict) -> None:
    x = u["entry"]
    p, q = u["operands"]
    if p is x:
        u["shortcut"], u["branch"] = p, q
    elif q is x:
        u["shortcut"], u["branch"] = q, p
    else:
        np_, nq = _n_linear(g, g.between(x, p)), _n_linear(g, g.between(x, q))
        u["shortcut"], u["branch"] = (p, q) if np_ < nq else (q, p)
    u["shortcut_nodes"] = [] if u["shortcut"] is x else g.between(x, u["shortcut"])


def _names(g: _Graph, units: list[dict]) -> None:
    """Each unit's name: the outermost modules all of whose operations belong to it."""
    owner = {}
    unit_of = {}
    for k, u in enumerate(units):
        for n in u["nodes"]:
            unit_of[n] = k
    for n in g.nodes:
        if n.op not in ("call_module", "call_function", "call_method") or g.kind[n] not in ("main", "pooled"):
            continue
        for path in _module_paths(n):
            owner.setdefault(path, set()).add(unit_of.get(n, -1))
    taken = set()
    for k, u in enumerate(units):
        mine = [path for path, us in owner.items() if us == {k}]
        top = [path for path in mine if not any(path.startswith(o + ".") for o in mine)]
        name = "+".join(top)
        if not name or name in taken:
            name = f"{'residual' if u['kind'] == 'residual' else 'segment'}.{k}"
        taken.add(name)
        u["name"] = name
        u["modules"] = sorted({p for n in u["nodes"] for p in _module_paths(n)[-1:]})


# ----- static factors -----------------------------------------------------------------------------


def _main_nodes(g: _Graph, entry, exit_, where: str) -> list:
    """The nodes the linear map from ``entry`` to ``exit_`` runs through; gates' computations excluded."""
    keep, stack = {exit_}, [exit_]
    while stack:
        n = stack.pop()
        if n is entry:
            continue
        for a in g._data_inputs(n):
            if g.kind[a] != "main" or a in keep:
                continue
            if g.pos[a] < g.pos[entry]:
                raise ModelSourceError(f"{g.name}: {where} reads {a.name}, from before its input {entry.name}.")
            keep.add(a)
            stack.append(a)
    keep.discard(entry)
    return sorted(keep, key=g.pos.__getitem__)


def _const(g: _Graph, a):
    """A constant argument's value (a Node's recorded value, or a Python value)."""
    torch = g.torch
    if isinstance(a, torch.fx.Node):
        return g.values[a]
    return a


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1])) if len(v) else (0, 0)
    return int(v), int(v)


def _conv_params(g: _Graph, n):
    """(weight numpy, stride, padding, dilation, groups) of a conv2d node, or None."""
    torch = g.torch
    if n.op == "call_module":
        mod = g.modules[n.target]
        if type(mod).__name__ != "Conv2d" and not isinstance(mod, torch.nn.Conv2d):
            return None
        w, stride, padding, dilation, groups = mod.weight, mod.stride, mod.padding, mod.dilation, mod.groups
    elif n.op == "call_function" and n.target is torch.nn.functional.conv2d:
        sig = inspect.Signature([inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d) for k, d in
                                 (("input", inspect.Parameter.empty), ("weight", inspect.Parameter.empty),
                                  ("bias", None), ("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1))])
        b = sig.bind(*n.args, **n.kwargs)
        b.apply_defaults()
        args = b.arguments
        w = _const(g, args["weight"])
        stride, padding, dilation, groups = (_const(g, args[k]) for k in ("stride", "padding", "dilation", "groups"))
    else:
        return None
    w = w.detach().to(torch.float64).cpu().numpy()
    kh, kw = w.shape[2], w.shape[3]
    dilation = _pair(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        else:  # "same": torch pads d (k - 1) in all, the smaller half first
            padding = (dilation[0] * (kh - 1) // 2, dilation[1] * (kw - 1) // 2)
    return w, _pair(stride), _pair(padding), dilation, int(groups)


def _bn_scale(g: _Graph, n):
    """The per-channel scale of an eval-mode BatchNorm node, or None if ``n`` is not one."""
    torch = g.torch
    if n.op == "call_module":
        mod = g.modules[n.target]
        if not isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            return None
        if mod.running_var is None or mod.training:
            raise ModelSourceError(f"{g.name}: BatchNorm {_user_path(n.target)} normalizes by batch statistics (no running_var, or "
                                   "training mode); its channel map depends on the batch.")
        var, gamma, eps = mod.running_var, mod.weight, mod.eps
    elif n.op == "call_function" and n.target is torch.nn.functional.batch_norm:
        names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
        args = dict(zip(names, n.args))
        args.update(n.kwargs)
        if args.get("training", False) or args.get("running_var") is None:
            raise ModelSourceError(f"{g.name}: {_describe(n)} normalizes by batch statistics; its channel map depends "
                                   "on the batch.")
        var, gamma, eps = _const(g, args["running_var"]), _const(g, args.get("weight")), args.get("eps", 1e-5)
    else:
        return None
    var = var.detach().to(torch.float64).cpu().numpy()
    scale = 1.0 / np.sqrt(var + float(eps))
    if gamma is not None:
        scale = gamma.detach().to(torch.float64).cpu().numpy() * scale
    return scale


def _gate_values(g: _Graph, gate, main_shape, where: str, item: int) -> np.ndarray:
    """A gate's value at sample item ``item``: a per-channel vector (length 1 or C)."""
    torch = g.torch
    val = g.values[gate]
    if not isinstance(val, torch.Tensor):
        return np.asarray(float(val))
    val = val.detach().to(torch.float64)
    nd = len(main_shape)
    if val.ndim > nd:
        raise ModelSourceError(f"{g.name}: the gate {_describe(gate)} in {where} has more dimensions than the tensor it "
                               "scales.")
    val = val.reshape((1,) * (nd - val.ndim) + tuple(val.shape))
    if val.shape[2] != 1 or val.shape[3] != 1:
        if bool((val != val[:, :, :1, :1]).any()):
            raise ModelSourceError(f"{g.name}: the gate {_describe(gate)} in {where} varies over the image; a spatially "
                                   "varying gate is not a channel map.")
        val = val[:, :, :1, :1]
    val = val[min(item, val.shape[0] - 1), :, 0, 0]
    return val.cpu().numpy()


_ADD = ("add", operator.add)
_SUB = ("sub", operator.sub)
_MUL = ("mul", operator.mul)
_DIV = ("div", "truediv", operator.truediv)


def _arith(g: _Graph, n) -> str | None:
    torch = g.torch
    t = n.target
    if n.op == "call_function":
        if t in (operator.add, torch.add):
            return "add"
        if t in (operator.sub, torch.sub):
            return "sub"
        if t in (operator.mul, torch.mul):
            return "mul"
        if t in (operator.truediv, torch.div, torch.true_divide):
            return "div"
        if t in (operator.neg, torch.neg):
            return "neg"
    if n.op == "call_method":
        return {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "true_divide": "div", "neg": "neg"}.get(t)
    return None


def _scalar_or_channels(val, c: int, what: str, g: _Graph) -> np.ndarray:
    """A constant multiplier as a scalar or a per-channel vector; refused if it varies over pixels."""
    torch = g.torch
    if isinstance(val, torch.Tensor):
        v = val.detach().to(torch.float64)
        if v.numel() == 1:
            return np.asarray(float(v.reshape(())))
        v = v.reshape((1,) * max(0, 4 - v.ndim) + tuple(v.shape)) if v.ndim <= 4 else v
        if v.ndim != 4 or v.shape[0] != 1 or v.shape[2] != 1 or v.shape[3] != 1 or v.shape[1] not in (1, c):
            raise ModelSourceError(f"{g.name}: {what} multiplies by a constant of shape {tuple(val.shape)}, which is "
                                   "not one scale per channel.")
        return v[0, :, 0, 0].cpu().numpy()
    if isinstance(val, (int, float)) and not isinstance(val, bool):
        return np.asarray(float(val))
    raise ModelSourceError(f"{g.name}: {what} multiplies by a {type(val).__name__}.")


class _Linear:
    """The static linear map of one unit: propagated node by node from its input."""

    def __init__(self, g: _Graph, unit: dict, mode: FourierMode | None, item: int, info: dict):
        self.g, self.unit, self.mode, self.item, self.info = g, unit, mode, item, info
        self.where = f"factor {unit['name']}"
        self.pads: dict = {}

    def run(self, exit_, nodes) -> tuple[np.ndarray, FourierMode | None]:
        g = self.g
        entry = self.unit["entry"]
        c = g.values[entry].shape[1]
        dtype = np.float64 if self.mode is None else np.complex128
        state = {entry: (np.eye(c, dtype=dtype), self.mode, True)}
        for n in nodes:
            state[n] = self.step(n, state)
        return state[exit_][0], state[exit_][1]

    def step(self, n, state):
        g = self.g
        name = g.op_name(n)
        ins = [a for a in n.all_input_nodes if a in state]
        if not ins:
            raise ModelSourceError(f"{g.name}: {_describe(n)} in {self.where} does not read the factor's input.")
        padded = [a for a in ins if a in self.pads]
        conv = _conv_params(g, n)
        if padded and (conv is None or padded != [n.args[0]]) and self.mode is not None:
            raise ModelSourceError(f"{g.name}: {_describe(padded[0])} is read by {_describe(n)}, not by a conv; "
                                   "conv='fft' needs the padding's offset at a conv.")
        if conv is not None:
            w, stride, padding, dilation, groups = conv
            extra = self.pads.get(n.args[0], (0, 0))
            padding = (padding[0] + extra[0], padding[1] + extra[1])
            m, mode, diag = state[n.args[0]]
            if self.mode is not None and stride[0] != stride[1]:
                raise ModelSourceError(f"{g.name}: {_describe(n)} has stride {stride}; conv='fft' follows square strides "
                                       "only.")
            blocks = conv_blocks(w, mode, padding=padding, dilation=dilation)
            if m.shape[0] != w.shape[1] * groups:
                raise ModelSourceError(f"{g.name}: {_describe(n)} takes {w.shape[1] * groups} channels but gets "
                                       f"{m.shape[0]}.")
            if diag and groups > 1:
                self.info.setdefault("grouped_inputs", []).append((n, groups, w.shape[1] * groups))
            elif diag:
                self.info.setdefault("grouped_inputs", []).append((n, 1, w.shape[1]))
            out_mode = None if mode is None else mode.strided(stride[0], f"{_describe(n)} of {g.name}")
            self.info.setdefault("convs", []).append(n)
            return apply_grouped(blocks, groups, m), out_mode, False
        scale = _bn_scale(g, n)
        if scale is not None:
            m, mode, diag = state[n.args[0]]
            return scale[:, None] * m, mode, diag
        if name in ACTIVATIONS or name in _IDENTITY_MODULES or name in ("contiguous", "clone"):
            if name in ACTIVATIONS:
                self.info.setdefault("activations", set()).add(name)
            if name.startswith("Dropout") and n.op == "call_function":
                training = n.kwargs.get("training", n.args[2] if len(n.args) > 2 else True)
                if training:
                    raise ModelSourceError(f"{g.name}: {_describe(n)} drops activations (training=True).")
            return state[n.args[0]]
        if name in ("AvgPool2d", "avg_pool2d"):
            return self.avg_pool(n, state)
        if name in ("pad", "ZeroPad2d", "ConstantPad2d"):
            return self.pad(n, state)
        op = _arith(g, n)
        if op is not None:
            return self.arith(n, op, state)
        raise ModelSourceError(
            f"{g.name}: {_describe(n)} in {self.where} is not a linear channel map the generic walker knows "
            "(convolutions, BatchNorm, ReLU-family activations, per-channel gates, constant scales, additions, average "
            "pooling). Use mode='jacobian', which differentiates it, or export the factors yourself.")

    def pad(self, n, state):
        """Zero padding: the identity on the channels; on a Fourier mode of the torus, its offset
        joins the padding of the conv that reads it (TF-style "same" padding)."""
        g = self.g
        if n.op == "call_module":
            mod = g.modules[n.target]
            amounts, value = mod.padding, getattr(mod, "value", 0.0)
        else:
            names = ("input", "pad", "mode", "value")
            args = dict(zip(names, n.args))
            args.update(n.kwargs)
            if args.get("mode", "constant") != "constant":
                raise ModelSourceError(f"{g.name}: {_describe(n)} pads in mode {args['mode']!r}; the walker reads zero "
                                       "padding only.")
            amounts = [_const(g, a) for a in _const(g, args["pad"])]
            value = _const(g, args.get("value")) or 0.0
        amounts = [int(a) for a in amounts]
        if len(amounts) != 4 or float(value) != 0.0 or min(amounts) < 0:
            raise ModelSourceError(f"{g.name}: {_describe(n)} pads by {amounts} with {value}; the walker reads zero "
                                   "padding of the two image axes only.")
        left, _, top, _ = amounts
        self.pads[n] = (top, left)
        return state[n.args[0]]

    def avg_pool(self, n, state):
        g = self.g
        if n.op == "call_module":
            mod = g.modules[n.target]
            k, s, p = mod.kernel_size, mod.stride, mod.padding
            if getattr(mod, "divisor_override", None):
                raise ModelSourceError(f"{g.name}: {_describe(n)} overrides its divisor.")
        else:
            names = ("input", "kernel_size", "stride", "padding")
            args = dict(zip(names, n.args))
            args.update(n.kwargs)
            k, s, p = args["kernel_size"], args.get("stride") or args["kernel_size"], args.get("padding", 0)
            if args.get("divisor_override"):
                raise ModelSourceError(f"{g.name}: {_describe(n)} overrides its divisor.")
        k, s, p = _pair(k), _pair(s if s is not None else k), _pair(p)
        m, mode, diag = state[n.args[0]]
        if self.mode is not None and s[0] != s[1]:
            raise ModelSourceError(f"{g.name}: {_describe(n)} has stride {s}; conv='fft' follows square strides only.")
        gain = avg_pool_gain(k, p, mode)
        out_mode = None if mode is None else mode.strided(s[0], f"{_describe(n)} of {g.name}")
        return (gain.real if mode is None else gain) * m, out_mode, diag

    def arith(self, n, op, state):
        g = self.g
        torch = g.torch
        args = list(n.args)
        mains = [a for a in args[:2] if isinstance(a, torch.fx.Node) and a in state]
        others = [a for a in args[:2] if not (isinstance(a, torch.fx.Node) and a in state)]
        if op == "neg":
            m, mode, diag = state[args[0]]
            return -m, mode, diag
        if op in ("add", "sub"):
            alpha = n.kwargs.get("alpha", args[2] if len(args) > 2 else 1)
            if len(mains) == 2:
                (ma, mo_a, da), (mb, mo_b, db) = state[args[0]], state[args[1]]
                if mo_a != mo_b:
                    raise ModelSourceError(f"{g.name}: the two terms of {_describe(n)} in {self.where} end on different "
                                           "grids (their strides differ).")
                if ma.shape != mb.shape:
                    raise ModelSourceError(f"{g.name}: the two terms of {_describe(n)} have {ma.shape[0]} and "
                                           f"{mb.shape[0]} channels.")
                sign = float(alpha) * (-1.0 if op == "sub" else 1.0)
                return ma + sign * mb, mo_a, da and db
            # main +/- a term that does not depend on the factor's input (a bias, a frozen gate value)
            m, mode, diag = state[mains[0]]
            if op == "sub" and args[1] is mains[0]:
                m = -m
            elif args[1] is mains[0] and float(alpha) != 1.0:
                m = float(alpha) * m
            return m, mode, diag
        # mul / div
        if len(mains) == 2:
            raise ModelSourceError(f"{g.name}: {_describe(n)} in {self.where} multiplies two tensors that both depend on "
                                   "the factor's input (not a per-channel gate); it is not a linear map. Use "
                                   "mode='jacobian'.")
        m, mode, diag = state[mains[0]]
        other = others[0]
        if op == "div" and args[0] is not mains[0]:
            raise ModelSourceError(f"{g.name}: {_describe(n)} divides by a tensor on the residual path.")
        if isinstance(other, torch.fx.Node) and g.kind.get(other) == "pooled":
            vec = _gate_values(g, other, g.values[mains[0]].shape, self.where, self.item)
            self.info.setdefault("gates", []).append(other)
        else:
            vec = _scalar_or_channels(_const(g, other), m.shape[0], _describe(n), g)
        if op == "div":
            vec = 1.0 / vec
        vec = np.asarray(vec, dtype=np.float64)
        return (vec[:, None] * m) if vec.ndim else float(vec) * m, mode, diag


def _static_factor(g: _Graph, u: dict, factor: str, mode: FourierMode | None):
    """The unit's static factor (mean over the sample's items when it has gates), its output mode, and notes."""
    if u["kind"] == "residual" and factor == "branch":
        exit_ = u["branch"]
    else:
        exit_ = u["exit"]
    nodes = _main_nodes(g, u["entry"], exit_, f"factor {u['name']}")
    info: dict = {}
    mat, out = _Linear(g, u, mode, 0, info).run(exit_, nodes)
    if info.get("gates"):
        n_items = g.values[u["entry"]].shape[0]
        for item in range(1, n_items):
            mat = mat + _Linear(g, u, mode, item, {}).run(exit_, nodes)[0]
        mat = mat / n_items
    info["main"] = nodes
    return mat, out, info


def _stride_of(g: _Graph, n) -> int:
    """The (row) stride of a conv or average pooling node; 1 for every other node."""
    conv = _conv_params(g, n)
    if conv is not None:
        return conv[1][0]
    if g.op_name(n) in ("AvgPool2d", "avg_pool2d"):
        if n.op == "call_module":
            mod = g.modules[n.target]
            return _pair(mod.stride if mod.stride is not None else mod.kernel_size)[0]
        args = dict(zip(("input", "kernel_size", "stride"), n.args))
        args.update(n.kwargs)
        return _pair(args.get("stride") or args["kernel_size"])[0]
    return 1


def _total_stride(g: _Graph, units: list[dict]) -> int:
    """The product of the strides along the chain's path (one path through each factor)."""
    total = 1
    for u in units:
        acc = {u["entry"]: 1}
        for n in _main_nodes(g, u["entry"], u["exit"], f"factor {u['name']}"):
            before = max((acc[a] for a in n.all_input_nodes if a in acc), default=1)
            acc[n] = before * _stride_of(g, n)
        total *= acc[u["exit"]]
    return total


# ----- Jacobian factors ---------------------------------------------------------------------------


def _unit_function(g: _Graph, entry, exit_, values: dict):
    """The traced graph from ``entry`` to ``exit_`` as a function of the entry tensor.

    Constants and shapes from outside the stretch come from ``values`` (the run at the inputs).
    """
    torch = g.torch
    nodes = g.between(entry, exit_)
    members = set(nodes)

    def f(x):
        env = {entry: x}

        def load(a):
            return env[a] if a in env else values[a]

        for n in nodes:
            args = torch.fx.node.map_arg(n.args, load)
            kwargs = torch.fx.node.map_arg(n.kwargs, load)
            if n.op == "call_module":
                env[n] = g.modules[n.target](*args, **kwargs)
            elif n.op == "call_function":
                env[n] = n.target(*args, **kwargs)
            elif n.op == "call_method":
                env[n] = getattr(args[0], n.target)(*args[1:], **kwargs)
            elif n.op == "get_attr":
                env[n] = values[n]
            else:
                raise ModelSourceError(f"{g.name}: cannot run {n.op} {n.name} inside a factor.")
        return env[exit_]

    # every input of the stretch is its entry, a member, or a constant (dominance)
    for n in nodes:
        for a in n.all_input_nodes:
            if a is not entry and a not in members and g.data[a] and g.kind[a] not in ("meta", "meta_tensor"):
                raise ModelSourceError(f"{g.name}: {_describe(n)} reads {a.name}, from outside its factor.")
    return f


def _jacobian_inputs(g: _Graph, inputs, seed: int, sample, keep):
    """The recorded run at the Jacobian inputs (the factors' input values kept), and what they are."""
    torch = g.torch
    keep = set(keep) | {n for n, k in g.kind.items() if k in ("pooled", "meta", "meta_tensor")}
    if inputs is None:
        return g.run(sample, keep), "the sample"
    if isinstance(inputs, str) and inputs == "random":
        x = seeded_sample(tuple(sample.shape), seed)
        return g.run(x, keep), f"random normal images of the sample's shape, seed {seed} (flagged)"
    if isinstance(inputs, torch.Tensor):
        x, what = inputs.detach().to(torch.float64), "the given inputs"
    else:
        path = Path(str(inputs))
        if not path.is_file():
            raise ModelSourceError(f"Jacobian input file '{path}' does not exist.")
        try:
            x = torch.as_tensor(np.load(path, allow_pickle=False), dtype=torch.float64)
        except (ValueError, OSError) as exc:
            raise ModelSourceError(f"'{path}' is not a readable .npy array ({_first_line(exc)}).") from None
        what = f"images from {path}"
    if x.ndim != 4 or x.shape[1] != sample.shape[1]:
        raise ModelSourceError(f"Jacobian inputs must be images (N, {sample.shape[1]}, H, W) like the sample; got shape "
                               f"{tuple(x.shape)}.")
    values = g.run(x, keep)
    with torch.no_grad():
        try:
            ref = g.model(x.clone())
        except Exception as exc:  # noqa: BLE001
            raise ModelSourceError(f"{g.name} fails on the Jacobian inputs ({type(exc).__name__}: {_first_line(exc)}).") \
                from None
    try:
        g._check_same(ref, values[next(n for n in g.nodes if n.op == "output")])
    except ModelSourceError:
        raise ModelSourceError(f"The traced graph of {g.name} follows the sample's execution and does not reproduce "
                               "the model on the Jacobian inputs; give inputs of the sample's shape.") from None
    return values, what


# ----- the walker ---------------------------------------------------------------------------------


def _col_groups(g: _Graph, info: dict, n_cols: int, real_form: bool):
    """The input groups of the one grouped conv that reads the factor's input (through per-channel maps)."""
    readers = info.get("grouped_inputs", [])
    grouped = {(groups, n_in) for _, groups, n_in in readers if groups > 1}
    if len(grouped) != 1:
        return None, None
    groups, n_in = grouped.pop()
    cg = input_groups(n_in, groups)
    if real_form:
        cg = np.concatenate([cg, cg])
    if cg.shape[0] != n_cols:
        return None, None
    conv = next(n for n, gr, _ in readers if gr == groups)
    return cg, _module_paths(conv)[-1] if _module_paths(conv) else conv.name


def _skipped(g: _Graph, units: list[dict], used: set, gate_of: dict) -> list[dict]:
    """Every module with weights that is not a linear map of a factor, with the reason."""
    shortcut_of = {n: u["name"] for u in units if u["kind"] == "residual" for n in u["shortcut_nodes"]
                   if n not in used}
    first, last = g.pos[units[0]["entry"]], g.pos[units[-1]["exit"]]
    ran: dict = {}
    for n in g.nodes:
        if n.op in ("call_module", "call_function", "call_method"):
            for path in _module_paths(n):
                ran.setdefault(path, []).append(n)
    out = []
    for path, mod in g.model.named_modules():
        if not path or not any(True for _ in mod.parameters(recurse=False)):
            continue
        nodes = ran.get(path)
        if not nodes:
            out.append({"module": path, "reason": "not executed by the sample forward pass"})
            continue
        if any(n in used for n in nodes):
            continue
        gates = [gate_of[n] for n in nodes if n in gate_of]
        cut = [shortcut_of[n] for n in nodes if n in shortcut_of]
        if cut:
            reason = (f"{type(mod).__name__} on the shortcut of {cut[0]}: factor='branch' is the residual branch "
                      "alone")
        elif gates:
            reason = (f"gate of {gates[0]}: frozen at the sample, it enters that factor only as its per-channel scale "
                      "(its weights are not a channel map of the chain)")
        elif all(g.pos[n] <= first for n in nodes):
            reason = f"{type(mod).__name__} in the stem: runs before the first residual block, where the chain starts"
        elif all(g.pos[n] > last for n in nodes):
            reason = f"{type(mod).__name__} in the head: runs after the last residual block, where the chain ends"
        else:
            reason = f"{type(mod).__name__} off the residual path (its output does not reach the next factor)"
        out.append({"module": path, "reason": reason})
    return out


def walk_blocks(model, sample, *, factor: str = "full", conv: str = "dc", freq=(0, 0, 8), mode: str = "static",
                inputs=None, seed: int = 0, source: str = "", sample_note: str = "", record: dict | None = None) -> Chain:
    """The chain of residual-block factors of any module, found by running it on ``sample``.

    Parameters
    ----------
    model : nn.Module
        Any module whose forward takes one image batch (N, C, H, W). It is copied (float64,
        eval mode); the caller's module is left as it was.
    sample : tensor (N, C, H, W)
        The input whose execution defines the blocks (and, static mode, the gate values).
    factor : {"full", "branch"}
        ``S + R`` or ``R`` for residual blocks; plain factors are their map in both.
    conv : {"dc", "fft"}, freq : (u, v, n)
        Static factors at zero frequency or on the Fourier mode ``(u, v)`` of the ``n x n``
        torus at the chain's input (real form).
    mode : {"static", "jacobian"}
        Factors from the weights (gates frozen at the sample) or channel Jacobians at the
        sample (or at ``inputs``: ``"random"``, an .npy of images, or a tensor).
    seed : int
        Seed of random Jacobian inputs.
    source, sample_note, record
        The model's name, what the sample was, and provenance entries for every factor.

    See the module docstring for what each factor is and what is skipped.
    """
    torch = _torch()
    name = source or type(model).__name__
    try:
        work = copy.deepcopy(model)
    except Exception as exc:  # noqa: BLE001
        raise ModelSourceError(f"{name} cannot be copied for the walker ({type(exc).__name__}: {_first_line(exc)}).") \
            from None
    dtype = next((str(p.dtype).replace("torch.", "") for p in model.parameters()), "float64")
    work = work.to(torch.float64).eval()
    x = sample.detach().to(torch.float64).clone()
    g = _Graph(work, x, name)
    units = _units(g)
    _names(g, units)
    record = dict(record or {})
    fmode = None
    if mode == "static":
        fmode = fourier_mode(conv, freq, _total_stride(g, units), f"{name}'s residual path")
    else:
        values, what = _jacobian_inputs(g, inputs, seed, x, [u["entry"] for u in units])
        from .jacobian import channel_jacobian
    factors, used, gate_of = [], set(), {}
    for k, u in enumerate(units):
        prov = {"source": mode, "kind": factor if u["kind"] == "residual" else "plain", "module": u["name"],
                "walker": "blocks", "modules": u["modules"], "dtype": dtype, **record}
        if u["kind"] == "residual":
            prov["shortcut"] = "identity" if u["shortcut"] is u["entry"] else \
                "+".join(sorted({p for n in u["shortcut_nodes"] for p in _module_paths(n)[-1:]})) or "projection"
            prov["projection_shortcut"] = _n_linear(g, u["shortcut_nodes"]) > 0
        col_groups = None
        if mode == "static":
            mat, out, info = _static_factor(g, u, factor, fmode)
            used.update(info["main"])
            for n in u["nodes"]:
                if n not in info["main"] and g.kind[n] != "main":
                    gate_of[n] = u["name"]
            prov["conv"] = conv
            prov["activations"] = "all-active (identity): " + ", ".join(sorted(info.get("activations", ()))) \
                if info.get("activations") else "none"
            if info.get("gates"):
                prov["gates"] = ("frozen at the sample (mean over its items): "
                                 + ", ".join(sorted({_describe(n) for n in info["gates"]})))
            if fmode is not None:
                prov["freq"] = [*fmode.here, fmode.n]
                prov["freq_out"] = [*out.here, out.n]
                mat = realify(mat)
            col_groups, from_conv = _col_groups(g, info, mat.shape[1], fmode is not None)
            if col_groups is not None:
                prov["col_groups_from"] = from_conv
            fmode = out
        else:
            exit_ = u["branch"] if (u["kind"] == "residual" and factor == "branch") else u["exit"]
            f = _unit_function(g, u["entry"], exit_, values)
            entry_vals = values[u["entry"]]
            acc = None
            with torch.enable_grad():
                for b in range(entry_vals.shape[0]):
                    try:
                        jac = channel_jacobian(f, entry_vals[b:b + 1])
                    except ModelSourceError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - forward AD of user modules
                        raise ModelSourceError(f"{name}: the Jacobian of factor {u['name']} failed "
                                               f"({type(exc).__name__}: {_first_line(exc)}).") from None
                    acc = jac if acc is None else acc + jac
            mat = acc / entry_vals.shape[0]
            used.update(g.between(u["entry"], exit_))
            prov["inputs"] = what
            prov["tokens"] = "uniform"
            probe: dict = {}
            try:
                _Linear(g, u, None, 0, probe).run(exit_, _main_nodes(g, u["entry"], exit_, u["name"]))
                col_groups, from_conv = _col_groups(g, probe, mat.shape[1], False)
                if col_groups is not None:
                    prov["col_groups_from"] = from_conv
            except ModelSourceError:
                col_groups = None  # a map static mode cannot read: no conv groups claimed
        factors.append(Factor(name=u["name"], matrix=check_matrix(mat, u["name"], name), provenance=prov,
                              col_groups=col_groups))
    skipped = _skipped(g, units, used, gate_of)
    label = "Jacobian at " + what if mode == "jacobian" else "static"
    return Chain.from_factors(factors, skipped=skipped,
                              source=f"{name} (generic walker: residual blocks from an execution on "
                                     f"{sample_note or 'the sample'}; {label})")


# ----- layers in execution order --------------------------------------------------------------------


def _kind(module) -> str | None:
    torch = _torch()
    name = type(module).__name__
    if isinstance(module, torch.nn.Linear):
        return "linear"
    if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d)):
        return "conv"
    if name == "Conv1D" and hasattr(module, "nf"):  # transformers' GPT-style Conv1D: weight is (in, out)
        return "conv1d_t"
    return None


def walk_chain(model, *, sample=None, source: str = "") -> Chain:
    """The chain of a module's linear layers in execution order (see the module docstring).

    A grouped or depthwise conv is its block-diagonal (diagonal) zero-frequency channel matrix,
    with its input groups as ``col_groups``. For residual-block factors use :func:`walk_blocks`
    (``load_chain(model, sample=x)``).
    """
    torch = _torch()
    model = model.eval()
    if sample is None:
        sample = getattr(model, "dummy_inputs", None)
        if sample is None:
            raise ModelSourceError(
                f"{source or type(model).__name__} has no adapter and no sample input: pass sample= (a tensor or a "
                "dict of tensors) so the generic walker can find the execution order."
            )
    order, seen = [], set()

    def record(name):
        def hook(module, args, output):  # returns None: a forward hook must not replace the output
            if name not in seen:
                seen.add(name)
                order.append(name)
        return hook

    hooks = [mod.register_forward_hook(record(name)) for name, mod in model.named_modules() if _kind(mod) is not None]
    try:
        with torch.no_grad():
            model(**sample) if isinstance(sample, dict) else model(sample)
    except Exception as exc:  # noqa: BLE001 - the model's own forward failed on the sample
        raise ModelSourceError(f"The generic walker's sample forward pass failed: {type(exc).__name__}: "
                               f"{_first_line(exc)}") from None
    finally:
        for h in hooks:
            h.remove()
    modules = dict(model.named_modules())
    factors = []
    for name in order:
        mod = modules[name]
        w = mod.weight.detach().to(torch.float64).cpu().numpy()
        kind = _kind(mod)
        col_groups = None
        if kind == "conv1d_t":
            w = w.T
        elif kind == "conv":
            w = conv_dc(w if w.ndim == 4 else w[..., None])
            if mod.groups != 1:
                w, col_groups = grouped_channel_matrix(w, mod.groups)
        factors.append(Factor(name=name, matrix=check_matrix(np.asarray(w), name, source),
                              provenance={"source": "static", "kind": "plain", "module": name, "walker": True,
                                          "dtype": str(mod.weight.dtype).replace("torch.", "")},
                              col_groups=col_groups))
    skipped = []
    for name, mod in model.named_modules():
        own = [p for p in mod.parameters(recurse=False)]
        if not own:
            continue
        if _kind(mod) is not None and name not in seen:
            skipped.append({"module": name, "reason": "not executed by the sample forward pass"})
        elif _kind(mod) is None:
            skipped.append({"module": name, "reason": f"{type(mod).__name__}: not a linear or conv layer"})
    if not factors:
        raise ModelSourceError(f"The generic walker found no linear or conv layer in {source or type(model).__name__}.")
    return Chain.from_factors(factors, source=f"{source or type(model).__name__} (generic walker)", skipped=skipped)
