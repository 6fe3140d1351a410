"""The generic walker: any model without an adapter, as a chain of its linear layers.

A forward pass on a sample input, with a hook on every leaf module, records the Linear,
Conv1D (transformers) and Conv1d/Conv2d layers in the order they run; each becomes a plain
factor (its weight, rows = outputs; a conv kernel as its zero-frequency channel matrix),
named by its module path. Adjacent layers whose sizes meet are interfaces; the others are
breaks, reported. Every other module with weights (norms, embeddings, ...) and every layer
the pass never ran is listed as skipped, with the reason. Silent skips are bugs.

The sample input is the caller's, or a transformers model's own ``dummy_inputs``; it only
fixes the execution order, never a factor's values (static mode).
"""

from __future__ import annotations

import numpy as np

from ..chain import Chain, Factor, check_matrix
from ._conv import conv_dc
from .sources import ModelSourceError, _torch

__all__ = ["walk_chain"]


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
    """The chain of a module's linear layers in execution order (see the module docstring)."""
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
        raise ModelSourceError(f"The generic walker's sample forward pass failed: {type(exc).__name__}: {exc}") from None
    finally:
        for h in hooks:
            h.remove()
    modules = dict(model.named_modules())
    factors = []
    for name in order:
        mod = modules[name]
        w = mod.weight.detach().to(torch.float64).cpu().numpy()
        kind = _kind(mod)
        if kind == "conv1d_t":
            w = w.T
        elif kind == "conv":
            if mod.groups != 1:
                raise ModelSourceError(f"Conv {name} has groups={mod.groups}; the generic walker reads dense convs only.")
            w = conv_dc(w if w.ndim == 4 else w[..., None])
        factors.append(Factor(name=name, matrix=check_matrix(np.asarray(w), name, source),
                              provenance={"source": "static", "kind": "plain", "module": name, "walker": True,
                                          "dtype": str(mod.weight.dtype).replace("torch.", "")}))
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
