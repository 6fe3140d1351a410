"""MobileNetV2 (transformers ``MobileNetV2Model`` and its task heads): inverted residual blocks.

transformers' ``MobileNetV2Model`` has 16 ``MobileNetV2InvertedResidual`` blocks ``layer.{i}``
with the base widths ``16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320``
and strides ``2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1`` fixed in the class; the config
scales the widths (``depth_multiplier``, rounded by ``depth_divisible_by`` / ``min_depth``),
sets the expansion (``expand_ratio``) and turns strides into dilations past ``output_stride``.
physgsa computes the layout the same way and checks it against every weight's shape.

Block ``blocks.{i}`` (ours, docs/definitions.md): ``R = D_3 W_3 D_2 W_dw D_1 W_1`` with the 1x1
expansion ``W_1``, the depthwise 3x3 ``W_dw`` (diagonal at zero frequency:
``_conv.grouped_channel_matrix`` with ``groups = channels``), the 1x1 reduction ``W_3``, each
BatchNorm folded (eps = the config's ``layer_norm_eps``), ReLU6 linearized as the identity.
The block adds its input only where the module does (``use_residual``: stride 1 and equal
widths): full ``I + R`` there; elsewhere the block has no skip and its factor is ``R`` in both
modes (provenance ``kind: plain``, ``residual: false``). The stem (``conv_stem``), the final
``conv_1x1`` and the classifier are listed as skipped.
"""

from __future__ import annotations

from ._modern import Block, Ops, build_chain, find_prefix, hf_config, positive, refuse_fft
from .registry import Adapter, config_matcher
from .sources import ModelSourceError, WeightSource

__all__ = ["chain", "layout", "ADAPTER"]

_BASE = [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320]
_STRIDES = [2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]



def _divisible(value: float, divisor: int, min_value: int) -> int:
    """The ``make_divisible`` of transformers (the rounding of MobileNetV2's widths)."""
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return int(new)


def layout(cfg, where: str) -> list[dict]:
    """Per block: in/out/expanded widths, stride, and whether it adds its input."""
    div = positive(cfg, "depth_divisible_by", where)
    min_depth = positive(cfg, "min_depth", where)
    mult = cfg.depth_multiplier
    if isinstance(mult, bool) or not isinstance(mult, (int, float)) or mult <= 0:
        raise ModelSourceError(f"The config of {where} must give a positive depth_multiplier; got {mult!r}.")
    chans = [_divisible(round(c * mult), div, min_depth) for c in _BASE]
    current, out = 2, []
    for i in range(16):
        if current == cfg.output_stride:
            stride = 1  # past output_stride the module dilates instead (same zero-frequency matrix)
        else:
            stride = _STRIDES[i]
            current *= stride
        c_in, c_out = chans[i], chans[i + 1]
        out.append({"in": c_in, "out": c_out, "stride": stride,
                    "expanded": _divisible(round(c_in * cfg.expand_ratio), div, min_depth),
                    "residual": stride == 1 and c_in == c_out})
    return out


def chain(src: WeightSource, *, factor: str, conv: str = "dc", freq=None):
    refuse_fft(conv, "MobileNetV2")
    cfg = hf_config(src)
    eps = float(cfg.layer_norm_eps)
    prefix = find_prefix(src, "layer.0.expand_1x1.convolution.weight", "MobileNetV2")
    blocks = []
    for i, lay in enumerate(layout(cfg, src.name)):
        p = f"{prefix}layer.{i}."
        ops = Ops(src, p.rstrip("."))
        e = lay["expanded"]
        ops.conv(p + "expand_1x1.convolution.weight", n_in=lay["in"], n_out=e)
        ops.bn(p + "expand_1x1.normalization.", eps)
        ops.conv(p + "conv_3x3.convolution.weight", groups=e, n_in=e, n_out=e)
        ops.bn(p + "conv_3x3.normalization.", eps)
        ops.conv(p + "reduce_1x1.convolution.weight", n_in=e, n_out=lay["out"])
        ops.bn(p + "reduce_1x1.normalization.", eps)
        blocks.append(Block(f"blocks.{i}", p.rstrip("."), ops, "identity" if lay["residual"] else None,
                            {"stride": lay["stride"]}))

    def reason(k):
        if ".conv_stem." in k or k.startswith("conv_stem."):
            return "stem: not an inverted residual block"
        if "conv_1x1" in k:
            return "final 1x1 conv after the last block: not an inverted residual block"
        return "classifier / head: not an inverted residual block"

    return build_chain(src, blocks, factor=factor, dtype_key=blocks[0].branch.keys[0], skipped_reason=reason)


ADAPTER = Adapter(matches=config_matcher("mobilenet_v2"), chain=chain, convolutional=True)
