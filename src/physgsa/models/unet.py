"""Diffusion UNets (diffusers ``UNet2DModel``): resnet, attention and resampling factors.

In execution order (down blocks, the mid block, up blocks; the layout from the config's
``layers_per_block``, block types, ``mid_block_type`` and ``add_attention``):

- ``ResnetBlock2D``: it computes ``(shortcut(x) + conv2(G_2 conv1(G_1 x))) / o`` with ``o`` its
  ``output_scale_factor``. Branch ``R = W_2 G_2 W_1 G_1 / o`` (``G = diag(gamma)`` the GroupNorm
  affine scales, its normalization being data-dependent; SiLU linearized as the identity; the
  time embedding is an additive offset and drops out); shortcut ``S = I / o`` or the 1x1
  ``conv_shortcut`` ``W_s / o``; full factor ``S + R = (shortcut + W_2 G_2 W_1 G_1) / o``. The
  branch is the branch's share of the block's output, so full minus branch is the shortcut's.
- spatial attention: per pixel the OV map ``W_O W_V G``, divided like the resnet by the
  attention's ``rescale_output_factor`` (full: ``(I + W_O W_V G) / o``). This is the documented
  per-pixel model, exact for spatially constant inputs (the pattern is then uniform); it is
  pointwise, so it is the same at every frequency of ``--conv fft``.
- down/up-sampling convs: their channel matrix (not residual: the same for full and branch).

Scales, read from the config and never dropped. In ``UNet2DModel`` the mid block's resnets and
attention get ``o = mid_block_scale_factor``; ``get_down_block`` / ``get_up_block`` pass no
``output_scale_factor`` to ``DownBlock2D``, ``AttnDownBlock2D``, ``UpBlock2D`` and
``AttnUpBlock2D``, so their class default 1 applies to their resnets and attentions. What the
factor cannot honour is refused, naming the config key: ``resnet_time_scale_shift`` other than
``"default"`` (``"scale_shift"`` multiplies by ``1 + scale(t)``, which depends on the timestep),
other block types (the Skip blocks' ``sqrt(2)`` scales come with FIR resamplers and skip convs,
``ResnetDownsampleBlock2D`` resamples inside its resnets), ``downsample_type`` /
``upsample_type`` other than ``"conv"`` where an attention block reads it, other
``mid_block_type`` values, and a ``mid_block_scale_factor`` that is not a positive finite number.
``center_input_sample`` and the ``"fourier"`` time embedding's division act before ``conv_in``
and after ``conv_out``, outside the chain.

``--conv fft --freq u,v,n``: ``n`` is the grid of the UNet's input (``conv_in`` keeps it). Each
factor is on the mode's frequency on its own grid (``_conv`` gives the convention): each
``Downsample2D`` halves the grid (stride 2, padding ``downsample_padding``: 1, or 0 with
diffusers' extra zero row and column at the far end, which on the torus is offset 0), each
``Upsample2D`` (nearest x2, then a 3x3 conv) doubles it and keeps the followed mode
``u mod 2m`` of the four it makes. ``n`` must be divisible by ``2^(number of downsamplers)``.

An up block's resnet reads the concatenation ``[h, skip]``: the chain breaks there and the
break says so. ``conv_in``, ``conv_out``, the time embedding and the Q/K projections are
listed as skipped with the reason.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..core.chain import Break, Chain, Factor, check_matrix
from ._conv import FourierMode, conv_factor, fourier_mode, nearest_upsample_gain, realify, same_padding
from .registry import Adapter, config_matcher
from .sources import ModelSourceError, WeightSource

__all__ = ["ADAPTER", "unet_chain"]

#: The block types physgsa reads, and whether they hold attentions. In UNet2DModel all four get
#: output_scale_factor 1 (module docstring); get_down_block / get_up_block strip "UNetRes".
_DOWN_TYPES = {"DownBlock2D": False, "AttnDownBlock2D": True}
_UP_TYPES = {"UpBlock2D": False, "AttnUpBlock2D": True}
_BLOCK_SCALE = 1.0



def _scaled(shortcut: np.ndarray, branch: np.ndarray, factor: str, scale: float) -> np.ndarray:
    """``(shortcut + branch) / scale`` (full) or ``branch / scale`` (branch): a residual's output."""
    return (branch if factor == "branch" else shortcut + branch) / scale


def resnet_block(src: WeightSource, p: str, factor: str, scale: float, mode: FourierMode | None):
    keys = [p + "conv1.weight", p + "conv2.weight"]
    branch, m = None, mode
    for key, norm in ((keys[0], p + "norm1.weight"), (keys[1], p + "norm2.weight")):
        w = src.get(key)
        z, m = conv_factor(w, m, stride=1, padding=same_padding(w), where=f"{key!r} of {src.name}")
        z = z * src.get(norm)[None, :] if src.has(norm) else z  # GroupNorm's affine scale, on the conv's inputs
        branch = z if branch is None else z @ branch
    if src.has(p + "conv_shortcut.weight"):
        keys.append(p + "conv_shortcut.weight")
        w = src.get(keys[-1])
        shortcut, _ = conv_factor(w, mode, stride=1, padding=same_padding(w), where=f"{keys[-1]!r} of {src.name}")
    else:
        if branch.shape[0] != branch.shape[1]:
            raise ModelSourceError(f"Resnet {p} of {src.name} changes width without a conv_shortcut.")
        shortcut = np.eye(branch.shape[0])
    return _scaled(shortcut, branch, factor, scale), keys, m


def _attention(src: WeightSource, p: str, factor: str, scale: float, mode: FourierMode | None):
    keys = [p + "to_v.weight", p + "to_out.0.weight"]
    w_v, w_o = src.get(keys[0]), src.get(keys[1])
    if src.has(p + "group_norm.weight"):
        w_v = w_v * src.get(p + "group_norm.weight")[None, :]
    r = w_o @ w_v
    return _scaled(np.eye(r.shape[0]), r, factor, scale), keys, mode


def resampler(src: WeightSource, p: str, kind: str, padding: int, mode: FourierMode | None):
    keys = [p + "weight"]
    w = src.get(keys[0])
    where = f"{keys[0]!r} of {src.name}"
    if kind == "down":
        # padding 0: diffusers pads one zero row and column at the far end, then convolves
        # unpadded, so tap h reads x[2i + h]: offset 0 on the torus.
        z, m = conv_factor(w, mode, stride=2, padding=(padding, padding), where=where)
        return z, keys, m
    gain, m = (1.0, None) if mode is None else nearest_upsample_gain(mode, 2)
    z, _ = conv_factor(w, m, stride=1, padding=same_padding(w), where=where)
    return gain * z, keys, m


def _config(src: WeightSource) -> dict:
    """The layout and the scales of a UNet2DModel config, or a refusal naming the key."""
    cfg = src.config
    n_layers = cfg.get("layers_per_block")
    downs, ups = cfg.get("down_block_types"), cfg.get("up_block_types")
    # config.json gives lists, a live module's config tuples.
    if not (isinstance(n_layers, int) and isinstance(downs, (list, tuple)) and isinstance(ups, (list, tuple))):
        raise ModelSourceError(f"The config of {src.name} must give layers_per_block, down_block_types and "
                               "up_block_types for a UNet2DModel.")

    def refuse(key, value, why):
        raise ModelSourceError(f"The config of {src.name} sets {key} = {value!r}: {why} physgsa refuses it rather "
                               "than give a factor without it.")

    # As get_down_block / get_up_block do (a non-string type is refused just below).
    downs = [t.removeprefix("UNetRes") if isinstance(t, str) else t for t in downs]
    ups = [t.removeprefix("UNetRes") if isinstance(t, str) else t for t in ups]
    for key, types, known in (("down_block_types", downs, _DOWN_TYPES), ("up_block_types", ups, _UP_TYPES)):
        bad = [repr(t) for t in types if not isinstance(t, str) or t not in known]
        if bad:
            refuse(key, list(types), f"physgsa reads {', '.join(known)} only, not {', '.join(bad)} (the other "
                                     "diffusers types have resamplers, skip convs or output scales, such as the Skip "
                                     "blocks' sqrt(2), that its factors do not model).")
    shift = cfg.get("resnet_time_scale_shift", "default")
    if shift != "default":
        refuse("resnet_time_scale_shift", shift, "the resnets multiply norm2's output by 1 + scale(t), a "
                                                 "timestep-dependent channel scale, which a static factor cannot hold.")
    last = len(downs) - 1
    for key, types, attn in (("downsample_type", downs, "AttnDownBlock2D"), ("upsample_type", ups, "AttnUpBlock2D")):
        value = cfg.get(key, "conv")
        if value not in (None, "conv") and any(t == attn for t in types[:last]):
            refuse(key, value,
                   f"an {attn} with a resampler then resamples with a resnet, which physgsa does not model.")
    mid_type = cfg.get("mid_block_type", "UNetMidBlock2D")
    if mid_type not in (None, "UNetMidBlock2D"):
        refuse("mid_block_type", mid_type, "physgsa reads UNetMidBlock2D only.")
    mid_scale = cfg.get("mid_block_scale_factor", 1.0)
    if isinstance(mid_scale, bool) or not isinstance(mid_scale, (int, float)) or not (math.isfinite(mid_scale)
                                                                                       and mid_scale > 0):
        refuse("mid_block_scale_factor", mid_scale, "the mid block divides its resnets' and attention's outputs by "
                                                    "it, so it must be a positive finite number.")
    return {"n_layers": n_layers, "downs": downs, "ups": ups, "mid": mid_type is not None,
            "mid_attention": bool(cfg.get("add_attention", True)), "mid_scale": float(mid_scale),
            "downsample_padding": cfg.get("downsample_padding", 1)}


def _plan(c: dict) -> list[tuple]:
    """(name, kind, prefix, scale) in execution order."""
    plan = []
    last = len(c["downs"]) - 1
    for i, typ in enumerate(c["downs"]):
        for j in range(c["n_layers"]):
            plan.append((f"down.{i}.resnets.{j}", "resnet", f"down_blocks.{i}.resnets.{j}.", _BLOCK_SCALE))
            if _DOWN_TYPES[typ]:
                plan.append((f"down.{i}.attentions.{j}", "attn", f"down_blocks.{i}.attentions.{j}.", _BLOCK_SCALE))
        if i < last:  # UNet2DModel: add_downsample=not is_final_block
            plan.append((f"down.{i}.downsample", "down", f"down_blocks.{i}.downsamplers.0.conv.", 1.0))
    if c["mid"]:
        plan.append(("mid.resnets.0", "resnet", "mid_block.resnets.0.", c["mid_scale"]))
        if c["mid_attention"]:
            plan.append(("mid.attentions.0", "attn", "mid_block.attentions.0.", c["mid_scale"]))
        plan.append(("mid.resnets.1", "resnet", "mid_block.resnets.1.", c["mid_scale"]))
    for i, typ in enumerate(c["ups"]):
        for j in range(c["n_layers"] + 1):
            plan.append((f"up.{i}.resnets.{j}", "resnet", f"up_blocks.{i}.resnets.{j}.", _BLOCK_SCALE))
            if _UP_TYPES[typ]:
                plan.append((f"up.{i}.attentions.{j}", "attn", f"up_blocks.{i}.attentions.{j}.", _BLOCK_SCALE))
        if i < last:  # add_upsample=not is_final_block
            plan.append((f"up.{i}.upsample", "up", f"up_blocks.{i}.upsamplers.0.conv.", 1.0))
    return plan


def unet_chain(src: WeightSource, *, factor: str, conv: str = "dc", freq: tuple = (0, 0, 1)) -> Chain:
    """The chain of UNet factors (see the module docstring)."""
    c = _config(src)
    plan = _plan(c)
    n_down = sum(kind == "down" for _, kind, _, _ in plan)
    mode = fourier_mode(conv, freq, 2 ** n_down, f"{src.name}'s down path")
    if mode is not None and c["downsample_padding"] not in (0, 1) and n_down:
        raise ModelSourceError(f"The config of {src.name} sets downsample_padding = {c['downsample_padding']!r}: "
                               "on an n x n torus a stride-2 3x3 conv gives the n/2 x n/2 grid only with padding "
                               "0 or 1, so --conv fft cannot follow a Fourier mode through it. Use --conv dc.")
    factors, used = [], set()
    for name, kind, p, scale in plan:
        probe = {"resnet": "conv1.weight", "attn": "to_v.weight", "down": "weight", "up": "weight"}[kind]
        if not src.has(p + probe):
            raise ModelSourceError(f"{src.name} is missing {p + probe}, which its config's layout implies.")
        if kind == "resnet":
            mat, keys, out = resnet_block(src, p, factor, scale, mode)
        elif kind == "attn":
            mat, keys, out = _attention(src, p, factor, scale, mode)
        else:
            mat, keys, out = resampler(src, p, kind, c["downsample_padding"], mode)
        used.update(keys)
        prov = {"source": "static", "kind": factor if kind in ("resnet", "attn") else "plain",
                "module": p.rstrip("."), "keys": keys, "dtype": src.dtype(keys[0]), "output_scale_factor": scale,
                "conv": conv}
        mat = at_mode(mat, prov, mode, out)
        factors.append(Factor(name=name, matrix=check_matrix(mat, name, src.name), provenance=prov))
        mode = out
    return finish_chain(src, factors, used, _skip_reason)


def _skip_reason(key: str) -> str:
    if ".to_q." in key or ".to_k." in key:
        return "query/key projection: it shapes the attention pattern, not the OV map"
    if "time_emb" in key:
        return "time embedding: an additive offset, not a channel map"
    return "not a residual block or resampler of the chain"


def at_mode(mat, prov: dict, mode, out):
    """On a Fourier mode: record the factor's input and output modes, and give the real form."""
    if mode is None:
        return mat
    prov["freq"] = [*mode.here, mode.n]  # (u, v, n) of this factor's input mode
    prov["freq_out"] = [*out.here, out.n]
    return realify(np.asarray(mat, dtype=complex))


def finish_chain(src, factors, used: set, reason) -> Chain:
    """The UNet chain: every unused conv/linear weight listed with ``reason(key)``, and the breaks
    at skip concatenations said to be what they are.
    """
    skipped = [{"module": k.rsplit(".", 1)[0], "reason": reason(k)} for k in src.keys()
               if k.endswith("weight") and k not in used and len(src.shape(k)) in (2, 4)]
    chain = Chain.from_factors(factors, source=src.name, skipped=skipped)
    breaks = tuple(
        Break(b.left, b.right, b.reason + " (skip concatenation: an up block's resnet reads [h, skip])")
        if b.right.startswith("up.") and ".resnets." in b.right else b for b in chain.breaks)
    return dataclasses.replace(chain, breaks=breaks)


ADAPTER = Adapter(matches=config_matcher("UNet2DModel", key="_class_name"), chain=unet_chain, convolutional=True)
