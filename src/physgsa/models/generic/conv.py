"""Convolutions in the traced graph: their parameters, strides and input groups (channel matrices
come from :mod:`physgsa.models._conv`).
"""

from __future__ import annotations

import inspect

import numpy as np

from .._conv import input_groups
from .blocks import main_nodes
from .graph import Graph, const_value
from .trace import module_paths


def pair(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1])) if len(v) else (0, 0)
    return int(v), int(v)


def conv_params(g: Graph, n):
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
        w = const_value(g, args["weight"])
        stride, padding, dilation, groups = (const_value(g, args[k])
                                             for k in ("stride", "padding", "dilation", "groups"))
    else:
        return None
    w = w.detach().to(torch.float64).cpu().numpy()
    kh, kw = w.shape[2], w.shape[3]
    dilation = pair(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        else:  # "same": torch pads d (k - 1) in all, the smaller half first
            padding = (dilation[0] * (kh - 1) // 2, dilation[1] * (kw - 1) // 2)
    return w, pair(stride), pair(padding), dilation, int(groups)


def _stride_of(g: Graph, n) -> int:
    """The (row) stride of a conv or average pooling node; 1 for every other node."""
    conv = conv_params(g, n)
    if conv is not None:
        return conv[1][0]
    if g.op_name(n) in ("AvgPool2d", "avg_pool2d"):
        if n.op == "call_module":
            mod = g.modules[n.target]
            return pair(mod.stride if mod.stride is not None else mod.kernel_size)[0]
        args = dict(zip(("input", "kernel_size", "stride"), n.args))
        args.update(n.kwargs)
        return pair(args.get("stride") or args["kernel_size"])[0]
    return 1


def total_stride(g: Graph, units: list[dict]) -> int:
    """The product of the strides along the chain's path (one path through each factor)."""
    total = 1
    for u in units:
        acc = {u["entry"]: 1}
        for n in main_nodes(g, u["entry"], u["exit"], f"factor {u['name']}"):
            before = max((acc[a] for a in n.all_input_nodes if a in acc), default=1)
            acc[n] = before * _stride_of(g, n)
        total *= acc[u["exit"]]
    return total


def input_col_groups(g: Graph, info: dict, n_cols: int, real_form: bool):
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
    return cg, module_paths(conv)[-1] if module_paths(conv) else conv.name
