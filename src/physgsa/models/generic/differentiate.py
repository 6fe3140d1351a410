"""Jacobian factors: a factor's stretch of the traced graph as a function, and the inputs it is
differentiated at.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..sources import ModelSourceError
from .graph import Graph
from .options import seeded_sample
from .trace import describe_node, first_line


def unit_function(g: Graph, entry, exit_, values: dict):
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
                raise ModelSourceError(f"{g.name}: {describe_node(n)} reads {a.name}, from outside its factor.")
    return f


def jacobian_inputs(g: Graph, inputs, seed: int, sample, keep):
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
            raise ModelSourceError(f"'{path}' is not a readable .npy array ({first_line(exc)}).") from None
        what = f"images from {path}"
    if x.ndim != 4 or x.shape[1] != sample.shape[1]:
        raise ModelSourceError(f"Jacobian inputs must be images (N, {sample.shape[1]}, H, W) like the sample; "
                               f"got shape {tuple(x.shape)}.")
    values = g.run(x, keep)
    with torch.no_grad():
        try:
            ref = g.model(x.clone())
        except Exception as exc:  # noqa: BLE001
            raise ModelSourceError(f"{g.name} fails on the Jacobian inputs "
                                   f"({type(exc).__name__}: {first_line(exc)}).") from None
    try:
        g.check_same(ref, values[next(n for n in g.nodes if n.op == "output")])
    except ModelSourceError:
        raise ModelSourceError(f"The traced graph of {g.name} follows the sample's execution and does not reproduce "
                               "the model on the Jacobian inputs; give inputs of the sample's shape.") from None
    return values, what
