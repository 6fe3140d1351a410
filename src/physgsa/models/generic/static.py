"""Static factors: the linear map along a factor's main path, activations all-active, gates frozen at the
sample, at zero frequency or on one Fourier mode.
"""

from __future__ import annotations

import operator

import numpy as np

from ...core.validation import spell
from .._conv import FourierMode, apply_grouped, avg_pool_gain, conv_blocks
from ..sources import ModelSourceError
from .batchnorm import batchnorm_scale
from .blocks import main_nodes
from .conv import conv_params, pair
from .graph import ACTIVATIONS, IDENTITY_MODULES, Graph, const_value
from .trace import describe_node


def _gate_values(g: Graph, gate, main_shape, where: str, item: int) -> np.ndarray:
    """A gate's value at sample item ``item``: a per-channel vector (length 1 or C)."""
    torch = g.torch
    val = g.values[gate]
    if not isinstance(val, torch.Tensor):
        return np.asarray(float(val))
    val = val.detach().to(torch.float64)
    nd = len(main_shape)
    if val.ndim > nd:
        raise ModelSourceError(f"{g.name}: the gate {describe_node(gate)} in {where} has more dimensions than the "
                               "tensor it scales.")
    val = val.reshape((1,) * (nd - val.ndim) + tuple(val.shape))
    if val.shape[2] != 1 or val.shape[3] != 1:
        if bool((val != val[:, :, :1, :1]).any()):
            raise ModelSourceError(f"{g.name}: the gate {describe_node(gate)} in {where} varies over the image; "
                                   "a spatially varying gate is not a channel map.")
        val = val[:, :, :1, :1]
    val = val[min(item, val.shape[0] - 1), :, 0, 0]
    return val.cpu().numpy()


_ADD = ("add", operator.add)
_SUB = ("sub", operator.sub)
_MUL = ("mul", operator.mul)
_DIV = ("div", "truediv", operator.truediv)


def _arith(g: Graph, n) -> str | None:
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


def _scalar_or_channels(val, c: int, what: str, g: Graph, images: bool = True) -> np.ndarray:
    """A constant multiplier as a scalar or a per-channel vector; refused if it varies over pixels (tokens)."""
    torch = g.torch
    if isinstance(val, torch.Tensor):
        v = val.detach().to(torch.float64)
        if v.numel() == 1:
            return np.asarray(float(v.reshape(())))
        if not images:  # channels last: a constant of shape (..., 1, c)
            if v.ndim == 0 or v.shape[-1] not in (1, c) or v.numel() != v.shape[-1]:
                raise ModelSourceError(f"{g.name}: {what} multiplies by a constant of shape {tuple(val.shape)}, "
                                       "which is not one scale per channel (the last axis).")
            return v.reshape(-1).cpu().numpy()
        v = v.reshape((1,) * max(0, 4 - v.ndim) + tuple(v.shape)) if v.ndim <= 4 else v
        if v.ndim != 4 or v.shape[0] != 1 or v.shape[2] != 1 or v.shape[3] != 1 or v.shape[1] not in (1, c):
            raise ModelSourceError(f"{g.name}: {what} multiplies by a constant of shape {tuple(val.shape)}, which is "
                                   "not one scale per channel.")
        return v[0, :, 0, 0].cpu().numpy()
    if isinstance(val, (int, float)) and not isinstance(val, bool):
        return np.asarray(float(val))
    raise ModelSourceError(f"{g.name}: {what} multiplies by a {type(val).__name__}.")


class LinearMap:
    """The static linear map of one unit: propagated node by node from its input."""

    def __init__(self, g: Graph, unit: dict, mode: FourierMode | None, item: int, info: dict):
        self.g, self.unit, self.mode, self.item, self.info = g, unit, mode, item, info
        self.where = f"factor {unit['name']}"
        self.pads: dict = {}
        self.images = g.axis(unit["entry"]) == 1 and g.values[unit["entry"]].ndim == 4

    def run(self, exit_, nodes) -> tuple[np.ndarray, FourierMode | None]:
        g = self.g
        entry = self.unit["entry"]
        c = g.values[entry].shape[g.axis(entry)]
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
            raise ModelSourceError(f"{g.name}: {describe_node(n)} in {self.where} does not read the factor's input.")
        if not self.images:
            linear = self.linear(n, state)
            if linear is not None:
                return linear
            if name in ACTIVATIONS or name in IDENTITY_MODULES or name in ("contiguous", "clone") \
                    or _arith(g, n) is not None:
                pass  # elementwise: as for images, below
            else:
                raise ModelSourceError(
                    f"{g.name}: {describe_node(n)} in {self.where} is not a linear map of the last axis the generic "
                    "walker knows (linear layers, ReLU-family activations, constant scales, additions). Use "
                    f"{spell('mode', 'jacobian')}, which differentiates it, or export the factors yourself.")
        padded = [a for a in ins if a in self.pads]
        conv = conv_params(g, n)
        if padded and (conv is None or padded != [n.args[0]]) and self.mode is not None:
            raise ModelSourceError(f"{g.name}: {describe_node(padded[0])} is read by {describe_node(n)}, "
                                   f"not by a conv; {spell('conv', 'fft')} needs the padding's offset at a conv.")
        if conv is not None:
            w, stride, padding, dilation, groups = conv
            extra = self.pads.get(n.args[0], (0, 0))
            padding = (padding[0] + extra[0], padding[1] + extra[1])
            m, mode, diag = state[n.args[0]]
            if self.mode is not None and stride[0] != stride[1]:
                raise ModelSourceError(f"{g.name}: {describe_node(n)} has stride {stride}; {spell('conv', 'fft')} "
                                       "follows square strides only.")
            blocks = conv_blocks(w, mode, padding=padding, dilation=dilation)
            if m.shape[0] != w.shape[1] * groups:
                raise ModelSourceError(f"{g.name}: {describe_node(n)} takes {w.shape[1] * groups} channels but gets "
                                       f"{m.shape[0]}.")
            if diag and groups > 1:
                self.info.setdefault("grouped_inputs", []).append((n, groups, w.shape[1] * groups))
            elif diag:
                self.info.setdefault("grouped_inputs", []).append((n, 1, w.shape[1]))
            out_mode = None if mode is None else mode.strided(stride[0], f"{describe_node(n)} of {g.name}")
            self.info.setdefault("convs", []).append(n)
            return apply_grouped(blocks, groups, m), out_mode, False
        scale = batchnorm_scale(g, n)
        if scale is not None:
            m, mode, diag = state[n.args[0]]
            return scale[:, None] * m, mode, diag
        if name in ACTIVATIONS or name in IDENTITY_MODULES or name in ("contiguous", "clone"):
            if name in ACTIVATIONS:
                self.info.setdefault("activations", set()).add(name)
            if name.startswith("Dropout") and n.op == "call_function":
                training = n.kwargs.get("training", n.args[2] if len(n.args) > 2 else True)
                if training:
                    raise ModelSourceError(f"{g.name}: {describe_node(n)} drops activations (training=True).")
            return state[n.args[0]]
        if name in ("AvgPool2d", "avg_pool2d"):
            return self.avg_pool(n, state)
        if name in ("pad", "ZeroPad2d", "ConstantPad2d"):
            return self.pad(n, state)
        op = _arith(g, n)
        if op is not None:
            return self.arith(n, op, state)
        raise ModelSourceError(
            f"{g.name}: {describe_node(n)} in {self.where} is not a linear channel map the generic walker knows "
            "(convolutions, BatchNorm, ReLU-family activations, per-channel gates, constant scales, additions, average "
            f"pooling). Use {spell('mode', 'jacobian')}, which differentiates it, or export the factors yourself.")

    def linear(self, n, state):
        """A linear layer on the last axis (``nn.Linear``, ``F.linear``, ``x @ W``): ``W @ m``; else None."""
        g = self.g
        torch = g.torch
        if n.op == "call_module" and isinstance(g.modules[n.target], torch.nn.Linear):
            w, x = g.modules[n.target].weight, n.args[0]
        elif n.op == "call_function" and n.target is torch.nn.functional.linear:
            x, w = n.args[0], const_value(g, n.kwargs.get("weight", n.args[1] if len(n.args) > 1 else None))
        elif (n.op == "call_function" and n.target in (torch.matmul, operator.matmul)) or \
                (n.op == "call_method" and n.target == "matmul"):
            x, w = n.args[0], n.args[1]
            if not isinstance(x, torch.fx.Node) or x not in state or (isinstance(w, torch.fx.Node) and w in state):
                return None
            w = const_value(g, w)
            if not isinstance(w, torch.Tensor) or w.ndim != 2:
                return None
            w = w.T
        else:
            return None
        if not isinstance(x, torch.fx.Node) or x not in state:
            return None
        m, mode, _ = state[x]
        w = w.detach().to(torch.float64).cpu().numpy()
        if w.shape[1] != m.shape[0]:
            raise ModelSourceError(f"{g.name}: {describe_node(n)} takes {w.shape[1]} channels but gets {m.shape[0]}.")
        self.info.setdefault("linears", []).append(n)
        return w @ m, mode, False

    def pad(self, n, state):
        """Zero padding: the identity on the channels; on a Fourier mode of the torus, its offset
        joins the padding of the conv that reads it (TF-style "same" padding).
        """
        g = self.g
        if n.op == "call_module":
            mod = g.modules[n.target]
            amounts, value = mod.padding, getattr(mod, "value", 0.0)
        else:
            names = ("input", "pad", "mode", "value")
            args = dict(zip(names, n.args))
            args.update(n.kwargs)
            if args.get("mode", "constant") != "constant":
                raise ModelSourceError(f"{g.name}: {describe_node(n)} pads in mode {args['mode']!r}; the walker "
                                       "reads zero padding only.")
            amounts = [const_value(g, a) for a in const_value(g, args["pad"])]
            value = const_value(g, args.get("value")) or 0.0
        amounts = [int(a) for a in amounts]
        if len(amounts) != 4 or float(value) != 0.0 or min(amounts) < 0:
            raise ModelSourceError(f"{g.name}: {describe_node(n)} pads by {amounts} with {value}; the walker "
                                   "reads zero padding of the two image axes only.")
        left, _, top, _ = amounts
        self.pads[n] = (top, left)
        return state[n.args[0]]

    def avg_pool(self, n, state):
        g = self.g
        if n.op == "call_module":
            mod = g.modules[n.target]
            k, s, p = mod.kernel_size, mod.stride, mod.padding
            if getattr(mod, "divisor_override", None):
                raise ModelSourceError(f"{g.name}: {describe_node(n)} overrides its divisor.")
        else:
            names = ("input", "kernel_size", "stride", "padding")
            args = dict(zip(names, n.args))
            args.update(n.kwargs)
            k, s, p = args["kernel_size"], args.get("stride") or args["kernel_size"], args.get("padding", 0)
            if args.get("divisor_override"):
                raise ModelSourceError(f"{g.name}: {describe_node(n)} overrides its divisor.")
        k, s, p = pair(k), pair(s if s is not None else k), pair(p)
        m, mode, diag = state[n.args[0]]
        if self.mode is not None and s[0] != s[1]:
            raise ModelSourceError(f"{g.name}: {describe_node(n)} has stride {s}; "
                                   f"{spell('conv', 'fft')} follows square strides only.")
        gain = avg_pool_gain(k, p, mode)
        out_mode = None if mode is None else mode.strided(s[0], f"{describe_node(n)} of {g.name}")
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
                    raise ModelSourceError(f"{g.name}: the two terms of {describe_node(n)} in {self.where} end on "
                                           "different grids (their strides differ).")
                if ma.shape != mb.shape:
                    raise ModelSourceError(f"{g.name}: the two terms of {describe_node(n)} have {ma.shape[0]} and "
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
            raise ModelSourceError(f"{g.name}: {describe_node(n)} in {self.where} multiplies two tensors that both "
                                   "depend on the factor's input (not a per-channel gate); it is not a linear map. Use "
                                   f"{spell('mode', 'jacobian')}.")
        m, mode, diag = state[mains[0]]
        other = others[0]
        if op == "div" and args[0] is not mains[0]:
            raise ModelSourceError(f"{g.name}: {describe_node(n)} divides by a tensor on the residual path.")
        if isinstance(other, torch.fx.Node) and g.kind.get(other) == "pooled":
            vec = _gate_values(g, other, g.values[mains[0]].shape, self.where, self.item)
            self.info.setdefault("gates", []).append(other)
        else:
            vec = _scalar_or_channels(const_value(g, other), m.shape[0], describe_node(n), g, self.images)
        if op == "div":
            vec = 1.0 / vec
        vec = np.asarray(vec, dtype=np.float64)
        return (vec[:, None] * m) if vec.ndim else float(vec) * m, mode, diag


def static_factor(g: Graph, u: dict, factor: str, mode: FourierMode | None):
    """The unit's static factor (mean over the sample's items when it has gates), its output mode, and notes."""
    if u["kind"] == "residual" and factor == "branch":
        exit_ = u["branch"]
    else:
        exit_ = u["exit"]
    nodes = main_nodes(g, u["entry"], exit_, f"factor {u['name']}")
    info: dict = {}
    mat, out = LinearMap(g, u, mode, 0, info).run(exit_, nodes)
    if info.get("gates"):
        n_items = g.values[u["entry"]].shape[0]
        for item in range(1, n_items):
            mat = mat + LinearMap(g, u, mode, item, {}).run(exit_, nodes)[0]
        mat = mat / n_items
    info["main"] = nodes
    return mat, out, info
