"""Jacobian factors: a factor's stretch of the traced graph as a function, and the inputs it is
differentiated at.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..precision import float64_internals
from ..sources import ModelSourceError, import_torch
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
        with float64_internals():  # RMSNorm's x.to(float32) and the like: float64 as in jacobian.py
            return run(x)

    def run(x):
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


def last_axis_jacobian(f, x, name: str, unit: str):
    """``J[:, c]`` = mean over every axis but the last of ``jvp(f, x, e_c (x) 1)`` for ``x`` (N, ..., d).

    For (N, T, d): the items' mean of ``(1/T) sum_{t,s} J[t, s]`` (the uniform token reduction), the
    whole batch in one pass (items are independent in eval mode); for (N, d): the items' mean Jacobian.
    """
    torch = import_torch()
    d = x.shape[-1]
    eye = torch.eye(d, dtype=x.dtype)
    dirs = eye.reshape((d,) + (1,) * (x.ndim - 1) + (d,)).expand((d, *x.shape))

    def one(v):
        out = torch.func.jvp(f, (x,), (v,))[1]
        return out.mean(dim=tuple(range(out.ndim - 1))) if out.ndim > 1 else out

    try:
        # directions in chunks of about 2^25 input entries: memory of a few forward passes, never d of them
        chunk = max(1, min(d, 2 ** 25 // max(1, x.numel())))
        return torch.func.vmap(one, chunk_size=chunk)(dirs).T.detach().numpy()
    except ModelSourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - forward AD of user modules
        raise ModelSourceError(f"{name}: the Jacobian of factor {unit} failed ({type(exc).__name__}: "
                               f"{first_line(exc)}).") from None


def jacobian_inputs(g: Graph, inputs, seed: int, sample, keep):
    """The recorded run at the Jacobian inputs (the factors' input values kept), and what they are.

    ``sample`` is the :class:`.samples.Inputs` the graph was traced on; Jacobian inputs replace its
    first tensor (the others are held), with the same rank, trailing shape and kind (floats or ids).
    """
    torch = g.torch
    keep = set(keep) | {n for n, k in g.kind.items() if k in ("pooled", "meta", "meta_tensor")}
    first = sample.first
    images = first.ndim == 4 and first.is_floating_point()
    if inputs is None:
        return g.run(sample.tensors, keep), "the sample"
    if isinstance(inputs, str) and inputs == "random":
        gen = torch.Generator().manual_seed(int(seed))
        if first.is_floating_point():
            x = seeded_sample(tuple(first.shape), seed)
            kind = "images" if images else "normal inputs"
        else:
            x = torch.randint(0, int(first.max()) + 1, tuple(first.shape), generator=gen, dtype=first.dtype)
            kind = f"token ids below {int(first.max()) + 1}"
        xs = sample.with_first(x)
        _check_batch(g, sample, x)
        what = f"random {'normal ' if images else ''}{kind} of the sample's shape, seed {seed} (flagged)"
        return g.run(xs.tensors, keep), what
    if isinstance(inputs, torch.Tensor):
        x, what = inputs.detach(), "the given inputs"
    else:
        path = Path(str(inputs))
        if not path.is_file():
            raise ModelSourceError(f"Jacobian input file '{path}' does not exist.")
        try:
            x = torch.as_tensor(np.load(path, allow_pickle=False))
        except (ValueError, OSError) as exc:
            raise ModelSourceError(f"'{path}' is not a readable .npy array ({first_line(exc)}).") from None
        what = f"{'images' if images else 'inputs'} from {path}"
    if images and (x.ndim != 4 or x.shape[1] != first.shape[1]):
        raise ModelSourceError(f"Jacobian inputs must be images (N, {first.shape[1]}, H, W) like the sample; "
                               f"got shape {tuple(x.shape)}.")
    if not images and (x.ndim != first.ndim or tuple(x.shape[1:]) != tuple(first.shape[1:])
                       or x.is_floating_point() != first.is_floating_point()):
        kind = "floats" if first.is_floating_point() else "integer token ids"
        raise ModelSourceError(f"Jacobian inputs must be {kind} of shape (N, {', '.join(map(str, first.shape[1:]))}) "
                               f"like the sample; got {str(x.dtype).replace('torch.', '')} of shape {tuple(x.shape)}.")
    x = x.to(torch.float64) if x.is_floating_point() else x
    _check_batch(g, sample, x)
    xs = sample.with_first(x)
    values = g.run(xs.tensors, keep)
    with torch.no_grad(), float64_internals():
        try:
            ref = xs.call(g.model)
        except Exception as exc:  # noqa: BLE001
            raise ModelSourceError(f"{g.name} fails on the Jacobian inputs "
                                   f"({type(exc).__name__}: {first_line(exc)}).") from None
    try:
        g.check_same(ref, values[next(n for n in g.nodes if n.op == "output")])
    except ModelSourceError:
        raise ModelSourceError(f"The traced graph of {g.name} follows the sample's execution and does not reproduce "
                               "the model on the Jacobian inputs; give inputs of the sample's shape.") from None
    return values, what


def _check_batch(g: Graph, sample, x) -> None:
    """With several inputs, the held ones are the sample's: the Jacobian inputs keep its batch size."""
    if len(sample.tensors) > 1 and x.shape[0] != sample.first.shape[0]:
        raise ModelSourceError(f"{g.name}: the sample has several inputs, held at their values; Jacobian inputs must "
                               f"have its batch size {sample.first.shape[0]}; got {x.shape[0]}.")
