"""Diffusion UNets (diffusers ``UNet2DModel``): resnet, attention and resampling factors.

In execution order (down blocks, the mid block, up blocks; the layout from the config's
``layers_per_block`` and block types):

- ``ResnetBlock2D``: branch ``R = W_2 G_2 W_1 G_1`` (conv channel matrices at zero frequency,
  ``G = diag(gamma)`` the GroupNorm affine scales; SiLU linearized, the time embedding is an
  additive offset and drops out); shortcut ``I`` or the 1x1 ``conv_shortcut``; full factor
  shortcut + R (``output_scale_factor`` 1, the UNet2DModel default);
- spatial attention: per pixel the OV map ``W_O W_V G`` (full: ``I +`` it);
- down/up-sampling convs: their channel matrix (not residual: the same for full and branch).

An up block's resnet reads the concatenation ``[h, skip]``: the chain breaks there and the
break says so. ``conv_in``, ``conv_out``, the time embedding and the Q/K projections are
listed as skipped with the reason.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..chain import Break, Chain, Factor, check_matrix
from ._conv import conv_dc
from .sources import ModelSourceError, WeightSource

__all__ = ["matches", "unet_chain"]


def matches(config: dict) -> bool:
    return config.get("_class_name") == "UNet2DModel"


def _resnet(src: WeightSource, p: str, factor: str) -> tuple[np.ndarray, list[str]]:
    keys = [p + "conv1.weight", p + "conv2.weight"]
    g1 = src.get(p + "norm1.weight") if src.has(p + "norm1.weight") else None
    g2 = src.get(p + "norm2.weight") if src.has(p + "norm2.weight") else None
    w1, w2 = conv_dc(src.get(keys[0])), conv_dc(src.get(keys[1]))
    branch = (w2 * (g2 if g2 is not None else 1.0)[None, :]) @ (w1 * (g1 if g1 is not None else 1.0)[None, :])
    if factor == "branch":
        return branch, keys
    if src.has(p + "conv_shortcut.weight"):
        keys.append(p + "conv_shortcut.weight")
        shortcut = conv_dc(src.get(p + "conv_shortcut.weight"))
    else:
        if branch.shape[0] != branch.shape[1]:
            raise ModelSourceError(f"Resnet {p} of {src.name} changes width without a conv_shortcut.")
        shortcut = np.eye(branch.shape[0])
    return shortcut + branch, keys


def _attention(src: WeightSource, p: str, factor: str) -> tuple[np.ndarray, list[str]]:
    keys = [p + "to_v.weight", p + "to_out.0.weight"]
    w_v, w_o = src.get(keys[0]), src.get(keys[1])
    if src.has(p + "group_norm.weight"):
        w_v = w_v * src.get(p + "group_norm.weight")[None, :]
    r = w_o @ w_v
    return (np.eye(r.shape[0]) + r if factor == "full" else r), keys


def unet_chain(src: WeightSource, *, factor: str) -> Chain:
    cfg = src.config
    n_layers = cfg.get("layers_per_block")
    downs, ups = cfg.get("down_block_types"), cfg.get("up_block_types")
    # config.json gives lists, a live module's config tuples.
    if not (isinstance(n_layers, int) and isinstance(downs, (list, tuple)) and isinstance(ups, (list, tuple))):
        raise ModelSourceError(f"The config of {src.name} must give layers_per_block, down_block_types and "
                               "up_block_types for a UNet2DModel.")
    plan = []  # (name, kind, prefix)
    for i, typ in enumerate(downs):
        for j in range(n_layers):
            plan.append((f"down.{i}.resnets.{j}", "resnet", f"down_blocks.{i}.resnets.{j}."))
            if "Attn" in typ:
                plan.append((f"down.{i}.attentions.{j}", "attn", f"down_blocks.{i}.attentions.{j}."))
        plan.append((f"down.{i}.downsample", "conv", f"down_blocks.{i}.downsamplers.0.conv."))
    plan += [("mid.resnets.0", "resnet", "mid_block.resnets.0."), ("mid.attentions.0", "attn", "mid_block.attentions.0."),
             ("mid.resnets.1", "resnet", "mid_block.resnets.1.")]
    for i, typ in enumerate(ups):
        for j in range(n_layers + 1):
            plan.append((f"up.{i}.resnets.{j}", "resnet", f"up_blocks.{i}.resnets.{j}."))
            if "Attn" in typ:
                plan.append((f"up.{i}.attentions.{j}", "attn", f"up_blocks.{i}.attentions.{j}."))
        plan.append((f"up.{i}.upsample", "conv", f"up_blocks.{i}.upsamplers.0.conv."))
    factors, used = [], set()
    for name, kind, p in plan:
        probe = {"resnet": "conv1.weight", "attn": "to_v.weight", "conv": "weight"}[kind]
        if not src.has(p + probe):
            if kind == "resnet":
                raise ModelSourceError(f"{src.name} is missing {p + probe}, which its config's layout implies.")
            continue  # the last down block has no downsampler, the last up block no upsampler, etc.
        if kind == "resnet":
            mat, keys = _resnet(src, p, factor)
        elif kind == "attn":
            mat, keys = _attention(src, p, factor)
        else:
            keys = [p + "weight"]
            mat = conv_dc(src.get(keys[0]))
        used.update(keys)
        factors.append(Factor(name=name, matrix=check_matrix(mat, name, src.name),
                              provenance={"source": "static", "kind": factor if kind != "conv" else "plain",
                                          "module": p.rstrip("."), "keys": keys, "dtype": src.dtype(keys[0])}))
    skipped = []
    for k in src.keys():
        if k.endswith("weight") and k not in used and len(src.shape(k)) in (2, 4):
            reason = ("query/key projection: it shapes the attention pattern, not the OV map" if ".to_q." in k
                      or ".to_k." in k else "time embedding: an additive offset, not a channel map"
                      if "time_emb" in k else "not a residual block or resampler of the chain")
            skipped.append({"module": k.rsplit(".", 1)[0], "reason": reason})
    chain = Chain.from_factors(factors, source=src.name, skipped=skipped)
    breaks = tuple(
        Break(b.left, b.right, b.reason + " (skip concatenation: an up block's resnet reads [h, skip])")
        if b.right.startswith("up.") and ".resnets." in b.right else b for b in chain.breaks)
    return dataclasses.replace(chain, breaks=breaks)
