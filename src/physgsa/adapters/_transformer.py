"""Shared machinery of the transformer adapters (BERT/MiniLM, GPT-2, ViT, DiT).

Per block ``l`` (definitions section 1, architecture.md):

- attention factor ``R = W_O W_V`` (the OV circuit, d x d), named ``blocks.{l}.attn``;
- MLP factor ``R = W_out W_in`` (linearized through the activation), named ``blocks.{l}.mlp``;
- the full factor is ``I + R``, the branch factor ``R`` (``factor="full"|"branch"``).

With ``interfaces="heads"`` the chain is ``W_V^0, W_O^0, W_V^1, W_O^1, ...`` and its
interfaces are only ``W_O^l -> W_V^{l+1}`` (product ``W_V^{l+1} W_O^l``), whose rows are the
head channels of ``V`` in block ``l+1`` and whose columns are the head channels of ``O`` in
block ``l``: heads are the natural row groups and column units.

Every weight is read by name through a :class:`~physgsa.adapters.sources.WeightSource` one
at a time; the layout (layers, heads, width) comes from the config, never from shapes. Each
architecture file gives a :class:`TransformerSpec`: the config keys and, per role, the key
templates (newer and older transformers namings).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..chain import Chain, Factor, check_matrix
from .sources import ModelSourceError, WeightSource

__all__ = ["TransformerSpec", "transformer_chain"]


@dataclass(frozen=True)
class TransformerSpec:
    """Where an architecture keeps its layout and weights.

    ``layers``, ``heads``, ``width`` are config keys (``width`` may be a pair whose product is
    the width, as DiT's heads x head_dim). Role templates hold ``{l}``; ``qkv`` is a fused
    projection split in the order Q, K, V along its outputs; ``transposed`` marks weights stored
    as (in, out) (GPT-2's Conv1D).
    """

    name: str
    layers: str
    heads: str
    width: str | tuple[str, str]
    v: tuple[str, ...] = ()
    q: tuple[str, ...] = ()
    k: tuple[str, ...] = ()
    qkv: tuple[str, ...] = ()
    o: tuple[str, ...] = ()
    mlp_in: tuple[str, ...] = ()
    mlp_out: tuple[str, ...] = ()
    transposed: bool = False


def _config_int(cfg: dict, key: str, spec: TransformerSpec, where: str) -> int:
    val = cfg.get(key)
    if isinstance(val, bool) or not isinstance(val, int) or val <= 0:
        raise ModelSourceError(
            f"The config of {where} must give '{key}' (a positive int) for a {spec.name} model; got {val!r}."
        )
    return val


class _Reader:
    """Finds role weights by template, with whatever prefix the checkpoint uses."""

    def __init__(self, src: WeightSource, spec: TransformerSpec):
        self.src, self.spec = src, spec
        self.prefix = {}

    def find(self, role: str, l: int) -> str | None:
        keys = self.src._keyset()
        for tmpl in getattr(self.spec, role):
            tail = tmpl.format(l=l)
            if role in self.prefix:
                if self.prefix[role] + tail in keys:
                    return self.prefix[role] + tail
                continue
            for key in keys:
                if key.endswith(tail) and (len(key) == len(tail) or key[-len(tail) - 1] == "."):
                    self.prefix[role] = key[: len(key) - len(tail)]
                    return key
        return None

    def need(self, role: str, l: int) -> str:
        key = self.find(role, l)
        if key is None:
            tried = ", ".join(t.format(l=l) for t in getattr(self.spec, role))
            raise ModelSourceError(
                f"{self.src.name} is missing the {role} weight of block {l} of a {self.spec.name} model "
                f"(looked for {tried}). The checkpoint does not match its config."
            )
        return key

    def matrix(self, role: str, l: int, width: int) -> tuple[np.ndarray, str]:
        """The role's weight in rows = outputs convention (and the key it came from)."""
        if self.spec.qkv and role == "v" and not self.spec.v:
            key = self.need("qkv", l)
            w = self.src.get(key)
            w = w.T if self.spec.transposed else w
            if w.shape != (3 * width, width):
                raise ModelSourceError(
                    f"Weight {key!r} of {self.src.name} has shape {self.src.shape(key)}, but the config's width "
                    f"{width} needs a fused QKV of {3 * width} x {width}. The config contradicts the weights."
                )
            return w[2 * width:], key
        key = self.need(role, l)
        w = self.src.get(key)
        return (w.T if self.spec.transposed else w), key


def _layout(src: WeightSource, spec: TransformerSpec) -> tuple[int, int, int]:
    cfg = src.config
    n_layers = _config_int(cfg, spec.layers, spec, src.name)
    n_heads = _config_int(cfg, spec.heads, spec, src.name)
    if isinstance(spec.width, tuple):
        width = _config_int(cfg, spec.width[0], spec, src.name) * _config_int(cfg, spec.width[1], spec, src.name)
    else:
        width = _config_int(cfg, spec.width, spec, src.name)
    if width % n_heads:
        raise ModelSourceError(f"The config of {src.name} gives width {width}, not divisible by {n_heads} heads.")
    return n_layers, n_heads, width


def _check_shape(w: np.ndarray, shape: tuple, key: str, src: WeightSource, what: str) -> None:
    if w.shape != shape:
        raise ModelSourceError(
            f"Weight {key!r} of {src.name} has shape {w.shape} (as rows = outputs), but the config says {what} "
            f"needs {shape}. The config contradicts the weights."
        )


def transformer_chain(src: WeightSource, spec: TransformerSpec, *, factor: str, interfaces: str) -> Chain:
    """The static factor chain of a transformer (see the module docstring)."""
    n_layers, n_heads, d = _layout(src, spec)
    rd = _Reader(src, spec)
    heads = np.arange(d) // (d // n_heads)
    eye = np.eye(d)
    factors, links = [], []
    for l in range(n_layers):
        w_v, kv = rd.matrix("v", l, d)
        w_o, ko = rd.matrix("o", l, d)
        _check_shape(w_v, (d, d), kv, src, "W_V")
        _check_shape(w_o, (d, d), ko, src, "W_O")
        if interfaces == "heads":
            for nm, w, key, rh, ch in ((f"blocks.{l}.attn.W_V", w_v, kv, heads, None),
                                       (f"blocks.{l}.attn.W_O", w_o, ko, None, heads)):
                factors.append(Factor(name=nm, matrix=check_matrix(w, nm, src.name), row_heads=rh, col_heads=ch,
                                      provenance={"source": "static", "kind": "weight", "keys": [key],
                                                  "dtype": src.dtype(key)}))
            if l > 0:
                links.append((len(factors) - 3, len(factors) - 2))  # W_O^{l-1} -> W_V^l
            continue
        w_in, ki = rd.matrix("mlp_in", l, d)
        w_out, kout = rd.matrix("mlp_out", l, d)
        if w_in.shape[1] != d or w_out.shape != (d, w_in.shape[0]):
            raise ModelSourceError(
                f"The MLP weights {ki!r} {w_in.shape} and {kout!r} {w_out.shape} of {src.name} do not compose "
                f"to a {d} x {d} map. The config contradicts the weights."
            )
        for nm, r, keys in ((f"blocks.{l}.attn", w_o @ w_v, [kv, ko]), (f"blocks.{l}.mlp", w_out @ w_in, [ki, kout])):
            mat = eye + r if factor == "full" else r
            factors.append(Factor(name=nm, matrix=check_matrix(mat, nm, src.name), row_heads=None, col_heads=None,
                                  provenance={"source": "static", "kind": factor, "keys": keys,
                                              "dtype": src.dtype(keys[0])}))
        del w_v, w_o, w_in, w_out
    used = {k for f in factors for k in f.provenance["keys"]}
    return Chain.from_factors(factors, source=src.name, links=links if interfaces == "heads" else None,
                              skipped=_skipped(src, rd, used))


def _skipped(src: WeightSource, rd: "_Reader", used: set) -> list[dict]:
    """Every matrix weight the chain does not use, with the reason."""
    qk = set()
    for l in range(_layout(src, rd.spec)[0]):
        for role in ("q", "k"):
            key = rd.find(role, l)
            if key:
                qk.add(key)
    out = []
    for k in src.keys():
        if k in used or not k.endswith("weight") or len(src.shape(k)) < 2:
            continue
        if k in qk:
            reason = "query/key projection: it shapes the attention pattern, not the OV map"
        elif "embed" in k or k.startswith(("wte", "wpe")):
            reason = "embedding: not a residual block"
        else:
            reason = "not part of a residual block's attention (OV) or MLP map"
        out.append({"module": k.rsplit(".", 1)[0], "reason": reason})
    return out
