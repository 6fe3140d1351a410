"""Residual CNNs: transformers ``ResNetModel`` and plain torch ResNets (torchvision naming).

Each residual block ``blocks.{k}`` is one channel-level factor: the branch is the product of
its convolutions' channel matrices with BatchNorm folded in (ReLUs linearized as all-active,
i.e. the identity), ``R = D_n W_n ... D_1 W_1``; the shortcut ``S`` is ``I`` or the projection
conv ``D_s W_s`` (a non-square factor where the block changes width). Full factor: ``S + R``;
branch factor: ``R``. The stem, the pooling and the classifier are not residual blocks: they
are listed as skipped, with the reason.

``--conv dc`` (default): each ``W_i`` is the zero-frequency channel matrix.
``--conv fft --freq u,v,n``: the block's linear operator on the Fourier mode ``(u, v)`` of the
``n x n`` torus at the input of ``blocks.0`` (the grid after the stem), in real form
(``_conv`` gives the convention). Each conv's ``W_i`` is taken on its own input grid with its
padding phase; a stride-2 conv halves the grid for the convs after it; the shortcut (identity,
or the strided 1x1 projection with its BatchNorm) lands on the same output mode; ``blocks.k``
sits at the frequency the mode has on its own input grid (``u mod n_k``). ``n`` must be
divisible by the product of all strides (refused otherwise).

Layout, never guessed from shapes: for transformers' ResNet, the stages, depths, layer type
and strides come from the config (``depths``, ``layer_type``; stride 2 in the first layer of
every stage but the first, which has stride 2 only with ``downsample_in_first_stage``; on the
first conv of a basic layer, and in a bottleneck on its 1x1 ``layer.0`` with
``downsample_in_bottleneck``, else on its 3x3 ``layer.1``). A plain torch ResNet has no config:
its blocks are read from the torchvision parameter names ``layer{s}.{b}.conv{i}`` / ``bn{i}``
/ ``downsample.{0,1}``, and its strides are torchvision's, which the names do not record:
stride 2 in the first block of every stage after the first, on ``conv1`` of a basic block (two
convs) and ``conv2`` of a bottleneck (three convs, torchvision v1.5), and on the downsample.
A strided block without a downsample contradicts that layout, and ``--conv fft`` refuses it.
Every conv pads ``k // 2`` (``_conv.same_padding``). Strides do not change the zero-frequency
factors.
"""

from __future__ import annotations

import math
import re

import numpy as np

from ..core.chain import Chain, Factor, check_matrix
from ._conv import FourierMode, bn_scale, conv_factor, fourier_mode, realify, same_padding
from .registry import Adapter
from .sources import ModelSourceError, WeightSource

__all__ = ["ADAPTER", "matches", "resnet_chain"]

#: BatchNorm eps of both ResNet families (the torch default; neither config records it).
BN_EPS = 1e-5


def matches(config: dict, has) -> bool:
    """A transformers ResNet by its config, a torch ResNet by its torchvision weight names (``has(key)``)."""
    return config.get("model_type") in ("resnet", "torch-resnet") or has("layer1.0.conv1.weight")


def _hf_blocks(src: WeightSource) -> list[dict]:
    cfg = src.config
    depths = cfg.get("depths")
    if not isinstance(depths, list) or not all(isinstance(d, int) and d > 0 for d in depths):
        raise ModelSourceError(f"The config of {src.name} must give 'depths' (a list of positive ints); "
                               f"got {depths!r}.")
    n_convs = {"basic": 2, "bottleneck": 3}.get(cfg.get("layer_type"))
    if n_convs is None:
        raise ModelSourceError(f"The config of {src.name} gives layer_type {cfg.get('layer_type')!r}; "
                               "physgsa knows 'basic' and 'bottleneck'.")
    tail = "encoder.stages.0.layers.0.layer.0.convolution.weight"
    prefix = next((k[: -len(tail)] for k in src.keys() if k.endswith(tail)), None)
    if prefix is None:
        raise ModelSourceError(f"{src.name} is missing {tail}, the first conv of a transformers ResNet.")
    # ResNetConfig's defaults (False, False) where an older config.json lacks the keys.
    first_stage = 2 if cfg.get("downsample_in_first_stage", False) else 1
    strided_conv = 0 if n_convs == 2 or cfg.get("downsample_in_bottleneck", False) else 1
    blocks = []
    for s, depth in enumerate(depths):
        for b in range(depth):
            p = f"{prefix}encoder.stages.{s}.layers.{b}."
            stride = (first_stage if s == 0 else 2) if b == 0 else 1
            sc = (p + "shortcut.convolution.weight", p + "shortcut.normalization.")
            blocks.append({
                "module": f"encoder.stages.{s}.layers.{b}",
                "convs": [(p + f"layer.{i}.convolution.weight", p + f"layer.{i}.normalization.",
                           stride if i == strided_conv else 1) for i in range(n_convs)],
                "shortcut": sc if src.has(sc[0]) else None,
                "stride": stride,
                "layout": "config",
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
        raise ModelSourceError(f"{src.name} holds no torchvision-style ResNet blocks "
                               "(layer{s}.{b}.conv{i}.weight).")
    first_stage = min(s for s, _ in found)
    blocks = []
    for s, b in sorted(found):
        p = f"{prefix}layer{s}.{b}."
        convs = sorted(found[(s, b)])
        if convs != list(range(1, len(convs) + 1)):
            raise ModelSourceError(f"Block {p} of {src.name} has convs {convs}; expected conv1..conv{len(convs)}.")
        # torchvision's strides (module docstring): the names do not record them.
        stride = 2 if b == 0 and s != first_stage else 1
        strided_conv = {2: 1, 3: 2}.get(len(convs))  # BasicBlock: conv1; Bottleneck (v1.5): conv2
        sc = (p + "downsample.0.weight", p + "downsample.1.")
        blocks.append({
            "module": f"layer{s}.{b}",
            "convs": [(p + f"conv{i}.weight", p + f"bn{i}.", stride if i == strided_conv else 1) for i in convs],
            "shortcut": sc if src.has(sc[0]) else None,
            "stride": stride,
            # Strides are known only where the block is one of torchvision's two.
            "layout": "torchvision" if strided_conv is not None and (stride == 1 or src.has(sc[0])) else None,
        })
    return blocks


def _blocks(src: WeightSource) -> list[dict]:
    return _hf_blocks(src) if src.config.get("model_type") == "resnet" else _torch_blocks(src)


def _skipped(src: WeightSource, blocks: list[dict]) -> list[dict]:
    """Every conv or linear weight outside the residual blocks, with the reason."""
    used = {c[0] for blk in blocks for c in blk["convs"]} | {blk["shortcut"][0] for blk in blocks if blk["shortcut"]}
    out = []
    for k in src.keys():
        if k.endswith("weight") and k not in used and len(src.shape(k)) in (2, 4):
            reason = ("convolution outside the residual blocks (stem)" if len(src.shape(k)) == 4
                      else "linear layer outside the residual blocks (classifier)")
            out.append({"module": k.rsplit(".", 1)[0], "reason": reason})
    return out


def _block_factor(src: WeightSource, blk: dict, factor: str, mode: FourierMode | None):
    """``S + R`` or ``R`` of one block on ``mode`` (complex) or at zero frequency (real), and the output mode."""
    branch, m = None, mode
    for wkey, bnkey, stride in blk["convs"]:
        w = src.get(wkey)
        z, m = conv_factor(w, m, stride=stride, padding=same_padding(w), where=f"{wkey!r} of {src.name}")
        step = bn_scale(src, bnkey, BN_EPS)[:, None] * z  # BatchNorm is per pixel: the same on every mode
        if branch is not None and step.shape[1] != branch.shape[0]:
            raise ModelSourceError(f"{wkey!r} of {src.name} takes {step.shape[1]} channels but the previous conv "
                                   f"gives {branch.shape[0]}.")
        branch = step if branch is None else step @ branch
    if factor == "branch":
        return branch, m
    if blk["shortcut"]:
        wkey, bnkey = blk["shortcut"]
        w = src.get(wkey)
        z, m_s = conv_factor(w, mode, stride=blk["stride"], padding=same_padding(w), where=f"{wkey!r} of {src.name}")
        shortcut = bn_scale(src, bnkey, BN_EPS)[:, None] * z
    else:
        if branch.shape[0] != branch.shape[1]:
            raise ModelSourceError(f"Block {blk['module']} of {src.name} changes width without a projection "
                                   "shortcut.")
        shortcut, m_s = np.eye(branch.shape[0]), mode
    if m_s != m:  # e.g. a strided branch beside an identity shortcut: the two outputs cannot be added
        raise ModelSourceError(f"Block {blk['module']} of {src.name}: its branch and its shortcut end on different "
                               "grids (their strides differ).")
    return shortcut + branch, m


def resnet_chain(src: WeightSource, *, factor: str, conv: str = "dc", freq: tuple = (0, 0, 1)) -> Chain:
    """The chain of residual-block factors (see the module docstring)."""
    blocks = _blocks(src)
    if conv == "fft":
        unknown = [blk["module"] for blk in blocks if blk["layout"] is None]
        if unknown:
            raise ModelSourceError(
                f"--conv fft needs every conv's stride. {src.name} names its blocks as torchvision does, but "
                f"{', '.join(unknown)} does not follow torchvision's layout (two or three convs, and a downsample "
                "where the stride is 2), so the strides are unknown. Use --conv dc, which does not depend on them."
            )
    mode = fourier_mode(conv, freq, math.prod(s for blk in blocks for *_, s in blk["convs"]),
                        f"{src.name}'s residual path")
    factors = []
    for k, blk in enumerate(blocks):
        mat, out = _block_factor(src, blk, factor, mode)
        name = f"blocks.{k}"
        prov = {"source": "static", "kind": factor, "module": blk["module"], "conv": conv,
                "projection_shortcut": blk["shortcut"] is not None, "dtype": src.dtype(blk["convs"][0][0])}
        if mode is not None:
            prov["freq"] = [*mode.here, mode.n]  # (u, v, n) of this block's input mode
            prov["freq_out"] = [*out.here, out.n]
            mat = realify(mat)
        factors.append(Factor(name=name, matrix=check_matrix(mat, name, src.name), provenance=prov))
        mode = out
    return Chain.from_factors(factors, source=src.name, skipped=_skipped(src, blocks))


ADAPTER = Adapter(matches=matches, chain=resnet_chain, convolutional=True)
