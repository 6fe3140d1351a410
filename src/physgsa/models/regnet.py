"""RegNet X and Y (transformers ``RegNetModel`` and its task heads).

Layout from the config: stage ``s`` has ``depths[s]`` layers of width ``hidden_sizes[s]`` (the
first stage reads ``embedding_size``); the first layer of a stage has stride 2 (stage 0: only
with ``downsample_in_first_stage``); every layer's middle 3x3 conv has
``max(1, width // groups_width)`` groups; ``layer_type`` ``"y"`` adds squeeze-excitation with
``round(in_channels / 4)`` reduced channels.

Block ``blocks.{k}`` (ours, docs/definitions.md): ``S + R`` with
``R = D_3 W_3 [diag(s_0)] D_2 W_g D_1 W_1``: the 1x1 ``W_1``, the grouped 3x3 ``W_g``
(block-diagonal at zero frequency, ``_conv.grouped_channel_matrix``), the SE gate at zero
input ``s_0 = sigmoid(W_2 relu(b_1) + b_2)`` (the exact Jacobian of the SE module at ``x = 0``;
Y only), the 1x1 ``W_3``; BatchNorms folded (eps 1e-5, ``nn.BatchNorm2d``'s default, which the
module uses); ReLUs, including the one after the add, linearized as the identity. The shortcut
is ``I`` or, where the module builds one (widths differ or stride 2), the projection
``D_s W_s`` (a 1x1 strided conv with its BatchNorm): then the factor is non-square. The stem
(``embedder``) and the classifier are skipped.
"""

from __future__ import annotations

from ._modern import Block, Ops, activation, build_chain, find_prefix, hf_config, positive, refuse_fft
from .registry import Adapter, config_matcher
from .sources import ModelSourceError, WeightSource

__all__ = ["chain", "layout", "ADAPTER"]

#: nn.BatchNorm2d's default eps, which RegNetConvLayer and RegNetShortCut use (not in the config).
BN_EPS = 1e-5



def layout(cfg, where: str) -> list[dict]:
    gw = positive(cfg, "groups_width", where)
    if cfg.layer_type not in ("x", "y"):
        raise ModelSourceError(f"The config of {where} gives layer_type {cfg.layer_type!r}; RegNet has 'x' and 'y'.")
    sizes, depths = list(cfg.hidden_sizes), list(cfg.depths)
    if len(sizes) != len(depths):
        raise ModelSourceError(f"The config of {where} gives hidden_sizes {sizes} and depths {depths} of different "
                               "lengths.")
    out, prev = [], positive(cfg, "embedding_size", where)
    for s, (c, depth) in enumerate(zip(sizes, depths)):
        first_stride = (2 if cfg.downsample_in_first_stage else 1) if s == 0 else 2
        for j in range(depth):
            c_in, stride = (prev, first_stride) if j == 0 else (c, 1)
            out.append({"stage": s, "layer": j, "in": c_in, "out": c, "stride": stride,
                        "groups": max(1, c // gw), "se": round(c_in / 4),
                        "shortcut": c_in != c or stride != 1})
        prev = c
    return out


def chain(src: WeightSource, *, factor: str, conv: str = "dc", freq=None):
    refuse_fft(conv, "RegNet")
    cfg = hf_config(src)
    y = cfg.layer_type == "y"
    act = activation("relu", src.name)  # RegNetSELayer's nn.ReLU
    prefix = find_prefix(src, "encoder.stages.0.layers.0.layer.0.convolution.weight", "RegNet")
    blocks = []
    for k, lay in enumerate(layout(cfg, src.name)):
        p = f"{prefix}encoder.stages.{lay['stage']}.layers.{lay['layer']}."
        c = lay["out"]
        ops = Ops(src, p.rstrip("."))
        ops.conv(p + "layer.0.convolution.weight", n_in=lay["in"], n_out=c)
        ops.bn(p + "layer.0.normalization.", BN_EPS)
        ops.conv(p + "layer.1.convolution.weight", groups=lay["groups"], n_in=c, n_out=c)
        ops.bn(p + "layer.1.normalization.", BN_EPS)
        extra = {"stride": lay["stride"], "groups": lay["groups"]}
        if y:
            s0 = ops.se(p + "layer.2.attention.0.", p + "layer.2.attention.2.", act)
            extra["se_gate_mean"] = float(s0.mean())
        last = "layer.3." if y else "layer.2."
        ops.conv(p + last + "convolution.weight", n_in=c, n_out=c)
        ops.bn(p + last + "normalization.", BN_EPS)
        shortcut = "identity"
        has = src.has(p + "shortcut.convolution.weight")
        if has != lay["shortcut"]:
            raise ModelSourceError(f"{src.name}: layer {p.rstrip('.')} {'has' if has else 'lacks'} a projection "
                                   "shortcut, but its config's widths and strides say the opposite. The config "
                                   "contradicts the weights.")
        if has:
            shortcut = Ops(src, p + "shortcut")
            shortcut.conv(p + "shortcut.convolution.weight", n_in=lay["in"], n_out=c)
            shortcut.bn(p + "shortcut.normalization.", BN_EPS)
        blocks.append(Block(f"blocks.{k}", p.rstrip("."), ops, shortcut, extra))

    def reason(key):
        if "embedder" in key:
            return "stem: not a residual block"
        return "classifier / head: not a residual block"

    return build_chain(src, blocks, factor=factor, dtype_key=blocks[0].branch.keys[0], skipped_reason=reason)


ADAPTER = Adapter(matches=config_matcher("regnet"), chain=chain, convolutional=True)
