"""Conditional diffusion UNets (diffusers ``UNet2DConditionModel``, Stable Diffusion's layout).

As :mod:`physgsa.models.unet` for ``UNet2DModel`` (resnets, resamplers, skip concatenations
that break the chain, scales honoured and unhonourable ones refused), with the attention blocks
replaced by ``Transformer2DModel``s that also read the text context. In execution order, from
the config (``down_block_types``, ``up_block_types``, ``mid_block_type``, ``layers_per_block``,
``transformer_layers_per_block``, ``only_cross_attention``, ``use_linear_projection``; keys a
config.json omits get ``UNet2DConditionModel.__init__``'s defaults, as diffusers does):

- ``ResnetBlock2D``: ``(S + W_2 G_2 W_1 G_1) / o`` exactly as in ``unet``; ``o`` is
  ``mid_block_scale_factor`` in the mid block and 1 in ``CrossAttnDownBlock2D``,
  ``DownBlock2D``, ``CrossAttnUpBlock2D`` and ``UpBlock2D`` (``get_down_block`` /
  ``get_up_block`` pass them no ``output_scale_factor``).
- ``Transformer2DModel`` ``{down,mid,up}...attentions.{j}`` computes
  ``x + proj_out(blocks(proj_in(GroupNorm(x))))`` per pixel. Its factor (ours,
  docs/definitions.md) is ``I + P_out T_n ... T_1 P_in G`` (branch: without the ``I``), with
  ``G`` the GroupNorm's affine scale and, per ``BasicTransformerBlock``,
  ``T = (I + R_ff)(I + R_cross)(I + R_self)``:

  * self-attention ``attn1``: ``R_self = W_O W_V N_1``, the per-pixel OV map of ``unet``
    (``N_1 = diag`` of ``norm1``'s affine scale; LayerNorm's normalization left out as
    GroupNorm's is); exact for spatially constant inputs, whose attention pattern is uniform;
  * cross-attention ``attn2``: its values are ``W_V`` applied to the *context*
    (``encoder_hidden_states``), not to the stream; the stream enters only through the query,
    i.e. the attention pattern, which the OV model leaves out. So ``R_cross = 0``: the
    sublayer's factor is ``I`` (exact where the context has one token, whose pattern is 1).
    Its weights are listed as skipped with this reason. With ``only_cross_attention`` the
    block's ``attn1`` is a cross-attention too, and contributes ``I`` likewise;
  * feed-forward (GEGLU ``W_out (h * gelu(g))``, ``[h; g] = W_proj x``):
    ``R_ff = W_out W_h N_3``, the gate taken as the constant 1, as for the LLaMA family's
    gated MLPs.
  Attention modules inside add their residual themselves with ``rescale_output_factor`` 1 (the
  class default, which ``BasicTransformerBlock`` keeps), and ``Transformer2DModel`` adds its
  input unscaled.
- down/up-sampling convs: their channel matrix (``plain``), as in ``unet``.

Refused, naming the config key: block types other than the four above, mid blocks other than
``UNetMidBlock2DCrossAttn`` / ``UNetMidBlock2D`` / none, ``dual_cross_attention``,
``attention_type`` other than ``"default"`` (GLIGEN's gated fuser), and everything ``unet``
refuses (``resnet_time_scale_shift`` other than ``"default"``, a non-positive or non-finite
``mid_block_scale_factor``). The time, class and added embeddings, ``encoder_hid_proj``,
``conv_in``, ``conv_norm_out`` and ``conv_out`` are skipped with the reason. ``--conv fft``
follows ``unet``: the transformer factor is per pixel, the same on every mode.
"""

from __future__ import annotations

import inspect
import math

import numpy as np

from ..core.chain import Chain, Factor, check_matrix
from ._conv import conv_dc, fourier_mode
from .registry import Adapter, config_matcher
from .sources import ModelSourceError, WeightSource
from .unet import at_mode, finish_chain, resampler, resnet_block

__all__ = ["ADAPTER", "unet_cond_chain"]

_DOWN = {"DownBlock2D": False, "CrossAttnDownBlock2D": True}
_UP = {"UpBlock2D": False, "CrossAttnUpBlock2D": True}
_MID = ("UNetMidBlock2DCrossAttn", "UNetMidBlock2D", None)



def _defaults() -> dict:
    import diffusers  # start-up: loaded only when needed, never at `physgsa --help`

    sig = inspect.signature(diffusers.UNet2DConditionModel.__init__)
    return {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}


def _config(src: WeightSource) -> dict:
    try:
        cfg = {**_defaults(), **{k: v for k, v in src.config.items() if not k.startswith("_")}}
    except ImportError:  # pragma: no cover - diffusers is part of the models extra
        cfg = dict(src.config)

    def refuse(key, value, why):
        raise ModelSourceError(f"The config of {src.name} sets {key} = {value!r}: {why} physgsa refuses it rather "
                               "than give a factor without it.")

    downs = [t.removeprefix("UNetRes") if isinstance(t, str) else t for t in cfg["down_block_types"]]
    ups = [t.removeprefix("UNetRes") if isinstance(t, str) else t for t in cfg["up_block_types"]]
    for key, types, known in (("down_block_types", downs, _DOWN), ("up_block_types", ups, _UP)):
        bad = [repr(t) for t in types if not isinstance(t, str) or t not in known]
        if bad:
            refuse(key, list(types), f"physgsa reads {', '.join(known)} only, not {', '.join(bad)} (the other "
                                     "diffusers types have resamplers inside resnets, skip convs or output scales "
                                     "its factors do not model).")
    n = len(downs)
    if len(ups) != n or len(cfg["block_out_channels"]) != n:
        raise ModelSourceError(f"The config of {src.name} gives {n} down blocks, {len(ups)} up blocks and "
                               f"{len(cfg['block_out_channels'])} block_out_channels; they must agree.")
    mid = cfg.get("mid_block_type")
    if mid not in _MID:
        refuse("mid_block_type", mid, f"physgsa reads {', '.join(str(m) for m in _MID)} only.")
    if cfg.get("dual_cross_attention"):
        refuse("dual_cross_attention", True, "its DualTransformer2DModel mixes two transformers with a ratio.")
    if cfg.get("attention_type", "default") != "default":
        refuse("attention_type", cfg["attention_type"], "GLIGEN's gated self-attention fuses grounding tokens into "
                                                        "the stream with a learned tanh gate.")
    shift = cfg.get("resnet_time_scale_shift", "default")
    if shift != "default":
        refuse("resnet_time_scale_shift", shift, "the resnets multiply norm2's output by 1 + scale(t), a "
                                                 "timestep-dependent channel scale, which a static factor cannot hold.")
    mid_scale = cfg.get("mid_block_scale_factor", 1.0)
    if isinstance(mid_scale, bool) or not isinstance(mid_scale, (int, float)) or not (math.isfinite(mid_scale)
                                                                                       and mid_scale > 0):
        refuse("mid_block_scale_factor", mid_scale, "the mid block divides its resnets' outputs by it, so it must be "
                                                    "a positive finite number.")

    def per_block(key, value):
        if isinstance(value, (int, bool)):
            return [value] * n
        if not isinstance(value, (list, tuple)) or len(value) != n:
            raise ModelSourceError(f"The config of {src.name} gives {key} = {value!r}: one value, or one per block.")
        return list(value)

    layers = per_block("layers_per_block", cfg["layers_per_block"])
    tlayers = per_block("transformer_layers_per_block", cfg["transformer_layers_per_block"])
    only = cfg.get("only_cross_attention", False)
    only_list = per_block("only_cross_attention", only)
    reverse = cfg.get("reverse_transformer_layers_per_block")
    return {"downs": downs, "ups": ups, "mid": mid, "layers": layers, "tlayers": tlayers,
            "rtlayers": list(reverse) if reverse is not None else list(reversed(tlayers)),
            "only": only_list, "mid_scale": float(mid_scale), "downsample_padding": cfg.get("downsample_padding", 1)}


def _n_transformers(t, j: int) -> int:
    """Transformer layers of attention ``j`` from a block's ``transformer_layers_per_block`` entry."""
    return t if isinstance(t, int) else int(t[j])


def _plan(c: dict) -> list[tuple]:
    """(name, kind, prefix, scale, extra) in execution order (as UNet2DConditionModel.forward runs them)."""
    plan, n = [], len(c["downs"])
    for i, typ in enumerate(c["downs"]):
        for j in range(c["layers"][i]):
            plan.append((f"down.{i}.resnets.{j}", "resnet", f"down_blocks.{i}.resnets.{j}.", 1.0, None))
            if _DOWN[typ]:
                plan.append((f"down.{i}.attentions.{j}", "transformer", f"down_blocks.{i}.attentions.{j}.", 1.0,
                             (_n_transformers(c["tlayers"][i], j), bool(c["only"][i]))))
        if i < n - 1:
            plan.append((f"down.{i}.downsample", "down", f"down_blocks.{i}.downsamplers.0.conv.", 1.0, None))
    if c["mid"] == "UNetMidBlock2DCrossAttn":
        tl = c["tlayers"][-1]
        plan.append(("mid.resnets.0", "resnet", "mid_block.resnets.0.", c["mid_scale"], None))
        # get_mid_block passes no only_cross_attention to UNetMidBlock2DCrossAttn: its attn1 is self-attention.
        plan.append(("mid.attentions.0", "transformer", "mid_block.attentions.0.", 1.0,
                     (_n_transformers(tl, 0), False)))
        plan.append(("mid.resnets.1", "resnet", "mid_block.resnets.1.", c["mid_scale"], None))
    elif c["mid"] == "UNetMidBlock2D":  # get_mid_block: num_layers=0, add_attention=False: one resnet
        plan.append(("mid.resnets.0", "resnet", "mid_block.resnets.0.", c["mid_scale"], None))
    only_up = list(reversed(c["only"]))
    layers_up = list(reversed(c["layers"]))
    for i, typ in enumerate(c["ups"]):
        for j in range(layers_up[i] + 1):
            plan.append((f"up.{i}.resnets.{j}", "resnet", f"up_blocks.{i}.resnets.{j}.", 1.0, None))
            if _UP[typ]:
                plan.append((f"up.{i}.attentions.{j}", "transformer", f"up_blocks.{i}.attentions.{j}.", 1.0,
                             (_n_transformers(c["rtlayers"][i], j), bool(only_up[i]))))
        if i < n - 1:
            plan.append((f"up.{i}.upsample", "up", f"up_blocks.{i}.upsamplers.0.conv.", 1.0, None))
    return plan


_CROSS = ("cross-attention: its values come from the context (encoder_hidden_states), not from the residual "
          "stream, which enters only through the query (the pattern): its static factor is I")


def _need(src: WeightSource, key: str) -> np.ndarray:
    if not src.has(key):
        raise ModelSourceError(f"{src.name} is missing {key}, which its config's layout implies.")
    return src.get(key)


def _scale(src: WeightSource, key: str, n: int) -> np.ndarray:
    """A norm's affine scale (all ones where the norm has none)."""
    return src.get(key) if src.has(key) else np.ones(n)


def _transformer(src: WeightSource, p: str, factor: str, n_blocks: int, only_cross: bool):
    """``I + P_out T P_in G`` (full) or ``P_out T P_in G`` (branch), its keys, and the cross-attention keys."""
    keys, cross = [p + "proj_in.weight", p + "proj_out.weight"], []
    p_in = conv_dc(_need(src, keys[0]))
    p_out = conv_dc(_need(src, keys[1]))
    c, inner = p_in.shape[1], p_in.shape[0]
    if p_out.shape != (c, inner):
        raise ModelSourceError(f"{keys[1]!r} of {src.name} has shape {p_out.shape}; proj_in gives {inner} channels "
                               f"from {c}. The config contradicts the weights.")
    t = p_in * _scale(src, p + "norm.weight", c)[None, :]
    for b in range(n_blocks):
        q = f"{p}transformer_blocks.{b}."
        for attn, norm, is_cross in (("attn1", "norm1", only_cross), ("attn2", "norm2", True)):
            if not src.has(q + attn + ".to_v.weight"):
                if attn == "attn2":
                    continue  # a block without cross-attention (no cross_attention_dim)
                raise ModelSourceError(f"{src.name} is missing {q}{attn}.to_v.weight, which its layout implies.")
            if is_cross:
                cross += [q + f"{attn}.{r}.weight" for r in ("to_q", "to_k", "to_v", "to_out.0")]
                continue
            w_v, w_o = _need(src, q + attn + ".to_v.weight"), _need(src, q + attn + ".to_out.0.weight")
            keys += [q + attn + ".to_v.weight", q + attn + ".to_out.0.weight"]
            t = t + w_o @ (w_v * _scale(src, q + norm + ".weight", inner)[None, :]) @ t
        w_proj, w_out = _need(src, q + "ff.net.0.proj.weight"), _need(src, q + "ff.net.2.weight")
        keys += [q + "ff.net.0.proj.weight", q + "ff.net.2.weight"]
        hidden = w_out.shape[1]
        if w_proj.shape != (2 * hidden, inner) or w_out.shape[0] != inner:
            raise ModelSourceError(f"The GEGLU feed-forward {q}ff of {src.name} has proj {w_proj.shape} and out "
                                   f"{w_out.shape}; a GEGLU of width {hidden} on {inner} channels needs "
                                   f"({2 * hidden}, {inner}) and ({inner}, {hidden}).")
        # GEGLU: [h; g] = proj(x), h * gelu(g): the value half h first; the gate is taken as 1.
        t = t + w_out @ (w_proj[:hidden] * _scale(src, q + "norm3.weight", inner)[None, :]) @ t
    r = p_out @ t
    return (np.eye(c) + r if factor == "full" else r), keys, cross


def unet_cond_chain(src: WeightSource, *, factor: str, conv: str = "dc", freq: tuple = (0, 0, 1)) -> Chain:
    """The chain of UNet2DConditionModel factors (see the module docstring)."""
    c = _config(src)
    plan = _plan(c)
    n_down = sum(kind == "down" for _, kind, *_ in plan)
    mode = fourier_mode(conv, freq, 2 ** n_down, f"{src.name}'s down path")
    if mode is not None and c["downsample_padding"] not in (0, 1) and n_down:
        raise ModelSourceError(f"The config of {src.name} sets downsample_padding = {c['downsample_padding']!r}: "
                               "on an n x n torus a stride-2 3x3 conv gives the n/2 x n/2 grid only with padding "
                               "0 or 1, so --conv fft cannot follow a Fourier mode through it. Use --conv dc.")
    factors, used, cross = [], set(), set()
    for name, kind, p, scale, extra in plan:
        probe = {"resnet": "conv1.weight", "transformer": "proj_in.weight", "down": "weight", "up": "weight"}[kind]
        if not src.has(p + probe):
            raise ModelSourceError(f"{src.name} is missing {p + probe}, which its config's layout implies.")
        prov = {"source": "static", "module": p.rstrip("."), "conv": conv}
        if kind == "resnet":
            mat, keys, out = resnet_block(src, p, factor, scale, mode)
            prov["output_scale_factor"] = scale
        elif kind == "transformer":
            mat, keys, xkeys = _transformer(src, p, factor, *extra)
            cross.update(xkeys)
            out = mode
            prov.update({"transformer_blocks": extra[0], "only_cross_attention": extra[1],
                         "cross_attention": "I (values from the context, not the stream)"})
        else:
            mat, keys, out = resampler(src, p, kind, c["downsample_padding"], mode)
        used.update(keys)
        prov.update({"kind": factor if kind in ("resnet", "transformer") else "plain", "keys": keys,
                     "dtype": src.dtype(keys[0])})
        mat = at_mode(mat, prov, mode, out)
        factors.append(Factor(name=name, matrix=check_matrix(mat, name, src.name), provenance=prov))
        mode = out
    def reason(k: str) -> str:
        if k in cross:
            return _CROSS
        if ".to_q." in k or ".to_k." in k:
            return "query/key projection: it shapes the attention pattern, not the OV map"
        if "time_emb" in k or k.startswith(("time_embedding", "class_embedding", "add_embedding")):
            return "time / class embedding: an additive offset, not a channel map"
        if k.startswith("encoder_hid_proj"):
            return "context projection: acts on the context, not on the residual stream"
        return "not a residual block, transformer or resampler of the chain"

    return finish_chain(src, factors, used, reason)


ADAPTER = Adapter(matches=config_matcher("UNet2DConditionModel", key="_class_name"), chain=unet_cond_chain,
                  convolutional=True)
