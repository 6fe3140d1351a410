"""The residual-block walker: :func:`walk_source` (``load_chain`` with ``sample=``, ``sample_shape=`` or
``build=``) and :func:`walk_blocks`.
"""

from __future__ import annotations

import copy
from pathlib import Path

from ...core.chain import Chain, Factor, check_matrix
from ...core.validation import InvalidParameterError, spell
from .._conv import fourier_mode, realify
from ..jacobian import channel_jacobian
from ..precision import float64_buffers
from ..sources import ModelSourceError, import_torch
from .blocks import find_units, main_nodes, n_linear, name_units, skipped_modules
from .build import build_module, load_weights
from .conv import input_col_groups, total_stride
from .differentiate import jacobian_inputs, last_axis_jacobian, unit_function
from .graph import Graph
from .options import check_freq, flag, seeded_sample
from .samples import Inputs, check_sample, sample_inputs
from .static import LinearMap, static_factor
from .trace import describe_node, first_line, module_paths


def walk_source(source, p: dict) -> Chain:
    """``load_chain`` with ``sample=``, ``sample_shape=`` or ``build=``: the residual-block walker.

    ``p`` holds load_chain's checked parameters. The module is ``source`` (an nn.Module), or
    ``build()``, with the weights of ``source`` (a checkpoint) loaded into it where given.
    """
    torch = import_torch()
    caller = p.get("caller", "python")
    def f(name):
        return flag(name, caller)

    if p["sample"] is not None and p["sample_shape"] is not None:
        raise InvalidParameterError(f"Give either {f('sample')} or {f('sample_shape')}, not both: the sample shape "
                                    "makes a seeded random sample.")
    if p["interfaces"] != "blocks":
        raise InvalidParameterError(f"{spell('interfaces', p['interfaces'])} needs a transformer adapter; the generic "
                                    f"walker gives block factors ({spell('interfaces', 'blocks')}).")
    if p["tokens"] != "uniform":
        raise InvalidParameterError(f"{spell('tokens', p['tokens'])}: the generic walker's Jacobian uses spatially "
                                    f"uniform directions ({spell('tokens', 'uniform')}).")
    freq = check_freq(p["freq"])
    if p["mode"] == "jacobian" and p["conv"] != "dc":
        raise InvalidParameterError(f"{spell('conv', p['conv'])} applies to static factors; Jacobian factors use "
                                    "spatially uniform directions (zero frequency). Drop one of them.")
    if p["mode"] == "static" and p["inputs"] is not None:
        raise InvalidParameterError(f"{f('inputs')} gives Jacobian inputs ({spell('mode', 'jacobian')}); static "
                                    "factors read their gates at the sample. Drop it or use "
                                    f"{spell('mode', 'jacobian')}.")
    note = ""
    given = None if p["sample"] is None else sample_inputs(p["sample"], caller)  # refused before any work
    if p["build"] is not None:
        if isinstance(source, torch.nn.Module):
            raise InvalidParameterError(f"Pass either an nn.Module or {f('build')} (which makes one), not both.")
        model = build_module(p["build"], caller=caller)
        name = p["build"]
        if source is not None:
            name = f"{load_weights(model, source, caller)} in {p['build']}"
    elif isinstance(source, torch.nn.Module):
        model, name = source, type(source).__name__
    else:
        what = "nothing" if source is None else repr(str(source)) if isinstance(source, (str, Path)) else \
            f"a {type(source).__name__}"
        if caller == "cli":
            given_flag = "--sample" if p["sample"] is not None else "--sample-shape"
            raise ModelSourceError(f"{given_flag} needs --build FILE.py:FUNC (FUNC() returns the nn.Module the "
                                   f"generic walker runs; --build runs FILE's code); {what} is not a module.")
        raise ModelSourceError(f"sample= and sample_shape= need the nn.Module itself (the generic walker runs it); got "
                               f"{what}. Pass the module, or build='file.py:function' to make it from your code.")
    if given is not None:
        sample = given
        note = f"the given sample {given.shape_note()}"
        shape, seed = tuple(given.first.shape), None
    else:
        shape = p["sample_shape"]
        if shape is None:
            shape_text = f"{f('sample_shape')} 1,C,H,W (or --sample FILE)" if caller == "cli" else \
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
    return walk_blocks(model, sample, factor=p["factor"], conv=p["conv"], freq=freq, mode=p["mode"],
                       inputs=p["inputs"], seed=p["seed"], source=name, sample_note=note, record=record)


def walk_blocks(model, sample, *, factor: str = "full", conv: str = "dc", freq=(0, 0, 8), mode: str = "static",
                inputs=None, seed: int = 0, source: str = "", sample_note: str = "",
                record: dict | None = None) -> Chain:
    """The chain of residual-block factors of any module, found by running it on ``sample``.

    Parameters
    ----------
    model : nn.Module
        Any module. It is copied (float64, eval mode, float32-derived buffers rebuilt in float64);
        the caller's module is left as it was.
    sample : tensor, tuple or dict of tensors
        The input whose execution defines the blocks (and, static mode, the gate values): images
        (N, C, H, W) (channels on axis 1), or a tensor of any other rank (N, d), (N, T, d), or
        integer token ids (N, T) (channels on the last axis of the blocks' tensors); a tuple is
        passed as positional arguments, a dict as keyword arguments; the first tensor is walked,
        the others held at their values.
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
    torch = import_torch()
    name = source or type(model).__name__
    try:
        work = copy.deepcopy(model)
    except Exception as exc:  # noqa: BLE001
        raise ModelSourceError(f"{name} cannot be copied for the walker ({type(exc).__name__}: {first_line(exc)}).") \
            from None
    dtype = next((str(p.dtype).replace("torch.", "") for p in model.parameters()), "float64")
    work = work.to(torch.float64).eval()
    float64_buffers(work)  # rotary frequencies and the like, not their float32 rounding
    if getattr(getattr(work, "config", None), "use_cache", False):
        work.config.use_cache = False  # our copy: a transformers model's key/value cache is not a tensor to trace
    if mode == "jacobian" and getattr(getattr(work, "config", None), "_attn_implementation", "eager") != "eager":
        work.set_attn_implementation("eager")  # SDPA kernels lack forward-mode AD; eager computes the same
    given = sample if isinstance(sample, Inputs) else check_sample(sample)
    if conv == "fft" and given.first.ndim != 4:
        raise InvalidParameterError(f"{spell('conv', 'fft')} needs images (N, C, H, W); {name}'s sample "
                                    f"{given.shape_note()} has its channels on the last axis. Use "
                                    f"{spell('conv', 'dc')}.")
    g = Graph(work, given, name)
    units = find_units(g)
    name_units(g, units)
    record = dict(record or {})
    fmode = None
    if mode == "static":
        fmode = fourier_mode(conv, freq, total_stride(g, units), f"{name}'s residual path")
    else:
        values, what = jacobian_inputs(g, inputs, seed, given, [u["entry"] for u in units])
    factors, used, gate_of = [], set(), {}
    for u in units:
        prov = {"source": mode, "kind": factor if u["kind"] == "residual" else "plain", "module": u["name"],
                "walker": "blocks", "modules": u["modules"], "dtype": dtype, **record}
        if u.get("parallel"):
            prov["parallel"] = list(u["parallel"])
        if u["kind"] == "residual":
            prov["shortcut"] = "identity" if u["shortcut"] is u["entry"] else \
                "+".join(sorted({p for n in u["shortcut_nodes"] for p in module_paths(n)[-1:]})) or "projection"
            prov["projection_shortcut"] = n_linear(g, u["shortcut_nodes"]) > 0
        col_groups = None
        if mode == "static":
            mat, out, info = static_factor(g, u, factor, fmode)
            used.update(info["main"])
            for n in u["nodes"]:
                if n not in info["main"] and g.kind[n] != "main":
                    gate_of[n] = u["name"]
            prov["conv"] = conv
            prov["activations"] = "all-active (identity): " + ", ".join(sorted(info.get("activations", ()))) \
                if info.get("activations") else "none"
            if info.get("gates"):
                prov["gates"] = ("frozen at the sample (mean over its items): "
                                 + ", ".join(sorted({describe_node(n) for n in info["gates"]})))
            if fmode is not None:
                prov["freq"] = [*fmode.here, fmode.n]
                prov["freq_out"] = [*out.here, out.n]
                mat = realify(mat)
            col_groups, from_conv = input_col_groups(g, info, mat.shape[1], fmode is not None)
            if col_groups is not None:
                prov["col_groups_from"] = from_conv
            fmode = out
        else:
            exit_ = u["branch"] if (u["kind"] == "residual" and factor == "branch") else u["exit"]
            f = unit_function(g, u["entry"], exit_, values)
            entry_vals = values[u["entry"]]
            acc = None
            with torch.enable_grad():
                # images: item by item; channels last: the items' mean in one pass (last_axis_jacobian)
                n_items = entry_vals.shape[0] if entry_vals.ndim == 4 else 1
                if entry_vals.ndim != 4:
                    acc = last_axis_jacobian(f, entry_vals, name, u["name"])
                for b in range(n_items if entry_vals.ndim == 4 else 0):
                    try:
                        jac = channel_jacobian(f, entry_vals[b:b + 1])
                    except ModelSourceError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - forward AD of user modules
                        raise ModelSourceError(f"{name}: the Jacobian of factor {u['name']} failed "
                                               f"({type(exc).__name__}: {first_line(exc)}).") from None
                    acc = jac if acc is None else acc + jac
            mat = acc / n_items
            used.update(g.between(u["entry"], exit_))
            prov["inputs"] = what
            prov["tokens"] = "uniform"
            probe: dict = {}
            try:
                LinearMap(g, u, None, 0, probe).run(exit_, main_nodes(g, u["entry"], exit_, u["name"]))
                col_groups, from_conv = input_col_groups(g, probe, mat.shape[1], False)
                if col_groups is not None:
                    prov["col_groups_from"] = from_conv
            except ModelSourceError:
                col_groups = None  # a map static mode cannot read: no conv groups claimed
        factors.append(Factor(name=u["name"], matrix=check_matrix(mat, u["name"], name), provenance=prov,
                              col_groups=col_groups))
    skipped = skipped_modules(g, units, used, gate_of)
    label = "Jacobian at " + what if mode == "jacobian" else "static"
    return Chain.from_factors(factors, skipped=skipped,
                              source=f"{name} (generic walker: residual blocks from an execution on "
                                     f"{sample_note or 'the sample'}; {label})")
