"""BatchNorm folding: an eval-mode BatchNorm as ``diag(gamma / sqrt(running_var + eps))``."""

from __future__ import annotations

import numpy as np

from ..sources import ModelSourceError
from .graph import Graph, const_value
from .trace import describe_node, user_path


def batchnorm_scale(g: Graph, n):
    """The per-channel scale of an eval-mode BatchNorm node, or None if ``n`` is not one."""
    torch = g.torch
    if n.op == "call_module":
        mod = g.modules[n.target]
        if not isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            return None
        if mod.running_var is None or mod.training:
            raise ModelSourceError(f"{g.name}: BatchNorm {user_path(n.target)} normalizes by batch statistics "
                                   "(no running_var, or training mode); its channel map depends on the batch.")
        var, gamma, eps = mod.running_var, mod.weight, mod.eps
    elif n.op == "call_function" and n.target is torch.nn.functional.batch_norm:
        names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
        args = dict(zip(names, n.args))
        args.update(n.kwargs)
        if args.get("training", False) or args.get("running_var") is None:
            raise ModelSourceError(f"{g.name}: {describe_node(n)} normalizes by batch statistics; its channel map "
                                   "depends on the batch.")
        var, gamma, eps = const_value(g, args["running_var"]), const_value(g, args.get("weight")), args.get("eps", 1e-5)
    else:
        return None
    var = var.detach().to(torch.float64).cpu().numpy()
    scale = 1.0 / np.sqrt(var + float(eps))
    if gamma is not None:
        scale = gamma.detach().to(torch.float64).cpu().numpy() * scale
    return scale
