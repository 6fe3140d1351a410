"""Tracing: the module run on a sample under torch.fx, every operation recorded and computed.

The graph is made free of in-place operations; module paths are read from the trace.
"""

from __future__ import annotations

import inspect
import operator
import sys

from ..sources import ModelSourceError, import_torch


def first_line(exc) -> str:
    return (str(exc).splitlines() or [""])[0][:300]


_FIXED_ATTRIBUTES = ("dtype", "device", "layout", "ndim", "is_cuda", "is_sparse", "is_quantized", "is_meta")


def _concrete_tracer(samples: list):
    """A torch.fx tracer whose proxies carry the values the operations compute on ``samples`` (the
    module's inputs, in order).

    Each recorded operation is also run on the concrete values of its arguments, so Python
    control flow that reads a tensor's shape or value (``if x.shape[1] != c``, ``len(x)``,
    ``range(x.size(1))``) follows the branch the sample takes, as in the real execution: the
    graph is the one the sample ran through. (``torch.fx.symbolic_trace`` refuses such code.)
    A value lives on its proxy, so it is freed when the traced code drops the proxy, as in a
    forward pass.
    """
    torch = import_torch()
    fx = torch.fx
    # start-up: torch loads only when a model is walked (never at `physgsa --help`)
    from torch.fx import _symbolic_trace
    from torch.fx.node import map_aggregate
    from torch.fx.proxy import Attribute

    def value_of(v):
        if isinstance(v, Attribute):  # x.shape before it is used: fx makes its node lazily
            return getattr(value_of(v.root), v.attr)
        return v.concrete

    class ConcreteProxy(fx.Proxy):
        def __getattr__(self, k):
            # a tensor's dtype, device and rank are fixed for the traced execution: their values
            # (torch.finfo(x.dtype), torch.zeros(..., device=x.device) need them, not proxies)
            if k in _FIXED_ATTRIBUTES:
                return getattr(value_of(self), k)
            return super().__getattr__(k)

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
                k = self.n_placeholders - 1
                return samples[k] if k < len(samples) else (args[0] if args else None)
            if kind == "get_attr":
                value = self.root
                for part in str(target).split("."):
                    value = getattr(value, part)
                return value
            def concrete(a):
                return map_aggregate(a, lambda v: value_of(v) if isinstance(v, fx.Proxy) else v)

            cargs, ckwargs = concrete(tuple(args)), concrete(dict(kwargs))
            with torch.no_grad():
                if kind == "call_function":
                    return target(*cargs, **ckwargs)
                if kind == "call_method":
                    return getattr(cargs[0], target)(*cargs[1:], **ckwargs)
                return self.root.get_submodule(target)(*cargs, **ckwargs)  # call_module

        def getattr(self, attr, attr_val, parameter_proxy_cache):
            # buffers read in forward (a registered mask or id table, sliced by the input's length)
            # become graph constants with their values, as parameters do: code that calls their
            # methods with traced sizes (buffer.expand(n, t)) is then recorded, not run on proxies
            if isinstance(attr_val, torch.Tensor) and not isinstance(attr_val, torch.nn.Parameter):
                for name, buf in self.root.named_buffers():
                    if buf is attr_val:
                        if name not in parameter_proxy_cache:
                            parameter_proxy_cache[name] = self.create_proxy("get_attr", name, (), {})
                        return parameter_proxy_cache[name]
            return super().getattr(attr, attr_val, parameter_proxy_cache)

        def call_module(self, m, forward, args, kwargs):
            try:
                self.path_of_module(m)
            except NameError:  # a module made inside forward (not a submodule): traced through
                return forward(*args, **kwargs)
            return super().call_module(m, forward, args, kwargs)

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


def trace_module(model, name: str, inputs):
    """The module traced on ``inputs`` (:class:`.samples.Inputs`): positional or keyword arguments."""
    torch = import_torch()
    names = [f"a{k}" for k in range(len(inputs.tensors))]
    call = ", ".join(f"{key}={a}" for key, a in zip(inputs.keys, names)) if inputs.keys else ", ".join(names)
    scope: dict = {}
    # fx makes one placeholder per parameter of forward: a function with exactly the sample's arity
    exec(f"def forward(self, {', '.join(names)}):\n    return self.model({call})\n", scope)  # noqa: S102

    class Root(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.model = inner

        forward = scope["forward"]

    try:
        tracer = _concrete_tracer([t.clone() for t in inputs.tensors])
        root = Root(model)
        graph = tracer.trace(root)
        return torch.fx.GraphModule(root, graph, type(model).__name__)
    except Exception as exc:  # noqa: BLE001 - tracing user code fails in many ways
        raise ModelSourceError(f"The generic walker cannot trace {name} with torch.fx ({type(exc).__name__}: "
                               f"{first_line(exc)}).") from None


_INPLACE_FUNCTIONS = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
                      operator.itruediv: operator.truediv}
_META_METHODS = ("size", "dim", "shape")


def make_functional(gm, name: str) -> None:
    """Make the traced graph free of in-place operations (or refuse where it depends on mutation).

    ``y = x.add_(z)`` becomes ``y = x.add(z)`` when nothing reads ``x`` afterwards; where something
    does (``x.add_(z); return relu(x)``), the graph's edges do not show the data flow, and the
    walker refuses. Modules and functions called with ``inplace=True`` run out of place.
    """
    torch = import_torch()
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
                f"{name}: {describe_node(n)} changes {target.name} in place and {later[0].name} reads it afterwards; "
                "the traced graph does not show that data flow. Write it out of place (y = x + z, or inplace=False).")
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


def module_paths(n) -> list[str]:
    """The qualified names of the modules a node runs in, outermost first (the root excluded)."""
    stack = n.meta.get("nn_module_stack") or {}
    out = []
    for key, val in stack.items():
        path = val[0] if isinstance(val, tuple) and val and isinstance(val[0], str) else str(key)
        path = user_path(path)
        if path and path not in out:
            out.append(path)
    if n.op == "call_module" and user_path(n.target) not in out:
        out.append(user_path(n.target))
    return out


def user_path(path) -> str:
    """A module path as the user's model names it (the traced root's ``model.`` prefix dropped)."""
    path = str(path)
    return "" if path == _ROOT else path[len(_ROOT) + 1:] if path.startswith(_ROOT + ".") else path


def describe_node(n) -> str:
    if n.op == "call_module":
        return f"module {user_path(n.target)}"
    what = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
    paths = module_paths(n)
    return f"{what} ({n.name}{' in ' + paths[-1] if paths else ''})"
