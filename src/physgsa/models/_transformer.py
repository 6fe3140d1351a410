"""Shared machinery of the transformer adapters (BERT/MiniLM, GPT-2, ViT, DiT, the LLaMA family, CLIP).

Per block ``l`` (definitions section 1, architecture.md):

- attention factor ``R = W_O W_V`` (the OV circuit, d x d), named ``blocks.{l}.attn``;
- MLP factor ``R = W_out W_in`` (linearized through the activation), named ``blocks.{l}.mlp``;
- the full factor is ``I + R``, the branch factor ``R`` (``factor="full"|"branch"``).

With ``interfaces="heads"`` the chain is ``W_V^0, W_O^0, W_V^1, W_O^1, ...`` and its
interfaces are only ``W_O^l -> W_V^{l+1}`` (product ``W_V^{l+1} W_O^l``), whose rows are the
head channels of ``V`` in block ``l+1`` and whose columns are the head channels of ``O`` in
block ``l``: heads are the natural row groups and column units.

Grouped-query attention (LLaMA family): ``W_V`` has ``n_kv * head_dim`` rows, one block of
``head_dim`` per KV head, and query head ``h`` reads KV head ``h // (n_heads / n_kv)`` (as
transformers' ``repeat_kv``). The OV circuit is then

    R = sum_h W_O[:, h] W_V[kv(h)] = W_O repeat(W_V),

``repeat(W_V)`` repeating each KV head's rows for every query head of its group. With
``interfaces="heads"`` the ``W_V`` factor keeps its stored rows, grouped by KV head, and the
``W_O`` factor its columns, grouped by query head. ``head_dim`` may differ from
``width / n_heads`` (Gemma, Qwen3): the layout says which.

Gated MLPs (``W_down (act(W_gate x) * W_up x)``): ``R = W_down W_up``, the gate taken as the
constant 1 (ours; docs/definitions.md). The gate is a data-dependent channel scale, like the
norms the static factors leave out; its linearization at ``x = 0`` is ``act(0) W_down W_up``,
which is 0 for SiLU and GELU gates, so it cannot serve. ``W_gate`` enters no factor and is
listed as skipped with that reason. A fused ``[gate; up]`` projection (Phi-3's
``gate_up_proj``) is split at the config's ``intermediate_size``; a fused ``[q; k; v]``
(Phi-3's ``qkv_proj``, GPT-2's ``c_attn``) at ``n_heads * head_dim`` and ``n_kv * head_dim``.

Every weight is read by name through a :class:`~physgsa.models.sources.WeightSource` one
at a time; the layout (layers, heads, KV heads, head size, width) comes from the config, never
from shapes. Each architecture file gives a :class:`TransformerSpec`: the config keys and, per
role, the key templates (newer and older transformers namings); an architecture whose layout
needs the config class's own defaults (the LLaMA family, CLIP) passes a :class:`Layout`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..core.chain import Break, Chain, Deferred, Factor, check_matrix
from .sources import ModelSourceError, WeightSource

__all__ = ["Layout", "Tower", "TransformerSpec", "tower_break", "towers_chain", "transformer_chain"]


@dataclass(frozen=True)
class TransformerSpec:
    """Where an architecture keeps its layout and weights.

    ``layers``, ``heads``, ``width`` are config keys (``width`` may be a pair whose product is
    the width, as DiT's heads x head_dim). Role templates hold ``{l}``; ``qkv`` is a fused
    projection split in the order Q, K, V along its outputs; ``transposed`` marks weights stored
    as (in, out) (GPT-2's Conv1D). ``mlp_gate`` is the gate of a gated MLP (it enters no
    factor), ``gate_up`` a fused ``[gate; up]`` projection (then ``mlp_in`` is empty).
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
    mlp_gate: tuple[str, ...] = ()
    gate_up: tuple[str, ...] = ()


@dataclass(frozen=True)
class Layout:
    """A transformer's layout, from its config.

    ``n_kv`` KV heads (``n_kv = n_heads`` without grouped-query attention), each of
    ``head_dim`` channels; ``intermediate`` is the MLP width, needed only to split a fused
    ``[gate; up]`` projection.
    """

    n_layers: int
    n_heads: int
    n_kv: int
    head_dim: int
    width: int
    intermediate: int | None = None

    @property
    def groups(self) -> int:
        """Query heads per KV head."""
        return self.n_heads // self.n_kv


@dataclass(frozen=True)
class Tower:
    """One stack of blocks of a model: its spec, its layout and the prefix of its factor names."""

    spec: TransformerSpec
    layout: Layout
    prefix: str = ""
    label: str = ""


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

    def shape_of(self, role: str, l: int, lay: Layout) -> tuple[tuple[int, ...], str]:
        """The shape :meth:`matrix` returns for the role (rows = outputs), and its key, from the
        header alone; a fused projection whose size contradicts the config is refused here.
        """
        width = lay.width
        if self.spec.qkv and role == "v" and not self.spec.v:
            key = self.need("qkv", l)
            shape = self._stored(key)
            q_rows, kv_rows = lay.n_heads * lay.head_dim, lay.n_kv * lay.head_dim
            if shape != (q_rows + 2 * kv_rows, width):
                raise ModelSourceError(
                    f"Weight {key!r} of {self.src.name} has shape {self.src.shape(key)}, but the config's width "
                    f"{width} needs a fused QKV of {q_rows + 2 * kv_rows} x {width}. The config contradicts the "
                    "weights."
                )
            return (kv_rows, width), key
        if self.spec.gate_up and role == "mlp_in" and not self.spec.mlp_in:
            key = self.need("gate_up", l)
            shape = self._stored(key)
            inter = lay.intermediate
            if inter is None or shape != (2 * inter, width):
                raise ModelSourceError(
                    f"Weight {key!r} of {self.src.name} has shape {self.src.shape(key)}, but the config's "
                    f"intermediate_size {inter} and width {width} need a fused [gate; up] of {2 * (inter or 0)} x "
                    f"{width}. The config contradicts the weights."
                )
            return (inter, width), key
        key = self.need(role, l)
        return self._stored(key), key

    def _stored(self, key: str) -> tuple[int, ...]:
        self.src.check(key)
        shape = tuple(self.src.shape(key))
        return shape[::-1] if self.spec.transposed and len(shape) == 2 else shape

    def matrix(self, role: str, l: int, lay: Layout) -> tuple[np.ndarray, str]:
        """The role's weight in rows = outputs convention (and the key it came from)."""
        _, key = self.shape_of(role, l, lay)
        w = self.src.get(key)
        w = w.T if self.spec.transposed else w
        if self.spec.qkv and role == "v" and not self.spec.v:
            return w[(lay.n_heads + lay.n_kv) * lay.head_dim:], key  # [q; k; v]: the value rows
        if self.spec.gate_up and role == "mlp_in" and not self.spec.mlp_in:
            return w[lay.intermediate:], key  # [gate; up]: the up (value) half
        return w, key


def _layout(src: WeightSource, spec: TransformerSpec) -> Layout:
    cfg = src.config
    n_layers = _config_int(cfg, spec.layers, spec, src.name)
    n_heads = _config_int(cfg, spec.heads, spec, src.name)
    if isinstance(spec.width, tuple):
        width = _config_int(cfg, spec.width[0], spec, src.name) * _config_int(cfg, spec.width[1], spec, src.name)
    else:
        width = _config_int(cfg, spec.width, spec, src.name)
    if width % n_heads:
        raise ModelSourceError(f"The config of {src.name} gives width {width}, not divisible by {n_heads} heads.")
    return Layout(n_layers, n_heads, n_heads, width // n_heads, width)


def _check_shape(got: tuple, shape: tuple, key: str, src: WeightSource, what: str) -> None:
    if tuple(got) != shape:
        raise ModelSourceError(
            f"Weight {key!r} of {src.name} has shape {tuple(got)} (as rows = outputs), but the config says {what} "
            f"needs {shape}. The config contradicts the weights."
        )


def _repeat_kv(w_v: np.ndarray, lay: Layout) -> np.ndarray:
    """``W_V`` with each KV head's rows repeated for every query head of its group (``repeat_kv``)."""
    if lay.groups == 1:
        return w_v
    return np.repeat(w_v.reshape(lay.n_kv, lay.head_dim, -1), lay.groups, axis=0).reshape(
        lay.n_heads * lay.head_dim, -1)


def _block_matrix(rd: "_Reader", lay: Layout, l: int, part: str, factor: str, name: str) -> np.ndarray:
    """One static factor of block ``l``, read and formed now: ``part`` is "attn" (``W_O repeat(W_V)``),
    "mlp" (``W_out W_in``), "W_V" or "W_O" (head-level chains: the weights themselves).
    """
    if part in ("W_V", "W_O"):
        return check_matrix(rd.matrix("v" if part == "W_V" else "o", l, lay)[0], name, rd.src.name)
    if part == "attn":
        r = rd.matrix("o", l, lay)[0] @ _repeat_kv(rd.matrix("v", l, lay)[0], lay)
    else:
        r = rd.matrix("mlp_out", l, lay)[0] @ rd.matrix("mlp_in", l, lay)[0]
    if factor == "full":
        # I + R in place (no second d x d array), bit for bit as np.eye(d) + R: adding 0.0 turns -0.0 into +0.0.
        r += 0.0
        r[np.diag_indices(lay.width)] += 1.0
    return check_matrix(r, name, rd.src.name, copy=False)


class _BlockMatrix(Deferred):
    """A static factor of a checkpoint file, formed from its weights whenever it is needed.

    It holds the source (a path and its header, small) and where the factor sits, never a
    weight: a chain of these holds no matrix, and a Dask worker forms its factor itself.
    """

    def __init__(self, src: WeightSource, spec: TransformerSpec, lay: Layout, l: int, part: str, factor: str,
                 name: str, shape: tuple):
        self.src, self.spec, self.lay, self.l, self.part, self.factor = src, spec, lay, l, part, factor
        self.name, self.shape = name, tuple(shape)

    def read(self) -> np.ndarray:
        return _block_matrix(_Reader(self.src, self.spec), self.lay, self.l, self.part, self.factor, self.name)


def _factor_matrix(rd: "_Reader", lay: Layout, l: int, part: str, factor: str, name: str, shape: tuple):
    """Deferred where the source can be read again by any process (a checkpoint file), else formed now."""
    if rd.src.deferrable:
        return _BlockMatrix(rd.src, rd.spec, lay, l, part, factor, name, shape)
    return _block_matrix(rd, lay, l, part, factor, name)


def _tower_factors(src: WeightSource, tower: Tower, rd: _Reader, *, factor: str, interfaces: str):
    """(factors, local links, used keys) of one tower.

    Shapes are checked against the config from the checkpoint's header; the weights are read
    when a factor is formed (at once for an in-memory source, on demand for a file).
    """
    lay, prefix = tower.layout, tower.prefix
    d, inner = lay.width, lay.n_heads * lay.head_dim
    v_heads = np.arange(lay.n_kv * lay.head_dim) // lay.head_dim
    o_heads = np.arange(inner) // lay.head_dim
    gqa = {"kv_heads": lay.n_kv, "query_heads": lay.n_heads} if lay.n_kv != lay.n_heads else {}
    factors, links = [], []
    for l in range(lay.n_layers):
        sv, kv = rd.shape_of("v", l, lay)
        so, ko = rd.shape_of("o", l, lay)
        _check_shape(sv, (lay.n_kv * lay.head_dim, d), kv, src, "W_V")
        _check_shape(so, (d, inner), ko, src, "W_O")
        if interfaces == "heads":
            for nm, part, shape, key, rh, ch in ((f"{prefix}blocks.{l}.attn.W_V", "W_V", sv, kv, v_heads, None),
                                                 (f"{prefix}blocks.{l}.attn.W_O", "W_O", so, ko, None, o_heads)):
                factors.append(Factor(name=nm, matrix=_factor_matrix(rd, lay, l, part, factor, nm, shape),
                                      row_heads=rh, col_heads=ch,
                                      provenance={"source": "static", "kind": "weight", "keys": [key],
                                                  "dtype": src.dtype(key), **gqa}))
            if l > 0:
                links.append((len(factors) - 3, len(factors) - 2))  # W_O^{l-1} -> W_V^l
            continue
        si, ki = rd.shape_of("mlp_in", l, lay)
        sout, kout = rd.shape_of("mlp_out", l, lay)
        if len(si) != 2 or len(sout) != 2 or si[1] != d or sout != (d, si[0]):
            raise ModelSourceError(
                f"The MLP weights {ki!r} {si} and {kout!r} {sout} of {src.name} do not compose "
                f"to a {d} x {d} map. The config contradicts the weights."
            )
        gated = {"mlp": "gated: W_down W_up, gate = 1"} if (tower.spec.mlp_gate or tower.spec.gate_up) else {}
        for nm, part, keys, extra in ((f"{prefix}blocks.{l}.attn", "attn", [kv, ko], gqa),
                                      (f"{prefix}blocks.{l}.mlp", "mlp", [ki, kout], gated)):
            factors.append(Factor(name=nm, matrix=_factor_matrix(rd, lay, l, part, factor, nm, (d, d)),
                                  row_heads=None, col_heads=None,
                                  provenance={"source": "static", "kind": factor, "keys": keys,
                                              "dtype": src.dtype(keys[0]), **extra}))
    return factors, links, {k for f in factors for k in f.provenance["keys"]}


def transformer_chain(src: WeightSource, spec: TransformerSpec, *, factor: str, interfaces: str,
                      layout: Layout | None = None) -> Chain:
    """The static factor chain of a transformer (see the module docstring).

    ``layout`` defaults to the one read from ``spec``'s config keys (no grouped-query
    attention, ``head_dim = width / heads``).
    """
    return towers_chain(src, [Tower(spec, layout or _layout(src, spec))], factor=factor, interfaces=interfaces)


def towers_chain(src: WeightSource, towers: list[Tower], *, factor: str, interfaces: str) -> Chain:
    """The chain of one or more towers (CLIP's text and vision), each after the other.

    Between two towers there is no interface: the second does not read the first's output.
    The chain breaks there, and the break says so.
    """
    factors, links, used, readers = [], [], set(), []
    seams = []
    for tower in towers:
        rd = _Reader(src, tower.spec)
        fs, ls, us = _tower_factors(src, tower, rd, factor=factor, interfaces=interfaces)
        if factors:
            seams.append((factors[-1].name, fs[0].name, towers[len(readers) - 1].label, tower.label))
        off = len(factors)
        if interfaces == "heads":
            links += [(i + off, j + off) for i, j in ls]
        else:
            links += [(off + i, off + i + 1) for i in range(len(fs) - 1)]
        factors += fs
        used |= us
        readers.append((rd, tower.layout))
    single = len(towers) == 1 and interfaces != "heads"
    chain = Chain.from_factors(factors, source=src.name, links=None if single else links,
                               skipped=_skipped(src, readers, used))
    if not seams:
        return chain
    extra = tuple(tower_break(*seam) for seam in seams)
    return dataclasses.replace(chain, breaks=chain.breaks + extra)


def tower_break(left: str, right: str, left_tower: str, right_tower: str) -> Break:
    """The break between two towers of one model (CLIP's text and vision)."""
    return Break(left, right, f"{left!r} ends the {left_tower} tower and {right!r} begins the {right_tower} tower: "
                              f"separate towers, the {right_tower} tower does not read the {left_tower} tower's output")


def _skipped(src: WeightSource, readers: list, used: set) -> list[dict]:
    """Every matrix weight the chain does not use, with the reason."""
    qk, gates = set(), set()
    for rd, lay in readers:
        for l in range(lay.n_layers):
            for role in ("q", "k"):
                key = rd.find(role, l)
                if key:
                    qk.add(key)
            if rd.spec.mlp_gate:
                key = rd.find("mlp_gate", l)
                if key:
                    gates.add(key)
    out = []
    for k in src.keys():
        if k in used or not k.endswith("weight") or len(src.shape(k)) < 2:
            continue
        if k in qk:
            reason = "query/key projection: it shapes the attention pattern, not the OV map"
        elif k in gates:
            reason = ("gate projection of a gated MLP: the static factor takes the gate as the constant 1 "
                      "(R = W_down W_up), so W_gate enters no factor")
        elif "embed" in k or k.startswith(("wte", "wpe")):
            reason = "embedding: not a residual block"
        else:
            reason = "not part of a residual block's attention (OV) or MLP map"
        out.append({"module": k.rsplit(".", 1)[0], "reason": reason})
    return out
