"""Residual CNNs: transformers ``ResNetModel`` and plain torch ResNets (torchvision naming).

Each residual block ``blocks.{k}`` is one channel-level factor: the branch is the product of
its convolutions' channel matrices with BatchNorm folded in (ReLUs linearized as the
identity), ``R = D_n W_n ... D_1 W_1``; the shortcut is ``I`` or the projection conv
``D_s W_s`` (a non-square factor where the block changes width). Full factor: shortcut + R;
branch factor: R. The stem, the pooling and the classifier are not residual blocks: they are
listed as skipped, with the reason.

Layout: for transformers' ResNet, the stages, depths and layer type come from the config;
for a plain torch ResNet (no config) the blocks are read from the torchvision parameter names
``layer{s}.{b}.conv{i}`` / ``bn{i}`` / ``downsample.{0,1}``.
"""

from __future__ import annotations

import re

import numpy as np

from ..chain import Chain, Factor, check_matrix
from ._conv import bn_scale, conv_matrix, lift
from .sources import ModelSourceError, WeightSource

__all__ = ["matches", "resnet_chain"]

#: BatchNorm eps of both ResNet families (the torch default; neither config records it).
BN_EPS = 1e-5


def matches(config: dict, keys: set) -> bool:
    return config.get("model_type") in ("resnet", "torch-resnet") or "layer1.0.conv1.weight" in keys


def _hf_blocks(src: WeightSource) -> list[dict]:
    cfg = src.config
    depths = cfg.get("depths")
    if not isinstance(depths, list) or not all(isinstance(d, int) and d > 0 for d in depths):
        raise ModelSourceError(f"The config of {src.name} must give 'depths' (a list of positive ints); got {depths!r}.")
    n_convs = {"basic": 2, "bottleneck": 3}.get(cfg.get("layer_type"))
    if n_convs is None:
        raise ModelSourceError(f"The config of {src.name} gives layer_type {cfg.get('layer_type')!r}; "
                               "physgsa knows 'basic' and 'bottleneck'.")
    tail = "encoder.stages.0.layers.0.layer.0.convolution.weight"
    prefix = next((k[: -len(tail)] for k in src.keys() if k.endswith(tail)), None)
    if prefix is None:
        raise ModelSourceError(f"{src.name} is missing {tail}, the first conv of a transformers ResNet.")
    blocks = []
    for s, depth in enumerate(depths):
        for b in range(depth):
            p = f"{prefix}encoder.stages.{s}.layers.{b}."
            sc = (p + "shortcut.convolution.weight", p + "shortcut.normalization.")
            blocks.append({
                "module": f"encoder.stages.{s}.layers.{b}",
                "convs": [(p + f"layer.{i}.convolution.weight", p + f"layer.{i}.normalization.") for i in range(n_convs)],
                "shortcut": sc if src.has(sc[0]) else None,
            })
    return blocks


def _torch_blocks(src: WeightSource) -> list[dict]:
    pat = re.compile(r"^(.*?)layer(\d+)\.(\d+)\.conv(\d+)\.weight$")
    found: dict = {}
    prefix = None
    for k in src.keys():
        m = pat.match(k)
        if m:
            prefix = m.group(1) if prefix is None else prefix
            found.setdefault((int(m.group(2)), int(m.group(3))), set()).add(int(m.group(4)))
    if not found:
        raise ModelSourceError(f"{src.name} holds no torchvision-style ResNet blocks (layer{{s}}.{{b}}.conv{{i}}.weight).")
    blocks = []
    for s, b in sorted(found):
        p = f"{prefix}layer{s}.{b}."
        convs = sorted(found[(s, b)])
        if convs != list(range(1, len(convs) + 1)):
            raise ModelSourceError(f"Block {p} of {src.name} has convs {convs}; expected conv1..conv{len(convs)}.")
        sc = (p + "downsample.0.weight", p + "downsample.1.")
        blocks.append({
            "module": f"layer{s}.{b}",
            "convs": [(p + f"conv{i}.weight", p + f"bn{i}.") for i in convs],
            "shortcut": sc if src.has(sc[0]) else None,
        })
    return blocks


def _blocks(src: WeightSource) -> list[dict]:
    return _hf_blocks(src) if src.config.get("model_type") == "resnet" else _torch_blocks(src)


def _skipped(src: WeightSource, blocks: list[dict]) -> list[dict]:
    """Every conv or linear weight outside the residual blocks, with the reason."""
    used = {w for blk in blocks for w, _ in blk["convs"]} | {blk["shortcut"][0] for blk in blocks if blk["shortcut"]}
    out = []
    for k in src.keys():
        if k.endswith("weight") and k not in used and len(src.shape(k)) in (2, 4):
            reason = ("convolution outside the residual blocks (stem)" if len(src.shape(k)) == 4
                      else "linear layer outside the residual blocks (classifier)")
            out.append({"module": k.rsplit(".", 1)[0], "reason": reason})
    return out


def resnet_chain(src: WeightSource, *, factor: str, conv: str = "dc", freq: tuple = (0, 0, 1)) -> Chain:
    """The chain of residual-block factors (see the module docstring)."""
    blocks = _blocks(src)
    factors = []
    for k, blk in enumerate(blocks):
        branch = None
        for wkey, bnkey in blk["convs"]:
            w = src.get(wkey)
            if w.ndim != 4:
                raise ModelSourceError(f"{wkey!r} of {src.name} has shape {w.shape}; a conv kernel is 4-D.")
            d = lift(np.diag(bn_scale(src, bnkey, BN_EPS)), conv)
            step = d @ conv_matrix(w, conv, freq)
            if branch is not None and step.shape[1] != branch.shape[0]:
                raise ModelSourceError(f"{wkey!r} of {src.name} takes {step.shape[1]} channels but the previous conv "
                                       f"gives {branch.shape[0]}.")
            branch = step if branch is None else step @ branch
        if factor == "full":
            if blk["shortcut"]:
                wkey, bnkey = blk["shortcut"]
                shortcut = lift(np.diag(bn_scale(src, bnkey, BN_EPS)), conv) @ conv_matrix(src.get(wkey), conv, freq)
            else:
                if branch.shape[0] != branch.shape[1]:
                    raise ModelSourceError(f"Block {blk['module']} of {src.name} changes width without a projection "
                                           "shortcut.")
                shortcut = np.eye(branch.shape[0])
            mat = shortcut + branch
        else:
            mat = branch
        name = f"blocks.{k}"
        factors.append(Factor(name=name, matrix=check_matrix(mat, name, src.name),
                              provenance={"source": "static", "kind": factor, "module": blk["module"], "conv": conv,
                                          "projection_shortcut": blk["shortcut"] is not None,
                                          "dtype": src.dtype(blk["convs"][0][0])}))
    return Chain.from_factors(factors, source=src.name, skipped=_skipped(src, blocks))
