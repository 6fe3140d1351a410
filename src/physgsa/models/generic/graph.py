"""The traced graph of a module, its execution on a sample, and the data-flow facts the walker reads
(node kinds, dominators, residual additions).
"""

from __future__ import annotations

import operator

from ..precision import float64_internals
from ..sources import ModelSourceError, import_torch
from .trace import first_line, make_functional, trace_module

#: The activations static mode linearizes as all-active (slope 1), by module class name.
ACTIVATIONS = ("ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "CELU", "SiLU", "GELU", "Hardswish", "Mish", "Softplus")
IDENTITY_MODULES = ("Identity", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
                     "FeatureAlphaDropout")


class Graph:
    """A traced module, its execution on a sample, and the data-flow facts the walker needs."""

    def __init__(self, model, inputs, name: str):
        torch = import_torch()
        self.torch = torch
        self.name = name
        self.model = model
        self.inputs = inputs  # .samples.Inputs: the first tensor is walked, the others held at their values
        with torch.no_grad(), float64_internals():  # float32 casts in the model's code stay float64
            try:
                ref = inputs.call(model)
            except Exception as exc:  # noqa: BLE001
                raise ModelSourceError(
                    f"{name} fails on the sample ({type(exc).__name__}: {first_line(exc)}).") from None
        with float64_internals():
            self.gm = trace_module(model, name, inputs)
        make_functional(self.gm, name)
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
        self.values = self.run(inputs.tensors)
        out = self.values[next(n for n in self.nodes if n.op == "output")]
        self.check_same(ref, out)
        self._classify()
        self._dominators()
        # Second pass: the values the static factors read (gates, shapes, data-derived constants).
        self.values = self.run(inputs.tensors,
                               keep={n for n, k in self.kind.items() if k in ("pooled", "meta", "meta_tensor")})

    def run(self, xs, keep=()):
        """Every node's value on the inputs ``xs`` (a list of tensors, in order): tensors that depend
        on the input only as their shape (a meta tensor: an image-sized activation per node would
        take gigabytes), except the nodes in ``keep`` and the output (detached copies); everything else as computed.
        """
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

        with torch.no_grad(), float64_internals():
            try:
                Recorder(self.gm).run(*[t.clone() for t in xs])
            except Exception as exc:  # noqa: BLE001
                raise ModelSourceError(f"The traced graph of {self.name} fails on the sample ({type(exc).__name__}: "
                                       f"{first_line(exc)}).") from None
        return values

    def check_same(self, ref, out):
        torch = self.torch
        from torch.utils._pytree import tree_leaves  # start-up: torch loads only when a model is walked

        a = [t for t in tree_leaves(ref) if isinstance(t, torch.Tensor)]
        b = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        same = len(a) == len(b) and all(x.shape == y.shape for x, y in zip(a, b))
        if same:
            for x, y in zip(a, b):
                scale = float(x.abs().max()) if x.numel() else 0.0
                if x.numel() and float((x - y).abs().max()) > 1e-9 * max(scale, 1.0):
                    same = False
        if not same:
            raise ModelSourceError(f"The torch.fx trace of {self.name} does not reproduce its output on the sample "
                                   "(its forward depends on something the trace does not record); the generic walker "
                                   "cannot read its structure.")

    def axis(self, n) -> int:
        """The channel axis of a node's tensor: 1 for images (N, C, H, W), else the last axis."""
        nd = self.values[n].ndim
        return 1 if nd == 4 else nd - 1

    def data_inputs(self, n):
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
        if not isinstance(inp, torch.Tensor) or not isinstance(out, torch.Tensor) or inp.ndim != 4:
            # gates are per-channel scales of images; over the last axis a reduction is part of the map
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
            ins = self.data_inputs(n)
            if not isinstance(val, torch.Tensor):
                # A tuple of tensors from a reduction (torch.max) counts as its tensors.
                kind[n] = "pooled" if self._reduction(n) else "meta"
                if kind[n] == "meta" and any(kind[a] == "pooled" for a in ins):
                    kind[n] = "pooled"
                elif kind[n] == "meta" and any(kind[a] == "main" for a in ins) and isinstance(val, (tuple, list)) \
                        and any(isinstance(v, torch.Tensor) for v in val):
                    kind[n] = "main"  # x.split(...), x.chunk(...): the tensors of the main path
                continue
            reduces = any(kind[a] == "main" for a in ins) and self._reduction(n) and kind[n.args[0]] == "main"
            # gate.expand_as(x): the gate's values, at the image's size
            expands = n.op in ("call_method", "call_function") and n.target in ("expand_as", "expand", "broadcast_to",
                                                                                 torch.broadcast_to) \
                and isinstance(n.args[0], torch.fx.Node) and kind.get(n.args[0]) == "pooled"
            derived = ins and all(kind[a] in ("pooled", "meta") for a in ins) and any(kind[a] == "pooled" for a in ins)
            if reduces or expands or derived:
                kind[n] = "pooled"
            elif ins and all(kind[a] in ("meta", "meta_tensor") for a in ins):
                kind[n] = "meta_tensor"  # e.g. torch.zeros(x.shape), and what is made from it: a constant
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
            preds = self.data_inputs(n)
            # shapes and what is made from them only (a mask of the input's size) carry no data
            preds = [a for a in preds if self.kind[a] not in ("meta", "meta_tensor")] or preds
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
            for a in self.data_inputs(n):
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
        return name in ACTIVATIONS or name in IDENTITY_MODULES or name in ("relu", "contiguous", "clone")

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


def const_value(g: Graph, a):
    """A constant argument's value (a Node's recorded value, or a Python value)."""
    torch = g.torch
    if isinstance(a, torch.fx.Node):
        return g.values[a]
    return a
