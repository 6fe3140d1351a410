"""Layers in execution order (:func:`walk_chain`): a forward pass with a hook on every leaf module."""

from __future__ import annotations

import numpy as np

from ...core.chain import Chain, Factor, check_matrix
from .._conv import conv_dc, grouped_channel_matrix
from ..sources import ModelSourceError, import_torch
from .trace import first_line


def _kind(module) -> str | None:
    torch = import_torch()
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
    torch = import_torch()
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
                               f"{first_line(exc)}") from None
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
